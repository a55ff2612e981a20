"""``manage.py persona_send_campaign``: send a personalized email campaign.

::

    manage.py persona_send_campaign spring-2026 emails/spring.html \\
        --subject "Spring is here" --segment returning --from shop@example.com

Recipients: ``--segment NAME`` (profiles in the segment now, evaluated for email: no
request context), ``--all`` (every profile with an email address) or ``--recipients FILE``
(one identity per line: ``email:ada@example.com``, ``user:42``, ``anonymous:…``,
``profile:<id>``; blank lines and ``#`` comments ignored).

Each recipient gets their own variants of the template's ``{% personalize %}`` slots;
only those whose ``marketing`` consent allows are sent to. A progress bar goes to stderr,
a summary (with who was skipped or failed and why) to stdout. Sending reuses one backend
connection per ``--batch-size`` recipients. Run it again to resume: recipients already in
the campaign's send log are not sent to again (``--retry-failed`` / ``--retry-skipped``
try those again). ``--dry-run`` renders everything and reports, sending nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from persona_sdk import Identity, Profile
from persona_sdk.errors import IdentityError, PersonaError

from ...sending import ALREADY, FAILED, SENT, SKIPPED, Campaign, SendReport


class Progress:
    """A one-line progress bar (``\\r``-redrawn on a terminal; a line every 10% otherwise)."""

    def __init__(self, out: Any, total: int, *, enabled: bool = True, width: int = 30) -> None:
        self.out = out
        self.total = max(total, 0)
        self.enabled = enabled
        self.width = width
        self.started = time.monotonic()
        self.last_draw = 0.0
        self.last_decile = -1
        stream = getattr(out, "_out", out)
        self.tty = bool(getattr(stream, "isatty", lambda: False)())

    def line(self, report: SendReport) -> str:
        counts = report.counts
        done = len(report.results)
        fraction = done / self.total if self.total else 1.0
        filled = int(self.width * min(fraction, 1.0))
        rate = done / max(time.monotonic() - self.started, 1e-9)
        return (
            f"[{'#' * filled}{'-' * (self.width - filled)}] {done}/{self.total} "
            f"{fraction:4.0%}  sent={counts[SENT]} skipped={counts[SKIPPED]} "
            f"failed={counts[FAILED]} already={counts[ALREADY]}  {rate:.0f}/s"
        )

    def update(self, report: SendReport) -> None:
        if not self.enabled:
            return
        done = len(report.results)
        now = time.monotonic()
        if self.tty:
            if now - self.last_draw >= 0.1 or done >= self.total:
                self.last_draw = now
                self.out.write("\r" + self.line(report), ending="")
                self.out.flush()
            return
        decile = int(10 * done / self.total) if self.total else 10
        if decile != self.last_decile:
            self.last_decile = decile
            self.out.write(self.line(report))

    def finish(self, report: SendReport) -> None:
        if self.enabled and self.tty:
            self.out.write("\r" + self.line(report))


def _identities(path: str) -> list[Identity | str]:
    out: list[Identity | str] = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror}") from None
    for number, raw in enumerate(lines, 1):
        text = raw.split("#", 1)[0].strip()
        if not text:
            continue
        if text.startswith("profile:"):
            out.append(text.split(":", 1)[1])
            continue
        try:
            out.append(Identity.parse(text))
        except IdentityError as exc:
            raise CommandError(
                f"{path}:{number}: {exc}. One identity per line: email:<address>, user:<id>, "
                "anonymous:<id>, external:<ns>:<id> or profile:<profile id>"
            ) from None
    return out


def stored_profiles(*, with_email: bool = False, chunk: int = 500) -> Iterator[Profile]:
    """Every profile in the site's database (read straight from the table, in chunks)."""
    from persona_django.models import ProfileRecord

    rows = ProfileRecord.objects.order_by("id")
    if with_email:
        rows = rows.filter(data__traits__has_key="email")
    for data, revision in rows.values_list("data", "revision").iterator(chunk_size=chunk):
        try:
            profile = Profile.from_dict(data)
        except PersonaError:
            continue
        profile.revision = revision
        yield profile


