"""The providers' webhooks: Amazon SES (through SNS), Postmark, Mailgun and SendGrid report bounces
and spam complaints; each call is verified as its provider signs it, then read into Notices.

One pure reader a provider (the raw body, the headers, and the keys, clock or fetcher it needs):
it returns the Notices, raises Forbidden for a call its provider did not sign, and InvalidInput
for a signed body that is not the provider's JSON. `Webhooks` makes the routes of the providers
configured and hands the Notices to `take`.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import threading
from base64 import b64decode
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_der_public_key
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from digest.config import Settings
from digest.domain import Clock, Notice, NoticeKind
from digest.errors import Forbidden, InvalidInput
from digest.sources import read_source
from digest.text import one_line

log = logging.getLogger("digest.webhooks")
MAX_BODY_BYTES = 1_000_000
MAX_DETAIL_CHARS = 500
# How far a signed timestamp may be from our clock: providers sign as they send, and retry freshly.
WINDOW = timedelta(minutes=5)
SEEN_TOKENS = 5_000  # Mailgun tokens kept against replay; 5 minutes of calls at any real rate
CERTIFICATES_KEPT = 16  # SNS signs with one certificate a region at a time
CERTIFICATE_MAX_BYTES = 64_000
FETCH_TIMEOUT = 5.0

Fetcher = Callable[[str], bytes]  # an https URL -> its body; raises InvalidInput when it cannot
Take = Callable[[Sequence[Notice]], None]
Headers = Mapping[str, str]  # looked up by lower-case name, as Starlette's headers allow

# Postmark's bounce types (its Bounce API documents them): what each says of the address.
POSTMARK_TYPES = {
    "HardBounce": NoticeKind.BOUNCE,
    "BadEmailAddress": NoticeKind.BOUNCE,
    "ManuallyDeactivated": NoticeKind.BOUNCE,  # Postmark sends nothing more to it
    "SoftBounce": NoticeKind.DELAY,
    "Transient": NoticeKind.DELAY,
    "DnsError": NoticeKind.DELAY,
    "Blocked": NoticeKind.DELAY,  # our content or IP, not the reader's address
    "DMARCPolicy": NoticeKind.DELAY,  # our domain's alignment, not the reader's address
    "Unknown": NoticeKind.DELAY,
    "SpamComplaint": NoticeKind.COMPLAINT,
    # AutoResponder, AddressChange, Subscribe, Unsubscribe, ChallengeVerification,
    # VirusNotification, OpenRelayTest, SpamNotification...: about no failed delivery.
}
# SendGrid's reasons for dropping a message that name an earlier bounce or complaint.
SENDGRID_DROPPED = {
    "bounced address": NoticeKind.BOUNCE,
    "spam reporting address": NoticeKind.COMPLAINT,
}
SNS_HOST = re.compile(r"sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?")
# The fields SNS signs, in its order (its "Verifying the signatures" page); Subject only if present.
SNS_SIGNED = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type",
    ),
    "UnsubscribeConfirmation": (
        "Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type",
    ),
}  # fmt: skip
SNS_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}


# Amazon SES through SNS


class SigningCertificates:
    """SNS's signing certificates' public keys by URL, each fetched once, from SNS's hosts only."""

    def __init__(self, fetch: Fetcher) -> None:
        self._fetch = fetch
        self._keys: OrderedDict[str, RSAPublicKey] = OrderedDict()

    def key(self, url: str) -> RSAPublicKey:
        _check_sns_url(url, "SigningCertURL")  # before anything is fetched
        if not urlsplit(url).path.endswith(".pem"):
            raise Forbidden(f"SigningCertURL is not a .pem file: {_shown(url)}")
        if url in self._keys:
            self._keys.move_to_end(url)
            return self._keys[url]
        try:
            key = x509.load_pem_x509_certificate(self._fetch(url)).public_key()
        except (InvalidInput, ValueError) as exc:
            raise Forbidden(f"no signing certificate at {_shown(url)}: {exc}") from exc
        if not isinstance(key, RSAPublicKey):
            raise Forbidden(f"the signing certificate at {_shown(url)} has no RSA key")
        self._keys[url] = key
        if len(self._keys) > CERTIFICATES_KEPT:
            self._keys.popitem(last=False)
        return key


