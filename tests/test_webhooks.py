"""The providers' webhooks: each provider's documented payloads, signed in the test with keys made
in the test, read by the pure functions and sent over real HTTP to the routes under uvicorn.

Time is injected: a stale timestamp is one the test's clock is more than 5 minutes away from.
SNS's signing certificate is self-signed here and served by the test's fetcher, which records each
URL it is asked for, so "refused before anything is fetched" is checked, not assumed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from base64 import b64encode
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID
from starlette.applications import Starlette
from web_client import served

from digest.config import Settings, load
from digest.domain import Notice, NoticeKind
from digest.errors import ConfigError, Forbidden, InvalidInput
from digest.webhooks import (
    MAX_BODY_BYTES,
    SeenTokens,
    SigningCertificates,
    Webhooks,
    read_mailgun,
    read_postmark,
    read_sendgrid,
    read_ses,
)

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
TOPIC = "arn:aws:sns:eu-west-1:123456789012:digest-feedback"
OTHER_TOPIC = "arn:aws:sns:eu-west-1:999999999999:someone-else"
CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0123456789.pem"
SUBSCRIBE_URL = (
    "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription"
    f"&TopicArn={TOPIC}&Token=2336412f37"
)
POSTMARK_AUTH = "digest:correct-horse-battery"
MAILGUN_KEY = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"
MESSAGE_ID = "<20261126080000.42.7@miasfeed.example>"
READER = "jane@example.org"


def _rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _certificate(key: rsa.RSAPrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(Encoding.PEM)


SNS_KEY = _rsa_key()
SENDGRID_KEY = ec.generate_private_key(ec.SECP256R1())
SENDGRID_PUBLIC = b64encode(
    SENDGRID_KEY.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
).decode()


@dataclass
class Fetcher:
    """Serves SNS's certificate (and the subscription confirmation) and records every URL asked."""

    pages: dict[str, bytes] = field(
        default_factory=lambda: {CERT_URL: _certificate(SNS_KEY), SUBSCRIBE_URL: b"<ok/>"}
    )
    asked: list[str] = field(default_factory=list)

    def __call__(self, url: str) -> bytes:
        self.asked.append(url)
        if url not in self.pages:
            raise InvalidInput(f"cannot read {url}: HTTP 404 Not Found")
        return self.pages[url]


# What each provider sends, as its documentation shows it


def ses_bounce(bounce_type: str = "Permanent", **mail: Any) -> dict[str, Any]:
    return {
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": bounce_type,
            "bounceSubType": "General",
            "bouncedRecipients": [
                {
                    "emailAddress": READER,
                    "action": "failed",
                    "status": "5.1.1",
                    "diagnosticCode": "smtp; 550 5.1.1 user unknown",
                },
                {"emailAddress": "bob@example.net", "status": "5.1.1"},
            ],
            "timestamp": "2026-11-26T11:59:00.000Z",
            "feedbackId": "0100017f-feedback",
        },
        "mail": {
            "timestamp": "2026-11-26T08:00:00.000Z",
            "source": "digest@miasfeed.example",
            "messageId": "0100017f-ses-id",
            "destination": [READER, "bob@example.net"],
            "commonHeaders": {"from": ["digest@miasfeed.example"], "messageId": MESSAGE_ID},
            **mail,
        },
    }


def ses_complaint() -> dict[str, Any]:
    return {
        "notificationType": "Complaint",
        "complaint": {
            "complainedRecipients": [{"emailAddress": READER}],
            "timestamp": "2026-11-26T11:59:00.000Z",
            "feedbackId": "0100017f-feedback",
            "complaintFeedbackType": "abuse",
            "userAgent": "Yahoo!-Mail-Feedback/2.0",
        },
        "mail": {"messageId": "0100017f-ses-id", "destination": [READER]},
    }


def ses_delivery() -> dict[str, Any]:
    return {
        "notificationType": "Delivery",
        "delivery": {"recipients": [READER], "smtpResponse": "250 ok"},
        "mail": {"messageId": "0100017f-ses-id", "destination": [READER]},
    }


