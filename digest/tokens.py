"""Signed link tokens: one itsdangerous serializer per purpose, so a token of one cannot do another's job.

Payloads are readable base64, so they hold the subscriber id and token_version, never the address;
a confirm token names its address by a short hash and carries its issue time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from itsdangerous import BadData, URLSafeSerializer

from digest.errors import ExpiredToken, InvalidToken

MAC_HEX = 20  # 80 bits of HMAC-SHA256: a forger has to guess, one mail at a time
# Ids as the database gives them: no sign, no leading zero, at most 18 digits.
_ID = r"([1-9][0-9]{0,17})"
_RETURN_PATH = re.compile(rf"b{_ID}-([0-9a-f]{{{MAC_HEX}}})")
_MAILTO = re.compile(rf"u{_ID}-{_ID}-([0-9a-f]{{{MAC_HEX}}})")


class Purpose(StrEnum):
    UNSUBSCRIBE = "unsubscribe"
    PREFERENCES = "preferences"
    CONFIRM = "confirm"
    DIGEST = "digests"  # the web version of one sent digest: names the delivery, not the reader


@dataclass(frozen=True, slots=True)
class TokenSubject:
    subscriber_id: int
    token_version: int
    address_hash: str | None = None


def address_hash(email: str) -> str:
    return hashlib.sha256(email.encode("utf-8")).hexdigest()[:16]


class Tokens:
    def __init__(self, secret_keys: Sequence[str], confirm_max_age: timedelta) -> None:
        if not secret_keys:
            raise ValueError("at least one secret key is needed")
        # itsdangerous signs with the *last* key and verifies with all; our setting names the
        # signing key first.
        keys = list(reversed(secret_keys))
        self._serializers = {
            purpose: URLSafeSerializer(
                keys, salt=f"digest.{purpose}", signer_kwargs={"digest_method": hashlib.sha256}
            )
            for purpose in Purpose
        }
        self._confirm_max_age = confirm_max_age
        self._keys = [key.encode("utf-8") for key in secret_keys]  # the signing key first

    # -- tokens in a mail address: VERP return paths and mailto unsubscribes ---------------------
    # Lowercase hex only, as some relays change the case of an address's local part.

    def return_path_token(self, delivery_id: int) -> str:
        """The tag of a digest's envelope sender (bounces+TAG@…): names its delivery, signed."""
        return f"b{delivery_id}-{self._mac('bounce', delivery_id, key=self._keys[0])}"

    def read_return_path(self, token: str) -> int:
        """The delivery a return path's tag names; InvalidToken for anything else."""
        found = _RETURN_PATH.fullmatch(token.lower())
        if found is None or not self._signed(found[2], "bounce", int(found[1])):
            raise InvalidToken("not a return path of ours")
        return int(found[1])

    def mailto_token(self, subscriber_id: int, token_version: int) -> str:
        """The tag of a reader's mailto: List-Unsubscribe address (unsubscribe+TAG@…)."""
        mac = self._mac("mailto", subscriber_id, token_version, key=self._keys[0])
        return f"u{subscriber_id}-{token_version}-{mac}"

    def read_mailto(self, token: str) -> TokenSubject:
        """The reader a mailto address's tag names; InvalidToken for anything else."""
        found = _MAILTO.fullmatch(token.lower())
        if found is None:
            raise InvalidToken("not an unsubscribe address of ours")
        subscriber_id, token_version = int(found[1]), int(found[2])
        if not self._signed(found[3], "mailto", subscriber_id, token_version):
            raise InvalidToken("not an unsubscribe address of ours")
        return TokenSubject(subscriber_id, token_version)

    def _mac(self, purpose: str, *ids: int, key: bytes) -> str:
        message = "|".join(["digest", purpose, *map(str, ids)]).encode("ascii")
        return hmac.new(key, message, hashlib.sha256).hexdigest()[:MAC_HEX]

    def _signed(self, mac: str, purpose: str, *ids: int) -> bool:
        """Whether mac is the tag's signature under any of the keys (a rotated one too)."""
        return any(
            hmac.compare_digest(mac, self._mac(purpose, *ids, key=key)) for key in self._keys
        )

    def link_token(self, purpose: Purpose, subscriber_id: int, token_version: int) -> str:
        if purpose in (Purpose.CONFIRM, Purpose.DIGEST):
            raise ValueError(f"{purpose} tokens are made by their own method")
        return self._serializers[purpose].dumps([subscriber_id, token_version])

    def digest_token(self, delivery_id: int, token_version: int) -> str:
        """The web version's link; token_version is the reader's, so it ends with their others."""
        return self._serializers[Purpose.DIGEST].dumps([delivery_id, token_version])

    def read_digest(self, token: str) -> tuple[int, int]:
        """(delivery_id, token_version) of a web version's token; InvalidToken for anything else."""
        try:
            payload = self._serializers[Purpose.DIGEST].loads(token)
        except BadData as exc:
            raise InvalidToken("this link is not valid") from exc
        if not _is_ints(payload, 2):
            raise InvalidToken("this link is not valid")
        return payload[0], payload[1]

    def confirm_token(
        self, subscriber_id: int, token_version: int, email: str, now: datetime
    ) -> str:
        payload = [subscriber_id, token_version, address_hash(email), int(now.timestamp())]
        return self._serializers[Purpose.CONFIRM].dumps(payload)

    def read(
        self, purpose: Purpose, token: str, now: datetime, *, expired_ok: bool = False
    ) -> TokenSubject:
        """The token's subject; InvalidToken for anything tampered, foreign or malformed.

        expired_ok reads an authentic but expired confirm token, to send its reader a fresh one.
        """
        try:
            payload = self._serializers[purpose].loads(token)
        except BadData as exc:
            raise InvalidToken("this link is not valid") from exc
        if purpose is Purpose.CONFIRM:
            return self._read_confirm(payload, now, expired_ok)
        if not _is_ints(payload, 2):
            raise InvalidToken("this link is not valid")
        return TokenSubject(payload[0], payload[1])

    def _read_confirm(self, payload: object, now: datetime, expired_ok: bool) -> TokenSubject:
        if not (
            isinstance(payload, list)
            and len(payload) == 4
            and _is_ints(payload[:2], 2)
            and isinstance(payload[2], str)
            and isinstance(payload[3], int)
        ):
            raise InvalidToken("this link is not valid")
        issued = datetime.fromtimestamp(payload[3], tz=now.tzinfo)
        if now - issued > self._confirm_max_age and not expired_ok:
            raise ExpiredToken("this confirmation link has expired")
        return TokenSubject(payload[0], payload[1], payload[2])


def _is_ints(payload: object, count: int) -> bool:
    return (
        isinstance(payload, list)
        and len(payload) == count
        and all(isinstance(item, int) and not isinstance(item, bool) for item in payload)
    )