def read_ses(
    body: bytes, topics: Collection[str], certificates: SigningCertificates, fetch: Fetcher
) -> list[Notice]:
    """An SNS call: a notification of SES's from one of topics, or the confirmation of a
    subscription to one, which is confirmed by fetching its SubscribeURL."""
    envelope = _json_object(body, Forbidden)
    kind = envelope.get("Type")
    if kind not in SNS_SIGNED:
        raise Forbidden(f"not an SNS message type: {_shown(kind)}")
    if envelope.get("TopicArn") not in topics:
        raise Forbidden(f"not an allowed topic: {_shown(envelope.get('TopicArn'))}")
    _check_sns_signature(envelope, SNS_SIGNED[kind], certificates)
    if kind == "SubscriptionConfirmation":
        subscribe = str(envelope["SubscribeURL"])
        _check_sns_url(subscribe, "SubscribeURL")
        try:
            fetch(subscribe)
        except InvalidInput as exc:
            raise Forbidden(f"could not confirm the subscription: {exc}") from exc
        log.info("confirmed the SNS subscription to %s", envelope["TopicArn"])
        return []
    if kind == "UnsubscribeConfirmation":
        return []
    return _ses_notices(_json_object(str(envelope["Message"]).encode(), InvalidInput))


def _check_sns_url(url: str, field: str) -> None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise Forbidden(f"{field} is not a URL: {_shown(url)}") from None
    host_ok = parts.hostname is not None and SNS_HOST.fullmatch(parts.hostname)
    if parts.scheme != "https" or not host_ok or port or parts.username is not None:
        raise Forbidden(f"{field} is not on an SNS host over https: {_shown(url)}")


def _check_sns_signature(
    envelope: dict[str, Any], fields: tuple[str, ...], certificates: SigningCertificates
) -> None:
    algorithm = SNS_HASHES.get(str(envelope.get("SignatureVersion")))
    if algorithm is None:
        raise Forbidden(f"unknown SignatureVersion {_shown(envelope.get('SignatureVersion'))}")
    missing = [f for f in fields if f != "Subject" and not isinstance(envelope.get(f), str)]
    if missing or not isinstance(envelope.get("SigningCertURL"), str):
        raise Forbidden(f"unsigned: no {', '.join(missing) or 'SigningCertURL'}")
    signed = "".join(
        f"{field}\n{envelope[field]}\n" for field in fields if isinstance(envelope.get(field), str)
    )
    key = certificates.key(envelope["SigningCertURL"])
    signature = _base64(envelope.get("Signature"), "Signature")
    try:
        key.verify(signature, signed.encode(), padding.PKCS1v15(), algorithm())
    except InvalidSignature:
        raise Forbidden("the SNS signature does not match") from None


def _ses_notices(event: dict[str, Any]) -> list[Notice]:
    kind = event.get("notificationType", event.get("eventType"))
    headers = _object(_object(event, "mail"), "commonHeaders")
    message_id = _bracketed(headers.get("messageId"))
    if kind == "Bounce":
        bounce = _object(event, "bounce")
        permanent = bounce.get("bounceType") == "Permanent"
        return [
            Notice(
                NoticeKind.BOUNCE if permanent else NoticeKind.DELAY,
                "ses",
                message_id=message_id,
                email=_text(recipient, "emailAddress"),
                detail=_detail(recipient.get("status"), recipient.get("diagnosticCode")),
            )
            for recipient in _objects(bounce, "bouncedRecipients")
        ]
    if kind == "Complaint":
        complaint = _object(event, "complaint")
        return [
            Notice(
                NoticeKind.COMPLAINT,
                "ses",
                message_id=message_id,
                email=_text(recipient, "emailAddress"),
                detail=_detail(complaint.get("complaintFeedbackType")),
            )
            for recipient in _objects(complaint, "complainedRecipients")
        ]
    return []


# Postmark


def read_postmark(body: bytes, headers: Headers, credentials: str) -> list[Notice]:
    """A call of Postmark's bounce or spam complaint webhook, with basic auth credentials."""
    scheme, _, encoded = headers.get("authorization", "").partition(" ")
    try:
        given = b64decode(encoded, validate=True) if scheme.lower() == "basic" else b""
    except ValueError:
        given = b""
    if not hmac.compare_digest(given, credentials.encode()):
        raise Forbidden("no or wrong basic auth credentials")
    record = _json_object(body, InvalidInput)
    kind = POSTMARK_TYPES.get(str(record.get("Type")))
    if record.get("RecordType") == "SpamComplaint":
        kind = NoticeKind.COMPLAINT
    elif record.get("RecordType") != "Bounce":
        kind = None
    if kind is None:
        return []
    detail = _detail(record.get("Type"), record.get("Details") or record.get("Description"))
    return [Notice(kind, "postmark", email=_text(record, "Email"), detail=detail)]


