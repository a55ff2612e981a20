"""The first-party context enrichers, exercised through the real pluggy plugin path."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy
import pytest

import persona_sdk.hookspecs
from persona_enrichers import campaign, country, device, localtime
from persona_sdk.context import RegisteredEnricher, RequestInfo, build_context
from persona_sdk.errors import ConfigError

ALL = (campaign, device, country, localtime)


class Enrichers:
    """A plugin manager with some enricher modules registered and configured."""

    def __init__(self, *modules: ModuleType, settings: Mapping[str, Any] | None = None) -> None:
        pm = pluggy.PluginManager("persona_sdk")
        pm.add_hookspecs(persona_sdk.hookspecs)
        for module in modules or ALL:
            pm.register(module)
        pm.hook.persona_configure.call_historic(kwargs={"settings": settings or {}})
        found: list[RegisteredEnricher] = []

        def register(name: str, fn: Any, order: int = 100, doc: str = "") -> None:
            found.append(RegisteredEnricher(name, fn, order, doc))

        pm.hook.persona_register_enrichers(register=register)
        self.enrichers = sorted(found, key=lambda e: e.order)

    def __call__(self, path: str = "/", **kwargs: Any) -> dict[str, Any]:
        return build_context(RequestInfo.build(path, **kwargs), self.enrichers)


@pytest.fixture(autouse=True)
def _reset_plugin_settings() -> Any:
    yield
    Enrichers(settings={})  # module-level settings back to the defaults


def test_registration_names_orders_and_docs() -> None:
    enrichers = Enrichers().enrichers
    assert [(e.name, e.order) for e in enrichers] == [
        ("campaign", 10),
        ("device", 20),
        ("country", 30),
        ("localtime", 200),
    ]
    assert all(e.doc for e in enrichers)


# --- campaign ---------------------------------------------------------------------------

UTM_URL = (
    "/landing?utm_source=newsletter&utm_medium=email&utm_campaign=spring_sale"
    "&utm_term=shoes&utm_content=hero"
)


def test_utm_all_fields() -> None:
    ctx = Enrichers(campaign)(UTM_URL)
    assert ctx["utm"] == {
        "source": "newsletter",
        "medium": "email",
        "campaign": "spring_sale",
        "term": "shoes",
        "content": "hero",
    }
    assert ctx["campaign"] == "spring_sale"
    assert ctx["referrer_type"] == "email"
    assert ctx["paid_click"] is False and ctx["click_id"] is None


def test_utm_missing_blank_and_repeated() -> None:
    run = Enrichers(campaign)
    ctx = run("/?utm_source=a&utm_source=b&utm_medium=&utm_term=%20%20&other=1")
    assert ctx["utm"] == {"source": "b"}
    assert ctx["campaign"] is None
    ctx = run("/")
    assert ctx["utm"] == {} and ctx["campaign"] is None
    assert ctx["referrer"] is None and ctx["referrer_host"] is None
    assert ctx["referrer_type"] == "direct"
    ctx = run("/", query={"utm_campaign": ["x", "y"]})
    assert ctx["campaign"] == "y"
    assert len(run("/?utm_campaign=" + "z" * 1000)["campaign"]) == 200


@pytest.mark.parametrize(
    ("path", "headers", "expected"),
    [
        ("/", {}, "direct"),
        ("/", {"referer": "  "}, "direct"),
        (
            "/",
            {"referer": "https://www.shop.example/cart", "host": "shop.example:8443"},
            "internal",
        ),
        ("/", {"referer": "https://shop.example/", "host": "www.shop.example"}, "internal"),
        ("/", {"referer": "https://www.google.com/"}, "search"),
        ("/", {"referer": "https://www.google.co.uk/search?q=x"}, "search"),
        ("/", {"referer": "https://cn.bing.com/"}, "search"),
        ("/", {"referer": "https://duckduckgo.com/"}, "search"),
        ("/", {"referer": "https://search.yahoo.co.jp/"}, "search"),
        ("/", {"referer": "https://yandex.ru/"}, "search"),
        ("/", {"referer": "https://www.baidu.com/"}, "search"),
        ("/", {"referer": "https://www.ecosia.org/"}, "search"),
        ("/", {"referer": "https://l.facebook.com/l.php"}, "social"),
        ("/", {"referer": "https://www.instagram.com/"}, "social"),
        ("/", {"referer": "https://t.co/abc"}, "social"),
        ("/", {"referer": "https://x.com/someone"}, "social"),
        ("/", {"referer": "https://twitter.com/"}, "social"),
        ("/", {"referer": "https://www.linkedin.com/"}, "social"),
        ("/", {"referer": "https://www.pinterest.fr/"}, "social"),
        ("/", {"referer": "https://old.reddit.com/r/x"}, "social"),
        ("/", {"referer": "https://www.tiktok.com/"}, "social"),
        ("/", {"referer": "https://m.youtube.com/watch"}, "social"),
        ("/", {"referer": "https://mail.google.com/"}, "email"),
        ("/?utm_medium=Email", {}, "email"),
        ("/?utm_medium=cpc", {"referer": "https://www.google.com/"}, "paid"),
        ("/?utm_medium=paid_social", {"referer": "https://facebook.com/"}, "paid"),
        ("/?gclid=abc123", {"referer": "https://www.google.com/"}, "paid"),
        ("/", {"referer": "https://blog.example.org/post"}, "referral"),
        ("/", {"referer": "https://google.evil.example/"}, "referral"),
        ("/", {"referer": "https://notx.com/"}, "referral"),
        ("/", {"referer": "https://ex.com.google.attacker.example/"}, "referral"),
        ("/", {"referer": "not a url"}, "referral"),
    ],
)
def test_referrer_types(path: str, headers: dict[str, str], expected: str) -> None:
    assert Enrichers(campaign)(path, headers=headers)["referrer_type"] == expected


def test_referrer_fields_and_malformed_urls() -> None:
    run = Enrichers(campaign)
    ctx = run("/", headers={"Referer": "https://WWW.Example.COM./a?b=c"})
    assert ctx["referrer"] == "https://WWW.Example.COM./a?b=c"
    assert ctx["referrer_host"] == "example.com"
    long = "https://example.com/" + "a" * 2000
    assert run("/", headers={"referer": long})["referrer"] == long[:500]
    for bad in ("http://[::1", "http://[zz]/", "://", "https://", "\x00\x01", "ftp://é.example"):
        ctx = run("/", headers={"referer": bad, "host": "[bad"})
        assert ctx["referrer_type"] in {"referral", "direct"}


def test_click_ids() -> None:
    run = Enrichers(campaign)
    ctx = run("/?gclid=Cj0KCQ")
    assert ctx["click_id"] == "gclid" and ctx["paid_click"] is True
    assert ctx["referrer_type"] == "paid"
    assert "Cj0KCQ" not in repr(ctx)  # the id's value is not copied
    assert run("/?msclkid=x1")["click_id"] == "msclkid"
    # Facebook tags every outbound link with fbclid, paid or not: it is not a paid signal
    organic = run("/?fbclid=IwAR", headers={"referer": "https://www.facebook.com/"})
    assert organic["paid_click"] is False and organic["referrer_type"] == "social"
    assert run("/?gclid=")["paid_click"] is False
    custom = Enrichers(campaign, settings={"campaign": {"click_ids": ["ttclid"]}})
    assert custom("/?ttclid=1")["click_id"] == "ttclid"
    assert custom("/?gclid=1")["paid_click"] is False


@pytest.mark.parametrize(
    "settings",
    [{"campaign": {"click_ids": "gclid"}}, {"campaign": {"clickids": []}}, {"campaign": 3}],
)
def test_campaign_bad_settings(settings: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="campaign"):
        Enrichers(campaign, settings=settings)


# --- device -----------------------------------------------------------------------------

IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
)
ANDROID_PHONE = (
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Mobile Safari/537.36"
)
ANDROID_TABLET = (
    "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
IPAD = (
    "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/16.6 Mobile/15E148 Safari/604.1"
)
WINDOWS_EDGE = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.51"
)
MAC_FIREFOX = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14.4; rv:125.0) Gecko/20100101 Firefox/125.0"
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
GOOGLEBOT_PHONE = (
    "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, "
    "like Gecko) Chrome/124.0.6367.201 Mobile Safari/537.36 (compatible; Googlebot/2.1; "
    "+http://www.google.com/bot.html)"
)
SAMSUNG = (
    "Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
    "SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile Safari/537.36"
)
CHROMEBOOK = (
    "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
LINUX_OPERA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36 OPR/106.0.0.0"
)
IOS_CHROME = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) CriOS/124.0.6367.88 Mobile/15E148 Safari/604.1"
)
CUBOT_PHONE = (
    "Mozilla/5.0 (Linux; Android 12; CUBOT X50) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Mobile Safari/537.36"
)


@pytest.mark.parametrize(
    ("ua", "expected"),
    [
        (IPHONE, ("mobile", "ios", "safari")),
        (ANDROID_PHONE, ("mobile", "android", "chrome")),
        (ANDROID_TABLET, ("tablet", "android", "chrome")),
        (IPAD, ("tablet", "ios", "safari")),
        (WINDOWS_EDGE, ("desktop", "windows", "edge")),
        (MAC_FIREFOX, ("desktop", "macos", "firefox")),
        (GOOGLEBOT, ("bot", "other", "other")),
        (GOOGLEBOT_PHONE, ("bot", "other", "other")),
        ("curl/8.4.0", ("bot", "other", "other")),
        (SAMSUNG, ("mobile", "android", "samsung")),
        (CHROMEBOOK, ("desktop", "chromeos", "chrome")),
        (LINUX_OPERA, ("desktop", "linux", "opera")),
        (IOS_CHROME, ("mobile", "ios", "chrome")),
        (CUBOT_PHONE, ("mobile", "android", "chrome")),
        ("", ("unknown", "other", "other")),
        ("   ", ("unknown", "other", "other")),
        ("MyApp/1.0", ("unknown", "other", "other")),
    ],
)
def test_device_user_agents(ua: str, expected: tuple[str, str, str]) -> None:
    headers = {"User-Agent": ua} if ua else {}
    device_info = Enrichers(device)("/", headers=headers)["device"]
    assert (device_info["type"], device_info["os"], device_info["browser"]) == expected


def test_device_client_hint_and_cache() -> None:
    run = Enrichers(device)
    hinted = run("/", headers={"user-agent": ANDROID_TABLET, "sec-ch-ua-mobile": "?1"})
    assert hinted["device"]["type"] == "mobile"
    assert run("/", headers={"sec-ch-ua-mobile": "?1"})["device"]["type"] == "mobile"
    assert (
        run("/", headers={"user-agent": ANDROID_TABLET, "sec-ch-ua-mobile": "?0"})["device"]["type"]
        == "tablet"
    )
    bot = run("/", headers={"user-agent": GOOGLEBOT, "sec-ch-ua-mobile": "?1"})
    assert bot["device"]["type"] == "bot"
    # Each request gets its own dict (the memoized value is immutable).
    first = run("/", headers={"user-agent": IPHONE})["device"]
    first["type"] = "changed"
    assert run("/", headers={"user-agent": IPHONE})["device"]["type"] == "mobile"
    assert device._parse.cache_info().maxsize == 4096


def test_device_long_user_agent_truncated() -> None:
    device._parse.cache_clear()
    ua = IPHONE + " " + "x" * 20_000 + " Googlebot/2.1"
    info = Enrichers(device)("/", headers={"user-agent": ua})["device"]
    assert info["type"] == "mobile"  # the bot marker lies past the 512 first characters
    assert device.parse_user_agent(ua) == info
    assert device.parse_user_agent(ua[:512]) == info
    assert device._parse.cache_info().currsize == 1  # one entry, keyed on the cut string


# --- country ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"CF-IPCountry": "fr"}, "FR"),
        ({"CloudFront-Viewer-Country": "DE"}, "DE"),
        ({"X-AppEngine-Country": "jp"}, "JP"),
        ({"Fastly-Geo-Country": " BR "}, "BR"),
        ({"cf-ipcountry": "XX", "cloudfront-viewer-country": "US"}, "US"),
        ({"cf-ipcountry": "ZZ"}, None),
        ({"cf-ipcountry": "FRA"}, None),
        ({"cf-ipcountry": "F1"}, None),
        ({"cf-ipcountry": ""}, None),
        ({"cf-ipcountry": "<script>"}, None),
        ({"cf-ipcountry": "ÉÉ"}, None),
        ({"cf-ipcountry": "IT", "cloudfront-viewer-country": "US"}, "IT"),
        ({}, None),
    ],
)
def test_country_headers(headers: dict[str, str], expected: str | None) -> None:
    ctx = Enrichers(country)("/", headers=headers)
    assert ctx.get("country") == expected
    assert "tor" not in ctx and "region" not in ctx


def test_country_tor_and_region() -> None:
    run = Enrichers(country)
    ctx = run("/", headers={"cf-ipcountry": "T1", "cloudfront-viewer-country": "US"})
    assert ctx["tor"] is True and "country" not in ctx
    ctx = run(
        "/",
        headers={"cloudfront-viewer-country": "US", "cloudfront-viewer-country-region": "wa"},
    )
    assert (ctx["country"], ctx["region"]) == ("US", "WA")
    ctx = run(
        "/",
        headers={"cloudfront-viewer-country": "US", "cloudfront-viewer-country-region": "!!!!"},
    )
    assert ctx["country"] == "US" and "region" not in ctx
    # A region alone, with no country, is not reported.
    assert "region" not in run("/", headers={"cloudfront-viewer-country-region": "WA"})


def test_country_configured_headers() -> None:
    run = Enrichers(country, settings={"country": {"headers": ["X-Country"]}})
    assert run("/", headers={"x-country": "nl"})["country"] == "NL"
    assert "country" not in run("/", headers={"cf-ipcountry": "FR"})  # not trusted
    assert "country" not in Enrichers(country, settings={"country": {"headers": []}})(
        "/", headers={"cf-ipcountry": "FR"}
    )


@pytest.mark.parametrize(
    "settings",
    [
        {"country": {"headers": "cf-ipcountry"}},
        {"country": {"headers": [1]}},
        {"country": {"geoip": "x.mmdb"}},
        {"country": {"geoip_database": 42}},
        {"country": ["cf-ipcountry"]},
    ],
)
def test_country_bad_settings(settings: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="country"):
        Enrichers(country, settings=settings)


def _write_mmdb(path: Path, database_type: str, city: bool = False) -> Path:
    mmdb_writer = pytest.importorskip("mmdb_writer")
    netaddr = pytest.importorskip("netaddr")
    writer = mmdb_writer.MMDBWriter(
        ip_version=6,
        ipv4_compatible=True,
        database_type=database_type,
        languages=["en"],
        description="persona-sdk test database",
    )
    gb: dict[str, Any] = {"country": {"iso_code": "GB", "names": {"en": "United Kingdom"}}}
    if city:
        gb["subdivisions"] = [{"iso_code": "ENG", "names": {"en": "England"}}]
    writer.insert_network(netaddr.IPSet(["81.2.69.0/24"]), gb)
    writer.insert_network(netaddr.IPSet(["2a02:6b8::/32"]), {"country": {"iso_code": "RU"}})
    # A private network wrongly present in the file must still be skipped.
    writer.insert_network(netaddr.IPSet(["10.0.0.0/8"]), {"country": {"iso_code": "US"}})
    writer.to_db_file(str(path))
    return path


@pytest.fixture(scope="module")
def geoip_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pytest.importorskip("geoip2")
    base = tmp_path_factory.mktemp("geoip")
    return {
        "country": _write_mmdb(base / "country.mmdb", "GeoLite2-Country"),
        "city": _write_mmdb(base / "city.mmdb", "GeoIP2-City", city=True),
        "asn": _write_mmdb(base / "asn.mmdb", "GeoLite2-ASN"),
    }


def test_geoip_country_database(geoip_files: dict[str, Path]) -> None:
    run = Enrichers(country, settings={"country": {"geoip_database": geoip_files["country"]}})
    assert run("/", remote_addr="81.2.69.160")["country"] == "GB"
    assert run("/", remote_addr="::ffff:81.2.69.160")["country"] == "GB"
    assert run("/", remote_addr="2a02:6b8::1")["country"] == "RU"
    for addr in ("1.1.1.1", "10.1.2.3", "127.0.0.1", "::1", "fe80::1%eth0", "garbage", "", None):
        assert "country" not in run("/", remote_addr=addr), addr
    # Headers win over the database.
    ctx = run("/", remote_addr="81.2.69.160", headers={"cf-ipcountry": "FR"})
    assert ctx["country"] == "FR"
    assert "region" not in run("/", remote_addr="81.2.69.160")


def test_geoip_city_database(geoip_files: dict[str, Path]) -> None:
    settings = {"country": {"geoip_database": str(geoip_files["city"]), "headers": []}}
    ctx = Enrichers(country, settings=settings)("/", remote_addr="81.2.69.160")
    assert (ctx["country"], ctx["region"]) == ("GB", "ENG")


def test_geoip_wrong_database_type(geoip_files: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="Country or City"):
        Enrichers(country, settings={"country": {"geoip_database": geoip_files["asn"]}})


def test_geoip_unreadable_file(tmp_path: Path) -> None:
    pytest.importorskip("geoip2")
    with pytest.raises(ConfigError, match="cannot open"):
        Enrichers(country, settings={"country": {"geoip_database": tmp_path / "missing.mmdb"}})
    junk = tmp_path / "junk.mmdb"
    junk.write_bytes(b"not a maxmind database" * 10)
    with pytest.raises(ConfigError, match="cannot open"):
        Enrichers(country, settings={"country": {"geoip_database": junk}})


def test_geoip_package_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "geoip2.database", None)  # makes the import fail
    with pytest.raises(ConfigError, match=r"pip install persona-sdk\[geoip\]"):
        Enrichers(country, settings={"country": {"geoip_database": tmp_path / "x.mmdb"}})


# --- localtime --------------------------------------------------------------------------

# Wednesday 2024-07-17 10:30 UTC (12:30 in Paris, summer time).
WEDNESDAY = datetime(2024, 7, 17, 10, 30, tzinfo=timezone.utc).timestamp()
TIME_KEYS = ("hour", "minute", "weekday", "weekday_name", "weekend", "daypart", "timezone")


def _times(ctx: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(ctx[key] for key in TIME_KEYS)


def test_localtime_utc_default() -> None:
    ctx = Enrichers(localtime)("/", now=WEDNESDAY)
    assert _times(ctx) == (10, 30, 3, "wednesday", False, "morning", "UTC")


def test_localtime_configured_and_header_zone() -> None:
    run = Enrichers(localtime, settings={"localtime": {"default_timezone": "Europe/Paris"}})
    assert _times(run("/", now=WEDNESDAY)) == (
        12,
        30,
        3,
        "wednesday",
        False,
        "afternoon",
        "Europe/Paris",
    )
    tokyo = run("/", now=WEDNESDAY, headers={"X-Timezone": "Asia/Tokyo"})
    assert _times(tokyo) == (19, 30, 3, "wednesday", False, "evening", "Asia/Tokyo")
    la = run("/", now=WEDNESDAY - 9 * 3600, headers={"x-timezone": "America/Los_Angeles"})
    assert (la["hour"], la["daypart"]) == (18, "evening")
    night = run("/", now=WEDNESDAY + 14 * 3600)  # 02:30 Thursday in Paris
    assert (night["daypart"], night["weekday"], night["weekday_name"]) == ("night", 4, "thursday")


def test_localtime_weekend() -> None:
    sunday = datetime(2024, 7, 21, 23, 59, tzinfo=timezone.utc).timestamp()
    ctx = Enrichers(localtime)("/", now=sunday)
    assert (ctx["weekday"], ctx["weekday_name"], ctx["weekend"]) == (7, "sunday", True)
    paris = Enrichers(localtime)("/", now=sunday, headers={"x-timezone": "Europe/Paris"})
    assert (paris["weekday"], paris["weekend"], paris["hour"]) == (1, False, 1)  # Monday


def test_localtime_across_dst_change() -> None:
    # Paris springs forward on 2024-03-31 at 02:00 CET (01:00 UTC) to 03:00 CEST.
    run = Enrichers(localtime, settings={"localtime": {"default_timezone": "Europe/Paris"}})
    before = datetime(2024, 3, 31, 0, 59, tzinfo=timezone.utc).timestamp()
    after = datetime(2024, 3, 31, 1, 0, tzinfo=timezone.utc).timestamp()
    assert (run("/", now=before)["hour"], run("/", now=before)["minute"]) == (1, 59)
    assert (run("/", now=after)["hour"], run("/", now=after)["minute"]) == (3, 0)
    # ...and falls back on 2024-10-27 at 03:00 CEST (01:00 UTC) to 02:00 CET.
    fall = datetime(2024, 10, 27, 0, 30, tzinfo=timezone.utc).timestamp()
    assert run("/", now=fall)["hour"] == 2
    assert run("/", now=fall + 3600)["hour"] == 2
    assert run("/", now=fall)["weekday_name"] == "sunday"


def test_localtime_zone_precedence_and_invalid_zones() -> None:
    def set_zone(request: RequestInfo, context: dict[str, Any]) -> None:
        context["timezone"] = request.headers.get("x-profile-zone")

    run = Enrichers(localtime)
    run.enrichers.insert(0, RegisteredEnricher("profile_zone", set_zone, 50))
    both = {"x-profile-zone": "Asia/Kolkata", "x-timezone": "Asia/Tokyo"}
    assert run("/", now=WEDNESDAY, headers=both)["timezone"] == "Asia/Kolkata"
    assert run("/", now=WEDNESDAY, headers=both)["minute"] == 0  # UTC+5:30
    bad_context = {"x-profile-zone": "Mars/Olympus", "x-timezone": "Asia/Tokyo"}
    assert run("/", now=WEDNESDAY, headers=bad_context)["timezone"] == "Asia/Tokyo"
    for bad in ("Not/AZone", "../../etc/passwd", "/etc/localtime", "Europe", "utc", "é", "x" * 99):
        ctx = run("/", now=WEDNESDAY, headers={"x-timezone": bad})
        assert (ctx["timezone"], ctx["hour"]) == ("UTC", 10), bad


@pytest.mark.parametrize(
    "settings",
    [
        {"localtime": {"default_timezone": "Europe/Atlantis"}},
        {"localtime": {"default_timezone": ""}},
        {"localtime": {"default_timezone": None}},
        {"localtime": {"default_zone": "UTC"}},
    ],
)
def test_localtime_invalid_configured_zone(settings: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="localtime"):
        Enrichers(localtime, settings=settings)


def test_localtime_odd_now() -> None:
    run = Enrichers(localtime)
    for now in (float("nan"), float("inf"), 1e20, -1e20):
        ctx = run("/", now=now)
        assert "hour" not in ctx


# --- all together -----------------------------------------------------------------------


def test_all_enrichers_together() -> None:
    ctx = Enrichers()(
        "/p?utm_source=google&utm_medium=cpc&utm_campaign=brand",
        headers={
            "user-agent": IPHONE,
            "referer": "https://www.google.com/",
            "cf-ipcountry": "FR",
            "x-timezone": "Europe/Paris",
        },
        now=WEDNESDAY,
    )
    assert ctx["campaign"] == "brand" and ctx["referrer_type"] == "paid"
    assert ctx["device"] == {"type": "mobile", "os": "ios", "browser": "safari"}
    assert ctx["country"] == "FR"
    assert (ctx["hour"], ctx["timezone"]) == (12, "Europe/Paris")


def test_odd_inputs_never_raise(caplog: pytest.LogCaptureFixture) -> None:
    run = Enrichers()
    garbage = "\x00\x7f\ufffd☃ 漢字 \U0001f600 %%% ]]][[[ \\ ' \" <>"
    odd_headers = [
        {
            "user-agent": "Mozilla/5.0 " + "A" * 10_240,
            "referer": "http://[" + garbage,
            "host": garbage,
            "cf-ipcountry": garbage,
            "cloudfront-viewer-country-region": garbage,
            "sec-ch-ua-mobile": garbage,
            "x-timezone": garbage,
        },
        {name: garbage for name in ("user-agent", "referer", "host", "x-timezone")},
        {"user-agent": "Mözïllä/5.0 (Ändröid; Möbïlé) 漢字", "referer": "https://例え.jp/パス"},
        {"referer": "javascript:alert(1)", "user-agent": "\n\r\t"},
    ]
    odd_paths = ["/?utm_source=" + garbage * 50, "/?gclid&utm_medium&&&=&", "/%ZZ?%E0%A4%A"]
    for headers in odd_headers:
        for path in odd_paths:
            ctx = run(path, headers=headers, remote_addr=garbage, now=WEDNESDAY)
            assert {"utm", "referrer_type", "device", "hour"} <= set(ctx)
    assert not [r for r in caplog.records if "failed" in r.getMessage()]
