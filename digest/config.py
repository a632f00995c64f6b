"""Settings: one table of keys, defaults, ranges and help; `load(path, environ)` builds one validated object.

Sources, later wins: the table's defaults, the TOML file, `DIGEST_<KEY>` environment variables.
The same table's ranges are what validation enforces; it writes config/digest.toml's comments and
is checked against the README by a test, so none of the three can drift from the others.
"""

from __future__ import annotations

import html
import re
import string
import tomllib
from base64 import b64decode
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import time, timedelta
from email.utils import parseaddr
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.serialization import load_der_public_key

from digest.addresses import check_timezone, normalise_address, parse_frequency
from digest.domain import SUBJECTS, WEEKDAYS, Frequency, Schedule
from digest.errors import ConfigError, InvalidInput
from digest.ratelimit import Rate
from digest.text import display_name, is_web_url, tag_key

DEFAULT_PATH = Path("config/digest.toml")
PROJECT_TEMPLATES = Path(__file__).resolve().parent / "templates"
LINE_BREAKS = frozenset("\r\n\v\f\x1c\x1d\x1e\x85\u2028\u2029")
MIN_SECRET_LENGTH = 32
SNS_TOPIC_ARN = re.compile(r"arn:aws(-cn|-us-gov)?:sns:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_.-]{1,256}")
# Longer links could push a digest's HTML past Gmail's clip: render.LINK_ROOM holds this, "/preferences/"
# and a token of at most 100 characters.
MAX_BASE_URL_BYTES = 280
MAX_RATE = 100_000
RATE_UNITS = {"s": 1.0, "second": 1.0, "min": 60.0, "minute": 60.0}
SWITCH = ("on", "off")

Raw = str | int | float | bool | None


class LogFormat(StrEnum):
    """How log lines are written (DIGEST_LOG_FORMAT, --log-format)."""

    TEXT = "text"
    JSON = "json"


@dataclass(frozen=True, slots=True)
class Key:
    name: str
    default: Raw
    help: str
    bounds: tuple[int, int] | None = None  # the whole numbers allowed, both ends included
    choices: tuple[str, ...] = ()  # the words allowed, in any case

    @property
    def env(self) -> str:
        return f"DIGEST_{self.name.upper()}"

    @property
    def allowed(self) -> str:
        """The range as the README and config/digest.toml state it: "1–100", "none, starttls or tls"."""
        if self.bounds is not None:
            return f"{self.bounds[0]}–{self.bounds[1]}"
        if self.choices:
            return f"{', '.join(self.choices[:-1])} or {self.choices[-1]}"
        return ""


