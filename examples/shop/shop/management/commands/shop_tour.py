from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = ("Play scripted visitors (new, returning, high value, consent denied, GPC, logged in "
            "after browsing) through the shop and print what each saw and why.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="print the rows as JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        from shop.tour import table, tour

        rows = tour()
        self.stdout.write(json.dumps(rows, indent=2) if options["json"] else table(rows))
