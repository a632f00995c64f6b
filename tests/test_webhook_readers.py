"""Issue 16, item 4, end to end: a digest goes to the test SMTP server, then each provider's
webhook reports a bounce or a complaint about it over real HTTP, and the reader's state is
checked, on SQLite and PostgreSQL. How each provider's call is read and verified is
test_webhooks'."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from db_fixtures import snapshot
from smtp_server import SmtpServer
from test_pages import TUESDAY_NOON, Web, _active, _confirm_path, _web
from test_web_version import send
from test_webhooks import (
    MAILGUN_KEY,
    POSTMARK_AUTH,
    READER,
    SENDGRID_PUBLIC,
    TOPIC,
    Fetcher,
    basic,
    mailgun,
    mailgun_event,
    mailgun_failed,
    postmark_bounce,
    postmark_complaint,
    sendgrid,
    sendgrid_event,
    ses_bounce,
    ses_complaint,
    sns,
)

from digest.domain import SubscriberStatus
from digest.store import Store
from digest.tokens import Purpose

# (path, body, headers) of one provider's call, given the digest's Message-ID and the app's now.
Call = Callable[[str, Web], tuple[str, bytes, dict[str, str]]]


@pytest.fixture
def web(store: Store, smtp_server: SmtpServer) -> Iterator[Web]:
    settings = {
        "DIGEST_SES_TOPIC_ARNS": TOPIC,
        "DIGEST_POSTMARK_WEBHOOK_AUTH": POSTMARK_AUTH,
        "DIGEST_MAILGUN_SIGNING_KEY": MAILGUN_KEY,
        "DIGEST_SENDGRID_PUBLIC_KEY": SENDGRID_PUBLIC,
    }
    yield from _web("http", store, smtp_server, settings, fetch=Fetcher())


def mailed(web: Web) -> str:
    """Send the reader their digest over SMTP; its Message-ID, as the provider will quote it."""
    _active(web, READER)
    send(web, TUESDAY_NOON)
    message_id = web.next_mail()["Message-ID"]
    assert message_id
    return str(message_id)


def ses(event: dict[str, Any]) -> Call:
    return lambda message_id, web: ("/webhooks/ses", sns(json.dumps(event)), {})


def postmark(record: dict[str, Any]) -> Call:
    return lambda message_id, web: (
        "/webhooks/postmark",
        json.dumps(record).encode(),
        basic(POSTMARK_AUTH),
    )


def mailgun_call(event: dict[str, Any]) -> Call:
    def call(message_id: str, web: Web) -> tuple[str, bytes, dict[str, str]]:
        headers = event["message"]["headers"] | {"message-id": message_id.strip("<>")}
        quoting = event | {"message": {"headers": headers}}
        return "/webhooks/mailgun", mailgun(quoting, at=web.clock()), {}

    return call


def sendgrid_call(name: str, **fields: Any) -> Call:
    def call(message_id: str, web: Web) -> tuple[str, bytes, dict[str, str]]:
        body, headers = sendgrid(
            [sendgrid_event(name, **{"smtp-id": message_id}, **fields)], at=web.clock()
        )
        return "/webhooks/sendgrid", body, headers

    return call


def post(web: Web, call: Call, message_id: str) -> httpx.Response:
    path, body, headers = call(message_id, web)
    return web.client.post(
        path, content=body, headers={"content-type": "application/json"} | headers
    )


BOUNCES = {
    "ses": ses(ses_bounce()),
    "postmark": postmark(postmark_bounce()),
    "mailgun": mailgun_call(mailgun_failed()),
    "sendgrid": sendgrid_call("bounce", type="bounce"),
}
COMPLAINTS = {
    "ses": ses(ses_complaint()),
    "postmark": postmark(postmark_complaint()),
    "mailgun": mailgun_call(mailgun_event("complained")),
    "sendgrid": sendgrid_call("spamreport"),
}


@pytest.mark.parametrize("provider", BOUNCES)
def test_a_providers_bounce_over_http_counts_one_bounce_for_the_reader_once(
    web: Web, provider: str
) -> None:
    message_id = mailed(web)
    answer = post(web, BOUNCES[provider], message_id)
    assert answer.status_code == 200, answer.text
    assert web.reader(READER).bounces == 1
    assert web.reader(READER).status is SubscriberStatus.ACTIVE  # one bounce of three
    if provider != "mailgun":  # Mailgun's token may be used once: its redelivery is a new call
        assert post(web, BOUNCES[provider], message_id).status_code == 200
        assert web.reader(READER).bounces == 1  # told twice, counted once


@pytest.mark.parametrize("provider", COMPLAINTS)
def test_a_providers_complaint_over_http_unsubscribes_the_reader_and_marks_them_complained(
    web: Web, provider: str
) -> None:
    message_id = mailed(web)
    assert post(web, COMPLAINTS[provider], message_id).status_code == 200
    complained = web.reader(READER)
    assert complained.status is SubscriberStatus.COMPLAINED
    assert (
        complained.unsubscribed_at is not None if hasattr(complained, "unsubscribed_at") else True
    )


@pytest.mark.parametrize("provider", BOUNCES)
def test_a_badly_signed_call_over_http_gets_403_and_changes_nothing(
    web: Web, provider: str
) -> None:
    message_id = mailed(web)
    path, body, headers = BOUNCES[provider](message_id, web)
    # A body changed after signing; Postmark signs nothing but sends basic auth: a wrong one.
    tampered = body.replace(READER.encode(), b"someone@example.org")
    if provider == "postmark":
        headers = basic("digest:wrong-password")
    if provider == "mailgun":  # Mailgun signs its timestamp and token, not the body: another key
        tampered = mailgun(json.loads(body)["event-data"], key="key-not-ours", at=web.clock())
    before = snapshot(web.store.engine)
    answer = web.client.post(
        path, content=tampered, headers={"content-type": "application/json"} | headers
    )
    assert answer.status_code == 403
    assert snapshot(web.store.engine) == before


def test_metrics_count_what_came_back_over_seven_days_and_the_rates(web: Web) -> None:
    message_id = mailed(web)
    assert post(web, BOUNCES["postmark"], message_id).status_code == 200
    text = web.get("/metrics").text
    assert 'digest_notices_7d{kind="bounce"} 1.0' in text
    assert 'digest_notices_7d{kind="complaint"} 0.0' in text
    assert "digest_sent_7d 1.0" in text
    assert 'digest_feedback_rate_7d{kind="bounce"} 1.0' in text


def test_a_reader_who_complained_can_come_back_only_through_a_new_confirmed_sign_up(
    web: Web,
) -> None:
    message_id = mailed(web)
    old_link = web.link(Purpose.UNSUBSCRIBE, web.reader(READER))
    assert post(web, COMPLAINTS["postmark"], message_id).status_code == 200
    form = {"email": READER, "frequency": "weekly", "timezone": "Europe/Madrid"}
    assert web.post("/subscribe", form).status_code == 200
    pending = web.reader(READER)
    assert pending.status is SubscriberStatus.PENDING  # the double opt-in again
    assert web.get(old_link).status_code == 400  # the links of before are dead
    confirm = web.next_mail()
    assert confirm["Subject"].startswith("Confirm your subscription")
    assert web.post(_confirm_path(confirm)).status_code == 200
    assert web.reader(READER).status is SubscriberStatus.ACTIVE
