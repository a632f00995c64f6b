"""SMTP delivery: a small pool of reused aiosmtplib connections; every failure classified by stage.

The only module that imports aiosmtplib. Sending never raises for a refused message: each message
it begins gets an Outcome whose reply class (RELIABILITY rule 6) tells the caller to retry it, fail
it, or stop the run (CONFIG: our own settings are wrong). To a relay that offers PIPELINING (RFC
2920), MAIL, RCPT and DATA go in one write: two round trips a message instead of four.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, Self

import aiosmtplib
from aiosmtplib.email import quote_address

from digest.domain import ReplyClass, SmtpStage, classify_reply
from digest.mime import Prepared
from digest.ratelimit import Pacer, Rate

SECURITY_MODES = ("none", "starttls", "tls")
_MAX_DETAIL = 300
# A session that failed before MAIL is half set up (not greeted, not authenticated): start over.
_SETUP_STAGES = (SmtpStage.CONNECT, SmtpStage.HELO, SmtpStage.AUTH)
# How long a sender that is done waits for each connection to let go of its socket: a TLS close
# takes a round trip (close_notify), and a loop that ends first leaves the socket unclosed.
_CLOSE_WAIT = 2.0
_CLOSE_POLL = 0.005
# What DATA needs done to a message that is not Prepared (RFC 5321 §4.5.2), as aiosmtplib's data()
# does to every one: each line end made CRLF, and a dot that starts a line doubled.
_LINE_END = re.compile(rb"\r\n|\r|\n")
_LEADING_DOT = re.compile(rb"^\.", re.MULTILINE)
# As aiosmtplib bounds a reply: a relay streaming lines without end is not read forever.
_MAX_REPLY = 32 * 1024


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    security: str = "none"  # "none" | "starttls" | "tls"
    connections: int = 4  # SMTP connections kept open at once (= messages in flight)
    timeout: float = 60.0  # connect / command timeout
    data_timeout: float = 600.0  # the final reply after DATA may take 10 minutes (RFC 5321)
    local_hostname: str | None = None
    rate: Rate | None = None  # most messages per window towards the relay; None: no limit

    def __post_init__(self) -> None:
        if self.security not in SECURITY_MODES:
            raise ValueError(f"security must be one of {SECURITY_MODES}, not {self.security!r}")
        if self.connections < 1:
            raise ValueError(f"connections must be at least 1, not {self.connections}")

    @property
    def transaction_timeout(self) -> float:
        """The longest one send() takes once it has a connection (rule 7: the lease outlasts it).

        aiosmtplib times each read separately, so without this bound a server that answers every
        step just in time could hold a message far longer than `timeout` and `data_timeout` suggest.
        """
        return 4 * self.timeout + self.data_timeout


@dataclass(frozen=True, slots=True)
class Outgoing:
    key: int  # caller's id (the delivery id), echoed back
    sender: str  # envelope MAIL FROM (bare address)
    recipient: str  # envelope RCPT TO (bare address)
    # The complete RFC 5322 message. A mime.Prepared one (every message render.py makes) goes out
    # as it is; any other is made fit for DATA on the way (line ends, leading dots).
    message: bytes


@dataclass(frozen=True, slots=True)
class Outcome:
    key: int
    reply: ReplyClass | None  # None = accepted (2xx after DATA)
    code: int | None  # SMTP code if any
    detail: str  # one line, e.g. "451 4.3.0 try later (data)" or "Connection lost (mail)"


class Sender(Protocol):
    """What dispatch needs: SmtpSender for real, DryRunSender for --dry-run."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc: object) -> None: ...

    async def send_many(
        self, mails: Sequence[Outgoing], still_ours: Callable[[int], bool] = ...
    ) -> list[Outcome]: ...


def _always(_key: int) -> bool:
    return True


def _one_line(text: str) -> str:
    return " ".join(text.split())[:_MAX_DETAIL]


