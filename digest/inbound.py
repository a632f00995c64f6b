"""What comes back after sending, read: a bounce (an RFC 3464 report, or one of the formats
flufl.bounce knows), a spam complaint (an ARF report, RFC 5965), an auto-reply, or a mail to the
mailto: unsubscribe address. Each mail becomes the Notices it carries, or none; nothing here
writes anything, and nothing a mail says is trusted beyond what our own signed tags name.

Which digest a notice is about comes from, in order: the VERP tag of the address it was sent to
(the bounce address tagged with the delivery), the same tag in the original message's
Return-Path (a complaint quotes the message as it was received), the original Message-ID.
"""

from __future__ import annotations

import email
import email.policy
import logging
import mailbox
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from email.message import Message
from email.utils import getaddresses
from pathlib import Path

from flufl.bounce import all_failures

from digest.addresses import tag_of
from digest.domain import Notice, NoticeKind
from digest.errors import InvalidToken
from digest.text import one_line
from digest.tokens import Tokens

log = logging.getLogger("digest.inbound")
DETAIL_LIMIT = 500
# Where a mailbox keeps the address a mail was delivered to, for mail read from a file.
DELIVERED_TO = ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "To")
AUTO_REPLY = re.compile(r"auto[-_ ]?repl|out of (the )?office|vacation|autorespon", re.IGNORECASE)
STATUS = re.compile(r"\b([245])\.\d{1,3}\.\d{1,3}\b")


@dataclass(frozen=True, slots=True)
class Mailboxes:
    """The addresses inbound mail may come to: bounce+TAG@… and unsubscribe+TAG@… (None: unset)."""

    bounce: str | None
    unsubscribe: str | None

    def ours(self, recipient: str) -> bool:
        """Whether a recipient is one of ours: the only ones inbound SMTP takes. The bounce
        address tagged or as it is (where a feedback loop sends its complaints), the unsubscribe
        address tagged."""
        bare = recipient.strip().strip("<>").casefold()
        return (self.bounce is not None and bare == self.bounce.casefold()) or any(
            address is not None and tag_of(recipient, address) is not None
            for address in (self.bounce, self.unsubscribe)
        )


class Reader:
    """Turns one inbound mail into the Notices it carries."""

    def __init__(self, tokens: Tokens, mailboxes: Mailboxes) -> None:
        self._tokens = tokens
        self._mailboxes = mailboxes

    def notices(
        self, raw: bytes, recipients: Sequence[str] = (), source: str = "smtp"
    ) -> list[Notice]:
        """What the mail raw says. recipients are the envelope's (RCPT TO); for a mail read from
        a file, where there are none, the headers a mailbox writes them to stand in."""
        message = email.message_from_bytes(raw, policy=email.policy.compat32)
        to = list(recipients) or _delivered_to(message)
        unsubscribes = [self._unsubscribe(recipient, source) for recipient in to]
        found = [notice for notice in unsubscribes if notice is not None]
        if any(self._tag(recipient, self._mailboxes.bounce) for recipient in to) or not found:
            found += self._report(message, to, source)
        return found

    def _unsubscribe(self, recipient: str, source: str) -> Notice | None:
        tag = self._tag(recipient, self._mailboxes.unsubscribe)
        if tag is None:
            return None
        try:
            subject = self._tokens.read_mailto(tag)
        except InvalidToken:
            log.warning("mail to %s ignored: not an unsubscribe address of ours", one_line(tag))
            return None
        return Notice(
            NoticeKind.UNSUBSCRIBE, source, reader=(subject.subscriber_id, subject.token_version)
        )

    def _report(self, message: Message, to: Sequence[str], source: str) -> list[Notice]:
        """A bounce or a complaint about one of our digests; nothing for anything else."""
        failures = _failures(message)
        kind = _kind(message, failures)
        if kind is None:
            return []
        original = _original(message)
        delivery_id = self._delivery(to, original)
        message_id = None if original is None else _header(original, "Message-ID")
        detail = _detail(message)
        emails = [None] if kind is NoticeKind.COMPLAINT else _failed(failures, kind) or [None]
        if delivery_id is None and message_id is None and emails == [None]:
            log.info("a %s named no digest of ours: ignored", kind.value)
            return []
        return [
            Notice(kind, source, delivery_id, None, message_id, address, detail)
            for address in emails
        ]

    def _delivery(self, to: Sequence[str], original: Message | None) -> int | None:
        """The delivery a VERP tag names: in the address the report came to, else in the original
        message's Return-Path (where a receiver wrote our envelope sender)."""
        candidates = list(to)
        if original is not None:
            candidates += [
                address for _, address in getaddresses(original.get_all("Return-Path", []))
            ]
        for candidate in candidates:
            tag = self._tag(candidate, self._mailboxes.bounce)
            if tag is None:
                continue
            try:
                return self._tokens.read_return_path(tag)
            except InvalidToken:
                log.warning(
                    "a report to %s ignored the tag: not a return path of ours", one_line(tag)
                )
        return None

    @staticmethod
    def _tag(recipient: str, address: str | None) -> str | None:
        return None if address is None else tag_of(recipient, address)