KEYS: tuple[Key, ...] = (
    Key("database_url", "sqlite:///digest.db", "SQLAlchemy URL: sqlite:///FILE or postgresql+psycopg://USER@HOST/DB"),
    Key("smtp_host", "localhost", "SMTP server that relays the mail"),
    Key("smtp_port", 25, "SMTP server port", bounds=(1, 65535)),
    Key("smtp_user", None, "SMTP user name, if the server wants AUTH"),
    Key("smtp_password", None, "SMTP password, if the server wants AUTH"),
    Key("smtp_security", "none", "how the SMTP connection is encrypted: tls is implicit TLS, usually on port 465", choices=("none", "starttls", "tls")),
    Key("smtp_connections", 4, "SMTP connections kept open at once: how many messages are in flight", bounds=(1, 100)),
    Key("smtp_timeout", 60, "seconds to wait for the SMTP server on connect and each command", bounds=(1, 3600)),
    Key("smtp_data_timeout", 600, "seconds to wait for the SMTP server's final reply after a message; RFC 5321 allows 10 minutes", bounds=(1, 3600)),
    Key("smtp_rate_limit", 0, "most messages sent to the SMTP server per second or per minute, written \"N/s\" or \"N/min\" (N as allowed below) like \"50/s\" or \"600/min\", evenly spaced; 0 means no limit", bounds=(1, MAX_RATE)),
    Key("secret_key", None, "signing key for links, 32+ characters; comma-separated to rotate: the first signs, all verify"),
    Key("base_url", "http://localhost:8000", "public URL of the web endpoints, used in every link"),
    Key("sender", None, "From address of the digests, e.g. Mia's Feed <digest@example.org>"),
    Key("site_name", "Mia's Feed", "the site's name, shown in every mail"),
    Key("site_url", "", "the site's home page, linked from the mails; empty means base_url"),
    Key("subject_daily", SUBJECTS[Frequency.DAILY], "subject and masthead of the daily digest: {edition} names the day in the reader's timezone, {site} is site_name"),
    Key("subject_weekly", SUBJECTS[Frequency.WEEKLY], "subject and masthead of the weekly digest: {edition} names the week (Monday to Sunday) in the reader's timezone, {site} is site_name"),
    Key("subject_monthly", SUBJECTS[Frequency.MONTHLY], "subject and masthead of the monthly digest: {edition} names the month in the reader's timezone, {site} is site_name"),
    Key("postal_address", None, "the sender's postal address, in one line, shown in every digest's footer; US law (CAN-SPAM) requires one in commercial mail"),
    Key("disclaimer", None, "a line shown in every digest's footer, e.g. Mia's Feed shares news, not medical advice"),
    Key("send_time", "08:00", "local time of day (HH:MM) at which digests go out, in each reader's timezone, unless the reader chose their own on preferences"),
    Key("weekly_day", "monday", "weekday of the weekly digest, unless the reader chose their own on preferences", choices=WEEKDAYS),
    Key("monthly_day", 1, "day of month of the monthly digest; past the month's end means its last day", bounds=(1, 31)),
    Key("default_frequency", "weekly", "frequency for new readers who do not choose one", choices=tuple(frequency.value for frequency in Frequency)),
    Key("default_timezone", "UTC", "timezone for new readers who do not give one"),
    Key("max_articles", 20, "most articles in one digest; the rest are linked as 'and N more'", bounds=(1, 200)),
    Key("max_lateness_hours", 0, "a slot older than this is not caught up late but rolls into the next; 0 means one period", bounds=(0, 24 * 366)),
    Key("bounce_limit", 3, "permanent failures in a row after which a reader is marked bounced", bounds=(1, 100)),
    Key("retry_limit", 8, "attempts at one digest before it is marked failed", bounds=(1, 100)),
    Key("retry_base_seconds", 60, "first retry delay after a transient failure; it doubles each time, up to an hour", bounds=(1, 86400)),
    Key("batch_size", 500, "deliveries claimed, sent and recorded together", bounds=(1, 10000)),
    Key("lease_seconds", 900, "how long a claimed delivery is ours; longer than a whole SMTP transaction", bounds=(60, 86400)),
    Key("confirm_max_age_days", 7, "days a confirmation link stays valid", bounds=(1, 365)),
    Key("welcome", "on", "whether a reader gets one short welcome mail on confirming: what comes when, with their links", choices=SWITCH),
    Key("dispatch_interval_seconds", 60, "how often the daemon plans and sends what is due", bounds=(1, 86400)),
    Key("shutdown_timeout_seconds", 30, "on SIGTERM, how long in-flight sends may take to finish and record", bounds=(1, 3600)),
    Key("feeds", "", "comma-separated feed URLs or file paths (RSS, Atom, JSON Feed or a JSON list) that the daemon imports articles from"),
    Key("featured_tags", "", "comma-separated categories or tags (in any case) that make an imported article an editor's pick, e.g. \"Editor's pick, Breaking\""),
    Key("feed_poll_seconds", 900, "how often the daemon polls the feeds; an unchanged feed costs a 304, a failed one is tried again next time", bounds=(10, 86400)),
    Key("allowed_origins", "", "comma-separated origins (https://miasfeed.example) whose pages may post the sign-up form; base_url's own origin always may"),
    Key("signup_limit_per_address", 3, "sign-ups (so confirmation mails) per address per hour; more get 429", bounds=(1, 1000)),
    Key("signup_limit_per_client", 20, "sign-ups per client IP address per hour; more get 429", bounds=(1, 100_000)),
    Key("templates_dir", "", "folder of the mail and page templates; empty means the ones shipped with digest"),
    Key("bounce_address", None, "where bounces come back to, e.g. bounces@mail.example.org: each digest's envelope sender is it with a signed tag naming the digest (VERP: bounces+TAG@mail.example.org); empty means the From address, untagged"),
    Key("unsubscribe_address", None, "e.g. unsubscribe@mail.example.org: each digest's List-Unsubscribe carries it with a signed tag naming the reader (mailto:unsubscribe+TAG@…) beside the https link; empty means no mailto form"),
    Key("inbound_port", 0, "the port digest serve takes inbound SMTP on (bounces, complaints, mailto unsubscribes to the two addresses above), on the web's --host; 0 means off", bounds=(0, 65535)),
    Key("inbound_max_bytes", 10_000_000, "the largest inbound mail taken, in bytes; a bigger one is refused (552 over SMTP, reported by digest inbound import)", bounds=(10_000, 100_000_000)),
    Key("inbound_max_connections", 20, "inbound SMTP connections open at once; one more gets 421 and is closed", bounds=(1, 10_000)),
    Key("ses_topic_arns", "", "comma-separated Amazon SNS topic ARNs whose SES bounce and complaint notifications POST /webhooks/ses takes; empty means no such route"),
    Key("postmark_webhook_auth", None, "USER:PASSWORD that Postmark's bounce and spam complaint webhooks send (as https://USER:PASSWORD@…/webhooks/postmark); empty means no such route"),
    Key("mailgun_signing_key", None, "Mailgun's HTTP webhook signing key, which signs the calls to POST /webhooks/mailgun; empty means no such route"),
    Key("sendgrid_public_key", None, "the verification key of SendGrid's signed event webhook (base64, as SendGrid shows it), which signs the calls to POST /webhooks/sendgrid; empty means no such route"),
)  # fmt: skip
KEYS_BY_NAME = {key.name: key for key in KEYS}


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str
    smtp_host: str
    smtp_port: int
    smtp_user: str | None
    smtp_password: str | None
    smtp_security: str
    smtp_connections: int
    smtp_timeout: float
    smtp_data_timeout: float
    smtp_rate_limit: Rate | None
    secret_keys: tuple[str, ...]
    base_url: str
    sender: str | None
    site_name: str
    site_url: str
    subjects: dict[Frequency, str]
    postal_address: str | None
    disclaimer: str | None
    schedule: Schedule
    default_frequency: Frequency
    default_timezone: str
    max_articles: int
    max_lateness: timedelta | None
    bounce_limit: int
    retry_limit: int
    retry_base: timedelta
    batch_size: int
    lease: timedelta
    confirm_max_age: timedelta
    welcome: bool
    dispatch_interval: timedelta
    shutdown_timeout: timedelta
    feeds: tuple[str, ...]
    featured_tags: frozenset[str]  # as text.tag_key gives them
    feed_poll_interval: timedelta
    allowed_origins: frozenset[str]
    signup_limit_per_address: int
    signup_limit_per_client: int
    templates_dir: Path
    bounce_address: str | None
    unsubscribe_address: str | None
    inbound_port: int  # 0: off
    inbound_max_bytes: int
    inbound_max_connections: int
    ses_topic_arns: frozenset[str]
    postmark_webhook_auth: str | None  # USER:PASSWORD
    mailgun_signing_key: str | None
    sendgrid_public_key: str | None  # base64 DER, checked to be an elliptic curve public key

    def require_secret_keys(self) -> tuple[str, ...]:
        if not self.secret_keys:
            raise ConfigError(
                _label("secret_key"), "is required to sign links; set DIGEST_SECRET_KEY"
            )
        return self.secret_keys

    def require_sender(self) -> str:
        if self.sender is None:
            raise ConfigError(_label("sender"), "is required to send mail; set DIGEST_SENDER")
        return self.sender

    def warnings(self) -> list[str]:
        """What is legal but should be fixed: `digest send` prints each once a run, the daemon
        logs each once."""
        found: list[str] = []
        if self.postal_address is None:
            found.append(
                f"{_label('postal_address')} is not set: the digests carry no postal address, "
                "which US law (CAN-SPAM) requires in commercial mail"
            )
        if self.inbound_port and self.bounce_address is None and self.unsubscribe_address is None:
            found.append(
                f"{_label('inbound_port')} is set but neither {_label('bounce_address')} nor "
                f"{_label('unsubscribe_address')} is: inbound SMTP refuses every recipient"
            )
        return found

    @property
    def one_click(self) -> bool:
        """RFC 8058 requires https for one-click unsubscribe."""
        return self.base_url.startswith("https://")


