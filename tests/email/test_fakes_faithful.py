"""The fakes are faithful: the official ``klaviyo-api`` and ``mailchimp-marketing`` clients,
pointed at them, get valid calls accepted and malformed ones rejected the way the vendors
document (api-contracts.md §5, §6); the fake SendGrid answers the v3 contract (§7) —
anymail's SendGrid backend is its client in test_sendgrid.py. No database needed."""

from __future__ import annotations

import hashlib
import time
from email.utils import parsedate_to_datetime

import mailchimp_marketing
import pytest
import requests
from klaviyo_api import KlaviyoAPI
from openapi_client.exceptions import ApiException

from .fakes import FakeKlaviyo, FakeMailchimp, FakeSendGrid

KEY = "pk_persona_test"
SUBSCRIBE = {
    "data": {
        "type": "profile-subscription-bulk-create-job",
        "attributes": {
            "profiles": {"data": [{"type": "profile", "attributes": {
                "email": "ada@example.com",
                "subscriptions": {"email": {"marketing": {"consent": "SUBSCRIBED"}}},
            }}]},
            "historical_import": False,
        },
        "relationships": {"list": {"data": {"type": "list", "id": "LVIP01"}}},
    }
}


@pytest.fixture
def klaviyo():
    fake = FakeKlaviyo(api_keys=(KEY,))
    yield fake
    fake.stop()


@pytest.fixture
def client(klaviyo):
    return KlaviyoAPI(KEY, test_host=klaviyo.url, max_retries=3, max_delay=2)


# -- Klaviyo -------------------------------------------------------------------------------
def test_klaviyo_client_calls_are_accepted_and_change_the_fake(client, klaviyo):
    created = client.Profiles.create_or_update_profile(
        {"data": {"type": "profile", "attributes": {"email": "ada@example.com", "external_id": "p1"}}}
    )
    pid = created.data.id
    assert created.data.attributes.external_id == "p1"
    again = client.Profiles.create_or_update_profile(
        {"data": {"type": "profile", "attributes": {"email": "ada@example.com"}}}
    )
    assert again.data.id == pid  # an upsert
    assert client.Profiles.bulk_subscribe_profiles(SUBSCRIBE) is None  # 202, no body
    assert klaviyo.members("LVIP01") == {"ada@example.com"}
    assert klaviyo.subscribed() == {"ada@example.com"}
    client.Lists.add_profiles_to_list("LRET02", {"data": [{"type": "profile", "id": pid}]})
    assert klaviyo.members("LRET02") == {"ada@example.com"}
    client.Lists.remove_profiles_from_list("LRET02", {"data": [{"type": "profile", "id": pid}]})
    assert klaviyo.members("LRET02") == set()
    found = client.Profiles.get_profiles(filter='equals(email,"ada@example.com")')
    assert [p.id for p in found.data] == [pid]
    client.Profiles.bulk_unsubscribe_profiles({"data": {
        "type": "profile-subscription-bulk-delete-job",
        "attributes": {"profiles": {"data": [{"type": "profile", "attributes": {
            "email": "ada@example.com",
            "subscriptions": {"email": {"marketing": {"consent": "UNSUBSCRIBED"}}}}}]}},
    }})
    assert klaviyo.subscribed() == set()
    client.Data_Privacy.request_profile_deletion({"data": {
        "type": "data-privacy-deletion-job",
        "attributes": {"profile": {"data": {"type": "profile",
                                            "attributes": {"email": "ada@example.com"}}}},
    }})
    assert klaviyo.deletions == ["ada@example.com"] and klaviyo.profiles == {}
    # what the official client sends is what the fake requires
    seen = klaviyo.requests[0].headers
    assert seen["authorization"] == f"Klaviyo-API-Key {KEY}"
    assert seen["content-type"] == "application/vnd.api+json"
    assert "revision" in seen


def test_klaviyo_rejects_malformed_calls_with_jsonapi_errors(client, klaviyo):
    bad = {"data": {**SUBSCRIBE["data"], "attributes": {**SUBSCRIBE["data"]["attributes"]}}}
    bad["data"]["attributes"]["profiles"] = {"data": [
        SUBSCRIBE["data"]["attributes"]["profiles"]["data"][0],
        {"type": "profile", "attributes": {"email": "not-an-address", "subscriptions": {
            "email": {"marketing": {"consent": "SUBSCRIBED"}}}}},
    ]}
    with pytest.raises(ApiException) as info:
        client.Profiles.bulk_subscribe_profiles(bad)
    assert info.value.status == 400
    assert b"/data/attributes/profiles/data/1/attributes/email" in info.value.body.encode()
    unknown_list = {"data": {**SUBSCRIBE["data"], "relationships": {
        "list": {"data": {"type": "list", "id": "NOPE"}}}}}
    with pytest.raises(ApiException) as info:
        client.Profiles.bulk_subscribe_profiles(unknown_list)
    assert info.value.status == 404
    with pytest.raises(ApiException) as info:
        client.Data_Privacy.request_profile_deletion({"data": {
            "type": "data-privacy-deletion-job",
            "attributes": {"profile": {"data": {"type": "profile", "attributes": {
                "email": "a@example.com", "phone_number": "+15555550100"}}}}}})
    assert info.value.status == 400  # exactly one identifier
    with pytest.raises(ApiException) as info:
        KlaviyoAPI("pk_wrong", test_host=klaviyo.url, max_retries=0).Profiles.get_profiles()
    assert info.value.status == 401
    assert '"code": "not_authenticated"' in info.value.body
    assert klaviyo.subscribed() == set()


