"""First-party context enrichers for persona-sdk.

Four plugins, each a module registered under the ``persona_sdk`` entry-point group, each
adding keys to the request context that rules read as ``context.<key>``. They run on every
personalized request, in the order shown, do no network I/O and never raise on odd input.
Settings go under the plugin's name in the plugin settings (in Django,
``PERSONA["PLUGINS"]``); unknown setting names are rejected with ``ConfigError``.

campaign (order 10) — :mod:`persona_enrichers.campaign`
    ``utm``
        ``{"source", "medium", "campaign", "term", "content"}``: the ``utm_*`` query
        parameters present and non-blank (``{}`` when none; last value of a repeated one).
    ``campaign``
        ``utm_campaign`` or ``None``.
    ``click_id`` / ``paid_click``
        Name of the ad click-id parameter present (``"gclid"``, ``"msclkid"``,
        ``"msclkid"``) or ``None``; ``True`` when there is one. Values are not copied.
    ``referrer`` / ``referrer_host``
        The ``Referer`` header (≤ 500 characters) and its lower-case host without ``www.``;
        ``None`` when absent.
    ``referrer_type``
        ``email`` (``utm_medium=email`` or a webmail referrer), ``paid`` (``utm_medium``
        ``cpc``/``ppc``/``cpm``/``cpv``/``paid*`` or a click id), ``direct`` (no referrer),
        ``internal`` (same host as the request), ``search`` (Google, Bing, DuckDuckGo,
        Yahoo, Baidu, Yandex, Ecosia), ``social`` (Facebook, Instagram, X/Twitter/``t.co``,
        LinkedIn, Pinterest, Reddit, TikTok, YouTube) or ``referral`` — first match wins.

    Settings: ``click_ids`` (list of query parameter names; default
    ``["gclid", "msclkid"]``).

device (order 20) — :mod:`persona_enrichers.device`
    ``device``
        ``{"type": "mobile"|"tablet"|"desktop"|"bot"|"unknown",
        "os": "ios"|"android"|"windows"|"macos"|"linux"|"chromeos"|"other",
        "browser": "chrome"|"safari"|"firefox"|"edge"|"opera"|"samsung"|"other"}``
        from the ``User-Agent`` header and the ``Sec-CH-UA-Mobile`` client hint, by
        documented heuristics (Android without ``Mobile`` and iPad are tablets). Rules read
        ``context.device.type``.

    No settings.

country (order 30) — :mod:`persona_enrichers.country`
    ``country``
        ISO 3166-1 alpha-2 code (``"DE"``) from ``CF-IPCountry``,
        ``CloudFront-Viewer-Country``, ``X-AppEngine-Country`` or ``Fastly-Geo-Country``,
        else from a GeoIP2/GeoLite2 lookup of the client address; absent when unknown.
    ``region``
        Subdivision code from ``CloudFront-Viewer-Country-Region`` or a City database.
    ``tor``
        ``True`` when Cloudflare reports Tor (``T1``); absent otherwise.

    Settings: ``headers`` (header names to trust, in order — list only your CDN's, since a
    client can send any of them), ``geoip_database`` (path of a Country or City ``.mmdb``;
    needs ``pip install persona-sdk[geoip]``).

localtime (order 200) — :mod:`persona_enrichers.localtime`
    ``hour``, ``minute``, ``weekday`` (1 = Monday … 7 = Sunday), ``weekday_name``
    (``"monday"``…), ``weekend``, ``daypart`` (``night`` 0-5 h, ``morning`` 6-11 h,
    ``afternoon`` 12-17 h, ``evening`` 18-23 h) and ``timezone`` (the IANA name used), in
    the visitor's zone: a ``timezone`` context key set by an earlier enricher, else a valid
    ``X-Timezone`` request header, else the configured default.

    Settings: ``default_timezone`` (IANA name, default ``"UTC"``).

Example (Django)::

    PERSONA = {
        "PLUGINS": {
            "country": {"headers": ["cf-ipcountry"]},
            "localtime": {"default_timezone": "Europe/Paris"},
        },
    }
"""