# Mailgun


class SeenTokens:
    """The last Mailgun tokens taken: a token comes once, so a second call with it is a replay."""

    def __init__(self, keep: int = SEEN_TOKENS) -> None:
        self._keep = keep
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()  # calls are read in the thread pool, two at once

    def first_time(self, token: str) -> bool:
        with self._lock:
            if token in self._seen:
                return False
            self._seen[token] = None
            if len(self._seen) > self._keep:
                self._seen.popitem(last=False)
            return True


def read_mailgun(body: bytes, signing_key: str, now: datetime, seen: SeenTokens) -> list[Notice]:
    """A call of Mailgun's webhooks: its signature, then its event-data."""
    call = _json_object(body, Forbidden)
    signature = call.get("signature")
    if not isinstance(signature, dict):
        raise Forbidden("unsigned: no signature")
    timestamp, token, given = (
        str(signature.get(k, "")) for k in ("timestamp", "token", "signature")
    )
    expected = hmac.new(signing_key.encode(), (timestamp + token).encode(), "sha256").hexdigest()
    if not token or not hmac.compare_digest(given.encode(), expected.encode()):
        raise Forbidden("the Mailgun signature does not match")
    _check_time(timestamp, now)
    if not seen.first_time(token):
        raise Forbidden("a Mailgun token seen before: a replay")
    event = call.get("event-data")
    if not isinstance(event, dict):
        raise InvalidInput("no event-data object")
    name = event.get("event")
    message_id = _bracketed(_object(_object(event, "message"), "headers").get("message-id"))
    status = _object(event, "delivery-status")
    if name == "failed":
        severity = event.get("severity")
        if severity not in ("permanent", "temporary"):
            return []
        return [
            Notice(
                NoticeKind.BOUNCE if severity == "permanent" else NoticeKind.DELAY,
                "mailgun",
                message_id=message_id,
                email=_text(event, "recipient"),
                detail=_detail(
                    status.get("code"), status.get("description") or status.get("message")
                ),
            )
        ]
    if name == "complained":
        notice = Notice(
            NoticeKind.COMPLAINT, "mailgun", message_id=message_id, email=_text(event, "recipient")
        )
        return [notice]
    return []


# SendGrid


def sendgrid_key(encoded: str) -> ec.EllipticCurvePublicKey:
    """The verification key as SendGrid shows it (base64 DER); config checked it is one."""
    key = load_der_public_key(b64decode(encoded))
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key


def read_sendgrid(
    body: bytes, headers: Headers, key: ec.EllipticCurvePublicKey, now: datetime
) -> list[Notice]:
    """A call of SendGrid's signed event webhook: a JSON array of events."""
    timestamp = headers.get("x-twilio-email-event-webhook-timestamp", "")
    signature = _base64(headers.get("x-twilio-email-event-webhook-signature"), "signature")
    try:
        key.verify(signature, timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise Forbidden("the SendGrid signature does not match") from None
    _check_time(timestamp, now)
    try:
        events = json.loads(body)
    except ValueError as exc:
        raise InvalidInput(f"not JSON: {exc}") from None
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        raise InvalidInput("not a JSON array of events")
    return [notice for event in events if (notice := _sendgrid_notice(event))]


def _sendgrid_notice(event: dict[str, Any]) -> Notice | None:
    name, reason = event.get("event"), event.get("reason")
    kind: NoticeKind | None = None
    if name == "bounce":
        kind = NoticeKind.DELAY if event.get("type") == "blocked" else NoticeKind.BOUNCE
    elif name == "spamreport":
        kind = NoticeKind.COMPLAINT
    elif name == "dropped" and isinstance(reason, str):
        kind = SENDGRID_DROPPED.get(reason.strip().lower())
    if kind is None:
        return None
    return Notice(
        kind,
        "sendgrid",
        message_id=_bracketed(event.get("smtp-id")),
        email=_text(event, "email"),
        detail=_detail(event.get("status"), reason),
    )


# What the readers share


def _json_object(body: bytes, error: type[Exception]) -> dict[str, Any]:
    """body as a JSON object, else error: Forbidden where the signature is inside the body."""
    try:
        value = json.loads(body)
    except ValueError as exc:
        raise error(f"not JSON: {one_line(str(exc))}") from None
    if not isinstance(value, dict):
        raise error("not a JSON object")
    return value


def _object(parent: dict[str, Any], name: str) -> dict[str, Any]:
    value = parent.get(name, {})
    if not isinstance(value, dict):
        raise InvalidInput(f"{name} is not an object")
    return value


def _objects(parent: dict[str, Any], name: str) -> list[dict[str, Any]]:
    value = parent.get(name)
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise InvalidInput(f"{name} is not a list of objects")
    return value


def _text(parent: dict[str, Any], name: str) -> str:
    value = parent.get(name)
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"no {name}")
    return one_line(value)


