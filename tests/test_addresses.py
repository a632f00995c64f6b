from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from digest.addresses import (
    MAX_ADDRESS_CHARS,
    address_key,
    check_timezone,
    normalise_address,
    parse_frequency,
    tag_of,
    tagged,
)
from digest.domain import Frequency
from digest.errors import InvalidInput


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Mia.Example@Example.ORG", "Mia.Example@example.org"),
        ("  reader@miasfeed.example \t", "reader@miasfeed.example"),
        ("ñandú@Example.org", "ñandú@example.org"),
        ("x@BÜCHER.example", "x@xn--bcher-kva.example"),
    ],
)
def test_normalise_address_lowercases_the_domain_and_keeps_the_local_part(
    raw: str, expected: str
) -> None:
    assert normalise_address(raw) == expected


@pytest.mark.parametrize(
    ("one", "other", "same"),
    [
        ("Reader@example.org", "reader@example.org", True),
        ("READER@EXAMPLE.ORG", "rEaDeR@example.org", True),
        ("Ñandú@example.org", "ñandú@example.org", True),  # beyond ASCII, unlike SQLite's lower()
        ("STRASSE@example.org", "straße@example.org", True),  # Unicode's caseless match
        ("reader@example.org", "reader2@example.org", False),
        ("reader@example.org", "reader@example.com", False),
    ],
)
def test_address_key_is_one_for_addresses_that_differ_only_in_case(
    one: str, other: str, same: bool
) -> None:
    assert (address_key(normalise_address(one)) == address_key(normalise_address(other))) is same


@pytest.mark.parametrize(
    "raw",
    [
        "no-at-sign",
        "a@b",
        "",
        "x@example.org\nBcc: y@evil.example",
        "x@example.org\r\n",
        "x@example.org\u2028",
        "x\x00@example.org",
        "two@at@example.org",
        "a" * 250 + "@example.org",
    ],
)
def test_normalise_address_refuses_bad_addresses_in_one_line(raw: str) -> None:
    with pytest.raises(InvalidInput, match=r"^not a valid email address: ") as caught:
        normalise_address(raw)
    assert "\n" not in str(caught.value)
    assert "\r" not in str(caught.value)


def test_normalise_address_names_over_long_addresses() -> None:
    local = "a" * 60
    raw = f"{local}@{'d' * 60}.{'e' * 60}.{'f' * 60}.{'g' * 10}.example"
    assert len(raw) > MAX_ADDRESS_CHARS
    with pytest.raises(InvalidInput, match="longer than 254 characters"):
        normalise_address(raw)


def test_normalise_address_carries_the_validators_reason() -> None:
    with pytest.raises(InvalidInput, match=r"'no-at-sign': .*@-sign"):
        normalise_address("no-at-sign")


@given(st.text(max_size=300))
def test_normalise_address_returns_one_line_or_refuses(raw: str) -> None:
    try:
        address = normalise_address(raw)
    except InvalidInput as exc:
        assert str(exc).splitlines() == [str(exc)]
    else:
        assert address.splitlines() == [address]
        domain = address.rpartition("@")[2]
        assert domain == domain.lower()
        assert len(address) <= MAX_ADDRESS_CHARS


@pytest.mark.parametrize("name", ["Europe/Madrid", "UTC", "America/Argentina/Buenos_Aires"])
def test_check_timezone_accepts_iana_names(name: str) -> None:
    assert check_timezone(name) == name


def test_check_timezone_strips_surrounding_whitespace() -> None:
    assert check_timezone(" Europe/Madrid ") == "Europe/Madrid"


@pytest.mark.parametrize(
    "name", ["Mars/Base", "", "   ", "../etc/passwd", "/etc/localtime", "Europe", "utc\x00"]
)
def test_check_timezone_refuses_unknown_names_and_paths(name: str) -> None:
    with pytest.raises(InvalidInput, match=r"^unknown timezone: "):
        check_timezone(name)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("daily", Frequency.DAILY),
        (" Weekly ", Frequency.WEEKLY),
        ("MONTHLY", Frequency.MONTHLY),
    ],
)
def test_parse_frequency_is_case_insensitive(text: str, expected: Frequency) -> None:
    assert parse_frequency(text) is expected


@pytest.mark.parametrize("text", ["fortnightly", "", "day"])
def test_parse_frequency_refuses_other_words_and_lists_the_choices(text: str) -> None:
    with pytest.raises(InvalidInput, match=r"choose daily, weekly or monthly"):
        parse_frequency(text)


def test_a_tagged_address_gives_its_tag_back_whatever_the_case_and_only_its_own() -> None:
    address = "Bounces@Mail.Example.org"
    assert tagged(address, "b42-abc") == "Bounces+b42-abc@Mail.Example.org"
    assert tag_of("<bounces+B42-ABC@mail.example.ORG>", address) == "B42-ABC"
    assert tag_of("bounces@mail.example.org", address) is None  # no tag
    assert tag_of("bounces+@mail.example.org", address) is None
    assert tag_of("other+b42-abc@mail.example.org", address) is None
    assert tag_of("bounces+b42-abc@example.org", address) is None
