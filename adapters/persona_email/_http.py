"""A small JSON-over-HTTP client the vendor sinks share (``requests``, one session per
thread so connections are reused, and every response classified once).

* 2xx → :class:`Response`;
* 429 → :class:`Throttled` with the ``Retry-After`` delay (0 when the vendor gave none);
* 5xx and network errors → :class:`Unavailable` (retried with the outbox's backoff);
* other 4xx → :class:`Rejected` with the vendor's message (never retried: dead-lettered).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any

import attrs
import requests

from .audience import error_message, retry_after_seconds

__all__ = ["Client", "Rejected", "Response", "Throttled", "Unavailable", "VendorError"]


class VendorError(Exception):
    def __init__(self, message: str, status: int = 0, body: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.body = body


class Throttled(VendorError):
    def __init__(self, message: str, delay: float, status: int = 429, body: Any = None) -> None:
        super().__init__(message, status, body)
        self.delay = delay


class Unavailable(VendorError):
    pass


class Rejected(VendorError):
    pass


@attrs.frozen
class Response:
    status: int
    body: Any
    headers: Mapping[str, str]


class Client:
    """``call(method, path, json=..., params=...)`` against ``base_url`` with fixed headers."""

    def __init__(
        self,
        vendor: str,
        base_url: str,
        *,
        headers: Mapping[str, str],
        auth: tuple[str, str] | None = None,
        timeout: float = 30.0,
        content_type: str = "application/json",
    ) -> None:
        self.vendor = vendor
        self.base_url = base_url.rstrip("/")
        self.headers = dict(headers)
        self.auth = auth
        self.timeout = timeout
        self.content_type = content_type
        self._local = threading.local()

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers.update(self.headers)
            if self.auth is not None:
                session.auth = self.auth
            self._local.session = session
        return session

    def call(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> Response:
        url = self.base_url + path
        data = None
        headers = {}
        if json_body is not None:
            data = json.dumps(json_body, separators=(",", ":")).encode("utf-8")
            headers["Content-Type"] = self.content_type
        try:
            res = self._session().request(
                method, url, data=data, params=params, headers=headers, timeout=self.timeout
            )
        except requests.RequestException as exc:
            raise Unavailable(f"{self.vendor}: {type(exc).__name__}: {exc}") from exc
        body: Any = None
        if res.content:
            try:
                body = res.json()
            except ValueError:
                body = res.text
        if 200 <= res.status_code < 300:
            return Response(res.status_code, body, res.headers)
        message = error_message(self.vendor, res.status_code, body)
        if res.status_code == 429:
            delay = retry_after_seconds(res.headers.get("Retry-After"))
            raise Throttled(message, delay, body=body)
        if res.status_code >= 500 or res.status_code == 408:
            raise Unavailable(message, res.status_code, body)
        raise Rejected(message, res.status_code, body)
