"""The email adapter's settings: ``settings["klaviyo"]`` and ``settings["mailchimp"]`` of the
plugin-settings mapping (in Django, ``PERSONA["PLUGINS"]``), parsed into frozen values.

Pure Python: importing this module imports neither Django nor ``requests``.

A section that is absent means the vendor is not used. A section that is present but
incomplete (no API key, no list mapping...) registers no sink and is reported by
``persona_check_config`` (and so by ``manage.py check``) with a hint; only a section that is
not a mapping at all raises :class:`~persona_sdk.errors.ConfigError` at start-up.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import attrs

from persona_sdk.checks import CheckMessage
from persona_sdk.errors import ConfigError

__all__ = [
    "KLAVIYO_REVISION",
    "KlaviyoConfig",
    "MailchimpConfig",
    "parse_klaviyo",
    "parse_mailchimp",
]

#: The Klaviyo API revision this adapter was written against (api-contracts.md §5).
KLAVIYO_REVISION = "2026-07-15"
KLAVIYO_URL = "https://a.klaviyo.com"
#: Mailchimp's documented cap of simultaneous connections per API key (§6).
MAILCHIMP_MAX_CONNECTIONS = 10
_REVISION = re.compile(r"^\d{4}-\d{2}-\d{2}(\.[a-z0-9]+)?$")
_DC = re.compile(r"^[a-z]{2,4}\d{1,3}$")

_KLAVIYO_KEYS = {
    "api_key",
    "lists",
    "revision",
    "base_url",
    "purposes",
    "timeout",
    "max_batch",
    "custom_source",
}
_MAILCHIMP_KEYS = {
    "api_key",
    "list_id",
    "tags",
    "server",
    "base_url",
    "purposes",
    "timeout",
    "max_batch",
    "max_connections",
    "merge_fields",
}


@attrs.frozen
class KlaviyoConfig:
    """``settings["klaviyo"]``::

    {"api_key": "pk_...",                 # a private API key (required)
     "lists": {"vip": "Xy12Ab"},          # segment -> Klaviyo list id (required)
     "revision": "2026-07-15",            # the ``revision`` header sent
     "base_url": "https://a.klaviyo.com",
     "purposes": ["sharing"],             # consent every synced person needs
     "timeout": 30, "max_batch": 100,
     "custom_source": None}               # stored on Klaviyo's consent records if set
    """

    api_key: str
    lists: Mapping[str, str]
    revision: str = KLAVIYO_REVISION
    base_url: str = KLAVIYO_URL
    purposes: tuple[str, ...] = ("sharing",)
    timeout: float = 30.0
    max_batch: int = 100
    custom_source: str | None = None

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(sorted(self.lists))


@attrs.frozen
class MailchimpConfig:
    """``settings["mailchimp"]``::

    {"api_key": "0123abcd-us19",          # required; the data center is its suffix
     "list_id": "a1b2c3d4e5",             # the audience (required)
     "tags": {"vip": "VIP customers"},    # segment -> member tag (required)
     "server": "us19",                    # only if the key has no suffix
     "base_url": None,                    # default https://<dc>.api.mailchimp.com/3.0
     "max_connections": 10,               # at most 10 (Mailchimp's cap per key)
     "merge_fields": {"FNAME": "first_name"},  # merge tag -> profile trait
     "purposes": ["sharing"], "timeout": 30, "max_batch": 100}
    """

    api_key: str
    list_id: str
    tags: Mapping[str, str]
    base_url: str
    purposes: tuple[str, ...] = ("sharing",)
    timeout: float = 30.0
    max_batch: int = 100
    max_connections: int = MAILCHIMP_MAX_CONNECTIONS
    merge_fields: Mapping[str, str] = attrs.field(factory=dict)

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(sorted(self.tags))


def _error(code: str, msg: str, hint: str) -> CheckMessage:
    return CheckMessage("error", f"persona_email.{code}", msg, hint=hint)


def _section(settings: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    section = settings.get(name)
    if section is None:
        return None
    if not isinstance(section, Mapping):
        raise ConfigError(
            f'PERSONA["PLUGINS"]["{name}"] must be a dict of settings, got {type(section).__name__}'
        )
    return section


def _str_map(value: Any) -> dict[str, str] | None:
    if not isinstance(value, Mapping) or not value:
        return None
    if not all(isinstance(k, str) and k and isinstance(v, str) and v for k, v in value.items()):
        return None
    return dict(value)


def _common(section: Mapping[str, Any], where: str, problems: list[CheckMessage]) -> dict[str, Any]:
    """purposes, timeout, max_batch: the options both vendors share."""
    out: dict[str, Any] = {}
    purposes = section.get("purposes", ("sharing",))
    if isinstance(purposes, str) or not all(isinstance(p, str) and p for p in purposes):
        problems.append(
            _error(
                "E008",
                f"{where}['purposes'] must be a list of consent purposes, got {purposes!r}",
                'e.g. ["sharing"] (the default) or ["sharing", "marketing"]',
            )
        )
    else:
        out["purposes"] = tuple(purposes)
    timeout = section.get("timeout", 30.0)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        problems.append(
            _error("E008", f"{where}['timeout'] must be a positive number of seconds", "e.g. 30")
        )
    else:
        out["timeout"] = float(timeout)
    max_batch = section.get("max_batch", 100)
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or not 1 <= max_batch <= 1000:
        problems.append(
            _error(
                "E008",
                f"{where}['max_batch'] must be an integer from 1 to 1000, got {max_batch!r}",
                "Klaviyo's bulk jobs take at most 1,000 profiles; 100 is the default",
            )
        )
    else:
        out["max_batch"] = max_batch
    return out


def _unknown(section: Mapping[str, Any], known: set[str], where: str) -> list[CheckMessage]:
    extra = sorted(str(k) for k in set(section) - known)
    if not extra:
        return []
    return [
        CheckMessage(
            "warning",
            "persona_email.W004",
            f"{where} has unknown key(s): {', '.join(extra)}",
            hint="Known keys: " + ", ".join(sorted(known)),
        )
    ]


def parse_klaviyo(settings: Mapping[str, Any]) -> tuple[KlaviyoConfig | None, list[CheckMessage]]:
    """``(config, problems)``; config is None when the section is absent or has errors."""
    section = _section(settings, "klaviyo")
    if section is None:
        return None, []
    where = 'PERSONA["PLUGINS"]["klaviyo"]'
    problems = _unknown(section, _KLAVIYO_KEYS, where)
    api_key = section.get("api_key")
    if not isinstance(api_key, str) or not api_key.strip():
        problems.append(
            _error(
                "E001",
                f"{where} has no 'api_key'",
                "Create a private API key in Klaviyo (Settings > API keys) with the lists, "
                "profiles, subscriptions and data-privacy scopes, and set it as 'api_key' "
                "(read it from the environment, not from source code).",
            )
        )
    lists = _str_map(section.get("lists"))
    if lists is None:
        problems.append(
            _error(
                "E002",
                f"{where}['lists'] must map segment names to Klaviyo list ids",
                'e.g. "lists": {"returning-high-value": "Xy12Ab"}; a list id is the last '
                "part of the list's URL in Klaviyo.",
            )
        )
    revision = section.get("revision", KLAVIYO_REVISION)
    if not isinstance(revision, str) or not _REVISION.match(revision):
        problems.append(
            _error(
                "E008",
                f"{where}['revision'] must look like YYYY-MM-DD, got {revision!r}",
                f"Leave it out to use {KLAVIYO_REVISION}, the revision this adapter speaks.",
            )
        )
    base_url = section.get("base_url", KLAVIYO_URL)
    if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
        problems.append(_error("E008", f"{where}['base_url'] must be an http(s) URL", KLAVIYO_URL))
    custom_source = section.get("custom_source")
    if custom_source is not None and not isinstance(custom_source, str):
        problems.append(_error("E008", f"{where}['custom_source'] must be a string", ""))
    common = _common(section, where, problems)
    if any(p.level == "error" for p in problems):
        return None, problems
    assert isinstance(api_key, str) and lists is not None
    return (
        KlaviyoConfig(
            api_key=api_key.strip(),
            lists=lists,
            revision=revision,
            base_url=base_url.rstrip("/"),
            custom_source=custom_source,
            **common,
        ),
        problems,
    )


def parse_mailchimp(
    settings: Mapping[str, Any],
) -> tuple[MailchimpConfig | None, list[CheckMessage]]:
    """``(config, problems)``; config is None when the section is absent or has errors."""
    section = _section(settings, "mailchimp")
    if section is None:
        return None, []
    where = 'PERSONA["PLUGINS"]["mailchimp"]'
    problems = _unknown(section, _MAILCHIMP_KEYS, where)
    api_key = section.get("api_key")
    base_url = section.get("base_url")
    if not isinstance(api_key, str) or not api_key.strip():
        problems.append(
            _error(
                "E003",
                f"{where} has no 'api_key'",
                "Create an API key in Mailchimp (Profile > Extras > API keys) and set it as "
                "'api_key'; it ends in the data center, e.g. '-us19'.",
            )
        )
    elif base_url is None:
        server = section.get("server") or (api_key.rsplit("-", 1)[1] if "-" in api_key else "")
        if not isinstance(server, str) or not _DC.match(server):
            problems.append(
                _error(
                    "E004",
                    f"{where}: cannot tell the Mailchimp data center from the API key",
                    "Mailchimp keys end in '-<dc>' (e.g. '-us19'); paste the whole key, or set "
                    "'server': 'us19'.",
                )
            )
        else:
            base_url = f"https://{server}.api.mailchimp.com/3.0"
    if base_url is not None and (
        not isinstance(base_url, str) or not base_url.startswith(("http://", "https://"))
    ):
        problems.append(
            _error("E008", f"{where}['base_url'] must be an http(s) URL", "or leave it out")
        )
    list_id = section.get("list_id")
    if not isinstance(list_id, str) or not list_id.strip():
        problems.append(
            _error(
                "E005",
                f"{where} has no 'list_id'",
                "Set 'list_id' to the audience id (Audience > Settings > Audience name and "
                "defaults > Audience ID).",
            )
        )
    tags = _str_map(section.get("tags"))
    if tags is None:
        problems.append(
            _error(
                "E006",
                f"{where}['tags'] must map segment names to member tags",
                'e.g. "tags": {"returning-high-value": "VIP"}; tags are created when first used.',
            )
        )
    max_connections = section.get("max_connections", MAILCHIMP_MAX_CONNECTIONS)
    if (
        isinstance(max_connections, bool)
        or not isinstance(max_connections, int)
        or not 1 <= max_connections <= MAILCHIMP_MAX_CONNECTIONS
    ):
        problems.append(
            _error(
                "E007",
                f"{where}['max_connections'] must be 1-{MAILCHIMP_MAX_CONNECTIONS}, "
                f"got {max_connections!r}",
                "Mailchimp allows 10 simultaneous connections per API key and answers 429 "
                "beyond; lower it when other tools share the key.",
            )
        )
    merge_fields = section.get("merge_fields") or {}
    if not isinstance(merge_fields, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in merge_fields.items()
    ):
        problems.append(
            _error(
                "E008",
                f"{where}['merge_fields'] must map merge tags to trait names",
                'e.g. {"FNAME": "first_name"}',
            )
        )
    common = _common(section, where, problems)
    if any(p.level == "error" for p in problems):
        return None, problems
    assert isinstance(api_key, str) and isinstance(list_id, str) and tags is not None
    assert isinstance(base_url, str)
    return (
        MailchimpConfig(
            api_key=api_key.strip(),
            list_id=list_id.strip(),
            tags=tags,
            base_url=base_url.rstrip("/"),
            max_connections=max_connections,
            merge_fields=dict(merge_fields),
            **common,
        ),
        problems,
    )
