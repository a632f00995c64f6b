"""A mail as bytes on the wire: headers encoded and folded, each part in its transfer encoding.

render.py decides what a digest says; this module decides how it goes out. A part is cut at its
personal links and encoded once (Part), as quoted-printable or base64, whichever is smaller for
that body: quoted-printable for mostly-ASCII text, base64 (a flat 4/3) where quoted-printable
would triple non-ASCII text. Per reader, only the links are encoded and joined to the pieces.

Every message assembled here is Prepared: SMTP DATA can carry its bytes as they are, so the
sender need not scan 46 KB per reader for line ends and leading dots (64 % of the CPU a digest
took when aiosmtplib did it).
"""

from __future__ import annotations

import binascii
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from email.header import Header
from email.utils import unquote

CRLF = "\r\n"
# Every boundary str.splitlines() knows, "\r\n" first so that it counts once (RELIABILITY rule 11).
_LINE_BREAK = re.compile("\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")
_FOLD_POINT = re.compile(r"(?<=\S) ")
_NAME_ADDR = re.compile(r"(.*)<([^<>]*)>\s*")
_SPECIALS = re.compile(r'[][\\()<>@,:;".]')
# No body line can match the boundary: quoted-printable never writes "=_" (a literal "=" becomes
# "=3D"), and base64 has no "-".
_OPEN = b'MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary="=_digest"\r\n'
_PART = b"\r\n--=_digest\r\nContent-Type: text/%s; charset=utf-8\r\n"
_PART += b"Content-Transfer-Encoding: %s\r\n\r\n"
_CLOSE = b"\r\n--=_digest--\r\n"
_SOFT_BREAK = b"=\r\n"
# What quoted-printable writes for a "." that would start a line; base64 has no ".", a header line
# starts with its name or a folding space, and our part headers and boundaries with a letter or "-".
_DOT = b"=2E"


class Prepared(bytes):
    """A message that SMTP DATA carries as it is: CRLF line ends only, a CRLF at the end, and no
    line that starts with "." (RFC 5321 §4.5.2 would have it doubled, and a lone one ends DATA).

    Being still the message itself, it reads the same to anything else; any change to it (a
    slice, a concatenation) gives plain bytes, which the sender prepares again.
    """

    __slots__ = ()


class _QuotedPrintable:
    """Each piece encoded once; a subscriber's links are encoded alone and joined by soft breaks."""

    name = b"quoted-printable"

    def __init__(self, pieces: Sequence[bytes]) -> None:
        self._pieces = tuple(_qp(piece) for piece in pieces)

    def largest(self, link_room: int) -> int:
        # A link byte takes at most three ("=3D", "=2E"); the encoder breaks a line before column
        # 73 at the earliest, _qp may break each line once more for a leading dot and once at the
        # end, and two more breaks join the link to its pieces.
        lines = 3 * link_room // 73 + 1
        link = 3 * link_room + len(_SOFT_BREAK) * (2 * lines + 3)
        return sum(map(len, self._pieces)) + (len(self._pieces) - 1) * link

    def join(self, links: Sequence[bytes]) -> bytes:
        # A link encodes the same wherever it falls (each starts a line), so a link that fills
        # two places is encoded once.
        encoded: dict[bytes, bytes] = {}
        out = [self._pieces[0]]
        for link, piece in zip(links, self._pieces[1:], strict=True):
            if link not in encoded:
                encoded[link] = _qp(link)
            out += (encoded[link], piece)
        return _SOFT_BREAK.join(out)


@dataclass(frozen=True, slots=True)
class _Aligned:
    """A piece with its first `skip` bytes gone: base64 of its whole groups of three, and the rest."""

    encoded: bytes
    tail: bytes

    @classmethod
    def of(cls, data: bytes, skip: int = 0) -> _Aligned:
        end = skip + (len(data) - skip) // 3 * 3
        return cls(_b64(data[skip:end]), data[end:])


