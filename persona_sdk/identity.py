"""Identities: who a profile is known as.

A profile is reachable through any of its identities: anonymous ids (one per browser or
device), at most one user id, emails (stored and matched only as the SHA-256 hash of the
normalized address) and external ids from other systems (``external:segment`` ...).
"""

from __future__ import annotations

import hashlib
import re
from enum import Enum

import attrs

from .errors import IdentityError

__all__ = ["Identity", "IdentityKind", "email_hash", "normalize_email"]

MAX_ID_LENGTH = 200
_ID_RE = re.compile(r"^[^\s\x00-\x1f\x7f]+$")
_NAMESPACE_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,49}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class IdentityKind(str, Enum):
    ANONYMOUS = "anonymous"
    USER = "user"
    EMAIL = "email"
    EXTERNAL = "external"


def normalize_email(address: str) -> str:
    """Trim and lower-case an address; raise :class:`IdentityError` if it is not one.

    Only case and surrounding space are normalized: provider-specific rewriting (dots or
    ``+tags`` at Gmail) changes who receives mail, so it is not done.
    """
    if not isinstance(address, str):
        raise IdentityError(f"an email must be a string, got {type(address).__name__}")
    value = address.strip().lower()
    if len(value) > 254 or not _EMAIL_RE.match(value):
        raise IdentityError(f"not an email address: {address!r}")
    return value


def email_hash(address: str) -> str:
    """The SHA-256 hex digest of the normalized address: the form emails are matched in."""
    return hashlib.sha256(normalize_email(address).encode("utf-8")).hexdigest()


def _check_id(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise IdentityError(f"{what} must be a string, got {type(value).__name__}")
    if not value or len(value) > MAX_ID_LENGTH or not _ID_RE.match(value):
        raise IdentityError(
            f"{what} must be 1-{MAX_ID_LENGTH} characters without spaces or control "
            f"characters, got {value[:40]!r}"
        )
    return value


@attrs.frozen(order=True)
class Identity:
    """One way of recognising a profile. Build with the named constructors."""

    kind: IdentityKind
    value: str
    namespace: str = ""
    #: A stable string form used by stores as an index key: ``user:42``,
    #: ``email:<hash>``, ``external:segment:abc``.
    key: str = attrs.field(init=False, eq=False, order=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if self.kind is IdentityKind.EXTERNAL:
            key = f"external:{self.namespace}:{self.value}"
        else:
            key = f"{self.kind.value}:{self.value}"
        object.__setattr__(self, "key", key)

    @classmethod
    def anonymous(cls, anonymous_id: str) -> Identity:
        return cls(IdentityKind.ANONYMOUS, _check_id(anonymous_id, "an anonymous id"))

    @classmethod
    def user(cls, user_id: str) -> Identity:
        return cls(IdentityKind.USER, _check_id(user_id, "a user id"))

    @classmethod
    def email(cls, address: str) -> Identity:
        """An email identity; only the hash of the normalized address is kept."""
        return cls(IdentityKind.EMAIL, email_hash(address))

    @classmethod
    def email_from_hash(cls, digest: str) -> Identity:
        if not isinstance(digest, str) or not _HEX64.match(digest):
            raise IdentityError("an email hash must be 64 lower-case hex characters")
        return cls(IdentityKind.EMAIL, digest)

    @classmethod
    def external(cls, namespace: str, external_id: str) -> Identity:
        if not isinstance(namespace, str) or not _NAMESPACE_RE.match(namespace):
            raise IdentityError(
                f"an external id namespace must match [a-z][a-z0-9_.-]*, got {namespace!r}"
            )
        return cls(IdentityKind.EXTERNAL, _check_id(external_id, "an external id"), namespace)

    @classmethod
    def parse(cls, text: str) -> Identity:
        """Read the ``key`` form back; ``email:a@b.c`` (a raw address) is hashed on the way in.

        Raises :class:`IdentityError` for anything else.
        """
        if not isinstance(text, str) or ":" not in text:
            raise IdentityError(
                "an identity reads kind:value (anonymous:…, user:…, email:…, "
                f"external:ns:…), got {text!r}"
            )
        kind, _, rest = text.partition(":")
        if kind == "anonymous":
            return cls.anonymous(rest)
        if kind == "user":
            return cls.user(rest)
        if kind == "email":
            return cls.email_from_hash(rest) if _HEX64.match(rest) else cls.email(rest)
        if kind == "external":
            namespace, sep, value = rest.partition(":")
            if not sep:
                raise IdentityError(
                    f"an external identity reads external:namespace:id, got {text!r}"
                )
            return cls.external(namespace, value)
        raise IdentityError(f"unknown identity kind {kind!r} in {text!r}")

    def __str__(self) -> str:
        return self.key
