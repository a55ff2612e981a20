"""An example persona-sdk plugin (see README.md)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from persona_sdk import Event, Identity, Profile, RequestInfo, hookimpl
from persona_sdk.errors import RuleError
from persona_sdk.outbox import DeliveryResult, OutboxItem
from persona_sdk.rules.subject import Subject

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")

#: Where the sink sends batches; replace with your vendor's client.
SEND: list[Callable[[list[dict[str, Any]]], None]] = []


def _weekday_in(argument: Any, where: str) -> Callable[[Subject], bool]:
    if not isinstance(argument, list) or not argument:
        raise RuleError(where, "$weekday_in expects a non-empty list of weekday names")
    unknown = [d for d in argument if d not in WEEKDAYS]
    if unknown:
        raise RuleError(where, f"unknown weekday(s) {unknown}; use {', '.join(WEEKDAYS)}")
    wanted = frozenset(argument)
    return lambda subject: subject.context.get("weekday_name") in wanted


@hookimpl
def persona_register_conditions(register: Callable[..., None]) -> None:
    register("weekday_in", _weekday_in, doc="the visitor's local weekday is one of the given names")


def _preview_flag(request: RequestInfo, context: dict[str, Any]) -> None:
    context["example"] = {"is_preview": request.headers.get("x-example-preview") == "1"}


@hookimpl
def persona_register_enrichers(register: Callable[..., None]) -> None:
    register("example_preview", _preview_flag, order=300, doc="context.example.is_preview")


class OrderSink:
    name = "example_orders"
    purposes = ("analytics", "sharing")
    max_batch = 100

    def accepts(self, event: Event) -> bool:
        return event.type == "track" and event.event == "Order Completed"

    def deliver(self, items: Sequence[OutboxItem]) -> DeliveryResult:
        for send in SEND:
            send([dict(i.payload) for i in items])
        return DeliveryResult.all_delivered(items)


@hookimpl
def persona_register_sinks(register: Callable[[OrderSink], None]) -> None:
    register(OrderSink())


@hookimpl
def persona_erase(profile: Profile, identities: Sequence[Identity]) -> Mapping[str, Any] | None:
    return {"adapter": "example", "status": "nothing stored"}


@hookimpl
def persona_export(profile: Profile) -> Mapping[str, Any] | None:
    return {"example": {"stored": False}}
