"""The site's effective segments: those defined in code or files plus those editors saved.

``PERSONA["DEFINITIONS"]`` (code or a JSON file) gives the Django adapter's
:class:`~persona_sdk.Persona` its segments when it is built; they are read-only here. The
admin's :class:`~persona_wagtail.models.Segment` rows are compiled on top of them::

    persona.replace_segments(persona.build_segments(admin_defs, source="admin", base=code))

When is that done?

* **At first use in each process** (the first personalized block rendered, the first
  admin screen that lists segments): one query.
* **After a segment is saved or deleted**: the ``post_save``/``post_delete`` receivers mark
  this process's registry stale at once and, when the transaction commits, write a new
  version token to the cache (``PERSONA["CACHE_ALIAS"]``). Every process compares the
  token it last loaded with the cache's — one cache read, no SQL — at most once per request
  and at most every ``PERSONA_WAGTAIL["VERSION_CHECK_SECONDS"]`` (1 s by default: with Redis
  a read is a network round trip, a good part of a personalized page's cost), and reloads
  when they differ. So the process that saved sees the change at once, the others within
  that interval. With the process-local ``LocMemCache`` other processes only notice after
  their own cache entry is gone: use a shared cache (Redis) in production.

A saved segment that no longer compiles (a plugin's condition type was removed, a segment it
refers to was deleted) is left out, logged, listed by the ``persona_wagtail.E003`` check and
shown in the admin; every other segment keeps working.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
import weakref
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
from django.core.cache import caches
from django.db import DatabaseError, transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from persona_sdk import Persona, Profile
from persona_sdk.errors import RuleError, SegmentCycleError
from persona_sdk.rules.compiler import CompiledRule
from persona_sdk.rules.subject import Subject
from persona_sdk.segments import SEGMENT_NAME, SegmentRegistry

from .conf import get_config

if TYPE_CHECKING:
    from persona_sdk.segments import Segment as CoreSegment

__all__ = [
    "VERSION_KEY",
    "code_registry",
    "compile_admin",
    "count_matching",
    "ensure_current",
    "problems",
    "reset",
    "segment_choices",
    "segments_overview",
    "validate_segment",
]

log = logging.getLogger("persona_wagtail")

#: The cache key holding the version token of the admin segments.
VERSION_KEY = "persona_wagtail:segments:v1"
#: Without a working cache, reload at most this often (seconds).
RECHECK_WITHOUT_CACHE = 5.0
_RP_FLAG = "_persona_wagtail_checked"
_SOURCE_LABELS = {"admin": "admin", "json": "file", "code": "code"}


@attrs.define
class _Applied:
    """What this process installed on one Persona."""

    token: str | None
    generation: int
    base: SegmentRegistry
    installed: SegmentRegistry
    problems: dict[str, RuleError]
    loaded_at: float
    #: when the cache's token was last compared with ours (monotonic seconds)
    checked_at: float = 0.0


_applied: weakref.WeakKeyDictionary[Persona, _Applied] = weakref.WeakKeyDictionary()
_lock = threading.RLock()
_generation = [0]


def _persona() -> Persona:
    from persona_django.runtime import get_persona

    return get_persona()


def _cache() -> Any:
    from persona_django.conf import get_config as django_config

    return caches[django_config()["CACHE_ALIAS"]]


def _read_token() -> str | None:
    try:
        token = _cache().get(VERSION_KEY)
    except Exception:
        log.warning("persona: reading the segment version from the cache failed", exc_info=True)
        return None
    return token if isinstance(token, str) else None


def _establish_token() -> str | None:
    """The current token, creating one when the cache has none (first process, eviction)."""
    try:
        cache = _cache()
        cache.add(VERSION_KEY, uuid.uuid4().hex, None)
        token = cache.get(VERSION_KEY)
    except Exception:
        log.warning("persona: writing the segment version to the cache failed", exc_info=True)
        return None
    return token if isinstance(token, str) else None


def _bump_token() -> None:
    try:
        _cache().set(VERSION_KEY, uuid.uuid4().hex, None)
    except Exception:
        log.warning(
            "persona: could not publish the new segment version; other processes keep the "
            "old segments until their cache entry changes",
            exc_info=True,
        )


def mark_changed() -> None:
    """Segments changed: reload in this process at next use, and tell the others after the
    transaction commits."""
    _generation[0] += 1
    transaction.on_commit(_bump_token)


@receiver(post_save, sender="persona_wagtail.Segment", dispatch_uid="persona_wagtail.saved")
def _saved(sender: Any, **kwargs: Any) -> None:
    mark_changed()


@receiver(post_delete, sender="persona_wagtail.Segment", dispatch_uid="persona_wagtail.deleted")
def _deleted(sender: Any, **kwargs: Any) -> None:
    mark_changed()


# -- loading and compiling --------------------------------------------------------------------
def admin_definitions(*, exclude_pk: Any = None) -> dict[str, dict[str, Any]]:
    """The saved admin segments in the JSON form ``build_segments`` takes (one query)."""
    from .models import Segment

    rows = Segment.objects.order_by("name")
    if exclude_pk is not None:
        rows = rows.exclude(pk=exclude_pk)
    return {
        name: {"rule": rule if rule is not None else {}, "description": description or ""}
        for name, rule, description in rows.values_list("name", "rule", "description")
    }


def _segment_table_missing() -> bool:
    from django.db import connections, router

    from .models import Segment

    try:
        connection = connections[router.db_for_read(Segment)]
        if connection.in_atomic_block and connection.needs_rollback:
            return False  # cannot ask now; keep the warning
        return Segment._meta.db_table not in connection.introspection.table_names()
    except DatabaseError:
        return False


def _name_in(where: str) -> str | None:
    match = re.match(r"^segments\.([^.\[]+)", where or "")
    return match.group(1) if match else None


def compile_admin(
    persona: Persona,
    definitions: Mapping[str, Any],
    base: SegmentRegistry,
    *,
    blame: str | None = None,
) -> tuple[SegmentRegistry, dict[str, RuleError]]:
    """Compile ``definitions`` on top of ``base``, leaving out the ones that do not compile.

    Returns the registry and ``{name: error}`` for each segment left out. In a cycle the
    segment named ``blame`` (the one being edited) is the one left out, if it is in it.
    """
    remaining = dict(definitions)
    problems: dict[str, RuleError] = {}
    for _ in range(len(remaining) + 1):
        try:
            return persona.build_segments(remaining, source="admin", base=base), problems
        except SegmentCycleError as exc:
            name: str | None = blame if blame in exc.cycle else exc.cycle[0]
            error: RuleError = exc
        except RuleError as exc:
            name, error = _name_in(exc.where), exc
        except Exception as exc:  # a definition of a shape the compiler did not expect
            name, error = None, RuleError("segments", f"{type(exc).__name__}: {exc}")
        if name is None or name not in remaining:
            for other in remaining:
                problems.setdefault(other, error)
            return base, problems
        problems[name] = error
        del remaining[name]
    return base, problems


def code_registry(persona: Persona) -> SegmentRegistry:
    """The segments defined in code or files (what the Persona had before admin segments)."""
    state = _applied.get(persona)
    if state is not None and persona.segments is state.installed:
        return state.base
    return persona.segments


def sync(persona: Persona, token: str | None = None) -> SegmentRegistry:
    """Load the admin segments and install code + admin segments on ``persona``."""
    with _lock:
        generation = _generation[0]
        if token is None:
            token = _establish_token()
        base = code_registry(persona)
        try:
            definitions = admin_definitions()
        except DatabaseError as exc:
            # Before `migrate` has created the table (e.g. while `migrate` itself runs the
            # system checks on a new database) this is expected: say so quietly; Django
            # itself warns about unapplied migrations. Any other database error is a warning.
            level = logging.INFO if _segment_table_missing() else logging.WARNING
            log.log(
                level,
                "persona: cannot read the admin segments (%s); using the code segments only. "
                "Has `manage.py migrate` run?",
                exc,
            )
            definitions = {}
        registry, found = compile_admin(persona, definitions, base)
        previous = _applied.get(persona)
        for name, error in found.items():
            if previous is None or str(previous.problems.get(name)) != str(error):
                log.error("persona: admin segment %r is left out: %s", name, error)
        persona.replace_segments(registry)
        now = time.monotonic()
        _applied[persona] = _Applied(token, generation, base, registry, found, now, now)
        return registry


def ensure_current(persona: Persona | None = None, rp: Any = None) -> Persona:
    """Make sure ``persona`` has the current admin segments; return it.

    With ``rp`` (``request.persona``) the check happens once per request: one cache read
    when nothing changed, and no SQL.
    """
    if rp is not None:
        persona = rp.persona
        if rp.__dict__.get(_RP_FLAG):
            return persona  # type: ignore[no-any-return]
        rp.__dict__[_RP_FLAG] = True
    if persona is None:
        persona = _persona()
    state = _applied.get(persona)
    if (
        state is not None
        and state.generation == _generation[0]
        and persona.segments is state.installed
    ):
        now = time.monotonic()
        if now - state.checked_at < get_config()["VERSION_CHECK_SECONDS"]:
            return persona
        token = _read_token()
        if token is not None and token == state.token:
            state.checked_at = now
            return persona
        if token is None and state.token is None and now - state.loaded_at < RECHECK_WITHOUT_CACHE:
            state.checked_at = now
            return persona
    else:
        token = _read_token()
    sync(persona, token)
    if rp is not None:
        subject = rp.__dict__.get("subject")
        if subject is not None and subject.segments is not persona.segments:
            # this request's subject was built before the reload: rebuild it lazily
            del rp.__dict__["subject"]
    return persona


def problems(persona: Persona | None = None) -> dict[str, RuleError]:
    """Admin segments left out of the registry because they do not compile."""
    persona = ensure_current(persona)
    state = _applied.get(persona)
    return dict(state.problems) if state is not None else {}


def reset(*, restore: bool = True) -> None:
    """Forget what was installed (tests): the next use reloads. With ``restore``, a Persona
    that has admin segments installed gets its code segments back."""
    with _lock:
        _generation[0] += 1
        for persona, state in list(_applied.items()):
            if restore and persona.segments is state.installed:
                persona.segments = state.base
        _applied.clear()
    try:
        _cache().delete(VERSION_KEY)
    except Exception:
        log.warning("persona: could not clear the segment version", exc_info=True)


# -- validating an editor's segment ------------------------------------------------------------
def _local(error: RuleError, name: str) -> str:
    """``segments.vip.rule.$and[0]...: problem`` → ``rule.$and[0]...: problem``."""
    where = error.where or ""
    prefix = f"segments.{name}."
    if where.startswith(prefix):
        where = where[len(prefix) :]
    elif where == f"segments.{name}":
        where = ""
    return f"{where}: {error.problem}" if where else error.problem


def validate_segment(
    name: str,
    rule: Any,
    *,
    description: str = "",
    pk: Any = None,
    persona: Persona | None = None,
    check_unique: bool = True,
) -> dict[str, list[str]]:
    """Problems saving segment ``name`` with ``rule`` would cause, by form field.

    Compiles every admin segment with this one in its new form on top of the code
    segments: a rule that does not compile, a name a code segment already has, a cycle,
    and a change that would break another admin segment (a rename of a segment others
    refer to) are all reported. Empty when it can be saved.
    """
    errors: dict[str, list[str]] = {}
    if not isinstance(name, str) or not SEGMENT_NAME.match(name):
        errors["name"] = [
            "Use 1-64 lower-case letters, digits, '-' or '_', starting with a letter or digit."
        ]
        return errors
    persona = ensure_current(persona)
    base = code_registry(persona)
    if name in base:
        seg = base.get(name)
        where = _SOURCE_LABELS.get(seg.source if seg else "code", "code")
        errors["name"] = [
            f'A segment named "{name}" is already defined in {where} '
            "(PERSONA['DEFINITIONS']) and cannot be redefined here; choose another name."
        ]
        return errors
    others = admin_definitions(exclude_pk=pk)
    if name in others and check_unique:
        errors["name"] = [f'Another segment is already named "{name}".']
        return errors
    before_defs = admin_definitions()
    _, before = compile_admin(persona, before_defs, base)
    if name in others:  # the model's own unique check reports it
        return errors
    after_defs = {**others, name: {"rule": rule if rule is not None else {}}}
    if description:
        after_defs[name]["description"] = description
    _, after = compile_admin(persona, after_defs, base, blame=name)
    if name in after:
        errors["rule"] = [_local(after[name], name)]
    broken = sorted(set(after) - set(before) - {name})
    if broken:
        field = "rule" if "rule" not in errors and name in before_defs else "name"
        errors.setdefault(field, []).extend(
            f'Saving this would break segment "{other}": {_local(after[other], other)}'
            for other in broken
        )
    return errors


# -- reading, for the admin --------------------------------------------------------------------
def segment_choices() -> list[tuple[str, str]]:
    """``(name, label)`` for every segment (code and admin), for choosers."""
    try:
        persona = ensure_current()
    except Exception:
        log.exception("persona: loading the segments for a chooser failed")
        return []
    return [
        (s.name, f"{s.name} ({_SOURCE_LABELS.get(s.source, s.source)})")
        for s in _sorted(persona.segments)
    ]


def _sorted(segments: Iterable[CoreSegment]) -> list[CoreSegment]:
    return sorted(segments, key=lambda s: s.name)


def segments_overview(persona: Persona | None = None) -> list[dict[str, Any]]:
    """Every segment with where it comes from, for the admin and the rule builder."""
    persona = ensure_current(persona)
    return [
        {
            "name": s.name,
            "source": _SOURCE_LABELS.get(s.source, s.source),
            "description": s.description,
            "rule": s.rule.spec,
            "editable": s.source == "admin",
        }
        for s in _sorted(persona.segments)
    ]


def _roots(spec: Any) -> set[str]:
    roots: set[str] = set()
    stack = [spec]
    while stack:
        node = stack.pop()
        if isinstance(node, Mapping):
            for key, value in node.items():
                if isinstance(key, str) and not key.startswith("$"):
                    roots.add(key.split(".", 1)[0])
                else:
                    stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)
    return roots


def reads_context(rule: CompiledRule, segments: SegmentRegistry) -> bool:
    """Does the rule read the request context (directly or through a segment)?"""
    if "context" in _roots(rule.spec):
        return True
    stored = set(segments.profile_segments)
    return any(ref not in stored for ref in rule.refs)


def count_matching(rule: CompiledRule, persona: Persona | None = None) -> dict[str, Any]:
    """How many stored profiles match ``rule``: the most recently updated profiles first, at
    most ``COUNT_LIMIT`` of them, for at most ``COUNT_BUDGET_MS``; ``complete`` says whether
    every profile was read. Rules on the request context are evaluated with an empty one."""
    from persona_django.models import ProfileRecord

    persona = persona if persona is not None else ensure_current()
    config = get_config()
    limit = max(1, int(config["COUNT_LIMIT"]))
    deadline = time.monotonic() + max(1, int(config["COUNT_BUDGET_MS"])) / 1000
    total = ProfileRecord.objects.count()
    matched = scanned = 0
    now = time.time()
    segments = persona.segments
    predicate = rule.predicate
    rows = ProfileRecord.objects.order_by("-updated_at").values_list("data", flat=True)[:limit]
    for data in rows.iterator(chunk_size=500):
        scanned += 1
        try:
            profile = Profile.from_dict(data)
        except Exception:
            continue
        if predicate(Subject(profile, {}, now, segments)):
            matched += 1
        if time.monotonic() > deadline:
            break
    return {
        "matched": matched,
        "scanned": scanned,
        "total": total,
        "complete": scanned >= total,
        "reads_context": reads_context(rule, segments),
    }
