"""System check ``persona.W010``: ``{% variant %}`` names that can never be chosen.

Best effort, by design: the check reads template *source* with a regular expression (it
does not compile templates, so it costs nothing at import and never fails on a template
that needs context). It looks at every file under the ``DIRS`` of each ``DjangoTemplates``
engine and, when ``APP_DIRS`` is on, every installed app's ``templates`` directory, and at
each ``{% personalize "literal" %}`` block (a slot named by a variable cannot be known):

* a slot defined in the definitions: each ``{% variant "x" %}`` must be one of its variant
  keys;
* an ad-hoc slot (priority strategy): each bare ``{% variant "x" %}`` must name a defined
  segment, as must ``segment="x"``.

``rule=`` variants, experiment arms and edge slots that are not defined are not reported
here (the tag reports them when it renders).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Tags, Warning, register

__all__ = ["check_personalize_variants", "scan_source"]

_TEXT_SUFFIXES = {".html", ".htm", ".txt", ".xml", ".svg", ".email", ".jinja", ".tpl", ""}
_MAX_BYTES = 1_000_000

_BLOCK = re.compile(
    r"{%-?\s*personalize\s+(?P<open>.*?)\s*-?%}(?P<body>.*?){%-?\s*endpersonalize\s*-?%}",
    re.S,
)
_VARIANT = re.compile(r"{%-?\s*variant\s+(?P<args>.*?)\s*-?%}", re.S)
_QUOTED = re.compile(r"""^(?:"([^"\\]*)"|'([^'\\]*)')""")
_SEGMENT_KW = re.compile(r"""(?:^|\s)segment=(?:"([^"\\]*)"|'([^'\\]*)')""")


def _quoted(text: str) -> str | None:
    m = _QUOTED.match(text.strip())
    if m is None:
        return None
    return m.group(1) if m.group(1) is not None else m.group(2)


def scan_source(
    source: str,
) -> Iterator[tuple[int, str, bool, list[tuple[int, str, str | None, bool]]]]:
    """``(line, slot, is_experiment_or_edge, [(line, key, segment_kw, has_rule)])`` per block
    whose slot name is a literal."""
    for block in _BLOCK.finditer(source):
        opening = block["open"]
        slot = _quoted(opening)
        if slot is None:
            continue
        rest = opening.strip()[len(slot) + 2 :]
        special = "experiment" in rest
        edge = bool(re.search(r"(?:^|\s)edge(?:\s|$)", rest))
        variants = []
        body_start = block.start("body")
        for v in _VARIANT.finditer(block["body"]):
            args = v["args"]
            key = _quoted(args)
            seg = _SEGMENT_KW.search(args)
            segment = (
                None
                if seg is None
                else (seg.group(1) if seg.group(1) is not None else seg.group(2))
            )
            has_rule = bool(re.search(r"(?:^|\s)rule=", args))
            line = source.count("\n", 0, body_start + v.start()) + 1
            if key is None and segment is None:
                continue
            variants.append((line, key or segment or "", segment, has_rule))
        yield source.count("\n", 0, block.start()) + 1, slot, special or edge, variants


def _template_dirs() -> list[Path]:
    dirs: list[Path] = []
    app_dirs = False
    for engine in getattr(settings, "TEMPLATES", []) or []:
        if engine.get("BACKEND") != "django.template.backends.django.DjangoTemplates":
            continue
        dirs.extend(Path(d) for d in engine.get("DIRS", []) or [])
        app_dirs = app_dirs or bool(engine.get("APP_DIRS"))
    if app_dirs:
        from django.template.utils import get_app_template_dirs

        dirs.extend(Path(d) for d in get_app_template_dirs("templates"))
    seen: list[Path] = []
    for d in dirs:
        if d not in seen:
            seen.append(d)
    return seen


def _files(root: Path) -> Iterator[Path]:
    if not root.is_dir():
        return
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix.lower() in _TEXT_SUFFIXES:
            yield path


@register(Tags.templates)
def check_personalize_variants(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """``persona.W010`` for each ``{% variant %}`` that names nothing defined."""
    try:
        from .runtime import get_persona

        persona = get_persona()
        slots = persona.slots
        segments = persona.segments
    except Exception:  # configuration errors are reported by persona.E007
        return []
    messages: list[CheckMessage] = []
    for root in _template_dirs():
        for path in _files(root):
            try:
                if path.stat().st_size > _MAX_BYTES:
                    continue
                source = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            if "personalize" not in source:
                continue
            for _line, slot, special, variants in scan_source(source):
                defined = slots.get(slot)
                for vline, key, segment, has_rule in variants:
                    where = f"{path}:{vline}"
                    if defined is not None:
                        keys = {v.key for v in defined.variants}
                        if key not in keys:
                            messages.append(
                                Warning(
                                    f'{where}: {{% variant "{key}" %}} in '
                                    f'{{% personalize "{slot}" %}} '
                                    "is never shown: the slot has no such variant.",
                                    hint=f"Variants of slot {slot!r}: "
                                    f"{', '.join(sorted(keys)) or '(none)'}.",
                                    obj=str(path),
                                    id="persona.W010",
                                )
                            )
                        continue
                    if special or (has_rule and segment is None):
                        continue
                    name = segment if segment is not None else key
                    if name not in segments:
                        messages.append(
                            Warning(
                                f'{where}: {{% variant "{key}" %}} in {{% personalize "{slot}" %}} '
                                "names neither a variant of a defined slot nor a segment "
                                f"({name!r}).",
                                hint="Define the segment, fix the spelling, or define the slot "
                                "in PERSONA['DEFINITIONS']. Known segments: "
                                + (", ".join(sorted(segments.names())) or "(none)"),
                                obj=str(path),
                                id="persona.W010",
                            )
                        )
    return messages
