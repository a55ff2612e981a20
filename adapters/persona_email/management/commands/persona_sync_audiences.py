"""``manage.py persona_sync_audiences``: full reconcile of segment membership to the
configured email vendors (Klaviyo lists, Mailchimp tags).

For every stored profile with an email address whose consent allows the vendor's purposes,
the mapped segments are evaluated now (over the profile; no request context) and one
``state`` item per vendor is queued in the outbox: "in these segments, not in those". The
outbox worker (``manage.py persona_deliver``, or ``--deliver`` here) sends them, honouring
each vendor's rate limits. Every vendor call is idempotent (Mailchimp's PUT by subscriber
hash, Klaviyo's subscribe/list calls), so running it again only costs API calls; items of
one run are deduplicated by ``--run-id``.

Use it after changing a mapping, after an outage, or nightly to catch time-based segments
("no order in 90 days") that nobody's events re-evaluated.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...audience import email_of, make_item, our_sinks
from .persona_send_campaign import stored_profiles


class Command(BaseCommand):
    help = "Queue a full sync of mapped segment memberships to Klaviyo / Mailchimp."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--vendor",
            choices=("klaviyo", "mailchimp"),
            help="only this vendor (default: every configured one)",
        )
        parser.add_argument("--run-id", help="dedup key of this run (default: a new one)")
        parser.add_argument(
            "--deliver", action="store_true", help="then deliver the outbox until nothing is due"
        )
        parser.add_argument("--dry-run", action="store_true", help="count, queue nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        from persona_django.runtime import get_persona

        persona = get_persona()
        sinks = [
            s
            for s in our_sinks(persona)
            if options["vendor"] is None or s.vendor == options["vendor"]
        ]
        if not sinks:
            raise CommandError(
                "no email vendor is configured: set PERSONA['PLUGINS']['klaviyo'] or "
                "['mailchimp'] (manage.py check says what is missing)"
            )
        run = options["run_id"] or uuid.uuid4().hex[:12]
        now = time.time()
        verbosity = options.get("verbosity", 1)
        seen = queued = skipped = 0
        batch: list[Any] = []
        started = time.monotonic()
        for profile in stored_profiles(with_email=True):
            seen += 1
            if email_of(profile) is None:
                skipped += 1
                continue
            subject = persona.subject(profile, {"channel": "email"}, now=now)
            for sink in sinks:
                if not all(persona.may(profile, p) for p in sink.purposes):
                    skipped += 1
                    continue
                segments = {s: persona.segments.test(s, subject) for s in sink.config.segments}
                batch.append(
                    make_item(
                        sink,
                        profile,
                        op="state",
                        segments=segments,
                        at=now,
                        key=f"reconcile:{run}",
                        now=now,
                    )
                )
            if len(batch) >= 500:
                queued += self._flush(persona, batch, options["dry_run"])
            if verbosity >= 1 and seen % 1000 == 0:
                self.stderr.write(
                    f"… {seen} profiles, {queued + len(batch)} items "
                    f"({seen / max(time.monotonic() - started, 1e-9):.0f}/s)"
                )
        queued += self._flush(persona, batch, options["dry_run"])
        vendors = ", ".join(s.vendor for s in sinks)
        verb = "would queue" if options["dry_run"] else "queued"
        self.stdout.write(
            f"reconcile {run}: {seen} profiles with an email, {verb} {queued} sync items "
            f"for {vendors}; {skipped} skipped (no usable address or no consent)"
        )
        if options["deliver"] and not options["dry_run"]:
            totals = [0, 0, 0, 0]
            while True:
                report = persona.deliver()
                counts = (report.delivered, report.retried, report.dead, report.withheld)
                totals = [t + n for t, n in zip(totals, counts, strict=True)]
                if not any(counts):
                    break
            self.stdout.write(
                f"delivered={totals[0]} retried={totals[1]} dead={totals[2]} withheld={totals[3]}"
            )

    @staticmethod
    def _flush(persona: Any, batch: list[Any], dry_run: bool) -> int:
        if not batch:
            return 0
        count = len(batch) if dry_run else persona.outbox.enqueue(batch)
        batch.clear()
        return count
