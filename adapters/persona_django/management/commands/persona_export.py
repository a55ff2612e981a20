from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...runtime import get_persona
from ._identity import IDENTITY_HELP, parse_identity


class Command(BaseCommand):
    help = "Print everything held about a person as JSON (data-access request)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("identity", help=IDENTITY_HELP)

    def handle(self, *args: Any, **options: Any) -> None:
        persona = get_persona()
        who = parse_identity(options["identity"])
        if isinstance(who, str):
            profile = persona.store.load(who)
            identity = sorted(profile.identities)[0] if profile and profile.identities else None
        else:
            identity = who
        data = persona.export(identity) if identity is not None else None
        if data is None:
            raise CommandError(f"no profile for {options['identity']}")
        self.stdout.write(json.dumps(data, indent=2, default=str, sort_keys=True))
