from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from persona_sdk.plugins import plugin_info

from ...runtime import get_persona


class Command(BaseCommand):
    help = "List the persona-sdk plugins this site loads: name, distribution, version, hooks."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--hooks", action="store_true", help="also list the hooks each implements"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        persona = get_persona()
        for info in plugin_info(persona.pm):
            self.stdout.write(
                f"{info.name}  {info.distribution or '-'} {info.version or ''}".rstrip()
            )
            if options["hooks"]:
                for hook in info.hooks:
                    self.stdout.write(f"    {hook}")
        reg = persona.registry
        self.stdout.write(
            f"\nstrategies: {', '.join(sorted(reg.strategies)) or '-'}; "
            f"enrichers: {', '.join(e.name for e in reg.enrichers) or '-'}; "
            f"sinks: {', '.join(sorted(reg.sinks)) or '-'}; "
            f"profile sources: {', '.join(sorted(reg.sources)) or '-'}; "
            f"conditions: {', '.join(reg.conditions.names()) or '-'}"
        )