def sns(
    message: str,
    *,
    kind: str = "Notification",
    topic: str = TOPIC,
    version: str = "1",
    key: rsa.RSAPrivateKey = SNS_KEY,
    cert_url: str = CERT_URL,
    subscribe_url: str = SUBSCRIBE_URL,
) -> bytes:
    """An SNS POST body, signed as SNS documents it: each field name and value, a line each."""
    envelope = {
        "Type": kind,
        "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
        "TopicArn": topic,
        "Message": message,
        "Timestamp": "2026-11-26T11:59:30.000Z",
        "SignatureVersion": version,
        "SigningCertURL": cert_url,
    }
    if kind == "Notification":
        envelope["Subject"] = "Amazon SES Email Event Notification"
        fields = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
    else:
        envelope |= {"SubscribeURL": subscribe_url, "Token": "2336412f37"}
        fields = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]
    signed = "".join(f"{name}\n{envelope[name]}\n" for name in fields).encode()
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
    envelope["Signature"] = b64encode(key.sign(signed, padding.PKCS1v15(), algorithm)).decode()
    return json.dumps(envelope).encode()


def postmark_bounce(kind: str = "HardBounce") -> dict[str, Any]:
    return {
        "RecordType": "Bounce",
        "ID": 4323372036854775807,
        "Type": kind,
        "TypeCode": 1,
        "Name": "Hard bounce",
        "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
        "Description": "The server was unable to deliver your message (ex: unknown user).",
        "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
        "Email": READER,
        "From": "digest@miasfeed.example",
        "BouncedAt": "2026-11-26T11:59:00Z",
        "Inactive": True,
        "MessageStream": "outbound",
    }


def postmark_complaint() -> dict[str, Any]:
    return postmark_bounce("SpamComplaint") | {"RecordType": "SpamComplaint", "TypeCode": 512}


def postmark_delivery() -> dict[str, Any]:
    return {
        "RecordType": "Delivery",
        "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
        "Recipient": READER,
        "DeliveredAt": "2026-11-26T11:59:00Z",
        "Details": "Test delivery webhook details",
    }


def basic(credentials: str) -> dict[str, str]:
    return {"authorization": f"Basic {b64encode(credentials.encode()).decode()}"}


def mailgun(
    event: dict[str, Any],
    *,
    key: str = MAILGUN_KEY,
    at: datetime = NOW,
    token: str = "e0b5477167110d68991efc6b9f89f0a11066af27834600e123",
) -> bytes:
    timestamp = str(int(at.timestamp()))
    signature = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    signed = {"token": token, "timestamp": timestamp, "signature": signature}
    return json.dumps({"signature": signed, "event-data": event}).encode()


def mailgun_failed(severity: str = "permanent") -> dict[str, Any]:
    return {
        "event": "failed",
        "id": "G9Bn5sl1TC6nu79C8C0bwg",
        "timestamp": NOW.timestamp(),
        "severity": severity,
        "reason": "bounce" if severity == "permanent" else "generic",
        "recipient": READER,
        "delivery-status": {
            "code": 550 if severity == "permanent" else 452,
            "message": "",
            "description": "5.1.1 The email account that you tried to reach does not exist",
        },
        "message": {
            "headers": {
                "message-id": MESSAGE_ID.strip("<>"),  # as Mailgun writes it, without brackets
                "from": "digest@miasfeed.example",
                "to": READER,
                "subject": "Your weekly digest",
            }
        },
    }


def mailgun_event(name: str) -> dict[str, Any]:
    return mailgun_failed() | {"event": name, "severity": None}


def sendgrid(
    events: list[dict[str, Any]] | bytes,
    *,
    key: ec.EllipticCurvePrivateKey = SENDGRID_KEY,
    at: datetime = NOW,
) -> tuple[bytes, dict[str, str]]:
    body = events if isinstance(events, bytes) else json.dumps(events).encode()
    timestamp = str(int(at.timestamp()))
    signature = key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return body, {
        "x-twilio-email-event-webhook-signature": b64encode(signature).decode(),
        "x-twilio-email-event-webhook-timestamp": timestamp,
    }