def _bracketed(value: object) -> str | None:
    """A Message-ID as the header writes it: Mailgun and SES may leave out the angle brackets."""
    if not isinstance(value, str) or not one_line(value):
        return None
    bare = one_line(value).strip("<>")
    return f"<{bare}>"


def _detail(*parts: object) -> str:
    text = one_line(" ".join(str(part) for part in parts if part not in (None, "")))
    return text[:MAX_DETAIL_CHARS]


def _base64(value: object, name: str) -> bytes:
    try:
        return b64decode(value, validate=True) if isinstance(value, str) else b""
    except ValueError:
        raise Forbidden(f"the {name} is not base64") from None


def _check_time(timestamp: str, now: datetime) -> None:
    if not timestamp.isdigit():
        raise Forbidden(f"no timestamp: {_shown(timestamp)}")
    if abs(int(timestamp) - now.timestamp()) > WINDOW.total_seconds():
        raise Forbidden(f"signed at {_shown(timestamp)}, more than 5 minutes from now")


def _shown(value: object) -> str:
    text = one_line(str(value))
    return repr(text if len(text) <= 80 else text[:77] + "...")


# The routes


def fetch_https(url: str) -> bytes:
    """The real fetcher: a bounded https GET with a short timeout."""
    return read_source(url, max_bytes=CERTIFICATE_MAX_BYTES, timeout=FETCH_TIMEOUT)


class _TooLarge(Exception):
    pass


class Webhooks:
    """The routes of the providers configured in settings; each call's Notices go to take."""

    def __init__(
        self, settings: Settings, take: Take, clock: Clock, fetch: Fetcher = fetch_https
    ) -> None:
        self._settings = settings
        self._take = take
        self._clock = clock
        self._fetch = fetch
        self._certificates = SigningCertificates(fetch)
        self._seen = SeenTokens()

    def routes(self) -> list[BaseRoute]:
        s = self._settings
        readers: dict[str, Callable[[bytes, Headers], list[Notice]]] = {}
        if s.ses_topic_arns:
            readers["ses"] = lambda body, headers: read_ses(
                body, s.ses_topic_arns, self._certificates, self._fetch
            )
        if s.postmark_webhook_auth:
            auth = s.postmark_webhook_auth
            readers["postmark"] = lambda body, headers: read_postmark(body, headers, auth)
        if s.mailgun_signing_key:
            signing_key = s.mailgun_signing_key
            readers["mailgun"] = lambda body, headers: read_mailgun(
                body, signing_key, self._clock(), self._seen
            )
        if s.sendgrid_public_key:
            key = sendgrid_key(s.sendgrid_public_key)
            readers["sendgrid"] = lambda body, headers: read_sendgrid(
                body, headers, key, self._clock()
            )
        return [
            Route(f"/webhooks/{provider}", self._endpoint(provider, read), methods=["POST"])
            for provider, read in readers.items()
        ]

    def _endpoint(
        self, provider: str, read: Callable[[bytes, Headers], list[Notice]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                body = await _body(request)
                notices = await run_in_threadpool(read, body, request.headers)
            except _TooLarge:
                return _refused(provider, 413, f"a body over {MAX_BODY_BYTES} bytes")
            except Forbidden as exc:
                return _refused(provider, 403, str(exc))
            except InvalidInput as exc:
                return _refused(provider, 400, f"a signed call not understood: {exc}")
            if notices:
                await run_in_threadpool(self._take, notices)
            return PlainTextResponse("ok")

        return endpoint


async def _body(request: Request) -> bytes:
    """The body, refused as soon as it passes MAX_BODY_BYTES: never more than that is held."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise _TooLarge
    pieces, size = [], 0
    async for piece in request.stream():
        pieces.append(piece)
        size += len(piece)
        if size > MAX_BODY_BYTES:
            raise _TooLarge
    return b"".join(pieces)


def _refused(provider: str, status: int, why: str) -> Response:
    log.warning("%s webhook refused (%d): %s", provider, status, one_line(why))
    return PlainTextResponse(
        {400: "Bad request", 403: "Forbidden", 413: "Too large"}[status], status_code=status
    )
