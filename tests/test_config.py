"""Settings: defaults, TOML, environment, and one clear line for every bad value."""

from __future__ import annotations

import re
from datetime import time, timedelta
from pathlib import Path

import pytest

from digest.config import KEYS, Key, load
from digest.domain import Frequency
from digest.errors import ConfigError
from digest.ratelimit import Rate

ROOT = Path(__file__).resolve().parent.parent
GOOD_KEY = "k" * 32


def test_defaults_match_the_design() -> None:
    settings = load(Path(ROOT / "config" / "digest.toml"), {})
    assert settings.database_url == "sqlite:///digest.db"
    assert (settings.smtp_host, settings.smtp_port, settings.smtp_security) == (
        "localhost",
        25,
        "none",
    )
    assert settings.base_url == "http://localhost:8000"
    assert settings.secret_keys == ()
    assert settings.sender is None
    assert settings.schedule.send_time == time(8, 0)
    assert (settings.schedule.weekly_day, settings.schedule.monthly_day) == (0, 1)
    assert settings.max_articles == 20
    assert settings.bounce_limit == 3
    assert settings.confirm_max_age == timedelta(days=7)
    assert settings.max_lateness is None
    assert settings.smtp_rate_limit is None  # no limit


def test_subjects_name_the_edition_by_default_and_take_both_placeholders_and_escaped_braces() -> (
    None
):
    assert load(None, {}).subjects == {
        Frequency.DAILY: "Your daily digest · {edition}",
        Frequency.WEEKLY: "Your weekly digest · {edition}",
        Frequency.MONTHLY: "Your monthly digest · {edition}",
    }
    pattern = "{{{site}}} this week: {edition}"
    assert load(None, {"DIGEST_SUBJECT_WEEKLY": pattern}).subjects[Frequency.WEEKLY] == pattern


def test_an_unset_postal_address_is_one_line_of_warning_and_a_set_one_none() -> None:
    [warning] = load(None, {}).warnings()
    assert "postal_address (DIGEST_POSTAL_ADDRESS) is not set" in warning
    assert "CAN-SPAM" in warning
    assert "\n" not in warning
    settings = load(None, {"DIGEST_POSTAL_ADDRESS": "Mia's Feed, 1 Harbour Street, Leith"})
    assert settings.postal_address == "Mia's Feed, 1 Harbour Street, Leith"
    assert settings.warnings() == []


def test_an_inbound_port_without_either_address_is_one_line_of_warning() -> None:
    postal = {"DIGEST_POSTAL_ADDRESS": "Mia's Feed, 1 Harbour Street, Leith"}
    [warning] = load(None, postal | {"DIGEST_INBOUND_PORT": "2525"}).warnings()
    assert warning.startswith("inbound_port (DIGEST_INBOUND_PORT) is set but neither")
    assert "refuses every recipient" in warning and "\n" not in warning
    for address in ("DIGEST_BOUNCE_ADDRESS", "DIGEST_UNSUBSCRIBE_ADDRESS"):
        with_one = postal | {"DIGEST_INBOUND_PORT": "2525", address: "in@mail.example.org"}
        assert load(None, with_one).warnings() == []
    assert load(None, postal).warnings() == []  # inbound SMTP off: nothing to say


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    file = tmp_path / "digest.toml"
    file.write_text('smtp_host = "mail.example.org"\nsmtp_port = 2525\nweekly_day = "friday"\n')
    settings = load(file, {"DIGEST_SMTP_PORT": "587", "DIGEST_DEFAULT_FREQUENCY": "Daily"})
    assert (settings.smtp_host, settings.smtp_port) == ("mail.example.org", 587)
    assert settings.schedule.weekly_day == 4
    assert settings.default_frequency is Frequency.DAILY


def test_secret_keys_are_split_in_order_and_the_first_signs() -> None:
    settings = load(None, {"DIGEST_SECRET_KEY": f"{'a' * 32}, {'b' * 40}"})
    assert settings.secret_keys == ("a" * 32, "b" * 40)


