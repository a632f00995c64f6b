"""Email addresses, timezones, frequencies, send times and weekdays as people type them, checked and normalised.

The only module that imports email_validator. Every refusal is an InvalidInput with one line.
"""

from __future__ import annotations

import re
from datetime import time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from email_validator import EmailNotValidError, validate_email

from digest.domain import WEEKDAYS, Frequency, topic_key
from digest.errors import AddressProblem, InvalidAddress, InvalidInput
from digest.text import CONTROLS, shown

# RFC 5321 limits a path to 256 octets including the angle brackets.
MAX_ADDRESS_CHARS = 254
# Python's email parser, and mail readers like it, decode RFC 2047 encoded words even inside an
# address, where the RFC forbids them: "=?utf-8?q?=0D=0A?=@example.org" reads back as a line break.
_ENCODED_WORD = re.compile(r"=\?.*\?=")


def _invalid_address(raw: str, reason: str, problem: AddressProblem) -> InvalidAddress:
    message = f"not a valid email address: {shown(raw, 80)}: {' '.join(reason.split())}"
    return InvalidAddress(message, problem)


def _problem(address: str, reason: str) -> AddressProblem:
    """The kind of mistake, told from the address where it can be (the validator's wording may
    change between versions), else from the validator's words."""
    local, at, domain = address.rpartition("@")
    if not (at and local and "." in domain.rstrip(".")):
        return AddressProblem.INCOMPLETE
    if any(char.isspace() for char in address):
        return AddressProblem.SPACE
    if "too long" in reason:
        return AddressProblem.TOO_LONG
    if "character" in reason:
        return AddressProblem.CHARACTER
    return AddressProblem.OTHER


def normalise_address(raw: str) -> str:
    """The address with its domain lower-cased (IDNA) and its local part as given.

    The local part keeps its case (some mailboxes distinguish it) but is NFC-normalised by the
    validator, so two spellings of the same Unicode address are one subscriber.
    """
    address = raw.strip(" \t")
    # Python's email package has split headers on control characters and U+2028/U+2029
    # (CVE-2024-6923), so an address carrying one is refused outright.
    if CONTROLS.search(address):
        raise _invalid_address(
            raw, "contains a line break or control character", AddressProblem.CHARACTER
        )
    if _ENCODED_WORD.search(address):
        raise _invalid_address(
            raw, "looks like an RFC 2047 encoded word (=?...?=)", AddressProblem.CHARACTER
        )
    if len(address) > MAX_ADDRESS_CHARS:
        reason = f"longer than {MAX_ADDRESS_CHARS} characters"
        raise _invalid_address(raw, reason, AddressProblem.TOO_LONG)
    try:
        valid = validate_email(address, check_deliverability=False)
    except EmailNotValidError as exc:
        raise _invalid_address(raw, str(exc), _problem(address, str(exc))) from exc
    return f"{valid.local_part}@{valid.ascii_domain.lower()}"


def address_key(address: str) -> str:
    """What two addresses share when they are one reader: the address without regard to case.

    Every mailbox provider a reader is likely to use ignores case in the local part too, so
    Reader@example.org and reader@example.org are one person. casefold() is Unicode's caseless
    match (STRASSE and straße too); it runs here, not in SQL, because SQLite's lower() knows
    ASCII only. The address itself is kept as typed, for sending.
    """
    return address.casefold()


def check_timezone(name: str) -> str:
    """The IANA timezone name, stripped, if the zone database knows it."""
    candidate = name.strip()
    # ZoneInfo reads files under TZPATH: accept names only, never anything that looks like a path.
    looks_like_path = candidate.startswith("/") or "\\" in candidate or ".." in candidate
    if not candidate or looks_like_path:
        raise InvalidInput(f"unknown timezone: {name!r}")
    try:
        ZoneInfo(candidate)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise InvalidInput(f"unknown timezone: {name!r}") from exc
    return candidate


def parse_frequency(text: str) -> Frequency:
    try:
        return Frequency(text.strip().lower())
    except ValueError as exc:
        raise InvalidInput(
            f"unknown frequency: {text!r} (choose daily, weekly or monthly)"
        ) from exc


def parse_send_time(text: str) -> time | None:
    """A reader's send time, HH:MM on a 24-hour clock; "" is the site's (None)."""
    candidate = text.strip()
    if not candidate:
        return None
    try:
        if re.fullmatch(r"[0-9]{2}:[0-9]{2}", candidate) is None:
            raise ValueError(candidate)
        return time.fromisoformat(candidate)
    except ValueError as exc:
        raise InvalidInput(
            f"send time: {shown(text, 40)} is not a time of day (HH:MM, 00:00 to 23:59)"
        ) from exc


def parse_weekday(text: str) -> int | None:
    """A weekly reader's day by name (0 = Monday); "" is the site's (None)."""
    candidate = text.strip().lower()
    if not candidate:
        return None
    if candidate not in WEEKDAYS:
        raise InvalidInput(f"weekday: {shown(text, 40)} is not a day (monday to sunday)")
    return WEEKDAYS.index(candidate)


# A topic is a category's name: the column holds 80 characters, so more is a mistake.
TOPIC_LIMIT = 80


def parse_topics(text: str) -> frozenset[str] | None:
    """Topics as a reader or an editor types them, comma-separated, as topic keys; blank is
    every topic (None). A topic no article has yet is kept: its category may appear later."""
    if not text.strip():
        return None
    keys = set()
    for name in text.split(","):
        key = topic_key(name)
        if not key or len(name.strip()) > TOPIC_LIMIT:
            raise InvalidInput(
                f"bad topic: {shown(name.strip())} (topics are category names of 1 to "
                f"{TOPIC_LIMIT} characters, separated by commas)"
            )
        keys.add(key)
    return frozenset(keys)


def mask_address(email: str) -> str:
    """Enough of an address for its owner to recognise it and nobody else to harvest it."""
    local, _, domain = email.rpartition("@")
    return f"{local[:1]}***@{domain}"


def tagged(address: str, tag: str) -> str:
    """address with a tag after its local part (VERP): bounces@x.org, b42-… → bounces+b42-…@x.org."""
    local, _, domain = address.rpartition("@")
    return f"{local}+{tag}@{domain}"


def tag_of(recipient: str, address: str) -> str | None:
    """The tag of a recipient that is address tagged (tagged's inverse), else None; the domain and
    the local part are compared without regard to case, as relays may change either."""
    local, _, domain = address.rpartition("@")
    their_local, _, their_domain = recipient.strip().strip("<>").rpartition("@")
    base, plus, tag = their_local.partition("+")
    if (
        not plus
        or base.casefold() != local.casefold()
        or their_domain.casefold() != domain.casefold()
    ):
        return None
    return tag or None