def _label(name: str) -> str:
    return f"{name} ({KEYS_BY_NAME[name].env})"


def load(path: Path | None, environ: Mapping[str, str]) -> Settings:
    """Build Settings from defaults, the TOML file at path (or the default file if present) and environ."""
    raw: dict[str, Raw] = {key.name: key.default for key in KEYS}
    raw.update(_read_toml(path, environ))
    for key in KEYS:
        if key.env in environ:
            raw[key.name] = environ[key.env]
    return _build(raw)


def _read_toml(path: Path | None, environ: Mapping[str, str]) -> dict[str, Raw]:
    explicit = path is not None or "DIGEST_CONFIG" in environ
    file = path or Path(environ.get("DIGEST_CONFIG", str(DEFAULT_PATH)))
    if not explicit and not file.exists():
        return {}
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("config file", f"cannot read {file}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config file", f"{file} is not valid TOML: {exc}") from exc
    for name, value in data.items():
        if name not in KEYS_BY_NAME:
            raise ConfigError(name, f"unknown setting in {file}")
        if isinstance(value, dict | list):
            raise ConfigError(_label(name), f"must be a single value in {file}")
    return data


def _build(raw: Mapping[str, Raw]) -> Settings:
    def get(name: str, parse: Callable[[Raw], Any]) -> Any:
        try:
            return parse(raw[name])
        except (ValueError, InvalidInput) as exc:
            raise ConfigError(_label(name), str(exc)) from exc

    def whole(name: str) -> int:
        bounds = KEYS_BY_NAME[name].bounds
        assert bounds is not None, f"{name} has no bounds in KEYS"
        return int(get(name, _ranged(*bounds)))

    base_url = get("base_url", _base_url)
    site_url = get("site_url", _optional_text) or base_url
    templates = get("templates_dir", _optional_text)
    return Settings(
        database_url=get("database_url", _database_url),
        smtp_host=get("smtp_host", _text),
        smtp_port=whole("smtp_port"),
        smtp_user=get("smtp_user", _optional_text),
        smtp_password=get("smtp_password", _optional_text),
        smtp_security=get("smtp_security", _choice(KEYS_BY_NAME["smtp_security"].choices)),
        smtp_connections=whole("smtp_connections"),
        smtp_timeout=float(whole("smtp_timeout")),
        smtp_data_timeout=float(whole("smtp_data_timeout")),
        smtp_rate_limit=get("smtp_rate_limit", _rate),
        secret_keys=get("secret_key", _secret_keys),
        base_url=base_url,
        sender=get("sender", _sender),
        site_name=get("site_name", _text),
        site_url=site_url,
        subjects={f: get(f"subject_{f.value}", _subject) for f in Frequency},
        postal_address=get("postal_address", _optional_text),
        disclaimer=get("disclaimer", _optional_text),
        schedule=Schedule(
            send_time=get("send_time", _clock_time),
            weekly_day=get("weekly_day", _weekday),
            monthly_day=whole("monthly_day"),
        ),
        default_frequency=get("default_frequency", lambda v: parse_frequency(_text(v))),
        default_timezone=get("default_timezone", lambda v: check_timezone(_text(v))),
        max_articles=whole("max_articles"),
        max_lateness=_lateness(whole("max_lateness_hours")),
        bounce_limit=whole("bounce_limit"),
        retry_limit=whole("retry_limit"),
        retry_base=timedelta(seconds=whole("retry_base_seconds")),
        batch_size=whole("batch_size"),
        lease=timedelta(seconds=whole("lease_seconds")),
        confirm_max_age=timedelta(days=whole("confirm_max_age_days")),
        welcome=get("welcome", _switch),
        dispatch_interval=timedelta(seconds=whole("dispatch_interval_seconds")),
        shutdown_timeout=timedelta(seconds=whole("shutdown_timeout_seconds")),
        feeds=get("feeds", _feeds),
        featured_tags=frozenset(map(tag_key, get("featured_tags", _comma_list))),
        feed_poll_interval=timedelta(seconds=whole("feed_poll_seconds")),
        allowed_origins=frozenset({origin_of(base_url), *get("allowed_origins", _origins)}),
        signup_limit_per_address=whole("signup_limit_per_address"),
        signup_limit_per_client=whole("signup_limit_per_client"),
        templates_dir=Path(templates) if templates else PROJECT_TEMPLATES,
        bounce_address=get("bounce_address", _optional_address),
        unsubscribe_address=get("unsubscribe_address", _optional_address),
        inbound_port=whole("inbound_port"),
        inbound_max_bytes=whole("inbound_max_bytes"),
        inbound_max_connections=whole("inbound_max_connections"),
        ses_topic_arns=frozenset(get("ses_topic_arns", _topic_arns)),
        postmark_webhook_auth=get("postmark_webhook_auth", _user_and_password),
        mailgun_signing_key=get("mailgun_signing_key", _optional_text),
        sendgrid_public_key=get("sendgrid_public_key", _ec_public_key),
    )


