"""Personalized email: one template, each recipient's own variants, any Django email backend.

An email template uses the same ``{% personalize %}`` slots as the site's pages::

    {% load persona %}
    {% personalize "hero" %}
      {% variant "vip" %}<h1>Thanks for being a regular</h1>
                         <a href="https://shop.example/vip">Your VIP offers</a>
      {% default %}<h1>New this week</h1>
    {% endpersonalize %}

and :class:`Campaign` renders it per recipient through the same decision engine the web uses
(same segments, same slots, same sticky experiment buckets), then sends it through Django's
email API on one connection per batch — SMTP, the console, or any django-anymail ESP::

    from persona_email.sending import Campaign

    campaign = Campaign("spring-2026", template_name="emails/spring.html",
                        subject="Spring is here", from_email="shop@example.com")
    report = campaign.send(profile_ids)          # or Profiles, or Identities
    report.counts   # {"sent": 812, "skipped": 96, "failed": 3, "already": 0}
    for r in report.results: r.profile_id, r.email, r.status, r.reason, r.variants

Per recipient, in order: a profile must exist; ``marketing`` consent must allow (else
*skipped*, with the reason); it needs an email address (missing → *skipped*, malformed →
*failed*); every ``{% personalize %}`` slot in the template must exist (else *failed*:
``slot 'x' is not defined``); then the message is rendered and sent (a backend or ESP error →
*failed* with its message). Nothing stops the rest of the send.

**Exposures** are recorded with channel ``email`` after a message went out, like the web
records them: for experiment decisions (``exposures="all"`` records every decision).

**Click tracking.** Every ``http(s)`` link in the HTML (and text) body gets a signed
``pzc`` query parameter carrying (campaign, profile, slot, variant) of the ``{% personalize %}``
branch the link is in (slot and variant empty outside any). An ESP's ``clicked`` webhook
(see :mod:`persona_email.webhooks`) turns it back into a conversion for that variant.

**The send log** (:class:`~persona_email.models.CampaignSend`) makes a send resumable: a
recipient is claimed (a ``sending`` row) before the message is handed to the backend, so a
resumed or concurrent send never sends to the same profile twice. Recipients already in the
log are reported as ``already``; ``retry_failed`` / ``retry_skipped`` try those again.

Templates may ``{% extends %}``/``{% include %}`` others; personalize blocks in a parent or
included template are decided and rendered, but links in them carry only the campaign
(no slot/variant). Edge mode (``{% personalize "x" edge %}``) needs a browser and is refused.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import hmac
import logging
import re
import secrets
import smtplib
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from html import unescape
from typing import Any

import attrs
from django.core.exceptions import ValidationError
from django.core.mail import EmailMultiAlternatives, get_connection
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.template import Context, engines
from django.template.backends.django import DjangoTemplates
from django.template.base import NodeList, Template
from django.template.loader import get_template
from django.utils import timezone
from django.utils.safestring import SafeString, mark_safe

from persona_django.templatetags.persona import PersonalizeNode
from persona_sdk import Decision, Identity, Persona, Profile, Slot
from persona_sdk.errors import PersonaError
from persona_sdk.rules.subject import Subject

from .audience import email_of

__all__ = [
    "CLICK_PARAM",
    "Campaign",
    "CampaignError",
    "EmailPersona",
    "RecipientResult",
    "RenderedEmail",
    "SendReport",
    "read_click_token",
]

log = logging.getLogger("persona_email")

SENT = "sent"
SKIPPED = "skipped"
FAILED = "failed"
#: in the send log from an earlier run: not sent again
ALREADY = "already"

#: the query parameter tracked links carry
CLICK_PARAM = "pzc"
_SALT = "persona_email.click"
_CAMPAIGN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,199}$")

# region markers wrapped around every {% personalize %} branch while rendering (private-use
# code points; removed before the message leaves)
_OPEN, _SEP, _END, _CLOSE = "\ue000", "\ue001", "\ue002", "\ue003"
_MARK = re.compile(f"{_OPEN}([^{_SEP}]*){_SEP}([^{_END}]*){_END}|{_CLOSE}")
_HREF = re.compile(r"""(href\s*=\s*)(["'])(https?://[^"'<>\s]+)\2""")
_HREF_ANY_CASE = re.compile(r"""(\bhref\s*=\s*)(["'])(https?://[^"'<>\s]+)\2""", re.I)
_URL = re.compile(r"""https?://[^\s<>"']+""")
_EXPLAIN = re.compile(r"<!-- persona: .*? -->")


class CampaignError(PersonaError):
    """The campaign cannot be sent at all (bad id, template, edge mode...)."""


# -- the per-recipient stand-in for request.persona ----------------------------------------
class EmailRequest:
    """What ``{% personalize %}`` finds as ``request`` when an email is rendered."""

    __slots__ = ("persona",)
    path = "/"
    method = "GET"

    def __init__(self, persona: EmailPersona) -> None:
        self.persona = persona


class EmailPersona:
    """``request.persona`` for one recipient of an email: same interface the tag uses
    (:class:`persona_django.request.RequestPersona`): ``persona``, ``decide(slot)`` memoized
    per slot name, ``decisions``, ``personalized``, ``edge``, ``preview``."""

    __slots__ = (
        "decisions",
        "edge",
        "gpc",
        "persona",
        "personalized",
        "preview",
        "profile",
        "subject",
    )

    def __init__(self, persona: Persona, profile: Profile, subject: Subject) -> None:
        self.persona = persona
        self.profile = profile
        self.subject = subject
        self.decisions: dict[str, Decision] = {}
        self.personalized = False
        self.edge = False
        self.preview: dict[str, str] | None = None
        self.gpc = False

    def may(self, purpose: str) -> bool:
        return self.persona.may(self.profile, purpose)

    def decide(self, slot: Slot | str, *, edge: bool = False) -> Decision:
        name = slot if isinstance(slot, str) else slot.name
        cached = self.decisions.get(name)
        if cached is not None:
            return cached
        decision = self.persona.decide_or_default(slot, self.subject)
        self.decisions[name] = decision
        self.personalized = True
        return decision


# -- the template, prepared once -----------------------------------------------------------
class _Marked(NodeList):
    """A branch of a ``{% personalize %}`` block that marks where its output starts and
    ends, so links inside can be attributed to (slot, variant)."""

    owner: PersonalizeNode
    key: str | None

    def render(self, context: Context) -> SafeString:
        inner = super().render(context)
        name = self.owner.slot_expr.resolve(context, ignore_failures=True)
        key = self.key
        if key is None:  # the default branch: whatever key the decision's default has
            rp = getattr(context.get("request"), "persona", None)
            decision = rp.decisions.get(str(name)) if rp is not None else None
            key = decision.variant if decision is not None else "default"
        return mark_safe(f"{_OPEN}{name}{_SEP}{key}{_END}{inner}{_CLOSE}")


def _marked(nodes: NodeList, owner: PersonalizeNode, key: str | None) -> _Marked:
    out = _Marked(nodes)
    out.owner = owner
    out.key = key
    return out


def _django_engine() -> Any:
    for engine in engines.all():
        if isinstance(engine, DjangoTemplates):
            return engine.engine
    raise CampaignError("no DjangoTemplates engine is configured in TEMPLATES")


def _compile(template_name: str | None, source: str | None) -> Template:
    """A private copy of the template (its nodes are wrapped; the loader's cached copy,
    which pages may share, is never touched)."""
    if source is not None:
        return Template(source, engine=_django_engine())
    assert template_name is not None
    try:
        loaded = get_template(template_name)
    except Exception as exc:
        raise CampaignError(f"template {template_name!r} does not load: {exc}") from exc
    base = getattr(loaded, "template", None)
    if not isinstance(base, Template):
        raise CampaignError(f"template {template_name!r} is not a Django template")
    return Template(base.source, origin=base.origin, name=base.name, engine=base.engine)


@attrs.define
class _Prepared:
    template: Template
    nodes: list[PersonalizeNode]

    @classmethod
    def build(cls, template_name: str | None, source: str | None, what: str) -> _Prepared:
        template = _compile(template_name, source)
        nodes = template.nodelist.get_nodes_by_type(PersonalizeNode)
        for node in nodes:
            if node.edge:
                raise CampaignError(
                    f"{what}: {{% personalize {node.slot_expr.token} edge %}} needs a browser; "
                    "edge mode cannot be used in email (remove 'edge')"
                )
            for branch in node.branches:
                branch.nodelist = _marked(branch.nodelist, node, branch.key)
            node.default_nodelist = _marked(node.default_nodelist, node, None)
        return cls(template, nodes)


@attrs.frozen
class RenderedEmail:
    """One recipient's message, before sending."""

    subject: str
    html: str
    text: str
    decisions: Mapping[str, Decision]
    #: template problems for this recipient (unknown slots); empty when fine
    problems: tuple[str, ...] = ()

    @property
    def variants(self) -> dict[str, str]:
        return {name: d.variant for name, d in self.decisions.items()}


@attrs.frozen
class RecipientResult:
    """What happened to one recipient."""

    profile_id: str | None
    email: str | None
    status: str
    reason: str = ""
    variants: Mapping[str, str] = attrs.field(factory=dict)
    message_id: str = ""


@attrs.define
class SendReport:
    campaign: str
    dry_run: bool = False
    results: list[RecipientResult] = attrs.Factory(list)

    @property
    def counts(self) -> dict[str, int]:
        out = {SENT: 0, SKIPPED: 0, FAILED: 0, ALREADY: 0}
        for r in self.results:
            out[r.status] = out.get(r.status, 0) + 1
        return out

    def by_status(self, status: str) -> list[RecipientResult]:
        return [r for r in self.results if r.status == status]

    def reasons(self, status: str) -> dict[str, int]:
        """How many recipients got each reason (``no email address``: 12, ...)."""
        out: dict[str, int] = {}
        for r in self.results:
            if r.status == status:
                out[r.reason] = out.get(r.reason, 0) + 1
        return out


Recipient = Profile | Identity | str


def _batches(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


# -- click tokens --------------------------------------------------------------------------
# ``<payload>.<mac>``: the payload is campaign, profile id, slot and variant joined by \x1f,
# base64url; the mac is the first 16 bytes of HMAC-SHA256 under a key derived from
# SECRET_KEY (SECRET_KEY_FALLBACKS are accepted when reading). URL-safe as it is, and a few
# microseconds per token: a campaign signs several per recipient.
def _click_key(secret: str | bytes) -> bytes:
    raw = secret.encode() if isinstance(secret, str) else secret
    return hashlib.sha256(_SALT.encode() + b"\x00" + raw).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def make_click_token(key: bytes, campaign: str, profile_id: str, slot: str, variant: str) -> str:
    payload = _b64("\x1f".join((campaign, profile_id, slot, variant)).encode("utf-8"))
    mac = hmac.new(key, payload.encode("ascii"), hashlib.sha256).digest()[:16]
    return f"{payload}.{_b64(mac)}"


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def read_click_token(url: str | None) -> dict[str, str | None] | None:
    """The (campaign, profile, slot, variant) a tracked link carries, if its signature is
    good; else None."""
    if not url or CLICK_PARAM not in url:
        return None
    from urllib.parse import parse_qs, urlsplit

    from django.conf import settings

    values = parse_qs(urlsplit(url).query).get(CLICK_PARAM)
    if not values or values[-1].count(".") != 1:
        return None
    payload, _, mac = values[-1].partition(".")
    try:
        given = _unb64(mac)
        secrets_ = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
        if not any(
            hmac.compare_digest(
                hmac.new(_click_key(s), payload.encode("ascii"), hashlib.sha256).digest()[:16],
                given,
            )
            for s in secrets_
        ):
            return None
        parts = _unb64(payload).decode("utf-8").split("\x1f")
    except (ValueError, UnicodeError):
        return None
    if len(parts) != 4:
        return None
    campaign, profile_id, slot, variant = parts
    return {
        "campaign": campaign,
        "profile_id": profile_id,
        "slot": slot or None,
        "variant": variant or None,
    }


def _strip_param(url: str) -> str:
    """``url`` without the tracking parameter (what a report should show)."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != CLICK_PARAM]
    return urlunsplit(parts._replace(query=urlencode(query)))


class _Links:
    """Adds the click parameter to every link of one recipient's message."""

    def __init__(self, campaign: str, profile_id: str, enabled: bool, key: bytes) -> None:
        self.campaign = campaign
        self.profile_id = profile_id
        self.enabled = enabled
        self.key = key
        self._tokens: dict[tuple[str, str], str] = {}

    def token(self, region: tuple[str, str]) -> str:
        token = self._tokens.get(region)
        if token is None:
            token = self._tokens[region] = make_click_token(
                self.key, self.campaign, self.profile_id, region[0], region[1]
            )
        return token

    def add(self, url: str, region: tuple[str, str], amp: str) -> str:
        base, hash_, fragment = url.partition("#")
        joiner = amp if "?" in base else "?"
        return f"{base}{joiner}{CLICK_PARAM}={self.token(region)}{hash_}{fragment}"

    def process(self, text: str, *, html: bool) -> str:
        """Remove the region markers; tag links with the region they were in."""
        if _OPEN not in text and _CLOSE not in text:
            if not self.enabled:
                return text
            return self._rewrite(text, [0], [("", "")], html)
        clean: list[str] = []
        offsets = [0]
        regions: list[tuple[str, str]] = [("", "")]
        stack: list[tuple[str, str]] = []
        pos = length = 0
        for match in _MARK.finditer(text):
            piece = text[pos : match.start()]
            clean.append(piece)
            length += len(piece)
            if match.group(0) == _CLOSE:
                if stack:
                    stack.pop()
            else:
                stack.append((match.group(1), match.group(2)))
            offsets.append(length)
            regions.append(stack[-1] if stack else ("", ""))
            pos = match.end()
        clean.append(text[pos:])
        joined = "".join(clean)
        if not self.enabled:
            return joined
        return self._rewrite(joined, offsets, regions, html)

    def _rewrite(
        self, text: str, offsets: list[int], regions: list[tuple[str, str]], html: bool
    ) -> str:
        def region_at(index: int) -> tuple[str, str]:
            return regions[bisect.bisect_right(offsets, index) - 1]

        if html:
            # the case-sensitive pattern is several times faster; it finds every link unless
            # some attribute is spelled HREF/Href
            pattern = _HREF if text.count("href") == text.lower().count("href") else _HREF_ANY_CASE
            return pattern.sub(
                lambda m: (
                    f"{m.group(1)}{m.group(2)}"
                    f"{self.add(m.group(3), region_at(m.start(3)), '&amp;')}{m.group(2)}"
                ),
                text,
            )
        return _URL.sub(lambda m: self.add(m.group(0), region_at(m.start()), "&"), text)


# -- the campaign --------------------------------------------------------------------------
class Campaign:
    """A personalized email: templates prepared once, rendered and sent per recipient.

    ``template_name`` (or ``template_string``) is the HTML body; ``text_template_name`` /
    ``text_template_string`` an optional plain-text body (otherwise the HTML without tags).
    ``subject`` may use template syntax (``{{ recipient.traits.first_name }}``).
    ``context``: extra template variables for every recipient. ``decision_context``: what
    rules see as the request context (``{"channel": "email", "campaign": <id>}`` is always
    there; web-only context such as device or geo is absent).
    """

    def __init__(
        self,
        campaign_id: str,
        *,
        subject: str,
        template_name: str | None = None,
        template_string: str | None = None,
        text_template_name: str | None = None,
        text_template_string: str | None = None,
        from_email: str | None = None,
        persona: Persona | None = None,
        context: Mapping[str, Any] | None = None,
        decision_context: Mapping[str, Any] | None = None,
        track_links: bool = True,
        exposures: str = "experiments",
        purpose: str = "marketing",
        headers: Mapping[str, str] | None = None,
        reply_to: Sequence[str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(campaign_id, str) or not _CAMPAIGN.match(campaign_id):
            raise CampaignError(
                f"a campaign id is 1-200 letters, digits, '-', '_', '.' or ':', got {campaign_id!r}"
            )
        if (template_name is None) == (template_string is None):
            raise CampaignError("give template_name or template_string (one of them)")
        if exposures not in ("experiments", "all", "none"):
            raise CampaignError("exposures is 'experiments', 'all' or 'none'")
        if persona is None:
            from persona_django.runtime import get_persona

            persona = get_persona()
        self.id = campaign_id
        self.persona = persona
        self.purpose = persona.policy.check(purpose)
        self.html = _Prepared.build(template_name, template_string, "the HTML template")
        self.text: _Prepared | None = None
        if text_template_name is not None or text_template_string is not None:
            self.text = _Prepared.build(
                text_template_name, text_template_string, "the text template"
            )
        self.subject_template: Template | None = None
        self.subject = subject
        if "{%" in subject or "{{" in subject:
            self.subject_template = Template(subject, engine=_django_engine())
        self.from_email = from_email
        self.context = dict(context or {})
        self.decision_context = {
            **dict(decision_context or {}),
            "channel": "email",
            "campaign": campaign_id,
        }
        self.track_links = track_links
        self.exposures = exposures
        self.headers = dict(headers or {})
        self.reply_to = list(reply_to or [])
        self.clock = clock
        from django.conf import settings

        self._click_key = _click_key(settings.SECRET_KEY)
        self._adhoc: dict[tuple[int, str], str | None] = {}
        self._adhoc_segments: Any = None

    # -- rendering -------------------------------------------------------------------------
    def _slot_problem(self, node: PersonalizeNode, context: Context) -> str | None:
        """Why this recipient's ``{% personalize %}`` would show a broken slot, or None."""
        value = node.slot_expr.resolve(context, ignore_failures=True)
        name = None if value is None else str(value)
        persona = self.persona
        if name is not None and name in persona.slots:
            return None
        if persona.segments is not self._adhoc_segments:
            self._adhoc.clear()
            self._adhoc_segments = persona.segments
        key = (id(node), name or "")
        if key in self._adhoc:
            return self._adhoc[key]
        problem: str | None = None
        if name is None or not name:
            problem = f"slot name {node.slot_expr.token} resolves to nothing"
        elif not node.branches:
            problem = f"slot {name!r} is not defined"
        else:
            try:
                persona.build_slot(name, node.adhoc_spec(name), where="template")
            except PersonaError as exc:
                problem = f"slot {name!r}: {exc}"
        self._adhoc[key] = problem
        return problem

    def _render(self, prepared: _Prepared, context: Context) -> tuple[str, list[str]]:
        problems = [p for p in (self._slot_problem(n, context) for n in prepared.nodes) if p]
        return prepared.template.render(context), problems

    def render(self, profile: Profile, *, email: str | None = None) -> RenderedEmail:
        """Decide and render ``profile``'s message (nothing recorded, nothing sent)."""
        persona = self.persona
        now = self.clock()
        subject = persona.subject(profile, self.decision_context, now=now)
        rp = EmailPersona(persona, profile, subject)
        address = email if email is not None else email_of(profile)
        traits = {k: t.value for k, t in profile.traits.items()}
        data = {
            **self.context,
            "request": EmailRequest(rp),
            "campaign": self.id,
            "recipient": {"email": address, "profile_id": profile.id, "traits": traits},
        }
        context = Context(data, autoescape=True)
        links = _Links(self.id, profile.id, self.track_links, self._click_key)
        html, problems = self._render(self.html, context)
        if "<!-- persona:" in html:  # DEBUG_EXPLAIN comments never go out in an email
            html = _EXPLAIN.sub("", html)
        html = links.process(html, html=True)
        if self.text is not None:
            text_ctx = Context(data, autoescape=False)
            text, more = self._render(self.text, text_ctx)
            problems.extend(p for p in more if p not in problems)
            text = links.process(_EXPLAIN.sub("", text), html=False)
        else:
            text = _html_to_text(html)
        if self.subject_template is not None:
            subject_text = self.subject_template.render(Context(data, autoescape=False))
            subject_text = " ".join(_MARK.sub("", subject_text).split())  # no links tagged
        else:
            subject_text = self.subject
        return RenderedEmail(subject_text, html, text, dict(rp.decisions), tuple(problems))

    # -- sending ---------------------------------------------------------------------------
    def _resolve(self, recipient: Recipient) -> tuple[Profile | None, str]:
        store = self.persona.store
        try:
            if isinstance(recipient, Profile):
                return recipient, ""
            if isinstance(recipient, Identity):
                pid = store.lookup(recipient)
                profile = store.load(pid) if pid else None
                return profile, "" if profile else f"no profile for {recipient}"
            profile = store.load(str(recipient))
            return profile, "" if profile else f"no profile {recipient!r}"
        except Exception as exc:
            return None, f"cannot load recipient {recipient!r}: {exc}"

    def check(self, profile: Profile) -> tuple[str, str, str | None]:
        """``(status, reason, address)`` before rendering: the consent gate and the
        address checks. ``status`` is ``sent`` when the recipient may be sent to."""
        raw = profile.traits.get("email")
        value = raw.value if raw is not None else None
        if not self.persona.may(profile, self.purpose):
            state = profile.consent_state(self.purpose).value
            return SKIPPED, f"no {self.purpose} consent ({state})", None
        if value is None or (isinstance(value, str) and not value.strip()):
            return SKIPPED, "no email address", None
        if not isinstance(value, str):
            return FAILED, f"malformed address: {value!r}", None
        address = value.strip()
        try:
            validate_email(address)
        except ValidationError:
            return FAILED, f"malformed address: {address!r}", None
        return SENT, "", address

    def message(
        self, rendered: RenderedEmail, address: str, profile_id: str, connection: Any = None
    ) -> EmailMultiAlternatives:
        msg = EmailMultiAlternatives(
            subject=rendered.subject,
            body=rendered.text,
            from_email=self.from_email,
            to=[address],
            reply_to=self.reply_to or None,
            headers={"X-Persona-Campaign": self.id, **self.headers},
            connection=connection,
        )
        msg.attach_alternative(rendered.html, "text/html")
        # django-anymail: becomes the ESP's custom args / metadata, and comes back on every
        # tracking event (other backends ignore the attribute)
        msg.metadata = {"persona_campaign": self.id, "persona_profile": profile_id}  # type: ignore[attr-defined]
        return msg

    def send(
        self,
        recipients: Iterable[Recipient],
        *,
        connection: Any = None,
        batch_size: int = 100,
        dry_run: bool = False,
        use_log: bool = True,
        retry_failed: bool = False,
        retry_skipped: bool = False,
        progress: Callable[[SendReport], None] | None = None,
    ) -> SendReport:
        """Send to ``recipients`` (profiles, profile ids or identities), ``batch_size`` at a
        time over one backend connection per batch. ``dry_run`` decides and renders
        everything and reports what would happen, without sending, logging or recording
        exposures. ``progress(report)`` is called after each recipient."""
        report = SendReport(self.id, dry_run=dry_run)
        run = secrets.token_hex(8)
        log_on = use_log and not dry_run
        retry = {s for s, on in ((FAILED, retry_failed), (SKIPPED, retry_skipped)) if on}
        for batch in _batches(recipients, max(1, batch_size)):
            resolved = [self._resolve(r) for r in batch]
            existing: dict[str, Any] = {}
            if use_log:
                from .models import CampaignSend

                ids = [p.id for p, _ in resolved if p is not None]
                existing = {
                    row.profile_id: row
                    for row in CampaignSend.objects.filter(campaign=self.id, profile_id__in=ids)
                }
            conn = None
            try:
                for profile, problem in resolved:
                    if profile is None:
                        report.results.append(RecipientResult(None, None, FAILED, problem))
                    else:
                        row = existing.get(profile.id)
                        if row is not None and row.status not in retry:
                            report.results.append(
                                RecipientResult(
                                    profile.id,
                                    None,
                                    ALREADY,
                                    f"already {row.status}"
                                    + (f": {row.reason}" if row.reason else ""),
                                    dict(row.variants or {}),
                                    row.message_id,
                                )
                            )
                        else:
                            if conn is None and not dry_run:
                                conn = connection or get_connection(fail_silently=False)
                                conn.open()
                            result, conn = self._one(profile, row, conn, run, log_on, dry_run)
                            report.results.append(result)
                    if progress is not None:
                        progress(report)
            finally:
                if conn is not None:
                    try:
                        conn.close()
                    except Exception:
                        log.warning(
                            "persona_email: closing the email connection failed", exc_info=True
                        )
        return report

    def _one(
        self, profile: Profile, row: Any, conn: Any, run: str, log_on: bool, dry_run: bool
    ) -> tuple[RecipientResult, Any]:
        pid = profile.id
        status, reason, address = self.check(profile)
        rendered: RenderedEmail | None = None
        if status == SENT:
            assert address is not None
            try:
                rendered = self.render(profile, email=address)
            except Exception as exc:
                log.exception("persona_email: rendering campaign %r for %s failed", self.id, pid)
                status, reason = FAILED, f"render error: {type(exc).__name__}: {exc}"
            else:
                if rendered.problems:
                    status, reason = FAILED, "; ".join(rendered.problems)
        variants = rendered.variants if rendered is not None else {}
        email = address or _raw_email(profile)
        if dry_run:
            return RecipientResult(pid, email, status, reason or "dry run", variants), conn
        if status != SENT:
            if log_on:
                self._record(pid, row, status, reason, variants)
            return RecipientResult(pid, email, status, reason, variants), conn
        if log_on and not self._claim(pid, row, run):
            return RecipientResult(pid, email, ALREADY, "claimed by another send", variants), conn
        assert rendered is not None and address is not None
        message_id = ""
        try:
            msg = self.message(rendered, address, pid, conn)
            sent = conn.send_messages([msg])
            status_set = getattr(getattr(msg, "anymail_status", None), "status", None) or set()
            message_id = str(getattr(getattr(msg, "anymail_status", None), "message_id", "") or "")
            bad = status_set & {"rejected", "invalid", "failed"}
            if bad:
                status, reason = FAILED, f"rejected by the ESP ({', '.join(sorted(bad))})"
            elif not sent:
                status, reason = FAILED, "the email backend sent nothing"
        except Exception as exc:
            status, reason = FAILED, f"send error: {type(exc).__name__}: {_short(exc)}"
            conn = self._recover(conn, exc)
        if log_on:
            self._record(pid, None, status, reason, variants, message_id=message_id, claimed=True)
        if status == SENT:
            self._record_exposures(pid, rendered)
        return RecipientResult(pid, address, status, reason, variants, message_id), conn

    def _recover(self, conn: Any, exc: Exception) -> Any:
        """After a failed send the SMTP session may be unusable: start a fresh one (a
        refused recipient leaves it usable; smtplib has already reset it)."""
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            return conn
        try:
            conn.close()
        except Exception:
            pass
        try:
            conn.open()
        except Exception:
            log.warning("persona_email: reopening the email connection failed", exc_info=True)
        return conn

    def _record_exposures(self, profile_id: str, rendered: RenderedEmail) -> None:
        if self.exposures == "none":
            return
        for decision in rendered.decisions.values():
            if self.exposures == "experiments" and decision.assignment is None:
                continue
            try:
                self.persona.record_exposure(profile_id, decision, channel="email")
            except Exception:
                log.exception("persona_email: recording the exposure of %r failed", decision.slot)

    # -- the send log ----------------------------------------------------------------------
    def _claim(self, profile_id: str, row: Any, run: str) -> bool:
        from .models import CampaignSend

        now = timezone.now()
        if row is not None:  # retrying a failed/skipped row: only if still in that state
            return (
                CampaignSend.objects.filter(pk=row.pk, status=row.status).update(
                    status=CampaignSend.SENDING, run=run, reason="", updated_at=now
                )
                == 1
            )
        try:
            with transaction.atomic():
                CampaignSend.objects.create(
                    campaign=self.id,
                    profile_id=profile_id,
                    status=CampaignSend.SENDING,
                    run=run,
                    created_at=now,
                    updated_at=now,
                )
        except IntegrityError:
            return False
        return True

    def _record(
        self,
        profile_id: str,
        row: Any,
        status: str,
        reason: str,
        variants: Mapping[str, str],
        *,
        message_id: str = "",
        claimed: bool = False,
    ) -> None:
        from .models import CampaignSend

        fields = {
            "status": status,
            "reason": reason[:2000],
            "variants": dict(variants),
            "message_id": message_id[:200],
            "updated_at": timezone.now(),
        }
        if claimed or row is not None:
            CampaignSend.objects.filter(campaign=self.id, profile_id=profile_id).update(**fields)
            return
        try:
            with transaction.atomic():
                CampaignSend.objects.create(campaign=self.id, profile_id=profile_id, **fields)
        except IntegrityError:
            pass  # another send recorded this recipient first


def _raw_email(profile: Profile) -> str | None:
    trait = profile.traits.get("email")
    return str(trait.value) if trait is not None and trait.value is not None else None


def _short(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text[:500]


_TOKEN = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9]*)([^>]*)>|<!--.*?-->|<![^>]*>", re.S)
_ATTR_HREF = re.compile(r"""href\s*=\s*(["'])(.*?)\1""", re.I | re.S)
_BLOCKS = frozenset(
    {
        "p",
        "div",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "li",
        "tr",
        "table",
        "section",
        "header",
        "footer",
        "br",
        "blockquote",
        "ul",
        "ol",
    }
)
_SKIP = frozenset({"head", "style", "script", "title"})


def _html_to_text(html: str) -> str:
    """A readable plain-text part from the (our own, rendered) HTML, in one pass over its
    tags: links kept as ``text (url)``, block ends as line breaks, ``<head>``/``<style>``/
    ``<script>`` dropped, entities decoded."""
    parts: list[str] = []
    hrefs: list[str | None] = []
    skip: str | None = None
    pos = 0
    for match in _TOKEN.finditer(html):
        if skip is None:
            parts.append(html[pos : match.start()])
        pos = match.end()
        name = match.group(2)
        if name is None:  # a comment or <!doctype>
            continue
        name = name.lower()
        closing = match.group(1) == "/"
        if skip is not None:
            if closing and name == skip:
                skip = None
            continue
        if name in _SKIP and not closing:
            skip = name
        elif name == "a":
            if closing:
                href = hrefs.pop() if hrefs else None
                if href:
                    parts.append(f" ({href})")
            else:
                found = _ATTR_HREF.search(match.group(3))
                hrefs.append(found.group(2) if found else None)
        elif name in _BLOCKS and (closing or name == "br"):
            parts.append("\n")
    if skip is None:
        parts.append(html[pos:])
    out: list[str] = []
    for line in unescape("".join(parts)).splitlines():
        line = " ".join(line.split())
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip() + "\n"
