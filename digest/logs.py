"""Log lines for people (text) and for log shippers (one JSON object a line), with secrets scrubbed.

Every line is scrubbed as it is formatted: the configured secrets (SMTP password,
signing keys, the database password) become "***", and the tokens in reader links (which let
whoever holds them unsubscribe that reader) are cut from request paths.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TextIO

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from digest.config import LogFormat, Settings

HIDDEN = "***"
TOKEN_PATH = re.compile(r"/(unsubscribe|preferences|confirm)/[^\s\"?]+")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def secrets_of(settings: Settings) -> list[str]:
    secrets = [*settings.secret_keys, settings.smtp_password or ""]
    # config has checked the URL's scheme; one SQLAlchemy cannot parse has no password to find
    with contextlib.suppress(ArgumentError):
        secrets.append(make_url(settings.database_url).password or "")
    return [secret for secret in secrets if secret]


class _Scrubber:
    def __init__(self, secrets: Iterable[str]) -> None:
        # Longest first, so a secret that contains another is hidden whole.
        self._secrets = sorted(set(secrets), key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, HIDDEN)
        return TOKEN_PATH.sub(r"/\1/" + HIDDEN, text)


# Scrubbing happens as a record is formatted, never by changing the record: other handlers (a
# test's log capture, a library's own) see the record as it was logged, its exc_info included.
class _TextFormatter(logging.Formatter):
    def __init__(self, scrub: _Scrubber) -> None:
        super().__init__(TEXT_FORMAT)
        self._scrub = scrub

    def format(self, record: logging.LogRecord) -> str:
        return self._scrub(super().format(record))


class _JsonFormatter(logging.Formatter):
    def __init__(self, scrub: _Scrubber) -> None:
        super().__init__()
        self._scrub = scrub

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": self._scrub(record.getMessage()),
        }
        if record.exc_info:
            entry["error"] = self._scrub(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at the time, as logging's last-resort handler does."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _: TextIO) -> None:
        pass


def configure(log_format: LogFormat, level: int, secrets: Iterable[str]) -> None:
    """Send every logger's records, uvicorn's included, through one scrubbed handler to stderr."""
    scrub = _Scrubber(secrets)
    handler = _StderrHandler()
    handler.setFormatter(
        _JsonFormatter(scrub) if log_format is LogFormat.JSON else _TextFormatter(scrub)
    )
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # APScheduler says "Running job" and "executed successfully" at INFO for every run, two lines
    # a minute that say nothing: each run logs its own result. Its failures are WARNING and up.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