def _delivered_to(message: Message) -> list[str]:
    for name in DELIVERED_TO:
        found = [address for _, address in getaddresses(message.get_all(name, [])) if address]
        if found:
            return found
    return []


Failures = tuple[frozenset[bytes], frozenset[bytes]]  # (temporary, permanent), as flufl.bounce


def _failures(message: Message) -> Failures:
    """The recipients a bounce reports as failing, as flufl.bounce's detectors find them."""
    try:
        return all_failures(message)
    except Exception:  # noqa: BLE001 - a detector can trip on any broken mail; it says nothing
        log.warning("a mail no bounce detector could read was taken as no bounce")
        return frozenset(), frozenset()


def _kind(message: Message, failures: Failures) -> NoticeKind | None:
    """A complaint (ARF), a permanent or a transient bounce; None for an auto-reply or anything
    else (a person's answer, a notification about a notification). An RFC 3464 status decides
    where there is one; else what the detectors found."""
    report_type = str(message.get_param("report-type", "", header="Content-Type")).lower()
    if message.get_content_type() == "multipart/report" and report_type == "feedback-report":
        return NoticeKind.COMPLAINT
    if _auto_reply(message) and report_type != "delivery-status":
        return None
    codes = {found[1] for found in STATUS.finditer(_statuses(message))}
    temporary, permanent = failures
    if "5" in codes or (not codes and permanent):
        return NoticeKind.BOUNCE
    if "4" in codes or (not codes and temporary):
        return NoticeKind.DELAY
    return None


def _auto_reply(message: Message) -> bool:
    auto = str(message.get("Auto-Submitted", "no")).lower()
    return (
        auto.startswith("auto-replied")
        or any(message.get(name) for name in ("X-Autoreply", "X-Autorespond"))
        or str(message.get("Precedence", "")).lower() == "auto_reply"
        or bool(AUTO_REPLY.search(str(message.get("Subject", ""))))
    )


def _delivery_status_blocks(message: Message) -> Iterator[Message]:
    for part in message.walk():
        if part.get_content_type() == "message/delivery-status" and part.is_multipart():
            for block in part.get_payload():
                if isinstance(block, Message):
                    yield block


def _statuses(message: Message) -> str:
    """The Status fields of an RFC 3464 report's recipient blocks."""
    return " ".join(str(block.get("Status", "")) for block in _delivery_status_blocks(message))


def _detail(message: Message) -> str:
    """One line on what the receiver said: the first failed recipient's status and diagnostic."""
    for block in _delivery_status_blocks(message):
        status, diagnostic = block.get("Status"), block.get("Diagnostic-Code")
        if status or diagnostic:
            said = " ".join(str(part) for part in (status, diagnostic) if part)
            return one_line(said)[:DETAIL_LIMIT]
    feedback = _first_part(message, "message/feedback-report")
    if feedback is not None:
        return one_line(f"feedback-type: {_feedback_type(feedback)}")[:DETAIL_LIMIT]
    return one_line(str(message.get("Subject", "")))[:DETAIL_LIMIT]


def _feedback_type(part: Message) -> str:
    payload = part.get_payload()
    blocks = payload if isinstance(payload, list) else []
    for block in blocks:
        if isinstance(block, Message) and block.get("Feedback-Type"):
            return str(block["Feedback-Type"])
    found = re.search(r"^Feedback-Type:\s*(\S+)", str(payload), re.IGNORECASE | re.MULTILINE)
    return found[1] if found else "abuse"


def _failed(failures: Failures, kind: NoticeKind) -> list[str | None]:
    """The recipients a bounce reports as failed (for a delay, as delayed)."""
    temporary, permanent = failures
    found = permanent if kind is NoticeKind.BOUNCE else temporary
    return [address.decode("ascii", "replace") for address in sorted(found)]


def _first_part(message: Message, content_type: str) -> Message | None:
    return next((part for part in message.walk() if part.get_content_type() == content_type), None)


def _original(message: Message) -> Message | None:
    """The original message a report quotes: a message/rfc822 part, or its headers alone."""
    for part in message.walk():
        if part is message:
            continue
        content_type = part.get_content_type()
        if content_type in ("message/rfc822", "message/global"):
            payload = part.get_payload()
            inner = payload[0] if isinstance(payload, list) and payload else None
            if isinstance(inner, Message):
                return inner
        if content_type in ("text/rfc822-headers", "text/rfc822-header"):
            text = part.get_payload(decode=True)
            if isinstance(text, bytes):
                return email.message_from_bytes(text, policy=email.policy.compat32)
    return None


def _header(message: Message, name: str) -> str | None:
    value = message.get(name)
    return None if value is None else one_line(str(value)).strip() or None


def mails_in(path: Path) -> Iterator[tuple[str, bytes]]:
    """Each mail of a file, named "FILE" or "FILE, mail N": an mbox (it begins "From ") holds
    many, an .eml file one. OSError if it cannot be read."""
    with path.open("rb") as file:
        mbox = file.read(5) == b"From "
    if not mbox:
        yield str(path), path.read_bytes()
        return
    box = mailbox.mbox(path, create=False)
    try:
        for number, key in enumerate(box.iterkeys(), start=1):
            yield f"{path}, mail {number}", box.get_bytes(key)
    finally:
        box.close()
