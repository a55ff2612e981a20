"""The ``persona`` command: ``plugins``, ``validate``, ``explain`` and ``demo``.

Exit codes: 0 fine, 1 the input has problems (validation errors, a bad profile), 2 usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from .errors import PersonaError
from .hookspecs import documented_hooks
from .plugins import disabled_plugins, make_plugin_manager, plugin_info

__all__ = ["main"]


def _load_json(path: str, what: str) -> Any:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SystemExit(f"persona: cannot read {what} {path}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise _InputError(f"{path}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}") from None


class _InputError(Exception):
    pass


def _table(rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        out.write(
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() + "\n"
        )
        if n == 0:
            out.write("  ".join("-" * w for w in widths) + "\n")


def cmd_plugins(args: argparse.Namespace, out: TextIO) -> int:
    pm = make_plugin_manager()
    infos = plugin_info(pm)
    if args.json:
        rows_json = [
            {
                "name": i.name,
                "distribution": i.distribution,
                "version": i.version,
                "hooks": list(i.hooks),
            }
            for i in infos
        ]
        json.dump(rows_json, out, indent=2)
        out.write("\n")
        return 0
    rows = [["name", "distribution", "version", "hooks"]]
    for info in infos:
        rows.append(
            [info.name, info.distribution or "-", info.version or "-", ", ".join(info.hooks)]
        )
    _table(rows, out)
    blocked = disabled_plugins()
    if blocked:
        out.write(f"\ndisabled by PERSONA_DISABLE_PLUGINS: {', '.join(blocked)}\n")
    if args.hooks:
        out.write("\nhooks:\n")
        for name, doc in sorted(documented_hooks().items()):
            out.write(f"  {name}: {doc.splitlines()[0] if doc else ''}\n")
    return 0


def _persona(definitions: Any) -> Any:
    from .sdk import Persona

    return Persona(definitions=definitions)


def cmd_validate(args: argparse.Namespace, out: TextIO) -> int:
    failed = 0
    for path in args.files:
        try:
            data = _load_json(path, "definitions")
            persona = _persona(data)
        except (_InputError, PersonaError) as exc:
            out.write(f"{path}: error: {exc}\n")
            failed += 1
            continue
        problems = persona.check()
        for problem in problems:
            out.write(f"{path}: {problem}\n")
        if any(p.level == "error" for p in problems):
            failed += 1
            continue
        out.write(f"{path}: ok ({len(persona.segments)} segments, {len(persona.slots)} slots)\n")
    return 1 if failed else 0


def cmd_explain(args: argparse.Namespace, out: TextIO) -> int:
    from .profile import Profile

    try:
        definitions = _load_json(args.definitions, "definitions")
        persona = _persona(definitions)
        profile = Profile.from_dict(_load_json(args.profile, "profile"))
        context = _load_json(args.context, "context") if args.context else {}
        if not isinstance(context, dict):
            raise _InputError("the context file must hold a JSON object")
        slot = persona.slot(args.slot)
    except (_InputError, PersonaError) as exc:
        out.write(f"persona explain: {exc}\n")
        return 1
    now = args.now if args.now is not None else None
    subject = persona.subject(profile, context, now=now)
    decision = persona.decide(slot, subject)
    if args.json:
        json.dump(decision.to_dict(), out, indent=2)
        out.write("\n")
        return 0
    out.write(f"slot:        {decision.slot}\n")
    out.write(f"variant:     {decision.variant}{' (default)' if decision.is_default else ''}\n")
    out.write(f"reason:      {decision.reason} (strategy {decision.strategy})\n")
    out.write(f"explanation: {decision.explanation}\n")
    segs = sorted(persona.segments.evaluate_all(subject))
    out.write(f"segments:    {', '.join(segs) or '(none)'}\n")
    return 0


def cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    from .demo import run_demo

    return run_demo(out, verbose=args.verbose)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="persona", description="persona-sdk: plugins, rule validation, decision explanations."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("plugins", help="list installed plugins: name, version, hooks")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--hooks", action="store_true", help="also list every hook with its summary")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("validate", help="check segment/slot definition files")
    p.add_argument("files", nargs="+", help="JSON files with {'segments': ..., 'slots': ...}")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("explain", help="decide a slot for a profile and say why")
    p.add_argument("profile", help="a profile JSON document (Profile.to_dict form); - for stdin")
    p.add_argument("slot", help="the slot name")
    p.add_argument("--definitions", "-d", required=True, help="definitions JSON file")
    p.add_argument("--context", "-c", help="a JSON object used as the request context")
    p.add_argument("--now", type=float, help="evaluate at this POSIX time (default: now)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("demo", help="a scripted tour: visitors, segments, decisions, consent")
    p.add_argument(
        "--verbose", "-v", action="store_true", help="also print each visitor's segments"
    )
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args, out or sys.stdout)
    return result


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
