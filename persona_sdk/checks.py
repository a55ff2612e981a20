"""Configuration check results, shared by ``persona validate`` and Django's system checks."""

from __future__ import annotations

from typing import Literal

import attrs

__all__ = ["CheckMessage"]


@attrs.frozen
class CheckMessage:
    """One problem found by a configuration check. ``id`` looks like ``persona.E001``."""

    level: Literal["error", "warning", "info"]
    id: str
    msg: str
    hint: str = ""

    def __str__(self) -> str:
        text = f"{self.id} ({self.level}): {self.msg}"
        return f"{text}\n    HINT: {self.hint}" if self.hint else text
