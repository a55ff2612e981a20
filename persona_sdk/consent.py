"""Consent per purpose, the ledger, and the one gate every part of the code base asks.

Purposes (extensible through :class:`ConsentPolicy`):

``personalization``
    choosing content for this visitor (decisions). Denied → the default variant.
``analytics``
    building the profile from behaviour (page views, events, traits). Denied → no profile writes.
``marketing``
    sending marketing email.
``sharing``
    sending data to third parties (CDP and email-service adapters).

Each purpose is ``granted``, ``denied`` or ``unset``. What ``unset`` means comes from the
policy: ``opt-in`` (unset = denied) or ``opt-out`` (unset = granted), per purpose if needed.
Global Privacy Control denies the purposes named in ``ConsentPolicy.gpc_denies``
(``marketing`` and ``sharing``) whatever else was recorded.

:func:`may` is the single answer to "may purpose P be used for this profile now?".
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from enum import Enum
from typing import Any, Literal, Protocol

import attrs

from .errors import ConsentError

__all__ = [
    "DEFAULT_PURPOSES",
    "ConsentDecision",
    "ConsentLedger",
    "ConsentPolicy",
    "ConsentState",
    "ConsentView",
    "HasConsent",
    "InMemoryConsentLedger",
    "LedgerEntry",
    "consent_from_dict",
    "may",
    "merge_consent",
]

DEFAULT_PURPOSES = ("personalization", "analytics", "marketing", "sharing")
Mode = Literal["opt-in", "opt-out"]
MODES: tuple[str, ...] = ("opt-in", "opt-out")


class ConsentState(str, Enum):
    GRANTED = "granted"
    DENIED = "denied"
    UNSET = "unset"

    @classmethod
    def parse(cls, value: object) -> ConsentState:
        if isinstance(value, ConsentState):
            return value
        if isinstance(value, bool):
            return cls.GRANTED if value else cls.DENIED
        try:
            return cls(value)
        except ValueError:
            raise ConsentError(
                f"a consent state is granted, denied or unset, got {value!r}"
            ) from None


@attrs.frozen
class ConsentDecision:
    """The latest explicit decision for one purpose of one profile."""

    state: ConsentState
    at: float
    source: str
    policy_version: str = ""


@attrs.frozen
class ConsentPolicy:
    """How consent is read. ``mode`` applies to every purpose not in ``modes``.

    ``version`` is the policy (banner text) version recorded with every decision.
    """

    mode: Mode = "opt-in"
    purposes: tuple[str, ...] = DEFAULT_PURPOSES
    modes: Mapping[str, Mode] = attrs.field(factory=dict)
    version: str = "1"
    gpc_denies: frozenset[str] = frozenset({"marketing", "sharing"})

    def __attrs_post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConsentError(f"consent mode must be 'opt-in' or 'opt-out', got {self.mode!r}")
        for purpose, mode in self.modes.items():
            self.check(purpose)
            if mode not in MODES:
                raise ConsentError(
                    f"consent mode for {purpose!r} must be 'opt-in' or 'opt-out', got {mode!r}"
                )
        for purpose in DEFAULT_PURPOSES:
            if purpose not in self.purposes:
                raise ConsentError(f"the built-in purpose {purpose!r} cannot be removed")

    def check(self, purpose: str) -> str:
        """Return ``purpose`` if the policy knows it, else raise :class:`ConsentError`."""
        if purpose not in self.purposes:
            raise ConsentError(
                f"unknown consent purpose {purpose!r}; known: {', '.join(self.purposes)}"
            )
        return purpose

    def default_for(self, purpose: str) -> bool:
        """Whether an ``unset`` purpose counts as granted."""
        return self.modes.get(purpose, self.mode) == "opt-out"


class HasConsent(Protocol):
    """What :func:`may` reads: a :class:`~persona_sdk.profile.Profile`, or a
    :class:`ConsentView` (the consent decisions alone, as the delivery worker loads them)."""

    @property
    def consent(self) -> Mapping[str, ConsentDecision]: ...


@attrs.frozen
class ConsentView:
    """A profile's consent decisions without the rest of the profile."""

    consent: Mapping[str, ConsentDecision]


