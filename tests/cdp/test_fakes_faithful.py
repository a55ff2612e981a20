"""The fakes are faithful: the vendors' own Python clients (segment-analytics-python,
rudder-sdk-python) pointed at them get their valid traffic accepted and their malformed
traffic refused the way the vendors document (api-contracts.md §1-3)."""

from __future__ import annotations

import base64
import gzip
import json
import threading
import uuid

import pytest
import requests
from rudderstack.analytics import Client as RudderClient
from rudderstack.analytics.request import APIError as RudderAPIError
from rudderstack.analytics.request import post as rudder_post
from segment.analytics import Client as SegmentClient
from segment.analytics.request import APIError as SegmentAPIError
from segment.analytics.request import post as segment_post

from .fakes import FakeRudderStack, FakeSegment


def valid_message(n=0, **extra):
    return {"type": "track", "userId": f"u{n}", "event": "Signed Up",
            "messageId": uuid.uuid4().hex, "timestamp": "2026-11-01T10:00:00.000Z",
            "properties": {"n": n}, **extra}


# -- Segment -----------------------------------------------------------------------------------

def test_segment_client_sync_calls_are_accepted(segment_fake):
    client = SegmentClient(write_key="WK", host=segment_fake.url, sync_mode=True, max_retries=0)
    sent = [
        client.identify("u1", {"email": "ada@example.com", "plan": "pro"})[1],
        client.track("u1", "Order Completed", {"revenue": 42.5})[1],
        client.page("u1", "Docs", "Install", {"path": "/docs"})[1],
        client.screen("u1", "App", "Home")[1],
        client.group("u1", "acme", {"name": "Acme"})[1],
        client.alias("anon-1", "u1")[1],
        client.track(anonymous_id="a-9", event="Viewed")[1],
    ]
    assert segment_fake.distinct == 7 and segment_fake.duplicates == 0
    got = {m["messageId"]: m for m in segment_fake.messages()}
    assert set(got) == {m["messageId"] for m in sent}
    # analytics-python >= 2.3 puts the write key in the body (2.4 also sends Basic)
    first = segment_fake.requests[0]
    assert first.body["writeKey"] == "WK" and first.path == "/v1/batch"


def test_segment_client_batches_and_gzip_are_accepted(segment_fake):
    errors = []
    client = SegmentClient(write_key="WK", host=segment_fake.url, gzip=True, upload_size=100,
                           upload_interval=0.05, on_error=lambda e, b: errors.append(e))
    ids = [client.track(f"u{n}", "Tick", {"n": n})[1]["messageId"] for n in range(250)]
    client.flush()
    client.join()
    assert errors == []
    assert segment_fake.distinct == 250
    assert all(len(b) <= 100 for b in segment_fake.batches())
    assert {m["messageId"] for m in segment_fake.messages()} == set(ids)
    assert all(r.headers.get("content-encoding") == "gzip" for r in segment_fake.requests)


def test_segment_basic_auth_without_body_key_is_accepted(segment_fake):
    token = base64.b64encode(b"WK:").decode()
    response = requests.post(f"{segment_fake.url}/v1/track",
                             json={k: v for k, v in valid_message().items() if k != "type"},
                             headers={"Authorization": f"Basic {token}"})
    assert response.status_code == 200
    assert segment_fake.distinct == 1


def test_segment_rejects_an_unknown_or_missing_write_key_with_401(segment_fake):
    with pytest.raises(SegmentAPIError) as caught:
        segment_post("NOT-THE-KEY", segment_fake.url, batch=[valid_message()])
    assert (caught.value.status, caught.value.code) == (401, "unauthorized")
    response = requests.post(f"{segment_fake.url}/v1/batch", json={"batch": [valid_message()]})
    assert response.status_code == 401 and response.json()["message"] == "missing write key"
    assert segment_fake.distinct == 0


def test_segment_rejects_an_oversize_batch_and_message_with_400(segment_fake):
    padding = "x" * 20_000
    big_batch = [valid_message(n, properties={"pad": padding}) for n in range(30)]  # ~600 KB
    with pytest.raises(SegmentAPIError) as caught:
        segment_post("WK", segment_fake.url, batch=big_batch)
    assert (caught.value.status, caught.value.code) == (400, "payload_too_large")
    with pytest.raises(SegmentAPIError) as caught:
        segment_post("WK", segment_fake.url,
                     batch=[valid_message(1, properties={"pad": "y" * 33_000})])
    assert (caught.value.status, caught.value.code) == (400, "payload_too_large")
    assert "per message" in caught.value.message
    # the official client itself refuses a message over 32 KB before sending
    client = SegmentClient(write_key="WK", host=segment_fake.url, sync_mode=True)
    with pytest.raises(RuntimeError, match="Message exceeds"):
        client.track("u1", "Big", {"pad": "z" * 33_000})
    assert segment_fake.distinct == 0


