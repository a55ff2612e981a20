from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from persona_sdk.errors import UnknownSlotError

from ...runtime import get_persona
from ._identity import IDENTITY_HELP, parse_identity


class Command(BaseCommand):
    help = "Decide a slot for a stored profile and say why."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("identity", help=IDENTITY_HELP)
        parser.add_argument("slot", help="the slot name")
        parser.add_argument(
            "--context", default="{}", help='request context as JSON, e.g. \'{"country": "FR"}\''
        )
        parser.add_argument("--json", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        persona = get_persona()
        who = parse_identity(options["identity"])
        profile = persona.store.load(who) if isinstance(who, str) else persona.profile_for(who)
        if profile is None:
            raise CommandError(f"no profile for {options['identity']}")
        try:
            context = json.loads(options["context"])
        except json.JSONDecodeError as exc:
            raise CommandError(f"--context is not valid JSON: {exc.msg}") from None
        if not isinstance(context, dict):
            raise CommandError("--context must be a JSON object")
        try:
            slot = persona.slot(options["slot"])
        except UnknownSlotError as exc:
            raise CommandError(str(exc)) from None
        subject = persona.subject(profile, context)
        decision = persona.decide(slot, subject)
        if options["json"]:
            out = decision.to_dict()
            out["profile_id"] = profile.id
            out["segments"] = sorted(persona.segments.evaluate_all(subject))
            self.stdout.write(json.dumps(out, indent=2))
            return
        self.stdout.write(f"profile:     {profile.id}")
        self.stdout.write(f"slot:        {decision.slot}")
        self.stdout.write(
            f"variant:     {decision.variant}{' (default)' if decision.is_default else ''}"
        )
        self.stdout.write(f"reason:      {decision.reason} (strategy {decision.strategy})")
        self.stdout.write(f"explanation: {decision.explanation}")
        self.stdout.write(
            f"segments:    {', '.join(sorted(persona.segments.evaluate_all(subject))) or '(none)'}"
        )
        consent = ", ".join(f"{p}={persona.may(profile, p)}" for p in persona.policy.purposes)
        self.stdout.write(f"consent:     {consent}")