def _text(value: Raw) -> str:
    if value is None or not str(value).strip():
        raise ValueError("must not be empty")
    text = str(value).strip()
    if LINE_BREAKS.intersection(text):
        raise ValueError("must not contain a line break")
    return text


def _optional_text(value: Raw) -> str | None:
    return None if value is None or str(value).strip() == "" else _text(value)


def _ranged(low: int, high: int) -> Callable[[Raw], int]:
    def parse(value: Raw) -> int:
        try:
            number = int(str(value).strip()) if not isinstance(value, bool) else None
        except ValueError:
            number = None
        if number is None or not low <= number <= high:
            raise ValueError(f"must be a whole number from {low} to {high}, got {value!r}")
        return number

    return parse


def _choice(choices: tuple[str, ...]) -> Callable[[Raw], str]:
    def parse(value: Raw) -> str:
        text = _text(value).lower()
        if text not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {value!r}")
        return text

    return parse


def _switch(value: Raw) -> bool:
    if isinstance(value, bool):  # welcome = false, as TOML writes it
        return value
    return _choice(SWITCH)(value) == "on"


def _rate(value: Raw) -> Rate | None:
    text = _text(value).lower()
    if text == "0":
        return None
    # A bare number is refused: per second or per minute is a factor of 60, too costly to guess.
    match = re.fullmatch(r"([0-9]+)\s*/\s*(s|second|min|minute)", text)
    if match is None or not 1 <= int(match[1]) <= MAX_RATE:
        raise ValueError(
            f"must be 0 (no limit) or 1 to {MAX_RATE} messages per second or minute, "
            f"like 50/s or 600/min; got {value!r}"
        )
    return Rate(int(match[1]), RATE_UNITS[match[2]])