@pytest.mark.parametrize(
    ("environ", "key", "problem"),
    [
        ({"DIGEST_SMTP_PORT": "abc"}, "DIGEST_SMTP_PORT", "whole number from 1 to 65535"),
        ({"DIGEST_SMTP_PORT": "70000"}, "DIGEST_SMTP_PORT", "whole number"),
        ({"DIGEST_SECRET_KEY": "short"}, "DIGEST_SECRET_KEY", "at least 32 characters"),
        ({"DIGEST_SECRET_KEY": f"{GOOD_KEY},short"}, "DIGEST_SECRET_KEY", "at least 32"),
        (
            {"DIGEST_SENDER": "Mia <digest@example.org>\nBcc: x@evil.example"},
            "DIGEST_SENDER",
            "line break",
        ),
        ({"DIGEST_SENDER": "not an address"}, "DIGEST_SENDER", "address"),
        ({"DIGEST_DEFAULT_FREQUENCY": "hourly"}, "DIGEST_DEFAULT_FREQUENCY", "unknown frequency"),
        ({"DIGEST_SMTP_SECURITY": "ssl"}, "DIGEST_SMTP_SECURITY", "none, starttls, tls"),
        ({"DIGEST_BASE_URL": "ftp://x"}, "DIGEST_BASE_URL", "http"),
        (
            {"DIGEST_BASE_URL": "https://news.example/" + "&" * 52},
            "DIGEST_BASE_URL",
            "at most 280 bytes",
        ),
        ({"DIGEST_SEND_TIME": "8am"}, "DIGEST_SEND_TIME", "time of day"),
        ({"DIGEST_WEEKLY_DAY": "someday"}, "DIGEST_WEEKLY_DAY", "weekday"),
        ({"DIGEST_DEFAULT_TIMEZONE": "Mars/Base"}, "DIGEST_DEFAULT_TIMEZONE", "timezone"),
        ({"DIGEST_DATABASE_URL": "mysql://x"}, "DIGEST_DATABASE_URL", "sqlite"),
        ({"DIGEST_FEEDS": "ftp://feeds.example/rss"}, "DIGEST_FEEDS", "http(s) URL or a file"),
        ({"DIGEST_FEED_POLL_SECONDS": "1"}, "DIGEST_FEED_POLL_SECONDS", "from 10 to 86400"),
        ({"DIGEST_SMTP_RATE_LIMIT": "50"}, "DIGEST_SMTP_RATE_LIMIT", "like 50/s or 600/min"),
        ({"DIGEST_SMTP_RATE_LIMIT": "50/h"}, "DIGEST_SMTP_RATE_LIMIT", "per second or minute"),
        ({"DIGEST_SMTP_RATE_LIMIT": "0/s"}, "DIGEST_SMTP_RATE_LIMIT", "1 to 100000"),
        ({"DIGEST_SMTP_RATE_LIMIT": "-5/s"}, "DIGEST_SMTP_RATE_LIMIT", "like 50/s"),
        ({"DIGEST_SMTP_RATE_LIMIT": "1000000/s"}, "DIGEST_SMTP_RATE_LIMIT", "1 to 100000"),
        (
            {"DIGEST_SUBJECT_DAILY": "News for {name}"},
            "DIGEST_SUBJECT_DAILY",
            "{edition} and {site}",
        ),
        ({"DIGEST_SUBJECT_WEEKLY": "Week {edition"}, "DIGEST_SUBJECT_WEEKLY", "a lone { or }"),
        ({"DIGEST_SUBJECT_WEEKLY": "Week } {edition}"}, "DIGEST_SUBJECT_WEEKLY", "a lone { or }"),
        (
            {"DIGEST_SUBJECT_MONTHLY": "{edition!r}"},
            "DIGEST_SUBJECT_MONTHLY",
            "only the placeholders",
        ),
        (
            {"DIGEST_SUBJECT_MONTHLY": "{edition:>40}"},
            "DIGEST_SUBJECT_MONTHLY",
            "only the placeholders",
        ),
        (
            {"DIGEST_SUBJECT_MONTHLY": "{} digest"},
            "DIGEST_SUBJECT_MONTHLY",
            "only the placeholders",
        ),
        ({"DIGEST_SUBJECT_DAILY": "   "}, "DIGEST_SUBJECT_DAILY", "must not be empty"),
        ({"DIGEST_POSTAL_ADDRESS": "1 Main St\nBcc: x"}, "DIGEST_POSTAL_ADDRESS", "line break"),
    ],
)
def test_a_bad_setting_names_its_key_and_the_problem_in_one_line(
    environ: dict[str, str], key: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(None, environ)
    message = str(caught.value)
    assert key in message
    assert problem in message
    assert "\n" not in message


def test_an_unreadable_or_invalid_config_file_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "missing.toml", {})
    broken = tmp_path / "broken.toml"
    broken.write_text("smtp_port = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(broken, {})
    unknown = tmp_path / "unknown.toml"
    unknown.write_text('smtp_hots = "x"\n')
    with pytest.raises(ConfigError, match="smtp_hots: unknown setting"):
        load(unknown, {})


def test_digest_config_names_the_settings_file(tmp_path: Path) -> None:
    file = tmp_path / "elsewhere.toml"
    file.write_text("max_articles = 5\n")
    assert load(None, {"DIGEST_CONFIG": str(file)}).max_articles == 5


def test_shipped_config_file_lists_every_key_with_its_default_and_env_name() -> None:
    text = (ROOT / "config" / "digest.toml").read_text()
    for key in KEYS:
        assert re.search(rf"^# {key.name} = ", text, re.M), key.name
        assert key.env in text


def readme_settings() -> dict[str, str]:
    """Each row of the README's settings table, by the DIGEST_* names in its first cell."""
    rows: dict[str, str] = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith("| `DIGEST_"):
            rows |= dict.fromkeys(re.findall(r"`(DIGEST_\w+)`", line.split("|")[1]), line)
    return rows


def test_readme_documents_every_setting() -> None:
    missing = [key.env for key in KEYS if key.env not in readme_settings()]
    assert missing == []


def test_readme_states_the_range_of_every_setting_that_has_one() -> None:
    rows = readme_settings()
    unstated = [
        key.env
        for key in KEYS
        if (key.bounds and key.allowed not in rows[key.env])
        or any(f"`{choice}`" not in rows[key.env] for choice in key.choices)
    ]
    assert unstated == []


def as_setting(key: Key, number: int) -> str:
    return f"{number}/s" if key.name == "smtp_rate_limit" else str(number)


@pytest.mark.parametrize("key", [key for key in KEYS if key.bounds], ids=lambda key: key.name)
def test_a_ranged_setting_takes_both_ends_of_its_range_and_nothing_beyond(key: Key) -> None:
    assert key.bounds is not None
    low, high = key.bounds
    for inside in (low, high):
        load(None, {key.env: as_setting(key, inside)})
    for outside in (low - 1, high + 1):
        with pytest.raises(ConfigError, match=key.env):
            load(None, {key.env: as_setting(key, outside)})


@pytest.mark.parametrize("key", [key for key in KEYS if key.choices], ids=lambda key: key.name)
def test_a_setting_with_choices_takes_each_of_them_and_no_other_word(key: Key) -> None:
    for choice in key.choices:
        load(None, {key.env: choice.upper()})
    with pytest.raises(ConfigError, match=key.env):
        load(None, {key.env: "other"})


def test_featured_tags_are_a_comma_separated_list_matched_without_regard_to_case_or_spaces() -> (
    None
):
    assert load(None, {}).featured_tags == frozenset()
    settings = load(None, {"DIGEST_FEATURED_TAGS": " Editor's  Pick ,BREAKING,, "})
    assert settings.featured_tags == {"editor's pick", "breaking"}


def test_feeds_are_a_comma_separated_list_of_urls_and_paths() -> None:
    settings = load(None, {"DIGEST_FEEDS": " https://miasfeed.example/rss , feeds/local.json,"})
    assert settings.feeds == ("https://miasfeed.example/rss", "feeds/local.json")
    assert settings.feed_poll_interval == timedelta(minutes=15)
    assert load(None, {}).feeds == ()


def test_a_bad_feed_setting_does_not_echo_the_feeds_credentials() -> None:
    with pytest.raises(ConfigError) as caught:
        load(None, {"DIGEST_FEEDS": "ftp://user:hunter2@feeds.example/rss?token=abc"})
    assert "hunter2" not in str(caught.value)
    assert "token=abc" not in str(caught.value)
    assert "ftp://feeds.example/rss?..." in str(caught.value)


@pytest.mark.parametrize(
    ("value", "rate"),
    [
        ("50/s", Rate(50, 1.0)),
        ("800 / second", Rate(800, 1.0)),
        ("600/min", Rate(600, 60.0)),
        ("1/Minute", Rate(1, 60.0)),
        ("0", None),
    ],
)
def test_smtp_rate_limit_is_messages_per_second_or_minute(value: str, rate: Rate | None) -> None:
    assert load(None, {"DIGEST_SMTP_RATE_LIMIT": value}).smtp_rate_limit == rate


def test_smtp_rate_limit_in_the_file_is_a_string_or_zero(tmp_path: Path) -> None:
    file = tmp_path / "digest.toml"
    file.write_text('smtp_rate_limit = "10/s"\n')
    assert load(file, {}).smtp_rate_limit == Rate(10, 1.0)
    file.write_text("smtp_rate_limit = 0\n")
    assert load(file, {}).smtp_rate_limit is None


def test_a_base_url_of_280_bytes_is_taken() -> None:
    url = "https://news.example/" + "p" * (280 - len("https://news.example/"))
    assert load(None, {"DIGEST_BASE_URL": url}).base_url == url


def test_one_click_header_needs_an_https_base_url() -> None:
    assert load(None, {"DIGEST_BASE_URL": "https://news.example"}).one_click
    assert not load(None, {}).one_click


def test_shipped_config_file_is_generated_from_the_settings_table() -> None:
    from digest.config import example_toml

    assert (ROOT / "config" / "digest.toml").read_text() == example_toml() + "\n"


def test_the_welcome_mail_is_on_unless_turned_off_in_either_word(tmp_path: Path) -> None:
    assert load(None, {}).welcome
    assert not load(None, {"DIGEST_WELCOME": "Off"}).welcome
    file = tmp_path / "digest.toml"
    file.write_text("welcome = false\n")  # as TOML writes a switch
    assert not load(file, {}).welcome
    file.write_text('welcome = "off"\n')
    assert not load(file, {}).welcome
    assert load(file, {"DIGEST_WELCOME": "on"}).welcome
