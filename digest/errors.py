"""The one exception tree of digest.

    DigestError                    anything digest reports to a person; `exit_code` for the CLI
    ├── ConfigError                a setting is missing or wrong (names the key)
    ├── InvalidInput               an address, timezone, frequency, CSV row, feed or option is wrong
    │   ├── InvalidAddress         an email address is wrong; `problem` names the mistake for readers
    │   └── DuplicateSubscriber    the address is already subscribed
    ├── NotFound                   no such subscriber
    ├── InvalidToken               a link token is tampered, of another purpose, stale or unknown
    │   └── ExpiredToken           a confirm token that was valid but is too old
    ├── Forbidden                  a webhook call its provider did not sign, or a stale or replayed one
    ├── DatabaseError              the database is unreachable, busy, or its schema is not current
    └── DeliveryError              an SMTP transaction failed
        └── SmtpConfigError            our own settings are wrong (5xx on MAIL FROM or AUTH): stop the run

A failure that is a reader's or the relay's (4xx, 5xx on RCPT or DATA, a dropped connection) is
not raised: the mailer returns it as an Outcome, and the ledger retries or fails that delivery.

Adapters translate foreign exceptions into these once, keeping the cause (`raise ... from exc`);
the edges (CLI, web) decide how to show them.
"""

from __future__ import annotations

from enum import StrEnum


class DigestError(Exception):
    exit_code = 2


class ConfigError(DigestError):
    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"setting {key}: {problem}")
        self.key = key
        self.problem = problem


class InvalidInput(DigestError):
    pass


class AddressProblem(StrEnum):
    INCOMPLETE = "incomplete"  # no @, nothing on one side of it, or a domain without a dot
    SPACE = "space"
    CHARACTER = "character"  # one mail cannot carry, or that we refuse in a header
    TOO_LONG = "too long"
    OTHER = "other"  # a stray dot or hyphen, a reserved domain, quoting


class InvalidAddress(InvalidInput):
    """The message says precisely what is wrong (for the CLI); problem, what kind of mistake."""

    def __init__(self, message: str, problem: AddressProblem) -> None:
        super().__init__(message)
        self.problem = problem


class DuplicateSubscriber(InvalidInput):
    pass


class NotFound(DigestError):
    pass


class InvalidToken(DigestError):
    pass


class ExpiredToken(InvalidToken):
    pass


class Forbidden(DigestError):
    pass


class DatabaseError(DigestError):
    pass


class DeliveryError(DigestError):
    exit_code = 1

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class SmtpConfigError(DeliveryError):
    exit_code = 2
