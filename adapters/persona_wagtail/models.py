"""Segments defined by editors in the Wagtail admin.

A :class:`Segment` stores its rule in the same JSON form the core compiles (MongoDB-style
operators, see :mod:`persona_sdk.rules.compiler`): it is data, interpreted by persona-sdk's
own compiler, never evaluated as code. The site's effective segments are the ones defined in
code or files (``PERSONA["DEFINITIONS"]``, read-only here) plus these; see
:mod:`persona_wagtail.registry`.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import models

__all__ = ["Segment"]


def _empty_rule() -> dict[str, Any]:
    return {}


class Segment(models.Model):
    """An audience an editor defined: a name, a description and a rule."""

    name = models.CharField(
        max_length=64,
        unique=True,
        help_text="Lower-case letters, digits, '-' and '_' (e.g. returning-customers). "
        "Blocks and rules refer to the segment by this name.",
    )
    description = models.TextField(blank=True, default="")
    rule = models.JSONField(
        default=_empty_rule,
        blank=True,
        help_text="Who is in the segment. An empty rule matches everyone.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("name",)
        verbose_name = "segment"
        verbose_name_plural = "segments"

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        """Compile the rule (with every other segment), so a rule that cannot compile, a
        name used by a segment defined in code, a cycle, or a change that breaks another
        segment cannot be saved. Errors are attached to the field they concern."""
        from .registry import validate_segment

        errors = validate_segment(
            self.name, self.rule, description=self.description, pk=self.pk, check_unique=False
        )
        if errors:
            raise ValidationError(errors)

    @property
    def source(self) -> str:
        return "admin"
