"""Log lines for people (text) and for log shippers (one JSON object a line), with secrets scrubbed.

Every record passes one filter before it is written: the configured secrets (SMTP password,
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
from enum import StrEnum
from typing import TextIO

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from digest.config import Settings

HIDDEN = "***"
TOKEN_PATH = re.compile(r"/(unsubscribe|preferences|confirm)/[^\s\"?]+")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


def secrets_of(settings: Settings) -> list[str]:
    secrets = [*settings.secret_keys, settings.smtp_password or ""]
    # config has checked the URL's scheme; one SQLAlchemy cannot parse has no password to find
    with contextlib.suppress(ArgumentError):
        secrets.append(make_url(settings.database_url).password or "")
    return [secret for secret in secrets if secret]


class _Scrubber(logging.Filter):
    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        # Longest first, so a secret that contains another is hidden whole.
        self._secrets = sorted(set(secrets), key=len, reverse=True)

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, HIDDEN)
        return TOKEN_PATH.sub(r"/\1/" + HIDDEN, text)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.scrub(record.getMessage())
        record.args = None
        if record.exc_info:
            record.exc_text = self.scrub(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_text:
            entry["error"] = record.exc_text
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
    handler = _StderrHandler()
    handler.addFilter(_Scrubber(secrets))
    handler.setFormatter(
        _JsonFormatter() if log_format is LogFormat.JSON else logging.Formatter(TEXT_FORMAT)
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