def sendgrid_event(name: str, **fields: Any) -> dict[str, Any]:
    return {
        "email": READER,
        "timestamp": int(NOW.timestamp()),
        "smtp-id": MESSAGE_ID,
        "event": name,
        "sg_event_id": "sg_event_id",
        "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
        **fields,
    }


def _notice(kind: NoticeKind, source: str, detail: str, **fields: Any) -> Notice:
    return Notice(kind, source, email=READER, detail=detail, **fields)


# SES through SNS


def _read_ses(body: bytes, fetch: Fetcher | None = None) -> list[Notice]:
    fetch = fetch or Fetcher()
    return read_ses(body, {TOPIC}, SigningCertificates(fetch), fetch)


@pytest.mark.parametrize("version", ["1", "2"], ids=["sha1", "sha256"])
def test_ses_permanent_bounce_is_a_bounce_for_each_recipient_named_by_message_id(
    version: str,
) -> None:
    notices = _read_ses(sns(json.dumps(ses_bounce()), version=version))
    assert notices == [
        _notice(
            NoticeKind.BOUNCE,
            "ses",
            "5.1.1 smtp; 550 5.1.1 user unknown",
            message_id=MESSAGE_ID,
        ),
        Notice(
            NoticeKind.BOUNCE, "ses", message_id=MESSAGE_ID, email="bob@example.net", detail="5.1.1"
        ),
    ]


@pytest.mark.parametrize("bounce_type", ["Transient", "Undetermined"])
def test_ses_transient_or_undetermined_bounce_is_a_delay(bounce_type: str) -> None:
    notices = _read_ses(sns(json.dumps(ses_bounce(bounce_type))))
    assert [n.kind for n in notices] == [NoticeKind.DELAY, NoticeKind.DELAY]


def test_ses_message_id_without_brackets_gets_them() -> None:
    bare = ses_bounce(commonHeaders={"messageId": MESSAGE_ID.strip("<>")})
    assert {n.message_id for n in _read_ses(sns(json.dumps(bare)))} == {MESSAGE_ID}


def test_ses_complaint_is_a_complaint_and_without_headers_names_the_address_only() -> None:
    assert _read_ses(sns(json.dumps(ses_complaint()))) == [
        _notice(NoticeKind.COMPLAINT, "ses", "abuse")
    ]


def test_ses_event_publishing_record_with_event_type_reads_the_same() -> None:
    event = ses_complaint()
    event["eventType"] = event.pop("notificationType")
    assert [n.kind for n in _read_ses(sns(json.dumps(event)))] == [NoticeKind.COMPLAINT]


def test_ses_delivery_gives_no_notice() -> None:
    assert _read_ses(sns(json.dumps(ses_delivery()))) == []


def test_sns_message_changed_after_signing_is_forbidden() -> None:
    body = sns(json.dumps(ses_bounce())).replace(b"Permanent", b"Transient")
    with pytest.raises(Forbidden, match="signature"):
        _read_ses(body)


def test_sns_message_signed_by_another_key_is_forbidden() -> None:
    with pytest.raises(Forbidden, match="signature"):
        _read_ses(sns(json.dumps(ses_bounce()), key=_rsa_key()))


def test_sns_message_without_a_signature_is_forbidden() -> None:
    envelope = json.loads(sns(json.dumps(ses_bounce())))
    del envelope["Signature"]
    with pytest.raises(Forbidden):
        _read_ses(json.dumps(envelope).encode())


def test_a_body_that_is_not_sns_json_is_forbidden_not_malformed() -> None:
    with pytest.raises(Forbidden):
        _read_ses(b"<xml>not from SNS</xml>")


@pytest.mark.parametrize(
    "url",
    [
        "https://sns.eu-west-1.amazonaws.com.evil.example/cert.pem",
        "https://evil.example/sns.eu-west-1.amazonaws.com/cert.pem",
        "https://s3.eu-west-1.amazonaws.com/cert.pem",
        "http://sns.eu-west-1.amazonaws.com/cert.pem",
        "https://sns.eu-west-1.amazonaws.com:8443/cert.pem",
        "https://user@sns.eu-west-1.amazonaws.com/cert.pem",
        "https://sns.eu-west-1.amazonaws.com/cert.txt",
        "file:///etc/passwd",
    ],
)
def test_sns_certificate_url_off_sns_hosts_is_refused_before_anything_is_fetched(url: str) -> None:
    fetch = Fetcher()
    fetch.pages[url] = _certificate(SNS_KEY)
    with pytest.raises(Forbidden):
        _read_ses(sns(json.dumps(ses_bounce()), cert_url=url), fetch)
    assert fetch.asked == []