def _database_url(value: Raw) -> str:
    url = _text(value)
    if not url.startswith(("sqlite://", "postgresql")):
        raise ValueError(f"must be a sqlite:/// or postgresql+psycopg:// URL, got {url!r}")
    return url


def _base_url(value: Raw) -> str:
    url = _text(value).rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"must be an http:// or https:// URL, got {url!r}")
    if len(html.escape(url).encode()) > MAX_BASE_URL_BYTES:
        raise ValueError(f"must be at most {MAX_BASE_URL_BYTES} bytes long, as written in HTML")
    return url


def _secret_keys(value: Raw) -> tuple[str, ...]:
    if value is None:
        return ()
    keys = tuple(part.strip() for part in str(value).split(","))
    if any(len(key) < MIN_SECRET_LENGTH for key in keys):
        raise ValueError(f"each key must be at least {MIN_SECRET_LENGTH} characters long")
    return keys


def _comma_list(value: Raw) -> tuple[str, ...]:
    text = _optional_text(value)
    return () if text is None else tuple(filter(None, (part.strip() for part in text.split(","))))


def _feeds(value: Raw) -> tuple[str, ...]:
    feeds = _comma_list(value)
    for feed in feeds:
        scheme = urlsplit(feed).scheme.lower()
        if len(scheme) > 1 and (scheme not in ("http", "https") or not is_web_url(feed)):
            raise ValueError(
                f"each feed must be an http(s) URL or a file path, got {display_name(feed)!r}"
            )
    return feeds


