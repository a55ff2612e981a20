"""``{% load persona %}``: personalized blocks in Django templates.

::

    {% personalize "hero" %}
      {% variant "vip" %}<h1>Thanks for being a regular</h1>
      {% variant "welcome-back" %}<h1>Welcome back</h1>
      {% variant rule='{"context.device.type": "mobile"}' %}<h1>Get the app</h1>
      {% default %}<h1>Hello</h1>
    {% endpersonalize %}

The slot name is a literal or a template variable.

* A slot **defined** in the site's definitions (``PERSONA["DEFINITIONS"]``): each
  ``{% variant "key" %}`` is that slot's variant ``key``; the definition's strategy and
  targeting decide. A variant the template does not spell out shows the default.
* Any other name is an **ad-hoc** slot the template itself defines, in the order written
  (the first that matches wins): ``{% variant "returning" %}`` targets the segment
  ``returning`` (the variant key is the segment's name); ``{% variant rule='<JSON>' %}``
  targets a rule (key ``rule-1``, ``rule-2``... in the order written; give a key with
  ``{% variant "mobile" rule='...' %}``); ``segment="..."`` targets a segment under another
  key. The slot is compiled once, on first render, never per request.
  With ``strategy="experiment"`` (and optionally ``holdout=0.1``, ``version="2"``) on the
  opening tag, ad-hoc variants are the arms of a sticky experiment: ``{% variant "a" %}``
  then names an arm shown to everyone (``weight=2`` weighs it), ``segment=``/``rule=`` still
  restrict who may enter it.

Only the chosen branch is rendered. Whatever goes wrong while personalizing (an unknown
slot or segment, a failing decision, a branch that raises) renders the default, logs, and
never turns the page into a 500.

``{% personalize "hero" edge %}`` (edge mode) renders the same HTML for everyone: each
variant inert in a ``<template data-persona-variant="key">`` and the default visibly in a
``<div data-persona-slot="hero" data-persona-state="pending">`` placeholder; ``persona.js``
(``{% persona_script %}``) asks ``/persona/decide`` which variant this visitor gets and swaps
it in. Edge slots must be defined slots (the browser cannot send rules).

``{% persona_script %}`` emits the ``<script>`` tag for ``persona.js`` (with the endpoint
URLs and the edge timeout) and a little CSS that hides a pending edge slot for at most
``PERSONA["EDGE_TIMEOUT_MS"]`` (a CSS animation reveals it after that even if the script
never runs; with scripts disabled it is never hidden).
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from django import template
from django.conf import settings
from django.template.base import FilterExpression, Node, NodeList, TextNode
from django.template.defaulttags import CommentNode
from django.templatetags.static import static
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe
from django.utils.text import unescape_string_literal

from persona_sdk import Decision, Persona, Slot
from persona_sdk.decisions import KEY
from persona_sdk.errors import PersonaError, RuleError
from persona_sdk.rules.compiler import compile_rule
from persona_sdk.rules.fields import profile_fields

from ..conf import get_config

register = template.Library()
log = logging.getLogger("persona_django")

__all__ = ["PersonalizeNode", "register"]

_BRANCH_TAGS = ("variant", "default", "endpersonalize")
_OPTION = re.compile(r"^(?P<name>[A-Za-z_]+)=(?P<value>.+)$", re.S)
_warned_once: set[str] = set()


def _literal(bit: str) -> str | None:
    """The text of a quoted template literal (``"x"`` or ``'x'``), else None."""
    if len(bit) >= 2 and bit[0] == bit[-1] and bit[0] in "\"'":
        try:
            return str(unescape_string_literal(bit))
        except ValueError:
            return None
    return None


def _number(bit: str, what: str, tag: str) -> float:
    try:
        value = float(_literal(bit) or bit)
    except ValueError:
        raise template.TemplateSyntaxError(
            f"{{% {tag} %}}: {what} must be a number, got {bit}"
        ) from None
    return value


class Branch:
    """One ``{% variant %}`` of a ``{% personalize %}`` block."""

    def __init__(
        self,
        key: str,
        nodelist: NodeList,
        *,
        segment: str | None = None,
        rule: Any = None,
        weight: float | None = None,
        explicit_key: bool = True,
    ) -> None:
        self.key = key
        self.nodelist = nodelist
        self.segment = segment
        self.rule = rule
        self.weight = weight
        self.explicit_key = explicit_key


def _parse_variant(
    bits: list[str], rule_index: int, persona_conditions: Any
) -> tuple[str, dict[str, Any], bool]:
    """``{% variant "key" [rule='<json>'] [segment="name"] [weight=2] %}`` → key, spec, explicit."""
    if len(bits) < 2:
        raise template.TemplateSyntaxError(
            "{% variant %} needs an argument: a variant key or segment name "
            '({% variant "vip" %}) or a rule ({% variant rule=\'{"traits.plan": "pro"}\' %}).'
        )
    key: str | None = None
    spec: dict[str, Any] = {}
    for i, bit in enumerate(bits[1:]):
        option = _OPTION.match(bit)
        if option is None:
            text = _literal(bit)
            if i != 0 or text is None:
                raise template.TemplateSyntaxError(
                    f"{{% variant %}} takes a quoted key first, then rule=, segment= or weight=; "
                    f"got {bit!r}. Variant keys must be literals because the slot is compiled once."
                )
            if not KEY.match(text):
                raise template.TemplateSyntaxError(
                    f"{{% variant {bit} %}}: a variant key is 1-64 letters, digits, '-', '_' or '.'"
                )
            key = text
            continue
        name, value = option["name"], option["value"]
        if name in spec:
            raise template.TemplateSyntaxError(f"{{% variant %}}: {name}= is given twice")
        if name == "rule":
            text = _literal(value)
            if text is None:
                raise template.TemplateSyntaxError(
                    f"{{% variant rule=... %}}: the rule must be a quoted JSON literal, e.g. "
                    f'rule=\'{{"context.device.type": "mobile"}}\'; got {value}'
                )
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise template.TemplateSyntaxError(
                    f"{{% variant rule=... %}}: the rule is not valid JSON ({exc.msg} at "
                    f"line {exc.lineno} column {exc.colno}): {text}"
                ) from None
            try:
                compile_rule(
                    data, where="rule", fields=profile_fields, conditions=persona_conditions
                )
            except RuleError as exc:
                raise template.TemplateSyntaxError(
                    f"{{% variant rule=... %}}: the rule does not compile: {exc}"
                ) from None
            spec["rule"] = data
        elif name == "segment":
            text = _literal(value)
            if text is None or not text:
                raise template.TemplateSyntaxError(
                    f"{{% variant segment=... %}} takes a quoted segment name, got {value}"
                )
            spec["segment"] = text
        elif name == "weight":
            weight = _number(value, "weight", "variant")
            if not weight > 0 or weight == float("inf"):
                raise template.TemplateSyntaxError(
                    "{% variant weight=... %} must be a positive number"
                )
            spec["weight"] = weight
        else:
            raise template.TemplateSyntaxError(
                f"{{% variant %}}: unknown option {name}=; known: rule=, segment=, weight="
            )
    if "rule" in spec and "segment" in spec:
        raise template.TemplateSyntaxError("{% variant %}: target a segment or a rule, not both")
    explicit = key is not None
    if key is None:
        if "rule" in spec:
            key = f"rule-{rule_index}"
        elif "segment" in spec:
            key = spec["segment"]
        else:
            raise template.TemplateSyntaxError("{% variant %} needs a key, a segment= or a rule=.")
    return key, spec, explicit


def _conditions() -> Any:
    """Custom rule conditions registered by plugins (for compile-time rule checks)."""
    try:
        from ..runtime import get_persona

        return get_persona().registry.conditions
    except Exception:  # the site's configuration is broken: the system checks say so
        return None


@register.tag("personalize")
def do_personalize(parser: template.base.Parser, token: template.base.Token) -> PersonalizeNode:
    bits = token.split_contents()
    tag = bits[0]
    if len(bits) < 2:
        raise template.TemplateSyntaxError(
            f'{{% {tag} %}} needs a slot name: {{% {tag} "hero" %}} (or a template variable).'
        )
    slot = parser.compile_filter(bits[1])
    edge = False
    options: dict[str, Any] = {}
    for bit in bits[2:]:
        if bit == "edge":
            if edge:
                raise template.TemplateSyntaxError(f"{{% {tag} %}}: 'edge' is given twice")
            edge = True
            continue
        option = _OPTION.match(bit)
        name = option["name"] if option else bit
        if option is None or name not in ("strategy", "holdout", "version"):
            raise template.TemplateSyntaxError(
                f'{{% {tag} %}}: unknown option {name!r}; known: edge, strategy="experiment", '
                f'holdout=0.1, version="1"'
            )
        if name in options:
            raise template.TemplateSyntaxError(f"{{% {tag} %}}: {name}= is given twice")
        value = option["value"]
        if name == "strategy":
            text = _literal(value)
            if not text:
                raise template.TemplateSyntaxError(
                    f"{{% {tag} %}}: strategy= takes a quoted strategy name, "
                    'e.g. strategy="experiment"'
                )
            options["strategy"] = text
        elif name == "holdout":
            holdout = _number(value, "holdout", tag)
            if not 0.0 <= holdout < 1.0:
                raise template.TemplateSyntaxError(
                    f"{{% {tag} %}}: holdout must be in [0, 1), got {value}"
                )
            options["holdout"] = holdout
        else:
            options["version"] = _literal(value) or value
    if ("holdout" in options or "version" in options) and options.get(
        "strategy", "experiment"
    ) != "experiment":
        raise template.TemplateSyntaxError(
            f'{{% {tag} %}}: holdout= and version= go with strategy="experiment"'
        )
    if "holdout" in options or "version" in options:
        options.setdefault("strategy", "experiment")

    leading = parser.parse(_BRANCH_TAGS)
    for node in leading:
        if isinstance(node, CommentNode):
            continue
        if isinstance(node, TextNode) and not node.s.strip():
            continue
        raise template.TemplateSyntaxError(
            f"{{% {tag} %}}: content before the first {{% variant %}} or {{% default %}} "
            "would never be shown; put it inside a branch or outside the block."
        )

    branches: list[Branch] = []
    default: NodeList | None = None
    conditions: Any = None
    rules = 0
    while True:
        branch_token = parser.next_token()
        bits_b = branch_token.split_contents()
        command = bits_b[0]
        if command == "endpersonalize":
            break
        nodelist = parser.parse(_BRANCH_TAGS)
        if command == "default":
            if len(bits_b) > 1:
                raise template.TemplateSyntaxError("{% default %} takes no arguments")
            if default is not None:
                raise template.TemplateSyntaxError(
                    f"{{% {tag} %}} has two {{% default %}} branches; keep one."
                )
            default = nodelist
            continue
        if default is not None:
            raise template.TemplateSyntaxError(
                f"{{% {tag} %}}: {{% default %}} must be the last branch "
                "(a {% variant %} follows it)."
            )
        if any(b.startswith("rule=") for b in bits_b[1:]):
            rules += 1
            if conditions is None:
                conditions = _conditions()
        key, spec, explicit = _parse_variant(bits_b, rules, conditions)
        if any(b.key == key for b in branches):
            raise template.TemplateSyntaxError(
                f"{{% {tag} %}}: two {{% variant %}} branches use the key {key!r}"
            )
        branches.append(
            Branch(
                key,
                nodelist,
                segment=spec.get("segment"),
                rule=spec.get("rule"),
                weight=spec.get("weight"),
                explicit_key=explicit,
            )
        )
    return PersonalizeNode(slot, branches, default or NodeList(), edge=edge, options=options)


def _comment(text: str) -> str:
    """``text`` made safe to put inside an HTML comment."""
    while "--" in text:
        text = text.replace("--", "- -")
    return text


class PersonalizeNode(Node):
    child_nodelists: tuple[str, ...] = ("default_nodelist",)

    def __init__(
        self,
        slot: FilterExpression,
        branches: list[Branch],
        default: NodeList,
        *,
        edge: bool,
        options: dict[str, Any],
    ) -> None:
        self.slot_expr = slot
        self.branches = branches
        self.by_key = {b.key: b for b in branches}
        self.default_nodelist = default
        self.edge = edge
        self.options = options
        for i, branch in enumerate(branches):
            setattr(self, f"variant_nodelist_{i}", branch.nodelist)
        self.child_nodelists = (
            "default_nodelist",
            *(f"variant_nodelist_{i}" for i in range(len(branches))),
        )
        # ad-hoc slots, built once per (persona, segment registry) and slot name
        self._adhoc: dict[str, tuple[Any, Any, Slot | Exception]] = {}
        self._warned: set[str] = set()

    def __repr__(self) -> str:
        return f"<PersonalizeNode {self.slot_expr.token!r} {[b.key for b in self.branches]}>"

    # -- helpers ---------------------------------------------------------------------------
    def _warn(self, message: str, *args: Any) -> None:
        """A configuration problem: warned every time in DEBUG, once per node otherwise."""
        text = message % args if args else message
        if settings.DEBUG or text not in self._warned:
            self._warned.add(text)
            log.warning("persona: " + message, *args)

    def _render_default(self, context: template.Context) -> SafeString:
        return self.default_nodelist.render(context)

    def _slot_name(self, context: template.Context) -> str | None:
        value = self.slot_expr.resolve(context, ignore_failures=True)
        if value is None:
            return None
        name = str(value)
        return name if KEY.match(name) else None

    def adhoc_spec(self, name: str) -> dict[str, Any]:
        """The JSON form of the slot this template defines."""
        experiment = self.options.get("strategy") == "experiment"
        variants = []
        for branch in self.branches:
            variant: dict[str, Any] = {"key": branch.key}
            if branch.rule is not None:
                variant["rule"] = branch.rule
            elif branch.segment is not None:
                variant["segment"] = branch.segment
            elif not experiment:
                variant["segment"] = branch.key
            if branch.weight is not None:
                variant["weight"] = branch.weight
            variants.append(variant)
        spec: dict[str, Any] = {"variants": variants}
        default = "default"
        while default in self.by_key:
            default = "_" + default
        spec["default"] = default
        if "strategy" in self.options:
            spec["strategy"] = self.options["strategy"]
        if experiment:
            spec["experiment"] = {
                k: v
                for k, v in (
                    ("holdout", self.options.get("holdout")),
                    ("version", self.options.get("version")),
                )
                if v is not None
            }
        return spec

    def _adhoc_slot(self, persona: Persona, name: str) -> Slot | Exception:
        cached = self._adhoc.get(name)
        if cached is not None and cached[0] is persona and cached[1] is persona.segments:
            return cached[2]
        built: Slot | Exception
        try:
            built = persona.build_slot(name, self.adhoc_spec(name), where="template")
        except PersonaError as exc:
            built = exc
        if len(self._adhoc) > 100:  # a variable slot name with unbounded values
            self._adhoc.clear()
        self._adhoc[name] = (persona, persona.segments, built)
        return built

    # -- rendering -------------------------------------------------------------------------
    def render(self, context: template.Context) -> SafeString:
        name = self._slot_name(context)
        if name is None:
            self._warn(
                "{%% personalize %%} slot name %s resolved to nothing usable; showing the default",
                self.slot_expr.token,
            )
            return self._render_default(context)
        request = context.get("request")
        rp = getattr(request, "persona", None)
        if rp is None:
            key = "no-request" if request is None else "no-middleware"
            if key not in _warned_once:
                _warned_once.add(key)
                log.warning(
                    "persona: {%% personalize %r %%} rendered %s; showing the default. %s",
                    name,
                    "without a request in the template context"
                    if request is None
                    else "without request.persona",
                    "Add 'django.template.context_processors.request' to the template "
                    "context processors."
                    if request is None
                    else "Add persona_django.middleware.PersonaMiddleware to MIDDLEWARE.",
                )
            return self._render_default(context)
        if self.edge:
            return self._render_edge(context, rp, name)
        return self._render_server(context, rp, name)

    def _render_server(self, context: template.Context, rp: Any, name: str) -> SafeString:
        try:
            persona: Persona = rp.persona
            slot: Slot | str
            if name in persona.slots:
                slot = name
                unknown = [
                    b.key
                    for b in self.branches
                    if b.key not in {v.key for v in persona.slots[name].variants}
                ]
                if unknown and settings.DEBUG:
                    self._warn(
                        "slot %r has no variant(s) %s (used in {%% variant %%}); "
                        "they are never shown",
                        name,
                        ", ".join(map(repr, unknown)),
                    )
            elif not self.branches:
                self._warn(
                    "slot %r is not defined and the template defines no variants; "
                    "showing the default",
                    name,
                )
                return self._explained(context, name, "slot is not defined")
            else:
                built = self._adhoc_slot(persona, name)
                if isinstance(built, Exception):
                    self._warn("{%% personalize %r %%}: %s; showing the default", name, built)
                    return self._explained(context, name, str(built))
                slot = built
            decision = rp.decide(slot)
        except Exception:
            log.exception(
                "persona: deciding {%% personalize %r %%} failed; showing the default", name
            )
            return self._render_default(context)
        branch = None if decision.is_default else self.by_key.get(decision.variant)
        prefix = self._explain_comment(decision)
        if branch is not None:
            try:
                with context.push():
                    return mark_safe(prefix + branch.nodelist.render(context))
            except Exception:
                log.exception(
                    "persona: rendering variant %r of slot %r failed; showing the default",
                    decision.variant,
                    name,
                )
        return mark_safe(prefix + self._render_default(context))

    def _explain_comment(self, decision: Decision) -> str:
        if not get_config()["DEBUG_EXPLAIN"]:
            return ""
        try:
            text = decision.explanation
        except Exception:
            text = "(no explanation)"
        why = f"persona: {decision.slot} → {decision.variant} ({decision.reason}: {text})"
        return f"<!-- {_comment(why)} -->"

    def _explained(self, context: template.Context, name: str, problem: str) -> SafeString:
        prefix = ""
        if get_config()["DEBUG_EXPLAIN"]:
            prefix = f"<!-- {_comment(f'persona: {name} → default (error: {problem})')} -->"
        return mark_safe(prefix + self._render_default(context))

    def _render_edge(self, context: template.Context, rp: Any, name: str) -> SafeString:
        try:
            defined = name in rp.persona.slots
        except Exception:
            log.exception("persona: loading the slot definitions failed; showing the default")
            defined = False
        if not defined:
            self._warn(
                "edge slot %r is not defined in PERSONA['DEFINITIONS'] (edge slots must be); "
                "showing the default",
                name,
            )
            return self._render_default(context)
        rp.edge = True
        parts = [format_html('<div data-persona-slot="{}" data-persona-state="pending">', name)]
        for branch in self.branches:
            try:
                with context.push():
                    inner = branch.nodelist.render(context)
            except Exception:
                log.exception(
                    "persona: rendering variant %r of edge slot %r failed; it is left out",
                    branch.key,
                    name,
                )
                continue
            parts.append(format_html('<template data-persona-variant="{}">', branch.key))
            parts.append(inner)
            parts.append("</template>")
        parts.append(self._render_default(context))
        parts.append("</div>")
        return mark_safe("".join(parts))


# -- {% persona_script %} ------------------------------------------------------------------
def _url(name: str, fallback: str) -> str:
    try:
        return reverse(name)
    except NoReverseMatch:
        return fallback


@register.simple_tag
def persona_script() -> SafeString:
    """The ``<script>`` for persona.js plus the anti-flicker CSS. The same for every visitor."""
    config = get_config()
    timeout = max(0, int(config["EDGE_TIMEOUT_MS"]))
    css = (
        "[data-persona-state=pending]{visibility:hidden;"
        f"animation:persona-reveal 0s linear {timeout}ms forwards}}"
        "@keyframes persona-reveal{to{visibility:visible}}"
    )
    return format_html(
        "<style data-persona>{}</style>"
        "<noscript><style>[data-persona-state=pending]{{visibility:visible!important;animation:none}}</style></noscript>"
        '<script src="{}" defer data-persona data-decide-url="{}" data-consent-url="{}" '
        'data-event-url="{}" data-timeout="{}" data-csrf-cookie="{}"></script>',
        mark_safe(css),
        static("persona/persona.js"),
        _url("persona:decide", "/persona/decide"),
        _url("persona:consent", "/persona/consent"),
        _url("persona:event", "/persona/event"),
        timeout,
        getattr(settings, "CSRF_COOKIE_NAME", "csrftoken"),
    )
