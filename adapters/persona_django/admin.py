"""Admin screens: the outbox (dead letters and replay), the consent ledger and profiles,
all read-only. Profiles are changed through the SDK (events, ``persona_erase``), never by
hand: the store keeps indexes and a cache beside each row."""

from __future__ import annotations

import json
import time
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.text import Truncator

from .models import ConsentEntry, OutboxMessage, ProfileRecord
from .stores import DatabaseOutbox


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(OutboxMessage)
class OutboxMessageAdmin(admin.ModelAdmin):
    list_display = (
        "message_id",
        "sink",
        "status",
        "attempts",
        "next_attempt_at",
        "profile_id",
        "error",
    )
    list_filter = ("status", "sink")
    search_fields = ("message_id", "profile_id", "=id")
    ordering = ("-created_at",)
    actions = ("replay_dead_letters",)
    readonly_fields = (
        "id",
        "sink",
        "message_id",
        "profile_id",
        "status",
        "attempts",
        "created_at",
        "next_attempt_at",
        "locked_until",
        "purposes",
        "payload_json",
        "last_error",
    )
    exclude = ("payload",)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # workers update these rows; the admin only looks (and replays)

    def has_replay_permission(self, request: HttpRequest) -> bool:
        opts = self.opts
        return bool(request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}"))

    @admin.display(description="last error")
    def error(self, obj: OutboxMessage) -> str:
        return Truncator(obj.last_error).chars(80)

    @admin.display(description="payload")
    def payload_json(self, obj: OutboxMessage) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.payload, indent=2, sort_keys=True))

    @admin.action(description="Replay selected dead letters", permissions=["replay"])
    def replay_dead_letters(self, request: HttpRequest, queryset: QuerySet[OutboxMessage]) -> None:
        ids = list(queryset.filter(status=OutboxMessage.DEAD).values_list("id", flat=True))
        moved = DatabaseOutbox().replay(ids, now=time.time())
        skipped = queryset.count() - moved
        self.message_user(
            request, f"{moved} dead letter(s) queued for delivery again.", messages.SUCCESS
        )
        if skipped:
            self.message_user(
                request, f"{skipped} selected message(s) were not dead letters.", messages.WARNING
            )


@admin.register(ConsentEntry)
class ConsentEntryAdmin(ReadOnlyAdmin):
    list_display = ("at", "profile_id", "purpose", "state", "source", "policy_version")
    list_filter = ("purpose", "state", "source")
    search_fields = ("=profile_id",)
    date_hierarchy = "at"


@admin.register(ProfileRecord)
class ProfileRecordAdmin(ReadOnlyAdmin):
    list_display = ("id", "revision", "created_at", "updated_at")
    search_fields = ("=id",)
    ordering = ("-updated_at",)
    fields = ("id", "revision", "created_at", "updated_at", "document")
    readonly_fields = fields

    @admin.display(description="profile document")
    def document(self, obj: ProfileRecord) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.data, indent=2, sort_keys=True))
