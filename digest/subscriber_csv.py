"""Subscriber CSV (`digest subscribers import`): drafts, and every bad row by its physical line."""

from __future__ import annotations

import csv
import io
from functools import partial

from digest.addresses import (
    address_key,
    check_timezone,
    normalise_address,
    parse_frequency,
    parse_send_time,
    parse_topics,
    parse_weekday,
)
from digest.domain import SubscriberDraft
from digest.errors import InvalidInput
from digest.rows import Collector, Parsed
from digest.text import one_line, shown

CSV_HEADER = "email,frequency[,timezone][,send_time][,weekday][,topics]"
# in any order, each at most once; topics is one field of comma-separated topics (quoted)
OPTIONAL_COLUMNS = ("timezone", "send_time", "weekday", "topics")


def parse_subscribers_csv(
    data: bytes | str, *, default_timezone: str = "UTC"
) -> Parsed[SubscriberDraft]:
    """Drafts from CSV with the header CSV_HEADER; rows are physical line numbers."""
    default_timezone = check_timezone(default_timezone)
    text = _decode_csv(data) if isinstance(data, bytes) else data.removeprefix("\ufeff")
    # newline="": a quoted field may hold a line break; line_num still counts physical lines.
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    # One reader per person: a later row in another case is a duplicate too.
    collector: Collector[SubscriberDraft] = Collector(
        "line", key=lambda draft: address_key(draft.email)
    )
    line = 0
    try:
        for row in reader:
            line, start = reader.line_num, line + 1
            if not any(cell.strip() for cell in row):
                continue
            if header is None:
                header = _check_header(row)
                continue
            collector.add(start, partial(_subscriber, row, header, default_timezone))
    except csv.Error as exc:  # e.g. a field over csv.field_size_limit()
        raise InvalidInput(f"CSV line {reader.line_num}: {one_line(str(exc))}") from exc
    if header is None:
        raise InvalidInput(f"CSV is empty: expected the header {CSV_HEADER}")
    return collector.parsed


def _decode_csv(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"CSV is not UTF-8: byte {data[exc.start]:#04x} at offset {exc.start}"
        ) from exc


def _check_header(row: list[str]) -> list[str]:
    names = [cell.strip().lower() for cell in row]
    rest = names[2:]
    if (
        names[:2] != ["email", "frequency"]
        or len(set(rest)) != len(rest)
        or not set(rest) <= set(OPTIONAL_COLUMNS)
    ):
        found = shown(one_line(",".join(row)))
        raise InvalidInput(f"CSV header must be {CSV_HEADER}, found {found}")
    return names


def _subscriber(row: list[str], header: list[str], default_timezone: str) -> SubscriberDraft:
    if len(row) > len(header):
        raise InvalidInput(f"expected {len(header)} fields, found {len(row)}")
    cells = dict(zip(header, row, strict=False))
    timezone = cells.get("timezone", "")
    return SubscriberDraft(
        email=normalise_address(cells.get("email", "")),
        frequency=parse_frequency(cells.get("frequency", "")),
        timezone=check_timezone(timezone) if timezone.strip() else default_timezone,
        send_time=parse_send_time(cells.get("send_time", "")),
        send_weekday=parse_weekday(cells.get("weekday", "")),
        topics=parse_topics(cells.get("topics", "")),
    )