def _envelope_address(address: str, smtputf8: bool) -> str | None:
    """The address as this server can take it, or None when it needs SMTPUTF8 the server lacks."""
    if smtputf8 or address.isascii():
        return address
    local, _, domain = address.rpartition("@")
    if not local.isascii():
        return None
    try:  # only the domain is international: its ASCII (punycode) form needs no extension
        return f"{local}@{domain.encode('idna').decode('ascii')}"
    except UnicodeError:
        return None


class SmtpSender:
    """Sends over at most `connections` pooled SMTP connections, opened lazily and reused.

    With a rate, every message waits for a slot of one Pacer shared by all connections, before it
    connects if it must: a message that cannot connect spends its slot, so a relay that is down
    is not hammered. The pace is kept per sender (one `digest send`, one dispatch run), and so is
    `unreachable`.
    """

    def __init__(
        self,
        settings: SmtpSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._settings = settings
        self._pacer = Pacer(settings.rate, clock, sleep)
        self._clients = [self._client() for _ in range(settings.connections)]
        # A client is in this queue while idle; taking one is what bounds messages in flight.
        self._idle: asyncio.Queue[aiosmtplib.SMTP] = asyncio.Queue()
        for client in self._clients:
            self._idle.put_nowait(client)
        self._reached = False  # some connection got through, or at least an SMTP reply came back
        self._unreached: str | None = None  # why the last connection failed without any reply

    @property
    def unreachable(self) -> str | None:
        """Why no connection this sender tried reached the relay (refused, unknown host, timeout);
        None once one did, or before any was tried."""
        return None if self._reached else self._unreached

    def _client(self) -> aiosmtplib.SMTP:
        s = self._settings
        return aiosmtplib.SMTP(
            hostname=s.host,
            port=s.port,
            timeout=s.timeout,
            use_tls=s.security == "tls",
            # False, not None: aiosmtplib's default upgrades opportunistically, which "none" forbids.
            start_tls=s.security == "starttls",
            local_hostname=s.local_hostname,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.gather(*(_quit(client) for client in self._clients))

    async def send_many(
        self, mails: Sequence[Outgoing], still_ours: Callable[[int], bool] = _always
    ) -> list[Outcome]:
        """Outcomes in the order of mails, but none for a mail still_ours refused at its start."""
        outcomes: dict[int, Outcome] = {}
        pending = iter(enumerate(mails))

        # One worker per connection rather than one task per message: memory stays flat.
        async def worker() -> None:
            for index, mail in pending:
                if (outcome := await self.send(mail, still_ours)) is not None:
                    outcomes[index] = outcome

        async with asyncio.TaskGroup() as group:
            for _ in range(min(self._settings.connections, len(mails))):
                group.create_task(worker())
        return [outcomes[index] for index in sorted(outcomes)]

    async def send(
        self, mail: Outgoing, still_ours: Callable[[int], bool] = _always
    ) -> Outcome | None:
        """Send one mail; None, having sent nothing, if still_ours(mail.key) is false at MAIL FROM.

        Asked last thing before the transaction starts, after any wait for a connection, a slot or
        the greeting: a worker that stalled past its lease must not send what another now holds.
        """
        client = await self._idle.get()
        try:
            # With a connection in hand, so a slot is not spent waiting for one (sends would bunch).
            await self._pacer.acquire()
            # One deadline for the whole send, retry included: the bound dispatch sizes its lease
            # by. It starts after the slot: waiting for one is pacing, not a slow server.
            deadline = asyncio.get_running_loop().time() + self._settings.transaction_timeout
            reused = client.is_connected
            outcome, stale = await self._attempt(client, mail, deadline, still_ours)
            # A pooled connection the server closed while idle fails at MAIL, before any of the
            # message went out, so one try on a fresh connection cannot duplicate anything; nor
            # did the relay take a message, so the retry keeps this message's slot.
            if reused and stale:
                outcome, _ = await self._attempt(client, mail, deadline, still_ours)
            return outcome
        except BaseException:
            client.close()  # cancelled, perhaps mid-transaction: the session's state is unknown
            raise
        finally:
            self._idle.put_nowait(client)

    async def _attempt(
        self,
        client: aiosmtplib.SMTP,
        mail: Outgoing,
        deadline: float,
        still_ours: Callable[[int], bool],
    ) -> tuple[Outcome | None, bool]:
        """One transaction; returns its outcome (None: still_ours said no, nothing was sent) and
        whether it failed on a stale connection."""
        at = _Progress()
        try:
            async with asyncio.timeout_at(deadline):
                if not client.is_connected:
                    await self._open(client, at)
                if not still_ours(mail.key):
                    return None, False
                at.stage = SmtpStage.MAIL
                smtputf8 = client.supports_extension("smtputf8")
                sender = _envelope_address(mail.sender, smtputf8)
                recipient = _envelope_address(mail.recipient, smtputf8)
                if sender is None or recipient is None:
                    # Only the recipient's address is the recipient's problem; ours is config.
                    reply = ReplyClass.CONFIG if sender is None else ReplyClass.PERMANENT
                    address = mail.sender if sender is None else mail.recipient
                    detail = f"the server does not support SMTPUTF8, which {address} needs"
                    return Outcome(mail.key, reply, None, _one_line(detail)), False
                response = await _transfer(
                    client, sender, recipient, mail.message, self._settings, at
                )
        except aiosmtplib.SMTPResponseException as exc:
            self._reached = True  # a reply, even a 421 greeting: the relay is there
            code, text = exc.code, f"{exc.code} {exc.message}"
            reply = classify_reply(at.stage, code)
            stale = at.stage is SmtpStage.MAIL and code == 421
        except OSError as exc:
            # aiosmtplib's disconnect, connect and timeout errors are all OSErrors; so is ours.
            reply, code, text = ReplyClass.TRANSIENT, None, str(exc) or type(exc).__name__
            disconnected = isinstance(exc, aiosmtplib.SMTPServerDisconnected)
            stale = at.stage is SmtpStage.MAIL and disconnected
            if at.stage is SmtpStage.CONNECT:  # no reply at all: refused, unknown host, timeout
                self._unreached = _one_line(text)
            if (refused := _certificate_refused(exc)) is not None:
                # Our trust store or the relay's certificate is wrong: no retry per reader helps.
                reply, text = (
                    ReplyClass.CONFIG,
                    f"TLS certificate refused: {refused.verify_message}",
                )
        except aiosmtplib.SMTPException as exc:
            # The server lacks what our settings need (AUTH, STARTTLS): retrying will not help.
            reply, code, text, stale = ReplyClass.CONFIG, None, exc.message, False
        else:
            detail = _one_line(f"{response.code} {response.message}")
            return Outcome(mail.key, None, response.code, detail), False
        await _recover(client, at.stage, replied=code is not None, deadline=deadline)
        return Outcome(mail.key, reply, code, _one_line(f"{text} ({at.stage})")), stale

    async def _open(self, client: aiosmtplib.SMTP, at: _Progress) -> None:
        s = self._settings
        await client.connect()  # greeting, and STARTTLS when required
        self._reached = True
        at.stage = SmtpStage.HELO
        await _greet(client)
        at.stage = SmtpStage.AUTH
        if s.username is not None:
            await client.login(s.username, s.password or "")


@dataclass(slots=True)
class _Progress:
    """How far a transaction got: the stage it fails at says what its failure means."""

    stage: SmtpStage = SmtpStage.CONNECT


async def _transfer(
    client: aiosmtplib.SMTP,
    sender: str,
    recipient: str,
    message: bytes,
    s: SmtpSettings,
    at: _Progress,
) -> aiosmtplib.SMTPResponse:
    """MAIL, RCPT, DATA and the message: pipelined when the relay offers it (RFC 2920), each
    reply checked in order as the plain way checks it."""
    utf8 = not (sender + recipient).isascii()
    options = ["SMTPUTF8"] if utf8 else []
    if not message.isascii() and client.supports_extension("8bitmime"):
        options.append("BODY=8BITMIME")
    encoding = "utf-8" if utf8 else "ascii"
    if client.supports_extension("pipelining"):
        commands = [
            (_command(b"MAIL FROM:", sender, options, encoding), s.timeout),
            (_command(b"RCPT TO:", recipient, [], encoding), s.timeout),
            (b"DATA\r\n", s.data_timeout),
        ]
        async with _pipelined(client, commands) as replies:
            _expect(await replies.next(), 250)
            at.stage = SmtpStage.RCPT
            _expect(await replies.next(), 250, 251)
            at.stage = SmtpStage.DATA
            _expect(await replies.next(), 354)
    else:
        await client.mail(sender, options=options, encoding=encoding)
        at.stage = SmtpStage.RCPT
        await client.rcpt(recipient, encoding=encoding)
        at.stage = SmtpStage.DATA
        _expect(await client.execute_command(b"DATA", timeout=s.data_timeout), 354)
    return await _message(client, message, s.data_timeout)


def _certificate_refused(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate failure behind exc: aiosmtplib wraps it differently for TLS and STARTTLS."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


async def _greet(client: aiosmtplib.SMTP) -> None:
    if not client.is_ehlo_or_helo_needed:  # STARTTLS on connect already said EHLO again
        return
    try:
        await client.ehlo()
    except aiosmtplib.SMTPHeloError:
        if not client.is_connected:  # a 421 closes the session
            raise
        await client.helo()  # a pre-ESMTP server; if HELO fails too, its reply decides


async def _message(
    client: aiosmtplib.SMTP, message: bytes, timeout: float
) -> aiosmtplib.SMTPResponse:
    """After DATA's 354, what client.data() sends and reads, without its two regex passes over a
    message that needs neither (they took 64 % of the CPU a digest cost)."""
    protocol = client.protocol
    if protocol is None:  # the 354 came, and then the connection went
        raise aiosmtplib.SMTPServerDisconnected("Connection lost")
    protocol.write(_payload(message))
    protocol.write(b".\r\n")
    return _expect(await protocol.read_response(timeout=timeout), 250)


def _payload(message: bytes) -> bytes:
    """The message as DATA carries it, up to the final dot."""
    if isinstance(message, Prepared):
        return message
    message = _LINE_END.sub(b"\r\n", message)
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    return _LEADING_DOT.sub(b"..", message)


def _expect(reply: aiosmtplib.SMTPResponse, *codes: int) -> aiosmtplib.SMTPResponse:
    if reply.code not in codes:
        raise aiosmtplib.SMTPResponseException(reply.code, reply.message)
    return reply


def _command(verb: bytes, address: str, options: list[str], encoding: str) -> bytes:
    """MAIL FROM or RCPT TO as aiosmtplib's mail() and rcpt() write it."""
    words = [verb + quote_address(address).encode(encoding), *(o.encode("ascii") for o in options)]
    return b" ".join(words) + b"\r\n"


@contextlib.asynccontextmanager
async def _pipelined(
    client: aiosmtplib.SMTP, commands: Sequence[tuple[bytes, float]]
) -> AsyncIterator[_Replies]:
    """Write the commands at once and read their replies (each within its timeout) in order.

    Should one be refused, the replies still due are read before the refusal goes on, so that
    the next reply read (RSET's) is not taken for one of theirs.
    """
    protocol, transport = client.protocol, client.transport
    if protocol is None or transport is None:
        raise aiosmtplib.SMTPServerDisconnected("Connection lost")
    replies = _Replies(protocol, [timeout for _, timeout in commands])
    transport.set_protocol(replies)
    try:
        protocol.write(b"".join(command for command, _ in commands))
        yield replies
    except aiosmtplib.SMTPResponseException as exc:
        # A reply that does not parse (code -1) leaves no telling where the next one starts.
        if exc.code < 0 or not await replies.drain():
            client.close()
        raise
    finally:
        transport.set_protocol(protocol)


class _Replies(asyncio.Protocol):
    """Receives for aiosmtplib's protocol while the replies to pipelined commands are due.

    aiosmtplib's protocol reads one reply per command it has written: of replies that arrive
    together it parses the first and leaves the rest unread (against aiosmtpd, the next read
    then timed out in 7 of 30 tries), and it drops what arrives while a reply waits to be picked
    up. This one keeps every byte and hands the replies out in order; the connection's end and
    flow control go on to aiosmtplib's.
    """

    def __init__(self, inner: asyncio.BaseProtocol, timeouts: Sequence[float]) -> None:
        self._inner = inner
        self._due = deque(timeouts)  # one for each reply still to read
        self._buffer = bytearray()
        self._arrived = asyncio.Event()
        self._ended = False

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._arrived.set()

    def eof_received(self) -> bool:
        self._ended = True
        self._arrived.set()
        return False  # close the transport: the relay has hung up

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended = True
        self._arrived.set()
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    async def next(self) -> aiosmtplib.SMTPResponse:
        timeout = self._due.popleft()
        try:
            async with asyncio.timeout(timeout):
                while (reply := self._take()) is None:
                    if self._ended:
                        raise aiosmtplib.SMTPServerDisconnected("Connection lost")
                    self._arrived.clear()
                    await self._arrived.wait()
        except TimeoutError as exc:
            raise aiosmtplib.SMTPReadTimeoutError("Timed out waiting for server response") from exc
        return reply

    async def drain(self) -> bool:
        """Read the replies still due; whether the connection is fit for RSET and the next mail."""
        try:
            while self._due:
                if (await self.next()).code == 354:
                    # DATA taken with no recipient (RFC 2920 says refuse it): the relay now waits
                    # for a message. Hang up rather than send one.
                    return False
        except (aiosmtplib.SMTPException, OSError):
            return False
        return True

    def _take(self) -> aiosmtplib.SMTPResponse | None:
        """The first whole reply in the buffer, taken out of it (RFC 5321 §4.2: "250-" goes on)."""
        lines, start = [], 0
        while (end := self._buffer.find(b"\n", start)) != -1:
            line = bytes(self._buffer[start : end + 1])
            lines.append(line[4:].strip(b" \t\r\n").decode("utf-8", "surrogateescape"))
            start = end + 1
            if line[3:4] != b"-":
                del self._buffer[:start]
                if not line[:3].isdigit():
                    raise aiosmtplib.SMTPResponseException(-1, f"Malformed SMTP reply: {line!r}")
                return aiosmtplib.SMTPResponse(int(line[:3]), "\n".join(lines))
        if len(self._buffer) > _MAX_REPLY:
            raise aiosmtplib.SMTPResponseException(-1, "Reply too long")
        return None


async def _recover(
    client: aiosmtplib.SMTP, stage: SmtpStage, replied: bool, deadline: float
) -> None:
    """Make the connection fit for the next message, or close it so the next one reconnects."""
    # No reply (timeout, drop) leaves the session's state unknown; a half set-up one is useless.
    if not replied or stage in _SETUP_STAGES or not client.is_connected:
        client.close()
        return
    try:
        async with asyncio.timeout_at(deadline):
            await client.rset()  # else the next MAIL gets "503 nested MAIL" (listmonk #966)
    except (aiosmtplib.SMTPException, OSError):
        client.close()


async def _quit(client: aiosmtplib.SMTP) -> None:
    protocol = client.protocol
    if client.is_connected:
        with contextlib.suppress(aiosmtplib.SMTPException, OSError):
            await client.quit()
    client.close()
    if protocol is None:
        return
    # The protocol hears connection_lost only once the transport has closed its socket.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(_CLOSE_WAIT):
            while protocol.transport is not None:
                await asyncio.sleep(_CLOSE_POLL)


class DryRunSender:
    """Accepts every message without touching the network."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def send_many(
        self, mails: Sequence[Outgoing], still_ours: Callable[[int], bool] = _always
    ) -> list[Outcome]:
        return [Outcome(mail.key, None, None, "dry run: not sent") for mail in mails]