def test_sns_certificate_url_in_china_regions_is_allowed() -> None:
    url = "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-01.pem"
    fetch = Fetcher()
    fetch.pages[url] = _certificate(SNS_KEY)
    assert len(_read_ses(sns(json.dumps(ses_bounce()), cert_url=url), fetch)) == 2
    assert fetch.asked == [url]


def test_sns_certificate_is_fetched_once_for_many_messages() -> None:
    fetch = Fetcher()
    certificates = SigningCertificates(fetch)
    for _ in range(3):
        read_ses(sns(json.dumps(ses_bounce())), {TOPIC}, certificates, fetch)
    assert fetch.asked == [CERT_URL]


def test_sns_certificate_that_cannot_be_fetched_is_forbidden() -> None:
    url = "https://sns.eu-west-1.amazonaws.com/missing.pem"
    with pytest.raises(Forbidden, match="no signing certificate"):
        _read_ses(sns(json.dumps(ses_bounce()), cert_url=url))


def test_sns_notification_from_another_topic_is_forbidden_before_anything_is_fetched() -> None:
    fetch = Fetcher()
    with pytest.raises(Forbidden, match="topic"):
        _read_ses(sns(json.dumps(ses_bounce()), topic=OTHER_TOPIC), fetch)
    assert fetch.asked == []


def test_sns_subscription_confirmation_for_an_allowed_topic_is_confirmed() -> None:
    fetch = Fetcher()
    body = sns("You have chosen to subscribe…", kind="SubscriptionConfirmation")
    assert _read_ses(body, fetch) == []
    assert fetch.asked == [CERT_URL, SUBSCRIBE_URL]


def test_sns_subscription_confirmation_for_a_foreign_topic_is_forbidden_and_not_confirmed() -> None:
    fetch = Fetcher()
    body = sns("You have chosen to subscribe…", kind="SubscriptionConfirmation", topic=OTHER_TOPIC)
    with pytest.raises(Forbidden, match="topic"):
        _read_ses(body, fetch)
    assert fetch.asked == []


def test_sns_subscribe_url_off_sns_hosts_is_not_fetched() -> None:
    fetch = Fetcher()
    body = sns(
        "You have chosen to subscribe…",
        kind="SubscriptionConfirmation",
        subscribe_url="https://169.254.169.254/latest/meta-data/",
    )
    with pytest.raises(Forbidden, match="SubscribeURL"):
        _read_ses(body, fetch)
    assert fetch.asked == [CERT_URL]


def test_sns_signed_message_that_is_not_ses_json_is_malformed() -> None:
    with pytest.raises(InvalidInput):
        _read_ses(sns("this is not JSON"))
    bounce = ses_bounce()
    bounce["bounce"]["bouncedRecipients"] = "jane@example.org"
    with pytest.raises(InvalidInput):
        _read_ses(sns(json.dumps(bounce)))


# Postmark


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("HardBounce", NoticeKind.BOUNCE),
        ("BadEmailAddress", NoticeKind.BOUNCE),
        ("SoftBounce", NoticeKind.DELAY),
        ("Transient", NoticeKind.DELAY),
        ("DnsError", NoticeKind.DELAY),
    ],
)
def test_postmark_bounce_type_says_bounce_or_delay(kind: str, expected: NoticeKind) -> None:
    body = json.dumps(postmark_bounce(kind)).encode()
    notices = read_postmark(body, basic(POSTMARK_AUTH), POSTMARK_AUTH)
    detail = f"{kind} smtp;550 5.1.1 The email account that you tried to reach does not exist."
    assert notices == [_notice(expected, "postmark", detail)]


