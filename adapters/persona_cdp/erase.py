"""The vendor side of ``persona_erase``: ask the CDP to delete (and suppress) a person.

Segment — Public API, "Create Workspace Regulation"::

    POST {public_api_host}/regulations            (default https://api.segmentapis.com)
    Authorization: Bearer <public_api_token>
    {"regulationType": "SUPPRESS_WITH_DELETE", "subjectType": "USER_ID",
     "subjectIds": ["<user id>"]}
    → 200 {"data": {"regulateId": "..."}}

  The request shape is the one in Segment's generated Public API SDK
  (segmentio/public-api-sdk-python: ``DeletionAndSuppressionApi.create_workspace_regulation``,
  ``CreateWorkspaceRegulationV1Input``: regulationType, subjectType ``USER_ID``/``OBJECT_ID``,
  subjectIds; ``CreateWorkspaceRegulationV1Output``: regulateId). It is not in
  ../shared/api-contracts.md and has not been tried against the real API: **unconfirmed**,
  in particular the ``{"data": ...}`` envelope of the answer (a missing id is tolerated).

RudderStack — User Suppression API (Enterprise plan)::

    POST {api_host}/v2/regulations                (default https://api.rudderstack.com)
    Authorization: Bearer <api_token>             (a service or personal access token)
    {"regulationType": "suppress_with_delete", "destinationIds": [...],
     "users": [{"userId": "<user id>"}]}

  Endpoint, auth and the ``regulationType`` values are from rudderstack.com/docs/api/
  user-suppression-api; the exact body (``users`` objects, ``destinationIds`` required for
  ``suppress_with_delete``) and the answer are **unconfirmed**.

Both regulate by **user id** only: a profile known only by anonymous ids cannot be named
to either API, and the report says so (``skipped``). A failed call is reported
(``failed`` with the vendor's message) and logged; it never stops the local erasure.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import requests

from .config import RUDDERSTACK, SEGMENT, EraseConfig
from .segment import USER_AGENT, vendor_message

__all__ = ["erase_request", "request_rudderstack_deletion", "request_segment_deletion"]

log = logging.getLogger("persona_cdp")


def _post(
    url: str, token: str, body: dict[str, Any], timeout: float, session: Any
) -> requests.Response:
    poster = session if session is not None else requests
    response: requests.Response = poster.post(
        url,
        json=body,
        headers={
            "Authorization": f"Bearer {token}",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        },
        timeout=timeout,
    )
    return response


def request_segment_deletion(
    config: EraseConfig, user_ids: Sequence[str], *, session: Any = None
) -> dict[str, Any]:
    """Create a Segment workspace regulation for ``user_ids`` (see the module docs)."""
    url = f"{config.host}/regulations"
    body = {
        "regulationType": config.regulation,
        "subjectType": "USER_ID",
        "subjectIds": list(user_ids),
    }
    report: dict[str, Any] = {
        "vendor": SEGMENT,
        "endpoint": f"POST {url}",
        "regulation": config.regulation,
        "subject_ids": list(user_ids),
    }
    try:
        response = _post(url, config.token, body, config.timeout, session)
    except requests.RequestException as exc:
        return {**report, "status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    if not 200 <= response.status_code < 300:
        return {**report, "status": "failed", "error": vendor_message("Segment", response)}
    regulate_id = None
    try:
        data = response.json()
        inner = data.get("data", data) if isinstance(data, dict) else {}
        regulate_id = inner.get("regulateId") if isinstance(inner, dict) else None
    except ValueError:
        pass
    return {**report, "status": "requested", "regulate_id": regulate_id}


def request_rudderstack_deletion(
    config: EraseConfig, user_ids: Sequence[str], *, session: Any = None
) -> dict[str, Any]:
    """Create a RudderStack suppression regulation for ``user_ids`` (see the module docs)."""
    url = f"{config.host}/v2/regulations"
    body: dict[str, Any] = {
        "regulationType": config.regulation,
        "users": [{"userId": u} for u in user_ids],
    }
    if config.regulation == "suppress_with_delete":
        body["destinationIds"] = list(config.destination_ids)
    report: dict[str, Any] = {
        "vendor": RUDDERSTACK,
        "endpoint": f"POST {url}",
        "regulation": config.regulation,
        "subject_ids": list(user_ids),
    }
    try:
        response = _post(url, config.token, body, config.timeout, session)
    except requests.RequestException as exc:
        return {**report, "status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    if not 200 <= response.status_code < 300:
        return {**report, "status": "failed", "error": vendor_message("RudderStack", response)}
    regulation_id = None
    try:
        data = response.json()
        if isinstance(data, list) and data and isinstance(data[0], dict):
            data = data[0]
        if isinstance(data, dict):
            regulation_id = data.get("id")
    except ValueError:
        pass
    return {**report, "status": "requested", "regulation_id": regulation_id}


def erase_request(
    vendor: str, config: EraseConfig, user_ids: Sequence[str], *, session: Any = None
) -> dict[str, Any]:
    """Ask ``vendor`` to delete ``user_ids``; a report, never an exception."""
    if not user_ids:
        return {
            "vendor": vendor,
            "status": "skipped",
            "reason": "the profile has no user id; the vendor's deletion API names people "
            "by user id only (delete anonymous data in the vendor's app if needed)",
        }
    request = request_segment_deletion if vendor == SEGMENT else request_rudderstack_deletion
    try:
        report = request(config, user_ids, session=session)
    except Exception as exc:  # never let a vendor call stop the local erasure
        report = {"vendor": vendor, "status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    if report["status"] == "failed":
        log.error(
            "persona_cdp: could not ask %s to delete %s: %s (the local erasure went on; "
            "repeat the request in the vendor's app)", vendor, list(user_ids), report["error"],
        )
    return report
