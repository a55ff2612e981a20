"""What the Django adapter keeps in the site's database.

* :class:`ProfileRecord`, :class:`IdentityRecord`, :class:`AliasRecord`: the profile store
  (:class:`persona_django.stores.DatabaseProfileStore`). The profile itself is one JSON
  document (``Profile.to_dict()``) with a ``revision`` for optimistic concurrency; identities
  and merged-away ids are indexed beside it.
* :class:`ConsentEntry`: the append-only consent ledger.
* :class:`OutboxMessage`: events waiting for delivery to a sink (the durable outbox).
* :class:`Exposure`, :class:`Conversion`: what experiment reports count.

Times in persona-sdk are POSIX seconds; here they are timezone-aware UTC datetimes. The
stores convert at the boundary.
"""

from __future__ import annotations

from typing import Any

from django.db import models
from django.utils import timezone

__all__ = [
    "AliasRecord",
    "ConsentEntry",
    "Conversion",
    "Exposure",
    "IdentityRecord",
    "OutboxMessage",
    "ProfileRecord",
]


class ProfileRecord(models.Model):
    """One profile: its JSON document and the revision the next write must be based on."""

    id = models.CharField(max_length=32, primary_key=True)
    data = models.JSONField(help_text="Profile.to_dict(): the versioned profile document")
    revision = models.PositiveBigIntegerField(default=1)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = "profile"
        verbose_name_plural = "profiles"

    def __str__(self) -> str:
        return self.id


class IdentityRecord(models.Model):
    """An identity (``Identity.key``: ``anonymous:…``, ``user:42``, ``email:<sha256>``)
    and the profile it belongs to."""

    key = models.CharField(max_length=300, unique=True)
    profile_id = models.CharField(max_length=32, db_index=True)

    class Meta:
        verbose_name = "identity"
        verbose_name_plural = "identities"

    def __str__(self) -> str:
        return f"{self.key} → {self.profile_id}"


class AliasRecord(models.Model):
    """A merged-away profile id and the profile it was merged into."""

    old_id = models.CharField(max_length=32, primary_key=True)
    profile_id = models.CharField(max_length=32, db_index=True)

    class Meta:
        verbose_name = "alias"
        verbose_name_plural = "aliases"

    def __str__(self) -> str:
        return f"{self.old_id} → {self.profile_id}"


class ConsentEntry(models.Model):
    """One line of the consent ledger. Rows are only ever added (a merge re-points them to
    the surviving profile; erasure deletes them); saving an existing row is refused."""

    profile_id = models.CharField(max_length=32, db_index=True)
    purpose = models.CharField(max_length=100)
    state = models.CharField(max_length=16)
    at = models.DateTimeField()
    source = models.CharField(max_length=200)
    policy_version = models.CharField(max_length=100, blank=True, default="")

    class Meta:
        verbose_name = "consent ledger entry"
        verbose_name_plural = "consent ledger"
        ordering = ("at", "id")

    def __str__(self) -> str:
        return f"{self.profile_id} {self.purpose}={self.state} ({self.source})"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise ValueError("the consent ledger is append-only: entries cannot be changed")
        super().save(*args, **kwargs)


class OutboxMessage(models.Model):
    """One event bound for one sink (``persona_sdk.outbox.OutboxItem``)."""

    PENDING = "pending"
    DONE = "done"
    DEAD = "dead"
    STATUS_CHOICES = ((PENDING, "pending"), (DONE, "done"), (DEAD, "dead"))

    id = models.CharField(max_length=32, primary_key=True)
    sink = models.CharField(max_length=100)
    message_id = models.CharField(max_length=100)
    profile_id = models.CharField(max_length=32, db_index=True)
    payload = models.JSONField()
    purposes = models.JSONField(default=list)
    created_at = models.DateTimeField()
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    status = models.CharField(max_length=8, choices=STATUS_CHOICES, default=PENDING)
    last_error = models.TextField(blank=True, default="")
    #: claimed by a worker until then (a lease; NULL = not claimed)
    locked_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "outbox message"
        verbose_name_plural = "outbox"
        indexes = [
            # claim: status = pending, next_attempt_at <= now, ORDER BY next_attempt_at,
            # created_at LIMIT n: the index serves the filter and the order (no sort of
            # every due row); pending_count, dead_letters and prune use its status prefix
            models.Index(
                fields=["status", "next_attempt_at", "created_at"], name="persona_outbox_claim"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.sink}:{self.message_id} ({self.status})"


class Exposure(models.Model):
    """A visitor was shown a variant of an experiment slot."""

    profile_id = models.CharField(max_length=32, db_index=True)
    slot = models.CharField(max_length=200)
    variant = models.CharField(max_length=200)
    reason = models.CharField(max_length=32)
    channel = models.CharField(max_length=32, default="web")
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            models.Index(fields=["slot", "variant"], name="persona_exposure_slot"),
        ]

    def __str__(self) -> str:
        return f"{self.slot}={self.variant} ({self.profile_id})"


class Conversion(models.Model):
    """A conversion goal reached; one row without a slot, plus one per experiment the
    profile was assigned to (so reports can attribute it to the variant)."""

    profile_id = models.CharField(max_length=32, db_index=True)
    goal = models.CharField(max_length=200)
    value = models.FloatField(default=0.0)
    slot = models.CharField(max_length=200, null=True, blank=True)
    variant = models.CharField(max_length=200, null=True, blank=True)
    channel = models.CharField(max_length=32, default="web")
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            models.Index(fields=["slot", "variant"], name="persona_conversion_slot"),
            models.Index(fields=["goal", "at"], name="persona_conversion_goal"),
        ]

    def __str__(self) -> str:
        return f"{self.goal} {self.value} ({self.profile_id})"
