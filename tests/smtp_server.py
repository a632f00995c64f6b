"""A real SMTP server on 127.0.0.1 for tests, scripted per test to misbehave (also a pytest plugin).

aiosmtpd's protocol on an event loop of its own in a background thread, so a test can drive a
client with ``asyncio.run`` while the server answers. Load the ``smtp_server`` fixture with
``pytest_plugins = ["smtp_server"]`` (in a test module, or in the top-level conftest.py).

    smtp_server.fail("rcpt", 550, to={"bad@example.org"})   # only that recipient
    smtp_server.fail("data", 451, times=1)                   # only the first message
    smtp_server.drop("data")                                 # close without replying
    smtp_server.slow("data", 2.0)                            # answer, but late
    held = smtp_server.hold("data"); held.reached.wait()     # no answer until held.release()
    smtp_server.on_accept = callback                         # called before each 250 after DATA
    smtp_server.stop(); smtp_server.start()                  # down, then back on the same port

The server offers PIPELINING (RFC 2920), as real relays do; ``start_smtp_server(pipelining=False)``
hides it, and the ``relay`` fixture runs a test against both.

For TLS, ``start_smtp_server(tls_context=context)`` offers STARTTLS and
``start_smtp_server(tls_context=context, implicit_tls=True)`` speaks TLS from the first byte;
each Received records whether its session was encrypted.

PYTEST_DONT_REWRITE: a test module may import this before listing it in pytest_plugins.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from typing import Any, Literal, NoReturn

import pytest
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session

Stage = Literal["connect", "ehlo", "auth", "mail", "rcpt", "data"]
Addresses = Iterable[str] | None

# Plausible texts, so a test can also check that the reply reaches Outcome.detail.
REPLY_TEXT = {
    421: "4.3.2 service shutting down, closing channel",
    450: "4.2.1 mailbox busy, try again later",
    451: "4.3.0 local error, try again later",
    452: "4.3.1 insufficient system storage",
    454: "4.7.0 temporary authentication failure",
    535: "5.7.8 authentication credentials invalid",
    550: "5.1.1 no such user here",
    552: "5.2.2 mailbox full",
    553: "5.1.8 sender address rejected",
    554: "5.7.1 no SMTP service here",
}


@dataclass(frozen=True)
class Received:
    """One message the server accepted."""

    sender: str
    recipients: list[str]
    data: bytes
    message_id: str | None
    mail_options: list[str]  # e.g. ["SMTPUTF8", "BODY=8BITMIME"]
    tls: bool  # the session was encrypted (STARTTLS or implicit TLS) when DATA ended
    pipelined: bool  # its MAIL, RCPT and DATA reached the server in one packet (RFC 2920)


class Hold:
    """A command the server sits on: `reached` is set once it does, `release()` lets it answer."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self._released = threading.Event()

    def release(self) -> None:
        self._released.set()

    async def wait(self) -> None:
        self.reached.set()
        while not self._released.is_set():
            await asyncio.sleep(0.02)


@dataclass
class Fault:
    stage: Stage
    code: int | None = None  # reply with this code instead of success; None: the normal reply
    drop: bool = False  # close the connection without replying
    delay: float = 0.0  # seconds to wait before the (normal or scripted) reply
    to: frozenset[str] | None = None  # only when one of these is a recipient (rcpt, data)
    times: int | None = None  # only the first N matching commands; None: every one
    hold: Hold | None = None  # wait, before the reply, until the test releases it

    def matches(self, stage: Stage, recipients: Iterable[str]) -> bool:
        if stage != self.stage or self.times == 0:
            return False
        return self.to is None or not self.to.isdisjoint(recipients)