def test_postmark_spam_complaint_is_a_complaint() -> None:
    body = json.dumps(postmark_complaint()).encode()
    notices = read_postmark(body, basic(POSTMARK_AUTH), POSTMARK_AUTH)
    assert [(n.kind, n.email) for n in notices] == [(NoticeKind.COMPLAINT, READER)]


@pytest.mark.parametrize(
    "record",
    [postmark_delivery(), postmark_bounce("AutoResponder"), postmark_bounce("Subscribe")],
    ids=["delivery", "auto-reply", "subscribe-request"],
)
def test_postmark_delivery_or_auto_reply_gives_no_notice(record: dict[str, Any]) -> None:
    assert read_postmark(json.dumps(record).encode(), basic(POSTMARK_AUTH), POSTMARK_AUTH) == []


@pytest.mark.parametrize(
    "headers",
    [{}, basic("digest:wrong"), basic("digest"), {"authorization": "Basic !!!"}],
    ids=["none", "wrong-password", "no-password", "not-base64"],
)
def test_postmark_call_without_the_credentials_is_forbidden(headers: dict[str, str]) -> None:
    with pytest.raises(Forbidden):
        read_postmark(json.dumps(postmark_bounce()).encode(), headers, POSTMARK_AUTH)


def test_postmark_malformed_body_with_the_credentials_is_invalid() -> None:
    with pytest.raises(InvalidInput):
        read_postmark(b"[1, 2", basic(POSTMARK_AUTH), POSTMARK_AUTH)
    no_address = postmark_bounce()
    del no_address["Email"]
    with pytest.raises(InvalidInput):
        read_postmark(json.dumps(no_address).encode(), basic(POSTMARK_AUTH), POSTMARK_AUTH)


# Mailgun


def test_mailgun_permanent_failure_is_a_bounce_with_the_message_id_in_brackets() -> None:
    notices = read_mailgun(mailgun(mailgun_failed()), MAILGUN_KEY, NOW, SeenTokens())
    detail = "550 5.1.1 The email account that you tried to reach does not exist"
    assert notices == [_notice(NoticeKind.BOUNCE, "mailgun", detail, message_id=MESSAGE_ID)]


def test_mailgun_temporary_failure_is_a_delay() -> None:
    notices = read_mailgun(mailgun(mailgun_failed("temporary")), MAILGUN_KEY, NOW, SeenTokens())
    assert [n.kind for n in notices] == [NoticeKind.DELAY]


def test_mailgun_complaint_is_a_complaint() -> None:
    notices = read_mailgun(mailgun(mailgun_event("complained")), MAILGUN_KEY, NOW, SeenTokens())
    assert notices == [_notice(NoticeKind.COMPLAINT, "mailgun", "", message_id=MESSAGE_ID)]


@pytest.mark.parametrize("name", ["delivered", "opened", "clicked", "accepted"])
def test_mailgun_other_events_give_no_notice(name: str) -> None:
    assert read_mailgun(mailgun(mailgun_event(name)), MAILGUN_KEY, NOW, SeenTokens()) == []


def test_mailgun_call_signed_with_another_key_is_forbidden() -> None:
    body = mailgun(mailgun_failed(), key="key-someone-else")
    with pytest.raises(Forbidden, match="signature"):
        read_mailgun(body, MAILGUN_KEY, NOW, SeenTokens())


def test_mailgun_call_changed_after_signing_is_forbidden() -> None:
    call = json.loads(mailgun(mailgun_failed()))
    call["signature"]["token"] = "f" * 50
    with pytest.raises(Forbidden, match="signature"):
        read_mailgun(json.dumps(call).encode(), MAILGUN_KEY, NOW, SeenTokens())


@pytest.mark.parametrize("body", [b"not json", json.dumps({"event-data": {}}).encode()])
def test_mailgun_unsigned_call_is_forbidden(body: bytes) -> None:
    with pytest.raises(Forbidden):
        read_mailgun(body, MAILGUN_KEY, NOW, SeenTokens())


