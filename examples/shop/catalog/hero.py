"""The seed hero: a PersonalizedBlock value in the raw JSON form a StreamField stores."""

from __future__ import annotations

import json
import uuid


def _content(heading: str, text: str) -> list[dict[str, object]]:
    return [
        {"type": "heading", "value": heading, "id": str(uuid.uuid4())},
        {"type": "text", "value": text, "id": str(uuid.uuid4())},
    ]


def hero_stream(variants: list[tuple[str, str, str, str]], default: tuple[str, str]) -> str:
    """``variants``: (key, segment, heading, text), first match wins; ``default``: (heading, text)."""
    value = {
        "slot": "hero",
        "variants": [
            {"type": "item", "id": str(uuid.uuid4()), "value": {
                "key": key, "segment": segment, "rule": "", "weight": 1.0,
                "content": _content(heading, text),
            }}
            for key, segment, heading, text in variants
        ],
        "default": _content(*default),
        "experiment": {"enabled": False, "holdout": 0.0, "version": "1"},
    }
    return json.dumps([{"type": "personalized", "value": value, "id": str(uuid.uuid4())}])