def test_klaviyo_sdk_honours_the_fakes_retry_after(client, klaviyo):
    klaviyo.throttle_next(1, retry_after=1)
    started = time.monotonic()
    client.Profiles.bulk_subscribe_profiles(SUBSCRIBE)
    assert time.monotonic() - started >= 1.0  # the SDK waited out Retry-After
    assert len(klaviyo.calls("POST")) == 2
    assert klaviyo.members("LVIP01") == {"ada@example.com"}


def test_klaviyo_429s_carry_retry_after_but_no_ratelimit_headers(klaviyo):
    headers = {"Authorization": f"Klaviyo-API-Key {KEY}", "revision": "2026-07-15",
               "Content-Type": "application/vnd.api+json"}
    ok = requests.post(klaviyo.url + "/api/profile-subscription-bulk-create-jobs",
                       json=SUBSCRIBE, headers=headers, timeout=5)
    assert ok.status_code == 202 and "RateLimit-Limit" in ok.headers
    klaviyo.limits["subscribe"] = (1, 750)
    throttled = requests.post(klaviyo.url + "/api/profile-subscription-bulk-create-jobs",
                              json=SUBSCRIBE, headers=headers, timeout=5)
    if throttled.status_code == 202:  # crossed a second boundary: the next one is throttled
        throttled = requests.post(klaviyo.url + "/api/profile-subscription-bulk-create-jobs",
                                  json=SUBSCRIBE, headers=headers, timeout=5)
    assert throttled.status_code == 429
    assert int(throttled.headers["Retry-After"]) >= 1
    assert "RateLimit-Limit" not in throttled.headers
    assert throttled.json()["errors"][0]["code"] == "throttled"
    klaviyo.limits["subscribe"] = (75, 750)
    klaviyo.throttle_next(1, retry_after=30, as_date=True)
    dated = requests.post(klaviyo.url + "/api/profile-subscription-bulk-create-jobs",
                          json=SUBSCRIBE, headers=headers, timeout=5)
    assert parsedate_to_datetime(dated.headers["Retry-After"]).timestamp() > time.time() + 25
    no_revision = {k: v for k, v in headers.items() if k != "revision"}
    assert requests.get(klaviyo.url + "/api/profiles", headers=no_revision,
                        timeout=5).status_code == 400
    assert requests.get(klaviyo.url + "/api/profiles", headers={**headers, "revision": "latest"},
                        timeout=5).status_code == 400


# -- Mailchimp -----------------------------------------------------------------------------
@pytest.fixture
def mailchimp():
    fake = FakeMailchimp()
    yield fake
    fake.stop()


def mc_client(fake, key=None):
    client = mailchimp_marketing.Client()
    client.set_config({"api_key": key or fake.api_key, "server": "us19"})
    client.api_client.host = fake.url + "/3.0"
    return client


def test_mailchimp_client_calls_are_accepted_and_change_the_fake(mailchimp):
    client = mc_client(mailchimp)
    h = hashlib.md5(b"ada@example.com").hexdigest()
    member = client.lists.set_list_member(
        "aud001", h, {"email_address": "Ada@Example.com", "status_if_new": "subscribed",
                      "merge_fields": {"FNAME": "Ada"}})
    assert member["id"] == h and member["status"] == "subscribed"
    # PUT by subscriber hash is idempotent
    assert client.lists.set_list_member(
        "aud001", h, {"email_address": "ada@example.com", "status_if_new": "subscribed"})["id"] == h
    assert len(mailchimp.members["aud001"]) == 1
    response = client.lists.update_list_member_tags(
        "aud001", h, {"tags": [{"name": "VIP", "status": "active"}], "is_syncing": False})
    assert response.status_code == 204
    assert mailchimp.tags("aud001", "ada@example.com") == {"VIP"}
    client.lists.update_list_member("aud001", h, {"status": "unsubscribed"})
    assert client.lists.get_list_member("aud001", h)["status"] == "unsubscribed"
    assert client.lists.delete_list_member_permanent("aud001", h).status_code == 204
    assert mailchimp.member("aud001", "ada@example.com") is None