@pytest.mark.parametrize("off", [timedelta(minutes=-6), timedelta(minutes=6)])
def test_mailgun_timestamp_more_than_5_minutes_from_the_clock_is_forbidden(off: timedelta) -> None:
    body = mailgun(mailgun_failed(), at=NOW + off)
    with pytest.raises(Forbidden, match="5 minutes"):
        read_mailgun(body, MAILGUN_KEY, NOW, SeenTokens())
    assert read_mailgun(mailgun(mailgun_failed(), at=NOW + off / 2), MAILGUN_KEY, NOW, SeenTokens())


def test_mailgun_token_seen_before_is_a_replay_and_forbidden() -> None:
    seen = SeenTokens()
    body = mailgun(mailgun_failed())
    assert read_mailgun(body, MAILGUN_KEY, NOW, seen)
    with pytest.raises(Forbidden, match="replay"):
        read_mailgun(body, MAILGUN_KEY, NOW + timedelta(seconds=30), seen)


def test_mailgun_forgets_the_oldest_tokens_past_its_limit() -> None:
    seen = SeenTokens(keep=2)
    assert [seen.first_time(t) for t in ("a", "b", "a", "c", "a")] == [
        True,
        True,
        False,
        True,
        True,
    ]


def test_mailgun_signed_call_without_event_data_is_malformed() -> None:
    body = json.loads(mailgun(mailgun_failed()))
    body["event-data"] = "failed"
    with pytest.raises(InvalidInput):
        read_mailgun(json.dumps(body).encode(), MAILGUN_KEY, NOW, SeenTokens())


# SendGrid


def _read_sendgrid(body: bytes, headers: dict[str, str], now: datetime = NOW) -> list[Notice]:
    return read_sendgrid(body, headers, SENDGRID_KEY.public_key(), now)


def test_sendgrid_bounces_blocks_drops_and_spam_reports_become_notices_and_the_rest_none() -> None:
    events = [
        sendgrid_event("processed"),
        sendgrid_event("delivered", response="250 OK"),
        sendgrid_event("open", useragent="Mozilla/5.0"),
        sendgrid_event("bounce", type="bounce", status="5.1.1", reason="550 5.1.1 no such user"),
        sendgrid_event("bounce", type="blocked", status="4.0.0", reason="421 try later"),
        sendgrid_event("dropped", reason="Bounced Address"),
        sendgrid_event("dropped", reason="Unsubscribed Address"),
        sendgrid_event("dropped", reason="Spam Reporting Address"),
        sendgrid_event("spamreport"),
        sendgrid_event("deferred", response="400 try again later", attempt="5"),
    ]
    notices = _read_sendgrid(*sendgrid(events))
    assert notices == [
        _notice(
            NoticeKind.BOUNCE, "sendgrid", "5.1.1 550 5.1.1 no such user", message_id=MESSAGE_ID
        ),
        _notice(NoticeKind.DELAY, "sendgrid", "4.0.0 421 try later", message_id=MESSAGE_ID),
        _notice(NoticeKind.BOUNCE, "sendgrid", "Bounced Address", message_id=MESSAGE_ID),
        _notice(NoticeKind.COMPLAINT, "sendgrid", "Spam Reporting Address", message_id=MESSAGE_ID),
        _notice(NoticeKind.COMPLAINT, "sendgrid", "", message_id=MESSAGE_ID),
    ]


def test_sendgrid_unsigned_call_is_forbidden() -> None:
    body, _ = sendgrid([sendgrid_event("bounce", type="bounce")])
    with pytest.raises(Forbidden):
        _read_sendgrid(body, {})


def test_sendgrid_body_changed_after_signing_is_forbidden() -> None:
    body, headers = sendgrid([sendgrid_event("bounce", type="blocked")])
    with pytest.raises(Forbidden, match="signature"):
        _read_sendgrid(body.replace(b"blocked", b"bounce"), headers)


def test_sendgrid_call_signed_with_another_key_is_forbidden() -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(Forbidden, match="signature"):
        _read_sendgrid(*sendgrid([sendgrid_event("spamreport")], key=other))


