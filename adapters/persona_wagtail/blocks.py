"""``PersonalizedBlock``: a StreamField block whose content depends on who is looking.

::

    from persona_wagtail.blocks import PersonalizedBlock

    body = StreamField([
        ("heading", blocks.CharBlock()),
        ("personalized", PersonalizedBlock(child_blocks=[
            ("heading", blocks.CharBlock()),
            ("paragraph", blocks.RichTextBlock()),
        ])),
    ])

Editors add **variants** (any of the child blocks as content), each targeted at a segment
(chosen from every segment: code, file and admin) or a rule (the JSON form), in priority
order — the first that matches wins — plus a **default**. An optional **experiment** makes the
variants the arms of a sticky hashed experiment (weights, a holdout share that sees the
default, a version to restart it).

It is the template tag's ad-hoc slot in block form: the block's value becomes a
:class:`~persona_sdk.Slot` through ``persona.build_slot`` (once per distinct value and segment
registry, not per request) and is decided by ``request.persona.decide(slot)`` — the same
engine, per-request memo, consent gate, preview forcing and cache-safety (the response is
marked private) as ``{% personalize %}``. Only the chosen branch is rendered. A block whose
targeting cannot be built (a deleted segment) or a variant that raises while rendering shows
the default, and the problem is logged; the admin flags such blocks (system check
``persona_wagtail.W004``, a warning in the page editor, the report).

Search indexes only the default content: targeted variants do not leak into search results.

``deconstruct()`` always names ``persona_wagtail.blocks.PersonalizedBlock`` with the child
blocks as an argument, so migrations never point at a subclass in a site's code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import attrs
from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils.html import conditional_escape
from django.utils.safestring import SafeString, mark_safe
from wagtail import blocks
from wagtail.blocks.list_block import ListBlockValidationError
from wagtail.blocks.struct_block import StructBlockValidationError

from persona_sdk import Persona, Slot
from persona_sdk.decisions import KEY
from persona_sdk.errors import PersonaError, RuleError

from .registry import ensure_current, segment_choices

__all__ = [
    "ExperimentBlock",
    "PersonalizedBlock",
    "RuleBlock",
    "SegmentChooserBlock",
    "VariantBlock",
    "find_personalized",
    "parse_rule",
]

log = logging.getLogger("persona_wagtail")

PATH = "persona_wagtail.blocks.PersonalizedBlock"
DEFAULT_KEY = "default"
#: the request attribute a preview (see persona_wagtail.preview) sets
PREVIEW_ATTR = "persona_preview"
_warned_once: set[str] = set()


# -- the fields ------------------------------------------------------------------------------
class SegmentField(forms.ChoiceField):
    default_error_messages = {
        "invalid_choice": 'Segment "%(value)s" does not exist (was it deleted?). Choose '
        "another segment, or clear it and give a rule instead.",
    }


def _segment_choices_with_blank() -> list[tuple[str, str]]:
    return [("", "— none (everyone, or the rule below) —"), *segment_choices()]


class SegmentChooserBlock(blocks.FieldBlock):
    """A choice of every segment the site has (code, files and admin), read when the editor
    opens; the stored value is the segment's name."""

    def __init__(self, required: bool = False, help_text: str | None = None, **kwargs: Any):
        self.field = SegmentField(
            choices=_segment_choices_with_blank, required=required, help_text=help_text
        )
        super().__init__(**kwargs)

    def to_python(self, value: Any) -> str:
        return value or ""

    def get_prep_value(self, value: Any) -> str:
        return value or ""

    def get_searchable_content(self, value: Any) -> list[str]:
        return []

    class Meta:
        icon = "group"