class Command(BaseCommand):
    help = "Send a personalized email campaign to a segment, everyone, or a list of people."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("campaign", help="campaign id (the send log key; reuse it to resume)")
        parser.add_argument("template", help="the HTML email template's name")
        parser.add_argument("--subject", required=True, help="subject line (template syntax ok)")
        who = parser.add_mutually_exclusive_group(required=True)
        who.add_argument("--segment", help="send to the profiles in this segment")
        who.add_argument("--all", action="store_true", help="every profile with an email address")
        who.add_argument("--recipients", metavar="FILE", help="a file of identities, one a line")
        parser.add_argument("--from", dest="from_email", help="sender (default DEFAULT_FROM_EMAIL)")
        parser.add_argument("--text-template", help="a plain-text template (default: from HTML)")
        parser.add_argument(
            "--batch-size",
            type=int,
            default=100,
            help="recipients per backend connection (default 100)",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="decide and render, report, send nothing"
        )
        parser.add_argument(
            "--retry-failed", action="store_true", help="also retry recipients logged as failed"
        )
        parser.add_argument(
            "--retry-skipped",
            action="store_true",
            help="also retry recipients logged as skipped (e.g. consent since)",
        )
        parser.add_argument(
            "--no-track-links",
            action="store_true",
            help="do not add the click-tracking parameter to links",
        )
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    def handle(self, *args: Any, **options: Any) -> None:
        from persona_django.runtime import get_persona

        persona = get_persona()
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1")
        try:
            campaign = Campaign(
                options["campaign"],
                template_name=options["template"],
                text_template_name=options["text_template"],
                subject=options["subject"],
                from_email=options["from_email"],
                persona=persona,
                track_links=not options["no_track_links"],
            )
        except PersonaError as exc:
            raise CommandError(str(exc)) from None
        recipients: list[Any]
        if options["segment"]:
            name = options["segment"]
            if name not in persona.segments:
                known = ", ".join(persona.segments.names()) or "(none)"
                raise CommandError(f"no segment named {name!r}; defined: {known}")
            now = time.time()
            recipients = [
                p
                for p in stored_profiles()
                if persona.segments.test(
                    name, persona.subject(p, campaign.decision_context, now=now)
                )
            ]
        elif options["all"]:
            recipients = list(stored_profiles(with_email=True))
        else:
            recipients = list(_identities(options["recipients"]))
        verbosity = options.get("verbosity", 1)
        progress = Progress(
            self.stderr, len(recipients), enabled=not options["no_progress"] and verbosity > 0
        )
        report = campaign.send(
            recipients,
            batch_size=options["batch_size"],
            dry_run=options["dry_run"],
            retry_failed=options["retry_failed"],
            retry_skipped=options["retry_skipped"],
            progress=progress.update,
        )
        progress.finish(report)
        self._summary(report, verbosity)

    def _summary(self, report: SendReport, verbosity: int) -> None:
        counts = report.counts
        head = "dry run: would send" if report.dry_run else "sent"
        self.stdout.write(
            f"campaign {report.campaign}: {head}={counts[SENT]} skipped={counts[SKIPPED]} "
            f"failed={counts[FAILED]} already done={counts[ALREADY]}"
        )
        for status in (SKIPPED, FAILED):
            for reason, n in sorted(report.reasons(status).items(), key=lambda kv: -kv[1]):
                self.stdout.write(f"  {status}: {n} x {reason}")
        if verbosity >= 2:
            for r in report.results:
                if r.status in (SKIPPED, FAILED):
                    who = r.profile_id or "?"
                    self.stdout.write(f"  {r.status} {who} {r.email or ''}: {r.reason}")