class SmtpServer:
    """Records accepted messages and counts connections; stop() and start() keep the port."""

    host = "127.0.0.1"

    def __init__(
        self,
        *,
        smtputf8: bool = False,
        credentials: tuple[str, str] = ("digest", "secret"),
        tls_context: ssl.SSLContext | None = None,
        implicit_tls: bool = False,
        pipelining: bool = True,
    ):
        assert tls_context is not None or not implicit_tls, "implicit TLS needs a tls_context"
        self.port = 0  # the first start() takes a free one from the OS
        self.smtputf8 = smtputf8  # advertise SMTPUTF8; read for each new connection
        # Advertise PIPELINING; aiosmtpd reads commands in order either way, so a client may
        # pipeline to it regardless, but ours only does when it is offered.
        self.pipelining = pipelining
        # Answer DATA with 354 even when no recipient was accepted, as RFC 2920 §3.1 forbids.
        self.data_without_recipients = False
        self.credentials = credentials  # the one login AUTH accepts (AUTH is offered without TLS)
        self.tls_context = tls_context  # offer STARTTLS with it (not required), or:
        self.implicit_tls = implicit_tls  # wrap every connection in TLS from the start instead
        self.messages: list[Received] = []
        self.connections = 0  # connections accepted since the fixture began
        # Called on the server's thread with each message it is about to accept (before the 250).
        self.on_accept: Callable[[Received], None] | None = None
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._live: set[_ScriptedSMTP] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None

    # -- scripting -------------------------------------------------------------------------

    def fail(
        self, stage: Stage, code: int, *, to: Addresses = None, times: int | None = None
    ) -> None:
        """Answer `code` at `stage` (a 421, or any code at connect, also closes the connection)."""
        self._add(Fault(stage, code=code, to=_set(to), times=times))

    def drop(self, stage: Stage, *, to: Addresses = None, times: int | None = None) -> None:
        """Close the connection at `stage` without replying (at data: after the final dot)."""
        self._add(Fault(stage, drop=True, to=_set(to), times=times))

    def slow(self, stage: Stage, seconds: float, *, times: int | None = None) -> None:
        """Give the normal reply at `stage`, `seconds` late."""
        self._add(Fault(stage, delay=seconds, times=times))

    def hold(self, stage: Stage, *, times: int | None = 1) -> Hold:
        """Sit on `stage` without replying until the returned Hold is released (the first time)."""
        held = Hold()
        self._add(Fault(stage, hold=held, times=times))
        return held

    @property
    def recipients(self) -> list[str]:
        return [rcpt for message in self.messages for rcpt in message.recipients]

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._loop is not None

    def start(self) -> None:
        """Listen (again); callable from a test's own running event loop too."""
        assert self._loop is None, "already running"
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="smtp-server", daemon=True)
        thread.start()
        # Our own create_server, not aiosmtpd's Controller: it binds port 0 atomically (no
        # free-port race) and opens no connection of its own to check the server is up.
        listen = loop.create_server(
            lambda: self._accept(loop),
            self.host,
            self.port,
            ssl=self.tls_context if self.implicit_tls else None,
        )
        try:
            server = asyncio.run_coroutine_threadsafe(listen, loop).result(timeout=10)
        except BaseException:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            loop.close()
            raise
        self.port = server.sockets[0].getsockname()[1]
        self._loop, self._server, self._thread = loop, server, thread

    def stop(self) -> None:
        """Close the listener and every open connection, as a crashed or restarted relay would."""
        loop, server, thread = self._loop, self._server, self._thread
        if loop is None or server is None or thread is None:
            return

        async def shut_down() -> None:
            server.close()
            # abort(), not close(): a TLS close waits on the peer, the loop stops first, and the
            # socket is left for the garbage collector to find unclosed in some later test.
            for smtp in list(self._live):
                transport = smtp.transport
                if transport is None:  # never connected: its TLS handshake failed
                    self._live.discard(smtp)
                else:
                    # aiosmtpd types it as a BaseTransport; a TCP one, TLS or not, can abort().
                    assert isinstance(transport, asyncio.WriteTransport)
                    transport.abort()
            async with asyncio.timeout(10):
                while self._live:  # each connection_lost() takes its session out
                    await asyncio.sleep(0)
            await server.wait_closed()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shut_down(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
        self._loop = self._server = self._thread = None

    # -- server side (runs on the server's thread) -------------------------------------------

    def _add(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def _accept(self, loop: asyncio.AbstractEventLoop) -> _ScriptedSMTP:
        self.connections += 1
        smtp = _ScriptedSMTP(self, loop)
        self._live.add(smtp)
        return smtp

    async def misbehave(
        self, smtp: SMTP, stage: Stage, recipients: Iterable[str] = ()
    ) -> str | None:
        """The scripted reply for this command, or None to carry on normally."""
        with self._lock:
            fault = next((f for f in self._faults if f.matches(stage, recipients)), None)
            if fault is not None and fault.times is not None:
                fault.times -= 1
        if fault is None:
            return None
        if fault.delay:
            await asyncio.sleep(fault.delay)
        if fault.hold is not None:
            await fault.hold.wait()
        if fault.drop:
            await _hang_up(smtp)
        if fault.code is None:
            return None
        reply = f"{fault.code} {REPLY_TEXT.get(fault.code, 'scripted failure')}"
        if fault.code == 421 or stage == "connect":  # these replies end the session
            await smtp.push(reply)
            await _hang_up(smtp)
        return reply

    def authenticate(self, *args: Any) -> AuthResult:
        data = args[-1]  # aiosmtpd passes (server, session, envelope, mechanism, data)
        login = (data.login, data.password) if isinstance(data, LoginPassword) else None
        expected = tuple(part.encode() for part in self.credentials)
        return AuthResult(success=login == expected, handled=False)  # False: 535

    # -- aiosmtpd hooks: each asks misbehave() first -------------------------------------------

    async def handle_EHLO(
        self, server: SMTP, session: Session, _: Envelope, host: str, lines: list[str]
    ) -> list[str]:
        if reply := await self.misbehave(server, "ehlo"):
            return [reply]
        session.host_name = host  # the 5-argument hook must do this itself
        if self.pipelining:
            lines.insert(-1, "250-PIPELINING")  # before the last line, "250 HELP"
        return lines

    async def handle_HELO(self, server: SMTP, _: Session, __: Envelope, host: str) -> Any:
        return await self.misbehave(server, "ehlo") or MISSING  # MISSING: the default reply

    async def handle_AUTH(self, server: SMTP, _: Session, __: Envelope, args: list[str]) -> Any:
        return await self.misbehave(server, "auth") or MISSING

    async def handle_MAIL(
        self, server: SMTP, _: Session, env: Envelope, address: str, options: list[str]
    ) -> str:
        if reply := await self.misbehave(server, "mail"):
            return reply
        env.mail_from = address
        env.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: SMTP, _: Session, env: Envelope, address: str, options: list[str]
    ) -> str:
        if reply := await self.misbehave(server, "rcpt", [address]):
            return reply
        env.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, _: Session, env: Envelope) -> str:
        if reply := await self.misbehave(server, "data", env.rcpt_tos):
            return reply
        data: bytes = env.original_content or b""
        message_id = BytesHeaderParser().parsebytes(data)["Message-ID"]
        options = list(env.mail_options)
        # After STARTTLS, aiosmtpd's transport is the TLS one; with implicit TLS it always was.
        assert server.transport is not None
        tls = server.transport.get_extra_info("sslcontext") is not None
        assert isinstance(server, _ScriptedSMTP)
        received = Received(
            env.mail_from or "", list(env.rcpt_tos), data, message_id, options, tls,
            pipelined=server.envelope_in_one_packet,
        )  # fmt: skip
        if self.on_accept is not None:
            self.on_accept(received)
        self.messages.append(received)
        return "250 2.0.0 OK queued"