def origin_of(url: str) -> str:
    """scheme://host[:port], as browsers send it in the Origin header."""
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{(parts.netloc or '').lower()}"


def _origins(value: Raw) -> tuple[str, ...]:
    origins = []
    for part in _comma_list(value):
        origin = _base_url(part)
        if urlsplit(origin).path:
            raise ValueError(f"an origin has no path, like https://miasfeed.example; got {part!r}")
        origins.append(origin_of(origin))
    return tuple(origins)


def _optional_address(value: Raw) -> str | None:
    """A plain address (bounces@mail.example.org), without a tag of its own: we add one."""
    text = _optional_text(value)
    if text is None:
        return None
    address = normalise_address(text)
    if "+" in address.rpartition("@")[0]:
        raise ValueError(f"must be an address without a + tag (digest adds one), got {text!r}")
    return address


def _topic_arns(value: Raw) -> tuple[str, ...]:
    arns = _comma_list(value)
    for arn in arns:
        if not SNS_TOPIC_ARN.fullmatch(arn):
            raise ValueError(
                f"each must be an SNS topic ARN like arn:aws:sns:eu-west-1:123456789012:bounces, "
                f"got {arn!r}"
            )
    return arns


def _user_and_password(value: Raw) -> str | None:
    text = _optional_text(value)
    if text is not None and not all(text.partition(":")[::2]):
        raise ValueError("must be USER:PASSWORD, both non-empty")
    return text


def _ec_public_key(value: Raw) -> str | None:
    text = _optional_text(value)
    if text is None:
        return None
    try:
        key = load_der_public_key(b64decode(text, validate=True))
    except (ValueError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, EllipticCurvePublicKey):
        raise ValueError("must be the base64 elliptic curve public key SendGrid shows")
    return text


def _sender(value: Raw) -> str | None:
    text = _optional_text(value)
    if text is None:
        return None
    address = parseaddr(text)[1]
    if not address:
        raise ValueError(
            f'must be an address like "Mia\'s Feed <digest@example.org>", got {text!r}'
        )
    normalise_address(address)
    return text


def _subject(value: Raw) -> str:
    text = _text(value)
    try:
        fields = [field for field in string.Formatter().parse(text) if field[1] is not None]
    except ValueError:
        raise ValueError(
            f"has a lone {{ or }} (write {{{{ or }}}} for a brace itself), got {text!r}"
        ) from None
    for _literal, name, spec, conversion in fields:
        if name not in ("edition", "site") or spec or conversion:
            raise ValueError(
                f"may use only the placeholders {{edition}} and {{site}}, got {text!r}"
            )
    return text


def _clock_time(value: Raw) -> time:
    text = _text(value)
    try:
        return time.fromisoformat(text)
    except ValueError:
        raise ValueError(f"must be a time of day like 08:00, got {text!r}") from None


def _weekday(value: Raw) -> int:
    text = _text(value).lower()
    if text not in WEEKDAYS:
        raise ValueError(f"must be a weekday name like monday, got {value!r}")
    return WEEKDAYS.index(text)


def _lateness(hours: int) -> timedelta | None:
    return timedelta(hours=hours) if hours else None


def sender_address(sender: str) -> str:
    """The bare address of a From value, for the SMTP envelope."""
    return parseaddr(sender)[1]


def example_toml() -> str:
    """config/digest.toml as shipped: every key, commented with its default and help."""
    lines = [
        "# digest settings. Every key can be overridden by the environment variable DIGEST_<KEY>.",
        "# Each key is shown with its default (and the values it allows); uncomment and change what you need.",
        "",
    ]
    for key in KEYS:
        value = "" if key.default is None else key.default
        rendered = f'"{value}"' if isinstance(value, str) else str(value)
        lines.append(f"# {key.help} ({key.env})")
        if key.allowed:
            lines.append(f"# allowed: {key.allowed}")
        lines += [f"# {key.name} = {rendered}", ""]
    return "\n".join(lines)