def consent_from_dict(data: Mapping[str, Mapping[str, Any]]) -> dict[str, ConsentDecision]:
    """The ``consent`` part of a profile document (``Profile.to_dict()["consent"]``)."""
    return {
        purpose: ConsentDecision(
            ConsentState(c["state"]), c["at"], c["source"], c.get("policy_version", "")
        )
        for purpose, c in data.items()
    }


def may(
    profile: HasConsent | None,
    purpose: str,
    policy: ConsentPolicy,
    gpc: bool = False,
) -> bool:
    """May ``purpose`` be used for ``profile`` now? The one gate; everything calls it.

    ``gpc`` is the request's Global Privacy Control signal (``Sec-GPC: 1``); a profile that
    once sent it also carries a recorded denial (see ``Persona.observe_gpc``).
    ``profile=None`` (nobody known yet) reads the policy default.
    """
    if gpc and purpose in policy.gpc_denies:
        return False
    decision = profile.consent.get(purpose) if profile is not None else None
    if decision is not None:
        state = decision.state
        if state is _GRANTED:
            return True
        if state is _DENIED:
            return False
    policy.check(purpose)
    return policy.default_for(purpose)


_GRANTED = ConsentState.GRANTED
_DENIED = ConsentState.DENIED


def merge_consent(
    into: Mapping[str, ConsentDecision], other: Mapping[str, ConsentDecision]
) -> dict[str, ConsentDecision]:
    """Consent after merging two profiles.

    A denial on either side survives: a merge is not the person's act of consent, so it
    never turns a denial into a grant. Otherwise the most recent explicit decision wins
    (ties keep ``into``'s). ``unset`` never overrides an explicit decision.
    """
    result = dict(into)
    for purpose, theirs in other.items():
        ours = result.get(purpose)
        if ours is None or ours.state is ConsentState.UNSET:
            result[purpose] = theirs
            continue
        if theirs.state is ConsentState.UNSET:
            continue
        ours_denied = ours.state is ConsentState.DENIED
        theirs_denied = theirs.state is ConsentState.DENIED
        if ours_denied != theirs_denied:
            result[purpose] = ours if ours_denied else theirs
        elif (theirs.at, theirs.source, theirs.policy_version) > (
            ours.at,
            ours.source,
            ours.policy_version,
        ):
            result[purpose] = theirs
    return result


@attrs.frozen
class LedgerEntry:
    """One line of the append-only consent ledger: what, when, source, policy version."""

    profile_id: str
    purpose: str
    state: ConsentState
    at: float
    source: str
    policy_version: str

    def to_dict(self) -> dict[str, object]:
        return {
            "profile_id": self.profile_id,
            "purpose": self.purpose,
            "state": self.state.value,
            "at": self.at,
            "source": self.source,
            "policy_version": self.policy_version,
        }


class ConsentLedger(Protocol):
    """Append-only record of every consent decision. Stores implement it; nothing edits it.

    ``reassign`` moves a merged-away profile's entries under the surviving profile id (a
    merge changes whose entries they are, not what they say); ``erase`` removes a profile's
    entries when the person asks to be forgotten.
    """

    def append(self, entry: LedgerEntry) -> None: ...

    def entries(self, profile_id: str) -> list[LedgerEntry]: ...

    def reassign(self, old_profile_id: str, new_profile_id: str) -> None: ...

    def erase(self, profile_id: str) -> int: ...


@attrs.define
class InMemoryConsentLedger:
    """The ledger in process memory: for tests, the CLI and single-process sites."""

    _entries: dict[str, list[LedgerEntry]] = attrs.Factory(dict)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, repr=False)

    def append(self, entry: LedgerEntry) -> None:
        with self._lock:
            self._entries.setdefault(entry.profile_id, []).append(entry)

    def extend(self, entries: Iterable[LedgerEntry]) -> None:
        for entry in entries:
            self.append(entry)

    def entries(self, profile_id: str) -> list[LedgerEntry]:
        with self._lock:
            return list(self._entries.get(profile_id, ()))

    def reassign(self, old_profile_id: str, new_profile_id: str) -> None:
        with self._lock:
            moved = self._entries.pop(old_profile_id, [])
            self._entries.setdefault(new_profile_id, []).extend(
                attrs.evolve(e, profile_id=new_profile_id) for e in moved
            )
            self._entries[new_profile_id].sort(key=lambda e: e.at)

    def erase(self, profile_id: str) -> int:
        with self._lock:
            return len(self._entries.pop(profile_id, []))
