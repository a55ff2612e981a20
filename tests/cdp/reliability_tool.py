"""Setup for test_reliability.py, run in its own process against ``worker_settings``::

    python -m tests.cdp.reliability_tool enqueue COUNT IDS_FILE

creates 200 visitors who granted analytics and sharing, then queues COUNT track events for
the ``segment`` sink through the site's ``DatabaseOutbox`` (the items ``Persona._enqueue``
would queue; the profile updates are skipped so that setup takes seconds, not minutes), and
writes the message ids to IDS_FILE, one per line.
"""

from __future__ import annotations

import os
import sys
import time


def enqueue(count: int, ids_file: str) -> None:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.cdp.worker_settings")
    django.setup()
    from persona_django.runtime import get_persona
    from persona_sdk import Event, Identity
    from persona_sdk.outbox import OutboxItem

    persona = get_persona()
    sink = persona.registry.sinks["segment"]
    people = []
    for n in range(200):
        who = Identity.anonymous(f"rel-{n:03d}-{os.getpid()}")
        profile = persona.set_consent(who, {"analytics": True, "sharing": True}, source="test")
        people.append((who.value, profile.id))
    now = time.time()
    ids: list[str] = []
    chunk: list[OutboxItem] = []
    for n in range(count):
        anonymous_id, profile_id = people[n % len(people)]
        event = Event.create(
            "track",
            anonymous_id=anonymous_id,
            event="Product Viewed",
            properties={"n": n, "sku": f"SKU-{n % 97:03d}", "price": 9.5 + n % 40,
                        "category": ("shoes", "hats", "bags")[n % 3]},
            context={"page": {"path": f"/p/{n % 97}"}, "userAgent": "reliability/1.0"},
            timestamp=now,
        )
        ids.append(event.message_id)
        chunk.append(OutboxItem.for_event(event, sink=sink.name, profile_id=profile_id,
                                          purposes=tuple(sink.purposes), now=now))
        if len(chunk) == 1000:
            persona.outbox.enqueue(chunk)
            chunk = []
    if chunk:
        persona.outbox.enqueue(chunk)
    with open(ids_file, "w", encoding="utf-8") as fh:
        fh.write("\n".join(ids) + "\n")
    print(f"queued {persona.outbox.pending_count()}")


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "enqueue":
        raise SystemExit(__doc__)
    enqueue(int(sys.argv[2]), sys.argv[3])