class _Base64:
    """Each piece encoded once, in whole groups of three bytes, for each way it can start.

    A subscriber's link, with the bytes left over before it and the 0-2 bytes after it that make
    whole groups, is the only thing encoded per subscriber; only the last group may be padded.
    """

    name = b"base64"

    def __init__(self, pieces: Sequence[bytes]) -> None:
        self._first = _Aligned.of(pieces[0])
        self._rest = tuple(
            (piece, tuple(_Aligned.of(piece, skip) for skip in range(3))) for piece in pieces[1:]
        )

    @staticmethod
    def largest(pieces: Sequence[bytes], link_room: int) -> int:
        # Dropping bytes from a piece's start never lengthens it; a link's own line takes up to
        # two bytes left over before it and two after; the end may carry two left over.
        whole = sum(_b64_size(len(piece) // 3 * 3) for piece in pieces)
        return whole + (len(pieces) - 1) * _b64_size(link_room + 4) + _b64_size(2)

    def join(self, links: Sequence[bytes]) -> bytes:
        out, carry = [self._first.encoded], self._first.tail
        for link, (piece, starts) in zip(links, self._rest, strict=True):
            carry += link
            need = -len(carry) % 3
            if len(piece) < need:  # too short to make whole groups: it goes with the next link
                carry += piece
                continue
            start = starts[need]
            out += (_b64(carry + piece[:need]), start.encoded)
            carry = start.tail
        out.append(_b64(carry))
        return b"".join(out)


@dataclass(frozen=True, slots=True)
class Part:
    """A body cut at its personal links: literal pieces, and between them which link goes there.

    Encoded once, whichever of quoted-printable and base64 is smaller; only the links are encoded
    per reader."""

    pieces: tuple[str, ...]
    slots: tuple[int, ...]  # which placeholder stood between two pieces; one fewer than pieces
    is_html: bool
    encoding: _QuotedPrintable | _Base64
    largest: int  # bytes of the body as sent, at most, with links up to the room kept
    head: bytes  # the boundary and the part's headers

    @classmethod
    def cut(
        cls, body: str, placeholders: tuple[str, ...], *, is_html: bool, link_room: int
    ) -> Part:
        parts = re.split("(" + "|".join(placeholders) + ")", body) if placeholders else [body]
        pieces = tuple(parts[0::2])
        slots = tuple(placeholders.index(p) for p in parts[1::2])
        data = [canonical(piece) for piece in pieces]
        quoted = _QuotedPrintable(data)
        largest = quoted.largest(link_room)
        as_base64 = _Base64.largest(data, link_room)
        encoding: _QuotedPrintable | _Base64 = quoted
        if as_base64 < largest:
            encoding, largest = _Base64(data), as_base64
        head = _PART % (b"html" if is_html else b"plain", encoding.name)
        return cls(pieces, slots, is_html, encoding, largest, head)

    def _links(self, urls: Sequence[str]) -> list[str]:
        return [html.escape(urls[s]) if self.is_html else urls[s] for s in self.slots]

    def fill(self, urls: Sequence[str]) -> str:
        """The body with the links in, in the order of the placeholders it was cut at."""
        out = [self.pieces[0]]
        for url, piece in zip(self._links(urls), self.pieces[1:], strict=True):
            out += (url, piece)
        return "".join(out)

    def encode(self, urls: Sequence[str] = ()) -> tuple[bytes, bytes]:
        """The part as sent: its headers, and its body; a part without personal links needs none."""
        # Each link made canonical once, however many places it fills ("View in browser" two).
        links = [canonical(html.escape(url) if self.is_html else url) for url in urls]
        return self.head, self.encoding.join([links[s] for s in self.slots])


def one_line(value: str) -> str:
    return _LINE_BREAK.sub(" ", value)


def _is_plain(value: str) -> bool:
    """Printable ASCII that no reader would take for an RFC 2047 encoded word."""
    return value.isascii() and value.isprintable() and "=?" not in value


def _fold(line: str, limit: int = 78) -> str:
    """Fold before spaces that follow a word, so lines stay under the limit where words allow."""
    lines = []
    start = line.index(":") + 2  # never fold between the name and the first word
    while len(line) > limit:
        cuts = [m.start() for m in _FOLD_POINT.finditer(line, start)]
        if not cuts:
            break
        fitting = [cut for cut in cuts if cut <= limit]
        cut = fitting[-1] if fitting else cuts[0]
        lines.append(line[:cut])
        line, start = line[cut:], 1
    lines.append(line)
    return CRLF.join(lines)


def unstructured(name: str, value: str) -> bytes:
    value = one_line(value)
    if _is_plain(value):
        return _fold(f"{name}: {value}").encode("ascii")
    encoded = Header(value, "utf-8", header_name=name).encode(linesep=CRLF)
    return f"{name}: {encoded}".encode("ascii")


def structured(name: str, value: str) -> bytes:
    # Addresses, ids, dates and URLs: ASCII except an SMTPUTF8 address, which goes as UTF-8.
    return f"{name}: {one_line(value).strip()}".encode()


def mailbox(value: str) -> str:
    """`Name <addr>` with the name quoted or RFC 2047-encoded as it needs."""
    value = one_line(value).strip()
    match = _NAME_ADDR.fullmatch(value)
    if match is None:
        return value
    name, address = unquote(match[1].strip()), match[2].strip()
    if not name:
        return f"<{address}>"
    if not _is_plain(name):
        name = Header(name, "utf-8").encode(linesep=CRLF)
    elif _SPECIALS.search(name):
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{name} <{address}>"


def canonical(text: str) -> bytes:
    """UTF-8 with CRLF line ends, as both transfer encodings want text."""
    return _LINE_BREAK.sub(CRLF, text).encode()


def _qp(data: bytes) -> bytes:
    """Quoted-printable with CRLF line ends, no line that starts with ".", and room left on the
    last line for a soft break.

    Each piece starts a line (after the part's headers or a soft break), so a piece made safe here
    stays safe wherever it is joined.
    """
    encoded = binascii.b2a_qp(data, istext=True)  # it escapes a lone "." only
    if b"\n" not in data:  # with a CRLF in data, b2a_qp ends every line, soft or hard, with CRLF
        encoded = encoded.replace(b"\n", b"\r\n")
    start = encoded.rfind(b"\n") + 1
    head, last = encoded[:start], encoded[start:]
    if head.startswith(b".") or b"\n." in head:
        head = b"".join(_fit(line, 76) + b"\r\n" for line in head.split(b"\r\n")[:-1])
    return head + _fit(last, 75)


def _fit(line: bytes, limit: int) -> bytes:
    """An encoded line as lines of at most `limit` characters joined by soft breaks (each cut one
    at most 76 with its "=", as quoted-printable allows), none of them starting with "."."""
    lines = []
    while True:
        if line.startswith(b"."):
            line = _DOT + line[1:]
        if len(line) <= limit:
            lines.append(line)
            return _SOFT_BREAK.join(lines)
        cut = 75
        if line[cut - 1] == ord("="):  # never split an =XX escape
            cut -= 1
        elif line[cut - 2] == ord("="):
            cut -= 2
        lines.append(line[:cut])
        line = line[cut:]


def _b64(data: bytes) -> bytes:
    """Base64 in lines of 76 characters, each ending CRLF; nothing for no data."""
    encoded = binascii.b2a_base64(data, newline=False)
    return b"".join(encoded[i : i + 76] + b"\r\n" for i in range(0, len(encoded), 76))


def _b64_size(length: int) -> int:
    characters = -(-length // 3) * 4
    return characters + 2 * -(-characters // 76)


def assemble(
    headers: list[bytes], text: tuple[bytes, bytes], html_part: tuple[bytes, bytes]
) -> Prepared:
    # One join: the bodies are the bulk of the message, so they are copied once, not per step
    # (Prepared(...) copies it once more: a memcpy, some 5 µs for 46 KB, not a scan).
    return Prepared(b"".join((b"\r\n".join(headers), b"\r\n", _OPEN, *text, *html_part, _CLOSE)))
