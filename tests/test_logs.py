"""Log lines: text or JSON, and never a secret or a reader's link token."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from digest import logs
from digest.config import LogFormat, load

SIGNING_KEY = "k" * 40
OLD_KEY = "o" * 40


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    yield logging.getLogger("digest.test")
    logging.getLogger().handlers.clear()


def test_json_lines_carry_time_level_logger_and_message(
    logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.configure(LogFormat.JSON, logging.INFO, [])
    logger.info("run: %s", "sent 3, skipped 0, retrying 0, failed 0")
    logger.debug("below the level")
    (line,) = capsys.readouterr().err.splitlines()
    entry = json.loads(line)
    assert entry["level"] == "info"
    assert entry["logger"] == "digest.test"
    assert entry["message"] == "run: sent 3, skipped 0, retrying 0, failed 0"
    assert entry["time"].endswith("+00:00")


def test_an_exception_stays_inside_its_one_json_line(
    logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.configure(LogFormat.JSON, logging.INFO, [SIGNING_KEY])
    try:
        raise RuntimeError(f"boom with {SIGNING_KEY}")
    except RuntimeError:
        logger.exception("unexpected")
    (line,) = capsys.readouterr().err.splitlines()
    entry = json.loads(line)
    assert "RuntimeError: boom with ***" in entry["error"]
    assert SIGNING_KEY not in line


def test_the_configured_secrets_never_reach_a_log_line(
    logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = load(
        None,
        {
            "DIGEST_SECRET_KEY": f"{SIGNING_KEY},{OLD_KEY}",
            "DIGEST_SMTP_PASSWORD": "relay-pass-123",
            "DIGEST_DATABASE_URL": "postgresql+psycopg://digest:db-pass-456@db/digest",
        },
    )
    logs.configure(LogFormat.TEXT, logging.INFO, logs.secrets_of(settings))
    logger.warning(
        "leaky: %s %s %s %s", SIGNING_KEY, OLD_KEY, "relay-pass-123", settings.database_url
    )
    err = capsys.readouterr().err
    for secret in (SIGNING_KEY, OLD_KEY, "relay-pass-123", "db-pass-456"):
        assert secret not in err
    assert "postgresql+psycopg://digest:***@db/digest" in err


@pytest.mark.parametrize("purpose", ["unsubscribe", "preferences", "confirm"])
def test_link_tokens_are_cut_from_request_paths(
    purpose: str, logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.configure(LogFormat.TEXT, logging.INFO, [])
    logger.info('127.0.0.1:5000 - "POST /%s/eyJzdWIiOjQyfQ.abc-DEF_1 HTTP/1.1" 200', purpose)
    err = capsys.readouterr().err
    assert f'"POST /{purpose}/*** HTTP/1.1" 200' in err
    assert "eyJzdWIiOjQyfQ" not in err


@pytest.mark.parametrize("log_format", list(LogFormat))
def test_scrubbing_leaves_the_record_itself_alone_for_other_handlers(
    logger: logging.Logger, caplog: pytest.LogCaptureFixture, log_format: LogFormat
) -> None:
    logs.configure(log_format, logging.INFO, [SIGNING_KEY])
    logging.getLogger().addHandler(caplog.handler)  # after ours, as a second handler would be
    try:
        raise RuntimeError(f"boom with {SIGNING_KEY}")
    except RuntimeError:
        logger.exception("failed with %s", "args")
    (record,) = caplog.records
    assert record.exc_info is not None
    assert record.args == ("args",)
