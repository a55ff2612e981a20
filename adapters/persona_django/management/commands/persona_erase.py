from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from persona_sdk import Identity

from ...runtime import get_persona
from ._identity import IDENTITY_HELP, parse_identity


class Command(BaseCommand):
    help = (
        "Forget a person (right to erasure): every adapter is asked to delete what it holds "
        "(persona_erase), pending outbox items and consent ledger entries are removed, then "
        "the profile."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("identity", help=IDENTITY_HELP)
        parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    def handle(self, *args: Any, **options: Any) -> None:
        persona = get_persona()
        who = parse_identity(options["identity"])
        if isinstance(who, str):
            profile = persona.store.load(who)
            if profile is None:
                raise CommandError(f"no profile {who}")
            identity: Identity = sorted(profile.identities)[0] if profile.identities else None  # type: ignore[assignment]
            if identity is None:
                raise CommandError(f"profile {who} has no identity to erase by")
        else:
            identity = who
        if not options["yes"] and options.get("interactive", True):
            answer = input(f"Erase everything about {identity}? This cannot be undone. [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                raise CommandError("cancelled")
        report = persona.erase(identity)
        if not report["found"]:
            raise CommandError(f"no profile for {identity}")
        self.stdout.write(json.dumps(report, indent=2, default=str))