async def _hang_up(smtp: SMTP) -> NoReturn:
    assert smtp.transport is not None
    smtp.transport.close()
    await asyncio.Event().wait()  # connection_lost() cancels this command's handler
    raise AssertionError("unreachable")


def _set(addresses: Addresses) -> frozenset[str] | None:
    return None if addresses is None else frozenset(addresses)


class _ScriptedSMTP(SMTP):
    def __init__(self, owner: SmtpServer, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(
            owner,  # the handler: its handle_* methods are the hooks
            hostname="localhost",  # else each connection calls socket.getfqdn()
            loop=loop,
            enable_SMTPUTF8=owner.smtputf8,
            auth_require_tls=False,
            authenticator=owner.authenticate,
            # None under implicit TLS: no STARTTLS inside a session that is already encrypted.
            tls_context=None if owner.implicit_tls else owner.tls_context,
        )
        self.owner = owner
        self.envelope_in_one_packet = False

    def data_received(self, data: bytes) -> None:
        # A pipelining client writes MAIL, RCPT and DATA at once; on loopback they arrive so.
        if data.startswith(b"MAIL FROM:"):
            self.envelope_in_one_packet = data.endswith(b"DATA\r\n") and b"\r\nRCPT TO:" in data
        super().data_received(data)

    async def smtp_DATA(self, arg: str) -> None:
        if self.owner.data_without_recipients and self.envelope and not self.envelope.rcpt_tos:
            self.envelope.rcpt_tos.append("nobody@example.org")  # so that aiosmtpd says 354
        await super().smtp_DATA(arg)

    async def _handle_client(self) -> None:
        # aiosmtpd has no hook before its greeting: connect faults go here.
        await self.owner.misbehave(self, "connect")
        await super()._handle_client()

    def connection_lost(self, error: Exception | None) -> None:
        self.owner._live.discard(self)
        super().connection_lost(error)


@pytest.fixture
def start_smtp_server() -> Iterator[Callable[..., SmtpServer]]:
    """Starts servers made with SmtpServer's options (e.g. TLS); all stopped afterwards."""
    servers: list[SmtpServer] = []

    def start(**options: Any) -> SmtpServer:
        server = SmtpServer(**options)
        server.start()
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def smtp_server(start_smtp_server: Callable[..., SmtpServer]) -> SmtpServer:
    """A fresh server per test, stopped afterwards (faults, messages and counts start empty)."""
    return start_smtp_server()


@pytest.fixture(params=[True, False], ids=["pipelining", "no pipelining"])
def relay(
    request: pytest.FixtureRequest, start_smtp_server: Callable[..., SmtpServer]
) -> SmtpServer:
    """A fresh server that offers PIPELINING, then one that does not: a test taking this fixture
    runs against both, so the pipelined and the plain path must each pass it."""
    return start_smtp_server(pipelining=request.param)