def test_sendgrid_timestamp_more_than_5_minutes_from_the_clock_is_forbidden() -> None:
    body, headers = sendgrid([sendgrid_event("spamreport")], at=NOW - timedelta(minutes=6))
    with pytest.raises(Forbidden, match="5 minutes"):
        _read_sendgrid(body, headers)
    assert _read_sendgrid(body, headers, NOW - timedelta(minutes=5))


@pytest.mark.parametrize("body", [b"{not json", b'{"event": "bounce"}', b"[1, 2]"])
def test_sendgrid_signed_body_that_is_not_an_array_of_events_is_malformed(body: bytes) -> None:
    with pytest.raises(InvalidInput):
        _read_sendgrid(*sendgrid(body))


# Settings


def _settings(**env: str) -> Settings:
    return load(None, {f"DIGEST_{name.upper()}": value for name, value in env.items()})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ses_topic_arns", "digest-feedback"),
        ("ses_topic_arns", f"{TOPIC}, arn:aws:s3:::bucket"),
        ("postmark_webhook_auth", "just-a-password"),
        ("postmark_webhook_auth", ":password"),
        ("sendgrid_public_key", "not base64!"),
        ("sendgrid_public_key", b64encode(b"not a key").decode()),
    ],
)
def test_a_webhook_setting_that_cannot_be_right_is_refused_naming_it(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"DIGEST_{name.upper()}"):
        _settings(**{name: value})


def test_webhook_settings_read_as_given() -> None:
    settings = _settings(
        ses_topic_arns=f"{TOPIC}, {OTHER_TOPIC}",
        postmark_webhook_auth=POSTMARK_AUTH,
        mailgun_signing_key=MAILGUN_KEY,
        sendgrid_public_key=SENDGRID_PUBLIC,
    )
    assert settings.ses_topic_arns == {TOPIC, OTHER_TOPIC}
    assert settings.postmark_webhook_auth == POSTMARK_AUTH
    assert settings.mailgun_signing_key == MAILGUN_KEY
    assert settings.sendgrid_public_key == SENDGRID_PUBLIC


# The routes, over real HTTP


@dataclass
class Hooks:
    client: httpx.Client
    taken: list[Notice]
    fetch: Fetcher
    clock: list[datetime]  # [now]: the test moves it


@contextmanager
def _serving(settings: Settings) -> Iterator[Hooks]:
    taken: list[Notice] = []
    clock = [NOW]
    fetch = Fetcher()
    hooks = Webhooks(settings, taken.extend, lambda: clock[0], fetch)
    with (
        served(Starlette(routes=hooks.routes())) as base_url,
        httpx.Client(base_url=base_url) as client,
    ):
        yield Hooks(client, taken, fetch, clock)


@pytest.fixture
def hooks() -> Iterator[Hooks]:
    with _serving(
        _settings(
            ses_topic_arns=TOPIC,
            postmark_webhook_auth=POSTMARK_AUTH,
            mailgun_signing_key=MAILGUN_KEY,
            sendgrid_public_key=SENDGRID_PUBLIC,
        )
    ) as running:
        yield running


def _signed_bounce(provider: str) -> tuple[bytes, dict[str, str]]:
    if provider == "ses":
        return sns(json.dumps(ses_bounce())), {"content-type": "text/plain; charset=UTF-8"}
    if provider == "postmark":
        return json.dumps(postmark_bounce()).encode(), basic(POSTMARK_AUTH)
    if provider == "mailgun":
        return mailgun(mailgun_failed()), {"content-type": "application/json"}
    return sendgrid([sendgrid_event("bounce", type="bounce", status="5.1.1")])


def _unsigned(provider: str) -> tuple[bytes, dict[str, str]]:
    body, headers = _signed_bounce(provider)
    if provider == "ses":
        return body.replace(b"Permanent", b"Transient"), headers
    if provider == "postmark":
        return body, basic("digest:guessed")
    if provider == "mailgun":
        return mailgun(mailgun_failed(), key="key-guessed"), headers
    return body.replace(b"5.1.1", b"5.1.2"), headers


