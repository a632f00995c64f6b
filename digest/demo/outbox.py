"""The catcher's folder read back as a list of caught mails, for the demo's pages."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from pathlib import Path

from digest.domain import Frequency

# The catcher names each mail NNN-<recipient>; the number counts up from 001.
NAME = re.compile(r"(\d+)-(.+)")
# Matches the subject the digest template writes; any other mail (a confirmation) has none.
DIGEST_SUBJECT = re.compile(r"Your (daily|weekly|monthly) digest\b")


@dataclass(frozen=True, slots=True)
class Caught:
    name: str  # the file name without .eml: what the pages put in their URLs
    number: int
    recipient: str
    subject: str
    frequency: Frequency | None
    caught_at: datetime
    eml: Path
    html: Path | None  # the HTML part, if the mail had one


def read(folder: Path) -> list[Caught]:
    """Every mail in the folder, newest first."""
    caught = (_entry(eml) for eml in _files(folder).values())
    return sorted((c for c in caught if c is not None), key=lambda c: c.number, reverse=True)


def find(folder: Path, name: str) -> Caught | None:
    """The mail called name. Only names of files the folder holds are looked up, so no name can
    reach outside it, whatever `..` or `/` it carries."""
    eml = _files(folder).get(name)
    return None if eml is None else _entry(eml)


def _files(folder: Path) -> dict[str, Path]:
    return {eml.stem: eml for eml in folder.glob("*.eml") if eml.is_file()}


def _entry(eml: Path) -> Caught | None:
    match = NAME.fullmatch(eml.stem)
    if match is None:
        return None
    with eml.open("rb") as file:
        headers = BytesHeaderParser(policy=default_policy).parse(file)
    subject = str(headers.get("Subject", ""))
    frequency = DIGEST_SUBJECT.match(subject)
    html = eml.with_suffix(".html")
    return Caught(
        name=eml.stem,
        number=int(match[1]),
        recipient=str(headers.get("To", "")) or match[2],
        subject=subject,
        frequency=Frequency(frequency[1]) if frequency else None,
        caught_at=datetime.fromtimestamp(eml.stat().st_mtime, UTC),
        eml=eml,
        html=html if html.is_file() else None,
    )