def test_mailchimp_rejects_malformed_calls_with_problem_json(mailchimp):
    client = mc_client(mailchimp)
    h = hashlib.md5(b"new@example.com").hexdigest()
    with pytest.raises(mailchimp_marketing.api_client.ApiClientError) as info:
        client.lists.set_list_member("aud001", h, {"email_address": "new@example.com"})
    assert info.value.status_code == 400 and "status_if_new" in info.value.text
    with pytest.raises(mailchimp_marketing.api_client.ApiClientError) as info:
        client.lists.set_list_member("aud001", "0" * 32, {"email_address": "new@example.com",
                                                         "status_if_new": "subscribed"})
    assert info.value.status_code == 400  # the hash is not the address's
    with pytest.raises(mailchimp_marketing.api_client.ApiClientError) as info:
        client.lists.update_list_member_tags("aud001", h, {"tags": [{"name": "X"}]})
    assert info.value.status_code == 404  # no such member
    client.lists.set_list_member("aud001", h, {"email_address": "new@example.com",
                                               "status_if_new": "transactional"})
    with pytest.raises(mailchimp_marketing.api_client.ApiClientError) as info:
        client.lists.update_list_member_tags("aud001", h, {"tags": [{"name": "X", "status": "on"}]})
    assert info.value.status_code == 400
    client.lists.delete_list_member_permanent("aud001", h)
    with pytest.raises(mailchimp_marketing.api_client.ApiClientError) as info:
        client.lists.set_list_member("aud001", h, {"email_address": "new@example.com",
                                                   "status_if_new": "subscribed"})
    assert "Forgotten Email Not Subscribed" in info.value.text
    with pytest.raises(mailchimp_marketing.api_client.ApiClientError) as info:
        mc_client(mailchimp, key="wrong-us19").lists.get_list_member("aud001", h)
    assert info.value.status_code == 401 and "API Key Invalid" in info.value.text


def test_mailchimp_answers_429_beyond_its_connection_cap(mailchimp):
    import concurrent.futures

    mailchimp.max_connections = 3
    mailchimp.latency = 0.2
    client = mc_client(mailchimp)

    def put(n):
        email = f"p{n}@example.com"
        try:
            client.lists.set_list_member("aud001", hashlib.md5(email.encode()).hexdigest(),
                                         {"email_address": email, "status_if_new": "subscribed"})
            return 200
        except mailchimp_marketing.api_client.ApiClientError as exc:
            assert "simultaneous connections" in exc.text
            return exc.status_code

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(put, range(8)))
    assert statuses.count(429) >= 1 and statuses.count(200) >= 3
    assert mailchimp.rejected_for_concurrency == statuses.count(429)


# -- SendGrid ------------------------------------------------------------------------------
@pytest.fixture
def sendgrid():
    fake = FakeSendGrid()
    yield fake
    fake.stop()


def sg_post(fake, body, key="SG.persona-test-key"):
    return requests.post(fake.url + "/v3/mail/send", json=body, timeout=5,
                         headers={"Authorization": f"Bearer {key}"})


MAIL = {"personalizations": [{"to": [{"email": "a@example.com"}]}],
        "from": {"email": "shop@example.com"}, "subject": "Hi",
        "content": [{"type": "text/plain", "value": "hello"}]}


def test_sendgrid_fake_enforces_the_v3_mail_send_contract(sendgrid):
    ok = sg_post(sendgrid, MAIL)
    assert ok.status_code == 202 and ok.content == b""
    assert {"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"} <= set(ok.headers)
    sandbox = sg_post(sendgrid, {**MAIL, "mail_settings": {"sandbox_mode": {"enable": True}}})
    assert sandbox.status_code == 200 and len(sendgrid.messages) == 1
    cases = [
        ({k: v for k, v in MAIL.items() if k != "from"}, "from"),
        ({**MAIL, "personalizations": []}, "personalizations"),
        ({**MAIL, "personalizations": [{"to": [{"email": "a@example.com"}]},
                                       {"to": [{"email": "A@example.com"}]}]},
         "personalizations.1.to.0.email"),
        ({**MAIL, "content": [{"type": "text/plain", "value": ""}]}, "content.0.value"),
        ({**MAIL, "categories": [str(i) for i in range(11)]}, "categories"),
        ({**MAIL, "custom_args": {"n": 1}}, "custom_args"),
    ]
    for body, field in cases:
        res = sg_post(sendgrid, body)
        assert res.status_code == 400, body
        assert res.json()["errors"][0]["field"] == field
    assert sg_post(sendgrid, MAIL, key="SG.nope").status_code == 401
    sendgrid.throttle_next(1)
    limited = sg_post(sendgrid, MAIL)
    assert limited.status_code == 429
    assert limited.json() == {"errors": [{"field": None, "message": "too many requests",
                                          "help": None}]}
    assert len(sendgrid.messages) == 1
