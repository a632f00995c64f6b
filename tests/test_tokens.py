"""Link tokens: one salt per purpose, rotation both ways, expiry of confirm links, no address inside."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime, timedelta

import pytest

from digest.errors import ExpiredToken, InvalidToken
from digest.tokens import Purpose, Tokens, address_hash

OLD_KEY = "o" * 40
NEW_KEY = "n" * 40
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
WEEK = timedelta(days=7)


def tokens(*keys: str) -> Tokens:
    return Tokens(keys, WEEK)


def test_a_link_token_reads_back_as_its_subscriber_and_version() -> None:
    t = tokens(NEW_KEY)
    subject = t.read(Purpose.UNSUBSCRIBE, t.link_token(Purpose.UNSUBSCRIBE, 42, 3), NOW)
    assert (subject.subscriber_id, subject.token_version) == (42, 3)


@pytest.mark.parametrize(
    ("made_for", "read_as"),
    [
        (Purpose.UNSUBSCRIBE, Purpose.PREFERENCES),
        (Purpose.PREFERENCES, Purpose.UNSUBSCRIBE),
        (Purpose.PREFERENCES, Purpose.CONFIRM),
    ],
)
def test_a_token_of_one_purpose_is_invalid_for_another(made_for: Purpose, read_as: Purpose) -> None:
    t = tokens(NEW_KEY)
    with pytest.raises(InvalidToken):
        t.read(read_as, t.link_token(made_for, 1, 1), NOW)


def test_a_web_version_token_reads_back_as_its_delivery_and_opens_nothing_else() -> None:
    t = tokens(NEW_KEY)
    token = t.digest_token(7, 2)
    assert t.read_digest(token) == (7, 2)
    for purpose in (Purpose.UNSUBSCRIBE, Purpose.PREFERENCES, Purpose.CONFIRM):
        with pytest.raises(InvalidToken):
            t.read(purpose, token, NOW)
    with pytest.raises(InvalidToken):  # nor does an unsubscribe token open a web version
        t.read_digest(t.link_token(Purpose.UNSUBSCRIBE, 7, 2))
    with pytest.raises(InvalidToken):
        t.read_digest(token[:-1])


def test_a_confirm_token_cannot_unsubscribe() -> None:
    t = tokens(NEW_KEY)
    with pytest.raises(InvalidToken):
        t.read(Purpose.UNSUBSCRIBE, t.confirm_token(1, 1, "a@example.org", NOW), NOW)


@pytest.mark.parametrize(
    "mangle", [lambda s: s[:-1], lambda s: s + "x", lambda s: "x" + s, lambda s: ""]
)
def test_tampered_or_truncated_tokens_are_invalid(mangle: object) -> None:
    t = tokens(NEW_KEY)
    token = t.link_token(Purpose.UNSUBSCRIBE, 1, 1)
    with pytest.raises(InvalidToken):
        t.read(Purpose.UNSUBSCRIBE, mangle(token), NOW)  # type: ignore[operator]


def test_the_first_key_signs_and_every_key_verifies_during_rotation() -> None:
    old_token = tokens(OLD_KEY).link_token(Purpose.UNSUBSCRIBE, 7, 1)
    rotated = tokens(NEW_KEY, OLD_KEY)
    assert rotated.read(Purpose.UNSUBSCRIBE, old_token, NOW).subscriber_id == 7
    new_token = rotated.link_token(Purpose.UNSUBSCRIBE, 7, 1)
    # Signed with the new key: verifies without the old one, and not with the old one alone.
    assert tokens(NEW_KEY).read(Purpose.UNSUBSCRIBE, new_token, NOW).subscriber_id == 7
    with pytest.raises(InvalidToken):
        tokens(OLD_KEY).read(Purpose.UNSUBSCRIBE, new_token, NOW)


def test_a_token_signed_with_an_unknown_key_is_invalid() -> None:
    with pytest.raises(InvalidToken):
        tokens(NEW_KEY).read(
            Purpose.UNSUBSCRIBE, tokens(OLD_KEY).link_token(Purpose.UNSUBSCRIBE, 1, 1), NOW
        )


def test_confirm_tokens_expire_and_name_their_address_by_hash() -> None:
    t = tokens(NEW_KEY)
    token = t.confirm_token(5, 2, "reader@example.org", NOW)
    subject = t.read(Purpose.CONFIRM, token, NOW + WEEK)
    assert subject.address_hash == address_hash("reader@example.org")
    with pytest.raises(ExpiredToken):
        t.read(Purpose.CONFIRM, token, NOW + WEEK + timedelta(seconds=1))


def test_no_token_carries_the_address_in_its_readable_payload() -> None:
    t = tokens(NEW_KEY)
    for token in (
        t.link_token(Purpose.UNSUBSCRIBE, 5, 2),
        t.confirm_token(5, 2, "reader@example.org", NOW),
    ):
        payload = token.split(".")[0]
        decoded = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        assert b"reader" not in decoded
        assert b"example.org" not in decoded


# -- tokens in a mail address (issue 16): VERP return paths and mailto unsubscribes -------------


def test_a_return_path_tag_names_its_delivery_in_any_case_and_under_a_rotated_key() -> None:
    old = tokens(OLD_KEY)
    tag = old.return_path_token(42)
    assert re.fullmatch(r"b42-[0-9a-f]{20}", tag)
    assert old.read_return_path(tag) == 42
    assert old.read_return_path(tag.upper()) == 42  # a relay that changed the local part's case
    assert tokens(NEW_KEY, OLD_KEY).read_return_path(tag) == 42  # signed before the rotation


@pytest.mark.parametrize(
    "forged",
    [
        "b43-" + "0" * 20,  # another delivery, a guessed signature
        "b-12",
        "b042-" + "0" * 20,
        "u42-1-" + "0" * 20,  # a mailto tag is no return path
        "",
        "b" + "9" * 19 + "-" + "0" * 20,  # an id no database gives
    ],
)
def test_a_return_path_tag_not_signed_by_us_names_nothing(forged: str) -> None:
    with pytest.raises(InvalidToken):
        tokens(NEW_KEY).read_return_path(forged)


def test_a_return_path_tag_for_another_delivery_is_refused() -> None:
    t = tokens(NEW_KEY)
    mac = t.return_path_token(42).split("-")[1]
    with pytest.raises(InvalidToken):
        t.read_return_path(f"b43-{mac}")
    with pytest.raises(InvalidToken):
        tokens(OLD_KEY).read_return_path(t.return_path_token(42))  # a key we never had


def test_a_mailto_tag_names_its_reader_and_version_and_nothing_else() -> None:
    t = tokens(NEW_KEY)
    tag = t.mailto_token(7, 3)
    subject = t.read_mailto(tag.upper())
    assert (subject.subscriber_id, subject.token_version) == (7, 3)
    mac = tag.rsplit("-", 1)[1]
    for forged in (f"u7-4-{mac}", f"u8-3-{mac}", t.return_path_token(7)):
        with pytest.raises(InvalidToken):
            t.read_mailto(forged)
