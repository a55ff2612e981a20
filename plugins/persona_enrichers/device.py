"""Device enricher: device type, operating system and browser family from the User-Agent.

Adds ``device = {"type": ..., "os": ..., "browser": ...}`` to the request context:

- ``type``: ``mobile`` | ``tablet`` | ``desktop`` | ``bot`` | ``unknown``
- ``os``: ``ios`` | ``android`` | ``windows`` | ``macos`` | ``linux`` | ``chromeos`` | ``other``
- ``browser``: ``chrome`` | ``safari`` | ``firefox`` | ``edge`` | ``opera`` | ``samsung`` |
  ``other``

This is a small, hand-written heuristic (no UA database), good for "show the app banner to
phones" rules, not for analytics. The rules, in order:

1. An empty User-Agent is ``unknown``/``other``/``other``. Longer than 512 characters, it
   is cut to 512 first.
2. Common crawler and tool markers (a word ending in ``bot``, ``crawler``, ``spider``,
   ``Slurp``, ``facebookexternalhit``, ``HeadlessChrome``, ``Lighthouse``, ``curl/``,
   ``python-requests`` ...) make a ``bot``, whose os and browser are ``other``.
3. OS: ``iPhone``/``iPod`` → ios (mobile), ``iPad`` → ios (tablet), ``Windows Phone`` →
   windows (mobile), ``Android`` → android (mobile when the UA says ``Mobile``, else
   tablet — Google's own convention), ``CrOS`` → chromeos, ``Windows`` → windows,
   ``Macintosh``/``Mac OS X`` → macos, ``Linux``/``X11`` → linux (all desktop). iPadOS in
   "desktop mode" sends a Mac UA and is reported as a macOS desktop.
4. Otherwise a ``Mobi`` token means mobile, ``Tablet``/``Kindle``/``Silk`` tablet, any
   other ``Mozilla/`` UA desktop, anything else ``unknown``.
5. The ``Sec-CH-UA-Mobile: ?1`` client hint makes a non-bot device ``mobile``.
6. Browser (first match): Edge (``Edg/``, ``EdgA/``, ``EdgiOS/``, ``Edge/``), Opera
   (``OPR/``, ``OPT/``, ``OPiOS/``, ``Opera``), Samsung Internet (``SamsungBrowser/``),
   Firefox (``Firefox/``, ``FxiOS/``), other Chromium-based browsers with their own token
   (Yandex, UC, Vivaldi, MIUI, Huawei, Amazon Silk) and in-app browsers (Facebook,
   Instagram) → other,
   Chrome (``CriOS/``, ``Chrome/``, ``Chromium/``), Safari (``Safari/`` with ``Version/``),
   else other.

Parsing is memoized per (truncated) UA string in a bounded LRU cache of 4096 entries.
No settings.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from persona_sdk.context import RequestInfo
from persona_sdk.hookspecs import hookimpl

__all__ = ["enrich", "parse_user_agent", "persona_register_enrichers"]

ORDER = 20
MAX_UA = 512

_BOT_RE = re.compile(
    r"(?<!cu)bot\b|crawler|spider|slurp|facebookexternalhit|facebookcatalog|headlesschrome"
    r"|lighthouse|pagespeed|mediapartners-google|feedfetcher|apis-google|bingpreview"
    r"|python-requests|python-urllib|aiohttp|httpx|curl/|wget/|go-http-client|java/"
    r"|libwww-perl|scrapy|phantomjs|whatsapp/|pingdom|uptimerobot|embedly|ia_archiver"
)
_CROS_RE = re.compile(r"\bcros\b")
_OTHER_BROWSER_RE = re.compile(
    r"yabrowser/|ucbrowser/|vivaldi/|miuibrowser/|huaweibrowser/|silk/|fban/|fbav/|instagram"
)


@lru_cache(maxsize=4096)
def _parse(ua: str) -> tuple[str, str, str]:
    """(type, os, browser) for an already lower-cased, truncated, stripped UA."""
    if not ua:
        return ("unknown", "other", "other")
    if _BOT_RE.search(ua):
        return ("bot", "other", "other")

    if "iphone" in ua or "ipod" in ua:
        kind, os_ = "mobile", "ios"
    elif "ipad" in ua:
        kind, os_ = "tablet", "ios"
    elif "windows phone" in ua:
        kind, os_ = "mobile", "windows"
    elif "android" in ua:
        kind, os_ = ("mobile" if "mobile" in ua else "tablet"), "android"
    elif _CROS_RE.search(ua):
        kind, os_ = "desktop", "chromeos"
    elif "windows" in ua:
        kind, os_ = "desktop", "windows"
    elif "macintosh" in ua or "mac os x" in ua:
        kind, os_ = "desktop", "macos"
    elif "linux" in ua or "x11" in ua:
        kind, os_ = "desktop", "linux"
    else:
        os_ = "other"
        if "mobi" in ua:
            kind = "mobile"
        elif "tablet" in ua or "kindle" in ua or "silk/" in ua:
            kind = "tablet"
        elif ua.startswith("mozilla/"):
            kind = "desktop"
        else:
            kind = "unknown"

    if "edg/" in ua or "edga/" in ua or "edgios/" in ua or "edge/" in ua:
        browser = "edge"
    elif "opr/" in ua or "opt/" in ua or "opios/" in ua or "opera" in ua:
        browser = "opera"
    elif "samsungbrowser/" in ua:
        browser = "samsung"
    elif "firefox/" in ua or "fxios/" in ua:
        browser = "firefox"
    elif _OTHER_BROWSER_RE.search(ua):
        browser = "other"
    elif "crios/" in ua or "chrome/" in ua or "chromium/" in ua:
        browser = "chrome"
    elif "safari/" in ua and "version/" in ua:
        browser = "safari"
    else:
        browser = "other"
    return (kind, os_, browser)


def parse_user_agent(user_agent: str, *, mobile_hint: bool = False) -> dict[str, str]:
    """``{"type", "os", "browser"}`` for a User-Agent string (see the module docstring)."""
    kind, os_, browser = _parse(user_agent[:MAX_UA].strip().lower())
    if mobile_hint and kind != "bot":
        kind = "mobile"
    return {"type": kind, "os": os_, "browser": browser}


def enrich(request: RequestInfo, context: dict[str, Any]) -> None:
    """Add ``device``."""
    headers = request.headers
    context["device"] = parse_user_agent(
        headers.get("user-agent", ""),
        mobile_hint=headers.get("sec-ch-ua-mobile", "").strip() == "?1",
    )


@hookimpl
def persona_register_enrichers(register: Callable[..., None]) -> None:
    register(
        "device",
        enrich,
        order=ORDER,
        doc="Device type, OS and browser family from the User-Agent (device.type...)",
    )