PROVIDERS = ["ses", "postmark", "mailgun", "sendgrid"]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_signed_bounce_over_http_is_taken_and_answered_200(hooks: Hooks, provider: str) -> None:
    body, headers = _signed_bounce(provider)
    response = hooks.client.post(f"/webhooks/{provider}", content=body, headers=headers)
    assert response.status_code == 200
    assert hooks.taken and {n.kind for n in hooks.taken} == {NoticeKind.BOUNCE}
    assert {(n.source, n.email) for n in hooks.taken} >= {(provider, READER)}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_badly_signed_call_over_http_gets_403_one_log_line_and_takes_nothing(
    hooks: Hooks, provider: str, caplog: pytest.LogCaptureFixture
) -> None:
    body, headers = _unsigned(provider)
    with caplog.at_level(logging.WARNING, logger="digest.webhooks"):
        response = hooks.client.post(f"/webhooks/{provider}", content=body, headers=headers)
    assert response.status_code == 403
    assert "Traceback" not in response.text
    assert hooks.taken == []
    refused = [r for r in caplog.records if r.name == "digest.webhooks"]
    assert len(refused) == 1 and "\n" not in refused[0].getMessage()
    assert provider in refused[0].getMessage()


def test_a_stale_or_replayed_call_over_http_gets_403(hooks: Hooks) -> None:
    body = mailgun(mailgun_failed())
    assert hooks.client.post("/webhooks/mailgun", content=body).status_code == 200
    assert hooks.client.post("/webhooks/mailgun", content=body).status_code == 403
    hooks.clock[0] = NOW + timedelta(minutes=10)
    body, headers = sendgrid([sendgrid_event("spamreport")])
    assert hooks.client.post("/webhooks/sendgrid", content=body, headers=headers).status_code == 403
    assert len(hooks.taken) == 1


def test_a_malformed_body_from_an_authenticated_sender_gets_400(hooks: Hooks) -> None:
    response = hooks.client.post("/webhooks/postmark", content=b"{", headers=basic(POSTMARK_AUTH))
    assert response.status_code == 400
    body, headers = sendgrid(b"not json")
    assert hooks.client.post("/webhooks/sendgrid", content=body, headers=headers).status_code == 400
    assert hooks.taken == []


def test_an_event_that_is_neither_bounce_nor_complaint_gets_200_and_takes_nothing(
    hooks: Hooks,
) -> None:
    response = hooks.client.post("/webhooks/ses", content=sns(json.dumps(ses_delivery())))
    assert response.status_code == 200
    assert hooks.taken == []


@pytest.mark.parametrize("with_length", [True, False], ids=["content-length", "chunked"])
def test_a_body_over_one_megabyte_gets_413(hooks: Hooks, with_length: bool) -> None:
    big = b"[" + b" " * MAX_BODY_BYTES + b"]"
    content: bytes | Iterator[bytes] = big if with_length else iter([big[:500_000], big[500_000:]])
    response = hooks.client.post(
        "/webhooks/postmark", content=content, headers=basic(POSTMARK_AUTH)
    )
    assert response.status_code == 413
    assert hooks.taken == []


def test_sns_subscription_confirmation_over_http_gets_200_and_is_confirmed(hooks: Hooks) -> None:
    body = sns("You have chosen to subscribe…", kind="SubscriptionConfirmation")
    assert hooks.client.post("/webhooks/ses", content=body).status_code == 200
    assert hooks.fetch.asked == [CERT_URL, SUBSCRIBE_URL]
    foreign = sns(
        "You have chosen to subscribe…", kind="SubscriptionConfirmation", topic=OTHER_TOPIC
    )
    assert hooks.client.post("/webhooks/ses", content=foreign).status_code == 403
    assert hooks.fetch.asked == [CERT_URL, SUBSCRIBE_URL]


def test_a_provider_not_configured_has_no_route() -> None:
    with _serving(_settings(mailgun_signing_key=MAILGUN_KEY)) as running:
        for provider in ("ses", "postmark", "sendgrid"):
            body, headers = _signed_bounce(provider)
            response = running.client.post(f"/webhooks/{provider}", content=body, headers=headers)
            assert response.status_code == 404
        response = running.client.post("/webhooks/mailgun", content=mailgun(mailgun_failed()))
        assert response.status_code == 200