def test_segment_rejects_missing_ids_and_invalid_json_with_400(segment_fake):
    message = valid_message()
    del message["userId"]
    with pytest.raises(SegmentAPIError) as caught:
        segment_post("WK", segment_fake.url, batch=[message])
    assert (caught.value.status, caught.value.code) == (400, "no_user_anon_id")
    response = requests.post(f"{segment_fake.url}/v1/batch", data=b'{"batch": [',
                             headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and response.json()["code"] == "invalid_json"
    response = requests.post(f"{segment_fake.url}/v1/batch", data=json.dumps({"batch": []}),
                             headers={"Content-Type": "text/plain"})
    assert response.status_code == 400
    assert segment_fake.distinct == 0


def test_segment_error_body_makes_the_official_consumer_give_up_not_retry(segment_fake):
    """A non-retryable 4xx with the documented {code, message} body: analytics-python
    calls on_error once and does not retry (a body without those keys would be retried)."""
    errors = []
    client = SegmentClient(write_key="WK", host=segment_fake.url, max_retries=3,
                           upload_interval=0.05, on_error=lambda e, b: errors.append(e))
    client.track("u1", "Tick", message_id="m" * 150)  # strict fake: messageId >= 100 chars
    client.flush()
    client.join()
    assert len(errors) == 1 and errors[0].status == 400 and errors[0].code == "invalid_request"
    assert segment_fake.statuses == {400: 1}


def test_segment_client_retries_5xx_and_429_then_delivers(segment_fake):
    segment_fake.retry_after = "0"
    segment_fake.script("503", "429", "ok")
    errors = []
    client = SegmentClient(write_key="WK", host=segment_fake.url, max_retries=5,
                           upload_interval=0.05, on_error=lambda e, b: errors.append(e))
    client.track("u1", "Tick")
    client.flush()
    client.join()
    assert errors == []
    assert segment_fake.statuses == {503: 1, 429: 1, 200: 1}
    assert segment_fake.distinct == 1


def test_segment_excess_events_over_2500_are_rejected_with_200(segment_fake):
    batch = [{"type": "track", "userId": "u", "event": "E", "messageId": f"m{n}"}
             for n in range(2_600)]
    response = segment_post("WK", segment_fake.url, batch=batch)
    assert response.status_code == 200
    assert segment_fake.distinct == 2_500 and segment_fake.rejected_excess == 100


def test_the_timeout_failure_mode_counts_the_batch_then_answers_too_late():
    with FakeSegment(failure_modes=("timeout",), fail_ratio=1.0, timeout_sleep=1.0) as fake:
        with pytest.raises(requests.Timeout):
            segment_post("WK", fake.url, timeout=0.3, batch=[valid_message()])
        assert fake.distinct == 1  # received, but the acknowledgement was lost


def test_arm_pause_holds_an_accepted_request_until_released(segment_fake):
    paused = segment_fake.arm_pause()
    done = threading.Event()
    threading.Thread(target=lambda: (segment_post("WK", segment_fake.url,
                                                  batch=[valid_message()]), done.set())).start()
    assert paused.wait(5)
    assert segment_fake.distinct == 1 and not done.is_set()
    segment_fake.release()
    assert done.wait(5)


# -- RudderStack -------------------------------------------------------------------------------

def test_rudderstack_client_sync_calls_are_accepted(rudder_fake):
    client = RudderClient(write_key="RWK", host=rudder_fake.url, sync_mode=True, max_retries=0)
    sent = [
        client.identify("u1", {"email": "ada@example.com"})[1],
        client.track("u1", "Order Completed", {"revenue": 10})[1],
        client.page("u1", "Docs", "Install")[1],
        client.alias("anon-1", "u1")[1],
    ]
    assert rudder_fake.distinct == 4
    first = rudder_fake.requests[0]
    assert first.headers["content-encoding"] == "gzip"  # the SDK's default
    assert "writeKey" not in first.body  # Basic auth only
    identify = first.body["batch"][0]
    assert identify["context"]["traits"] == {"email": "ada@example.com"}
    assert "traits" not in identify and identify["channel"] == "server"
    assert {m["messageId"] for m in rudder_fake.messages()} == {m["messageId"] for m in sent}


def test_rudderstack_client_batches_are_accepted(rudder_fake):
    errors = []
    client = RudderClient(write_key="RWK", host=rudder_fake.url, upload_interval=0.05,
                          on_error=lambda e, b: errors.append(e))
    for n in range(150):
        client.track(f"u{n}", "Tick")
    client.flush()
    client.join()
    assert errors == [] and rudder_fake.distinct == 150


def test_rudderstack_auth_is_basic_only_with_plain_text_errors():
    with FakeRudderStack(disabled_keys=("OFF",)) as fake:
        response = requests.post(f"{fake.url}/v1/batch",
                                 json={"batch": [valid_message()], "writeKey": "RWK"})
        assert (response.status_code, response.text.strip()) == (
            401, "failed to read writekey from header")
        with pytest.raises(RudderAPIError) as caught:
            rudder_post("NOPE", fake.url, batch=[valid_message()])
        assert (caught.value.status, caught.value.code, caught.value.message.strip()) == (
            401, "unknown", "invalid write key")
        with pytest.raises(RudderAPIError) as caught:
            rudder_post("OFF", fake.url, batch=[valid_message()])
        assert (caught.value.status, caught.value.message.strip()) == (404, "source is disabled")
        assert fake.distinct == 0


def test_rudderstack_rejects_malformed_traffic_as_documented(rudder_fake):
    message = valid_message()
    del message["userId"]
    with pytest.raises(RudderAPIError) as caught:
        rudder_post("RWK", rudder_fake.url, batch=[message])
    assert (caught.value.status, caught.value.message.strip()) == (
        400, "request neither has anonymousId nor userId")
    with pytest.raises(RudderAPIError) as caught:
        rudder_post("RWK", rudder_fake.url, batch=[])
    assert (caught.value.status, caught.value.message.strip()) == (400, "empty batch payload")
    auth = {"Authorization": "Basic " + base64.b64encode(b"RWK:").decode()}
    response = requests.post(f"{rudder_fake.url}/v1/batch", data=b"{nope", headers=auth)
    assert (response.status_code, response.text.strip()) == (400, "invalid json")
    assert rudder_fake.distinct == 0


def test_rudderstack_413_on_oversize_and_429_without_retry_after():
    with FakeRudderStack(max_request_bytes=50_000) as fake:
        big = [valid_message(n, properties={"pad": "p" * 10_000}) for n in range(10)]
        with pytest.raises(RudderAPIError) as caught:
            rudder_post("RWK", fake.url, gzip=False, batch=big)
        assert (caught.value.status, caught.value.message.strip()) == (
            413, "request size exceeds max limit")
        fake.script("429")
        response = requests.post(
            f"{fake.url}/v1/batch", json={"batch": [valid_message()]},
            headers={"Authorization": "Basic " + base64.b64encode(b"RWK:").decode()})
        assert response.status_code == 429 and "Retry-After" not in response.headers
        assert response.text.strip() == "max requests limit reached"


def test_rudderstack_fills_a_missing_message_id(rudder_fake):
    auth = {"Authorization": "Basic " + base64.b64encode(b"RWK:").decode(),
            "Content-Encoding": "gzip"}
    body = gzip.compress(json.dumps({"batch": [{"type": "track", "userId": "u",
                                                "event": "E"}]}).encode())
    response = requests.post(f"{rudder_fake.url}/v1/batch", data=body, headers=auth)
    assert (response.status_code, response.text) == (200, "OK")
    [message] = rudder_fake.messages()
    assert uuid.UUID(message["messageId"])


# -- Profile API ----------------------------------------------------------------------------

def test_profile_api_fake_speaks_the_documented_shapes(profile_fake):
    profile_fake.add_profile("user_id:u+1", {"plan": "pro"}, audiences={"vip": True},
                             computed={"ltv": 820})
    base = f"{profile_fake.url}/v1/spaces/spa_test/collections/users/profiles"
    response = requests.get(f"{base}/user_id:u%2B1/traits", auth=("PTOKEN", ""))
    assert response.status_code == 200
    assert response.json()["traits"] == {"plan": "pro", "ltv": 820, "vip": True}
    assert response.json()["cursor"]["has_more"] is False
    response = requests.get(f"{base}/user_id:u%2B1/traits?class=audience", auth=("PTOKEN", ""))
    assert response.json()["traits"] == {"vip": True}
    response = requests.get(f"{base}/user_id:u%2B1/traits?limit=1", auth=("PTOKEN", ""))
    assert response.json()["cursor"]["has_more"] is True and len(response.json()["traits"]) == 1
    response = requests.get(f"{base}/user_id:nobody/traits", auth=("PTOKEN", ""))
    assert response.status_code == 404
    assert response.json() == {"error": {"code": "not_found", "message": "Profile was not found."}}
    response = requests.get(f"{base}/user_id:u%2B1/traits", auth=("WRONG", ""))
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_error"
    response = requests.get(f"{base}/user_id:u%2B1/traits?limit=500", auth=("PTOKEN", ""))
    assert response.status_code == 400