def parse_rule(text: str, persona: Persona | None = None) -> dict[str, Any]:
    """The rule in ``text`` (the JSON form), checked by compiling it; raises RuleError."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RuleError(
            "rule", f"not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        ) from None
    if not isinstance(data, dict):
        raise RuleError("rule", 'a rule is a JSON object, e.g. {"traits.plan": "pro"}')
    persona = ensure_current(persona)
    persona.compile_rule(data, where="rule")
    return data


class RuleBlock(blocks.FieldBlock):
    """A rule in the JSON form, compiled when the page is saved (an inline error otherwise)."""

    def __init__(self, required: bool = False, help_text: str | None = None, **kwargs: Any):
        self.field = forms.CharField(
            required=required,
            help_text=help_text,
            widget=forms.Textarea(
                attrs={
                    "rows": 2,
                    "data-persona-rule": "",
                    "placeholder": '{"behaviour.visits": {"$gte": 2}}',
                    "spellcheck": "false",
                }
            ),
        )
        super().__init__(**kwargs)

    def to_python(self, value: Any) -> str:
        return value or ""

    def get_prep_value(self, value: Any) -> str:
        return value or ""

    def clean(self, value: Any) -> str:
        text: str = super().clean(value) or ""
        text = text.strip()
        if text:
            try:
                parse_rule(text)
            except RuleError as exc:
                raise ValidationError(str(exc)) from None
        return text

    def get_searchable_content(self, value: Any) -> list[str]:
        return []

    class Meta:
        icon = "code"


class VariantBlock(blocks.StructBlock):
    """One variant: a key, its targeting (a segment, a rule or nobody: everyone), a weight
    for experiments, and its content."""

    def __init__(self, content: blocks.Block, **kwargs: Any) -> None:
        super().__init__(
            [
                (
                    "key",
                    blocks.CharBlock(
                        required=False,
                        max_length=64,
                        help_text="The variant's name in reports. Empty: the segment's name.",
                    ),
                ),
                ("segment", SegmentChooserBlock(help_text="Who sees this variant.")),
                (
                    "rule",
                    RuleBlock(
                        help_text="…or a rule (JSON). Neither segment nor rule: everyone.",
                    ),
                ),
                (
                    "weight",
                    blocks.FloatBlock(
                        required=False,
                        default=1.0,
                        help_text="Experiments: this variant's share (relative to the others).",
                    ),
                ),
                ("content", content),
            ],
            **kwargs,
        )

    def clean(self, value: Any) -> Any:
        value = super().clean(value)
        errors: dict[str, ValidationError] = {}
        key = (value.get("key") or "").strip()
        value["key"] = key
        if key and not KEY.match(key):
            errors["key"] = ValidationError(
                "Use 1-64 letters, digits, '-', '_' or '.', starting with a letter or digit."
            )
        elif key == DEFAULT_KEY:
            errors["key"] = ValidationError(f'"{DEFAULT_KEY}" is the default content\'s name.')
        if value.get("segment") and value.get("rule"):
            errors["rule"] = ValidationError("Target a segment or a rule, not both.")
        weight = value.get("weight")
        if weight is not None and not weight > 0:
            errors["weight"] = ValidationError("The weight must be a positive number.")
        if errors:
            raise StructBlockValidationError(block_errors=errors)
        return value

    class Meta:
        icon = "user"


class ExperimentBlock(blocks.StructBlock):
    enabled = blocks.BooleanBlock(
        required=False,
        default=False,
        label="Run as an experiment",
        help_text="Each visitor is assigned one of the variants they are eligible for (by "
        "weight), and keeps it. Exposures and conversions are then reported.",
    )
    holdout = blocks.FloatBlock(
        required=False,
        default=0.0,
        min_value=0.0,
        max_value=0.95,
        help_text="Share of visitors (0 to 0.95) who see the default instead: the control "
        "that uplift is measured against.",
    )
    version = blocks.CharBlock(
        required=False,
        default="1",
        max_length=20,
        help_text="Change it to restart the experiment (new assignments).",
    )

    class Meta:
        icon = "pick"
        collapsed = True


class ContentBlock(blocks.StreamBlock):
    """The content of a variant or of the default: a StreamBlock of the site's child blocks
    whose stored data is converted only when it is read. Wagtail converts nested streams
    eagerly (all of a page's values in bulk); a personalized block renders one branch, so
    the branches nobody sees are never converted (nor their images fetched)."""

    def bulk_to_python(self, values: Any) -> list[Any]:
        return [self.to_python(value) for value in values]


# -- the block -------------------------------------------------------------------------------
@attrs.frozen
class _Built:
    """A block value turned into a slot, for one Persona and segment registry."""

    persona: Persona
    segments: Any
    name: str
    slot: Slot | None
    error: PersonaError | None
    #: variant key -> index in the value's variants
    index: Mapping[str, int]


def _spec(value: Any) -> tuple[Any, ...]:
    """The parts of a value that decide (hashable; the cache key of its slot)."""
    variants = []
    for variant in value.get("variants") or ():
        weight = variant.get("weight")
        variants.append(
            (
                (variant.get("key") or "").strip(),
                variant.get("segment") or "",
                (variant.get("rule") or "").strip(),
                float(weight) if isinstance(weight, (int, float)) and weight > 0 else 1.0,
            )
        )
    exp = value.get("experiment") or {}
    experiment = (
        bool(exp.get("enabled")),
        float(exp.get("holdout") or 0.0),
        str(exp.get("version") or "1"),
    )
    return ((value.get("slot") or "").strip(), tuple(variants), experiment)


def slot_json(spec: tuple[Any, ...]) -> tuple[str, dict[str, Any], dict[str, int]]:
    """``(slot name, slot JSON, {variant key: index})`` for a value's :func:`_spec`."""
    slot_name, variants, (experiment, holdout, version) = spec
    out: list[dict[str, Any]] = []
    index: dict[str, int] = {}
    for i, (key, segment, rule_text, weight) in enumerate(variants):
        key = key or segment or f"variant-{i + 1}"
        if key in index or key == DEFAULT_KEY:
            key = f"variant-{i + 1}"
        variant: dict[str, Any] = {"key": key}
        if segment:
            variant["segment"] = segment
        if rule_text:
            try:
                variant["rule"] = json.loads(rule_text)
            except json.JSONDecodeError as exc:
                raise RuleError(f"variants[{i}].rule", f"not valid JSON ({exc.msg})") from None
        if experiment:
            variant["weight"] = weight
        index[key] = i
        out.append(variant)
    data: dict[str, Any] = {"variants": out, "default": DEFAULT_KEY}
    if experiment:
        data["strategy"] = "experiment"
        data["experiment"] = {"holdout": holdout, "version": version}
    if not slot_name:
        digest = hashlib.sha1(json.dumps(data, sort_keys=True).encode(), usedforsecurity=False)
        slot_name = f"pb-{digest.hexdigest()[:12]}"
    return slot_name, data, index


def new_slot_name() -> str:
    return f"block-{uuid.uuid4().hex[:12]}"


class PersonalizedBlock(blocks.StructBlock):
    """Variants of content, each for a segment or a rule, plus a default (see the module doc).

    ``child_blocks``: the blocks variants and the default are made of, as for a StreamBlock
    (a list of ``(name, block)`` or a dict).
    """

    def __init__(
        self,
        child_blocks: Sequence[tuple[str, blocks.Block]] | Mapping[str, blocks.Block] | None = None,
        **kwargs: Any,
    ) -> None:
        if child_blocks is None:
            raise TypeError(
                "PersonalizedBlock needs child_blocks: the blocks its variants are made of, "
                'e.g. PersonalizedBlock(child_blocks=[("paragraph", RichTextBlock())])'
            )
        items = (
            list(child_blocks.items()) if isinstance(child_blocks, Mapping) else list(child_blocks)
        )
        self.content_child_blocks = items
        self._persona_kwargs = dict(kwargs)
        kwargs.setdefault("icon", "user")
        kwargs.setdefault("label", "Personalized content")
        super().__init__(
            [
                (
                    "slot",
                    blocks.CharBlock(
                        required=False,
                        max_length=64,
                        label="Name",
                        help_text="How this block is named in reports (letters, digits, - _ .). "
                        "Generated when empty; keep it once the block has been published.",
                    ),
                ),
                (
                    "variants",
                    blocks.ListBlock(
                        VariantBlock(ContentBlock(items, required=False)),
                        label="Variants (the first that matches is shown)",
                    ),
                ),
                (
                    "default",
                    ContentBlock(items, required=False, label="Default (everyone else)"),
                ),
                ("experiment", ExperimentBlock()),
            ],
            **kwargs,
        )
        self._built: dict[tuple[Any, ...], _Built] = {}
        self._warned: set[str] = set()

    # -- migrations ----------------------------------------------------------------------------
    def deconstruct(self) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
        return (PATH, (), {"child_blocks": list(self.content_child_blocks), **self._persona_kwargs})

    def deconstruct_with_lookup(self, lookup: Any) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
        children = [(name, lookup.add_block(block)) for name, block in self.content_child_blocks]
        return (PATH, (), {"child_blocks": children, **self._persona_kwargs})

    @classmethod
    def construct_from_lookup(cls, lookup: Any, *args: Any, **kwargs: Any) -> PersonalizedBlock:
        children = kwargs.pop("child_blocks", None)
        if children is None and args:
            children, args = args[0], args[1:]
        if children is not None:
            children = [
                (name, lookup.get_block(block) if isinstance(block, int) else block)
                for name, block in children
            ]
        return cls(children, *args, **kwargs)

    # -- editing -------------------------------------------------------------------------------
    def clean(self, value: Any) -> Any:
        value = super().clean(value)
        errors: dict[str, ValidationError] = {}
        slot = (value.get("slot") or "").strip()
        if slot and not KEY.match(slot):
            errors["slot"] = ValidationError(
                "Use 1-64 letters, digits, '-', '_' or '.', starting with a letter or digit."
            )
        seen: dict[str, int] = {}
        item_errors: dict[int, ValidationError] = {}
        for i, variant in enumerate(value.get("variants") or ()):
            key = variant.get("key") or ""
            if key and key in seen:
                item_errors[i] = StructBlockValidationError(
                    block_errors={
                        "key": ValidationError(f'Variant {seen[key] + 1} uses "{key}" too.')
                    }
                )
            seen.setdefault(key, i)
        if item_errors:
            errors["variants"] = ListBlockValidationError(block_errors=item_errors)
        if errors:
            raise StructBlockValidationError(block_errors=errors)
        if not slot:
            slot = new_slot_name()
        value["slot"] = slot
        for i, variant in enumerate(value.get("variants") or ()):
            if not variant.get("key"):
                key = variant.get("segment") or f"variant-{i + 1}"
                if key in seen or key == DEFAULT_KEY:
                    key = f"variant-{i + 1}"
                variant["key"] = key
                seen[key] = i
        try:
            name, data, _ = slot_json(_spec(value))
            ensure_current().build_slot(name, data, where="block")
        except PersonaError as exc:
            raise StructBlockValidationError(non_block_errors=[ValidationError(str(exc))]) from None
        return value

    def get_searchable_content(self, value: Any) -> list[str]:
        """Only the default: targeted content stays out of search results."""
        if not self.search_index:
            return []
        default = self.child_blocks["default"]
        return list(default.get_searchable_content(value.get("default") or default.get_default()))

    # -- rendering -----------------------------------------------------------------------------
    def built(self, value: Any, persona: Persona) -> _Built:
        """The slot for ``value`` (cached per distinct value, Persona and segment registry)."""
        spec = _spec(value)
        entry = self._built.get(spec)
        if entry is not None and entry.persona is persona and entry.segments is persona.segments:
            return entry
        slot: Slot | None = None
        error: PersonaError | None = None
        name, index = spec[0] or "pb-invalid", {}
        try:
            name, data, index = slot_json(spec)
            slot = persona.build_slot(name, data, where="block")
        except PersonaError as exc:
            error = exc
        entry = _Built(persona, persona.segments, name, slot, error, index)
        if len(self._built) > 512:  # many distinct values (revisions, previews): start over
            self._built.clear()
        self._built[spec] = entry
        return entry

    def _warn(self, message: str, *args: Any) -> None:
        text = message % args if args else message
        if settings.DEBUG or text not in self._warned:
            self._warned.add(text)
            log.warning("persona: " + message, *args)

    @staticmethod
    def _render_stream(stream: Any, context: Mapping[str, Any] | None) -> str:
        """The children of a variant (or the default) rendered as ``{% include_block %}``
        renders the blocks of a page: the same markup as the same blocks placed directly in
        the page (no wrapper around them), so a site's CSS applies alike."""
        if not stream:
            return ""
        # as {% include_block %} does: a child's plain-text output is escaped, HTML is kept
        return "".join(conditional_escape(child.render(context=context)) for child in stream)

    def _render_default(self, value: Any, context: Mapping[str, Any] | None) -> str:
        try:
            return self._render_stream(value.get("default"), context)
        except Exception:
            log.exception("persona: rendering the default of a personalized block failed")
            return ""

    def render(self, value: Any, context: Mapping[str, Any] | None = None) -> SafeString:
        request = context.get("request") if context else None
        rp = getattr(request, "persona", None)
        if rp is None:
            why = "no-request" if request is None else "no-middleware"
            if why not in _warned_once:
                _warned_once.add(why)
                log.warning(
                    "persona: a PersonalizedBlock was rendered %s; showing the default",
                    "without a request in the context (use {% include_block %} in a page template)"
                    if request is None
                    else "without request.persona (add PersonaMiddleware to MIDDLEWARE)",
                )
            return mark_safe(self._render_default(value, context))
        try:
            persona = ensure_current(rp=rp)
            built = self.built(value, persona)
            if built.slot is None:
                self._warn(
                    "personalized block %r: %s; showing the default", built.name, built.error
                )
                return mark_safe(
                    self._comment(f"{built.name} → default (error: {built.error})")
                    + self._render_default(value, context)
                )
            preview = getattr(request, PREVIEW_ATTR, None)
            if preview is not None or getattr(request, "is_preview", False):
                if rp.preview is None:
                    rp.preview = {}  # nothing is recorded for a preview
                forced = preview.force(built.slot) if preview is not None else None
                if forced is not None:
                    rp.preview[built.slot.name] = forced
            decision = rp.decide(built.slot)
        except Exception:
            log.exception("persona: deciding a personalized block failed; showing the default")
            return mark_safe(self._render_default(value, context))
        prefix = self._explain(decision)
        i = None if decision.is_default else built.index.get(decision.variant)
        if i is not None:
            try:
                content = value["variants"][i]["content"]
                return mark_safe(prefix + self._render_stream(content, context))
            except Exception:
                log.exception(
                    "persona: rendering variant %r of personalized block %r failed; "
                    "showing the default",
                    decision.variant,
                    built.name,
                )
        return mark_safe(prefix + self._render_default(value, context))

    @staticmethod
    def _comment(text: str) -> str:
        from persona_django.conf import get_config

        if not get_config()["DEBUG_EXPLAIN"]:
            return ""
        while "--" in text:
            text = text.replace("--", "- -")
        return f"<!-- persona: {text} -->"

    def _explain(self, decision: Any) -> str:
        from persona_django.conf import get_config

        if not get_config()["DEBUG_EXPLAIN"]:
            return ""
        try:
            text = decision.explanation
        except Exception:
            text = "(no explanation)"
        return self._comment(f"{decision.slot} → {decision.variant} ({decision.reason}: {text})")

    def get_api_representation(self, value: Any, context: Mapping[str, Any] | None = None) -> Any:
        """For Wagtail's API: the branch this request's visitor gets (decided exactly as when
        rendering), never the other variants: ``{"slot", "variant", "content"}``."""
        request = context.get("request") if context else None
        rp = getattr(request, "persona", None)
        key, content_block, content = (
            DEFAULT_KEY,
            self.child_blocks["default"],
            value.get("default"),
        )
        name = (value.get("slot") or "").strip()
        if rp is not None:
            try:
                built = self.built(value, ensure_current(rp=rp))
                name = built.name
                if built.slot is not None:
                    decision = rp.decide(built.slot)
                    i = None if decision.is_default else built.index.get(decision.variant)
                    if i is not None:
                        key = decision.variant
                        content_block = self.child_blocks["variants"].child_block.child_blocks[
                            "content"
                        ]
                        content = value["variants"][i]["content"]
            except Exception:
                log.exception("persona: deciding a personalized block for the API failed")
        return {
            "slot": name,
            "variant": key,
            "content": content_block.get_api_representation(content or [], context),
        }

    # -- inspection (checks, the editor, the report) ------------------------------------------
    def problems(self, value: Any, persona: Persona | None = None) -> list[str]:
        """What keeps this value from deciding as written (empty when it is fine)."""
        persona = persona if persona is not None else ensure_current()
        out = []
        for i, variant in enumerate(value.get("variants") or ()):
            segment = variant.get("segment")
            if segment and segment not in persona.segments:
                out.append(
                    f"variant {i + 1} ({variant.get('key') or 'no key'}) targets segment "
                    f'"{segment}", which does not exist: the block shows its default'
                )
        built = self.built(value, persona)
        if built.error is not None and not out:
            out.append(f"{built.error}: the block shows its default")
        return out

    class Meta:
        form_classname = "persona-personalized-block"


def find_personalized(
    block: blocks.Block, value: Any, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], PersonalizedBlock, Any]]:
    """Every PersonalizedBlock in ``value`` (of ``block``), with its path, depth first."""
    if value is None:
        return
    if isinstance(block, PersonalizedBlock):
        yield path, block, value
    if isinstance(block, blocks.StreamBlock):
        for child in value:
            yield from find_personalized(
                child.block, child.value, (*path, child.id or child.block_type)
            )
    elif isinstance(block, blocks.ListBlock):
        for i, item in enumerate(value):
            yield from find_personalized(block.child_block, item, (*path, str(i)))
    elif isinstance(block, blocks.StructBlock):
        for name, child in block.child_blocks.items():
            yield from find_personalized(child, value.get(name), (*path, name))


def personalized_in_instance(
    instance: Any,
) -> Iterator[tuple[str, tuple[str, ...], PersonalizedBlock, Any]]:
    """``(field name, path, block, value)`` for every PersonalizedBlock in a model instance's
    StreamFields."""
    from wagtail.fields import StreamField

    for field in type(instance)._meta.get_fields():
        if isinstance(field, StreamField):
            stream = getattr(instance, field.name, None)
            if stream is None:
                continue
            for path, block, value in find_personalized(field.stream_block, stream):
                yield field.name, path, block, value


def block_types_in(block: blocks.Block) -> Iterator[blocks.Block]:
    """Every block definition in a block tree (to find models that can hold the block)."""
    yield block
    children: Any = ()
    if isinstance(block, (blocks.StreamBlock, blocks.StructBlock)):
        children = block.child_blocks.values()
    elif isinstance(block, blocks.ListBlock):
        children = (block.child_block,)
    for child in children:
        yield from block_types_in(child)
