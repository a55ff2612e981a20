from __future__ import annotations

from django.core.management.base import CommandError

from persona_sdk import Identity
from persona_sdk.errors import IdentityError

IDENTITY_HELP = (
    "who: user:<id>, email:<address>, anonymous:<cookie id>, external:<namespace>:<id>, "
    "or profile:<profile id>"
)


def parse_identity(text: str) -> Identity | str:
    """An Identity, or a profile id (``profile:<id>``)."""
    if text.startswith("profile:"):
        return text.split(":", 1)[1]
    try:
        return Identity.parse(text)
    except IdentityError as exc:
        raise CommandError(f"{exc}. Expected {IDENTITY_HELP}") from None
