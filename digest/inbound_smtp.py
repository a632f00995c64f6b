"""`digest serve`'s inbound SMTP (aiosmtpd): bounces, complaints and mailto unsubscribes as they
come back to DIGEST_BOUNCE_ADDRESS and DIGEST_UNSUBSCRIBE_ADDRESS, read by inbound.Reader and
taken by Services.take_notices, as `digest inbound import` takes them from files.

Only those addresses, tagged, receive (550 for any other recipient); a mail over
DIGEST_INBOUND_MAX_BYTES gets 552, a connection past DIGEST_INBOUND_MAX_CONNECTIONS 421. A mail
taken gets 250 whatever it says, so that its sender never retries it; a failure of ours (the
database down) gets 451, so that it does. Nothing here answers or sends a mail: a bounce about a
bounce cannot loop. Each refused or failed mail is one log line.

It runs on an event loop of its own, in a thread, beside uvicorn's: a flood of mail never holds up
a page, and the web's shutdown never waits on an SMTP session.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import AnyStr

from aiosmtpd.smtp import SMTP, Envelope, Session

from digest.app import Services
from digest.domain import Clock
from digest.errors import DigestError, InvalidInput
from digest.inbound import Mailboxes
from digest.text import one_line

log = logging.getLogger("digest.inbound_smtp")
TAKEN = "250 2.0.0 taken"
NO_SUCH_MAILBOX = "550 5.1.1 no such mailbox here"
TRY_AGAIN = "451 4.3.0 try again later"
TOO_MANY = "421 4.7.0 too many connections, try later"
BACKLOG = 100  # connections the kernel queues before we accept them
IDENT = "digest"  # after the host name in the greeting, instead of aiosmtpd's version


class _Handler:
    """aiosmtpd's hooks: who may receive a mail (RCPT), and what one does (DATA)."""

    def __init__(self, services: Services, clock: Clock, mailboxes: Mailboxes) -> None:
        self._services = services
        self._reader = services.inbound_reader()
        self._clock = clock
        self._mailboxes = mailboxes

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if not self._mailboxes.ours(address):
            _refused(session, NO_SUCH_MAILBOX, f"a mail to {address}")
            return NO_SUCH_MAILBOX
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        recipients = list(envelope.rcpt_tos)
        try:
            await asyncio.to_thread(self._take, recipients, envelope.original_content or b"")
        except DigestError as exc:
            _refused(session, TRY_AGAIN, f"a mail to {', '.join(recipients)} not taken: {exc}")
            return TRY_AGAIN
        return TAKEN

    def _take(self, recipients: Sequence[str], raw: bytes) -> None:
        notices = self._reader.notices(raw, recipients, source="smtp")
        if notices:
            self._services.take_notices(notices, self._clock())


class _Connections:
    """The sessions open at once; touched only on the server's event loop, so without a lock."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open: set[_Session] = set()

    def close_all(self) -> None:
        for session in list(self.open):
            if session.transport is not None:
                session.transport.close()


class _Session(SMTP):
    """aiosmtpd's protocol, one a connection, counted: past the limit, 421 and closed at once."""

    def __init__(
        self,
        handler: _Handler,
        connections: _Connections,
        loop: asyncio.AbstractEventLoop,
        max_bytes: int,
        hostname: str,
    ) -> None:
        super().__init__(
            handler,
            data_size_limit=max_bytes,
            enable_SMTPUTF8=True,  # an internationalised bounce is still a bounce
            hostname=hostname,
            ident=IDENT,
            loop=loop,
        )
        self._connections = connections

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if len(self._connections.open) >= self._connections.limit:
            peer = transport.get_extra_info("peername")
            log.warning(
                "inbound SMTP from %s refused (421): %d connections open",
                _host(peer),
                len(self._connections.open),
            )
            if isinstance(transport, asyncio.WriteTransport):
                transport.write(f"{TOO_MANY}\r\n".encode())
            transport.close()
            return
        self._connections.open.add(self)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self not in self._connections.open:
            return  # refused in connection_made: aiosmtpd never started on it
        self._connections.open.discard(self)
        super().connection_lost(error)

    async def push(self, status: AnyStr) -> None:
        # aiosmtpd refuses a mail over data_size_limit itself (at MAIL's SIZE or during DATA):
        # its 552 is the one refusal no hook of ours sees.
        code = status[:3]
        if code in ("552", b"552"):
            _refused(self.session, "552", f"a mail over {self.data_size_limit:,} bytes")
        await super().push(status)


def _host(peer: object) -> str:
    return str(peer[0]) if isinstance(peer, tuple) and peer else str(peer)


def _refused(session: Session | None, reply: str, what: str) -> None:
    peer = None if session is None else session.peer
    log.warning("inbound SMTP from %s refused (%s): %s", _host(peer), reply[:3], one_line(what))


@contextmanager
def receiving(services: Services, clock: Clock, host: str, port: int) -> Iterator[None]:
    """Inbound SMTP on host:port until the block ends. A port that is taken (or cannot be
    listened on) is an InvalidInput at once, before anything else starts."""
    settings = services.settings
    mailboxes = Mailboxes(settings.bounce_address, settings.unsubscribe_address)
    handler = _Handler(services, clock, mailboxes)
    connections = _Connections(settings.inbound_max_connections)
    # The greeting names the addresses' domain: aiosmtpd's default asks DNS for this host's name.
    domain = next(
        (a.rpartition("@")[2] for a in (mailboxes.bounce, mailboxes.unsubscribe) if a), "localhost"
    )
    loop = asyncio.new_event_loop()

    def session() -> _Session:
        return _Session(handler, connections, loop, settings.inbound_max_bytes, domain)

    listener = _listening(host, port)
    # aiosmtpd logs every command at INFO: a dozen lines a mail would bury the daemon's own.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    stopping = loop.create_future()
    thread = threading.Thread(
        target=loop.run_until_complete,
        args=(_serve(listener, session, connections, stopping),),
        name="inbound-smtp",
        daemon=True,
    )
    thread.start()
    try:
        yield
    finally:
        loop.call_soon_threadsafe(stopping.set_result, None)
        thread.join()
        loop.close()


async def _serve(
    listener: socket.socket,
    session: Callable[[], _Session],
    connections: _Connections,
    stopping: asyncio.Future[None],
) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(session, sock=listener)
    try:
        await stopping
    finally:
        server.close()
        connections.close_all()
        await server.wait_closed()
        sessions = asyncio.all_tasks() - {asyncio.current_task()}
        for task in sessions:
            task.cancel()
        await asyncio.gather(*sessions, return_exceptions=True)
        # A mail being taken when the daemon stops is taken to the end (its sender, unanswered,
        # sends it again, and it is taken once): its thread is waited for.
        await loop.shutdown_default_executor()


def _listening(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    # As uvicorn binds: a port left in TIME_WAIT by the last run is free.
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
        listener.listen(BACKLOG)
    except OSError as exc:
        listener.close()
        if exc.errno == errno.EADDRINUSE:
            raise InvalidInput(
                f"inbound SMTP port {port} on {host} is taken; set another DIGEST_INBOUND_PORT"
            ) from exc
        raise InvalidInput(
            f"cannot take inbound SMTP on {host}:{port}: {exc.strerror or exc}"
        ) from exc
    return listener
