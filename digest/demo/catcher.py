"""A local SMTP catcher (aiosmtpd): keeps every message it receives as an .eml file, and its HTML
part as an .html file a newcomer can open in a browser."""

from __future__ import annotations

import email
import email.policy
import re
import socket
import threading
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

UNSAFE_NAME = re.compile(r"[^A-Za-z0-9@._-]+")


def free_port(host: str = "127.0.0.1") -> int:
    # aiosmtpd cannot listen on port 0, so ask the kernel for a free one first.
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


class _SaveToFolder:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.saved: list[Path] = []
        self._lock = threading.Lock()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        message = email.message_from_bytes(raw, policy=email.policy.default)
        with self._lock:
            for recipient in envelope.rcpt_tos:
                stem = f"{len(self.saved) + 1:03d}-{UNSAFE_NAME.sub('_', recipient)}"
                # The .html first and each file whole: a reader of the folder (the demo's pages)
                # that sees an .eml can open its .html at once.
                if isinstance(message, EmailMessage):
                    html = message.get_body(preferencelist=("html",))
                    if html is not None:
                        _write(self.folder / f"{stem}.html", html.get_content().encode())
                eml = self.folder / f"{stem}.eml"
                _write(eml, raw)
                self.saved.append(eml)
        return "250 OK: kept"


def _write(path: Path, data: bytes) -> None:
    part = path.with_name(f"{path.name}.part")
    part.write_bytes(data)
    part.replace(path)


class Catcher:
    """`with Catcher(folder) as catcher:` listens on 127.0.0.1:catcher.port until the block ends."""

    def __init__(self, folder: Path, host: str = "127.0.0.1", port: int | None = None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.port = port or free_port(host)
        self._handler = _SaveToFolder(folder)
        self._controller = Controller(self._handler, hostname=host, port=self.port)

    def __enter__(self) -> Catcher:
        self._controller.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._controller.stop()
