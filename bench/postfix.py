"""Postfix's C test tools, smtp-source and smtp-sink: the wire's limit on this machine, when present.

They ship in Debian's `postfix` package. Installing that package also configures and may start a
mail server; the tools alone need only the package's files, unpacked anywhere:

    apt-get download postfix && dpkg-deb -x postfix_*.deb /opt/postfix
    .venv/bin/python bench/run.py --postfix /opt/postfix

(`apt-get install postfix` puts them in /usr/sbin, where they are found without --postfix.)
"""

from __future__ import annotations

import os
import resource
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

INSTALL = (
    "smtp-source/smtp-sink not found: only digest's own figures follow. They ship in Debian's "
    "postfix package; without installing a mail server: apt-get download postfix && "
    "dpkg-deb -x postfix_*.deb /opt/postfix, then --postfix /opt/postfix (see bench/postfix.py)"
)
BACKLOG = "256"
PATIENCE = 10.0  # seconds smtp-sink gets to listen


@dataclass(frozen=True, slots=True)
class Tools:
    smtp_source: Path
    smtp_sink: Path
    libraries: Path | None  # the unpacked package's /usr/lib/postfix, which the tools link against

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.libraries is not None:
            env["LD_LIBRARY_PATH"] = str(self.libraries)
        return env

    def start_sink(self, port: int, *, pipelining: bool) -> subprocess.Popen[bytes]:
        command = [str(self.smtp_sink)]
        if not pipelining:
            command.append("-p")
        if os.geteuid() == 0:  # smtp-sink refuses to run as root without a user to become
            command += ["-u", "nobody"]
        command += [f"127.0.0.1:{port}", BACKLOG]
        sink = subprocess.Popen(command, env=self._environment(), stdout=subprocess.DEVNULL)
        _wait_listening(port, sink)
        return sink

    def run_source(self, port: int, message: Path, messages: int, sessions: int) -> Source:
        """Send `messages` copies of the message file over `sessions` reused connections."""
        command = [
            str(self.smtp_source),
            "-d",  # reuse each connection
            "-s", str(sessions),
            "-m", str(messages),
            "-F", str(message),
            "-f", "digest@miasfeed.example",
            "-t", "reader@example.org",
            "-M", "bench.example",
            f"127.0.0.1:{port}",
        ]  # fmt: skip
        started = time.monotonic()
        process = subprocess.Popen(command, env=self._environment())
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        wall = time.monotonic() - started
        if process.returncode != 0:
            raise RuntimeError(f"smtp-source exited with {process.returncode}")
        return Source(wall, usage)


@dataclass(frozen=True, slots=True)
class Source:
    wall: float
    usage: resource.struct_rusage


def find(root: Path | None) -> Tools | None:
    """The tools under an unpacked postfix package's root, or in /usr/sbin or on PATH."""
    if root is not None:
        libraries = root / "usr/lib/postfix"
        tools = Tools(
            root / "usr/sbin/smtp-source",
            root / "usr/sbin/smtp-sink",
            libraries if libraries.is_dir() else None,
        )
        return tools if tools.smtp_source.is_file() and tools.smtp_sink.is_file() else None
    found = [
        shutil.which(name) or shutil.which(name, path="/usr/sbin")
        for name in ("smtp-source", "smtp-sink")
    ]
    source, sink = found
    return Tools(Path(source), Path(sink), None) if source and sink else None


def plain_message(wire: bytes) -> bytes:
    """smtp-source -F appends CRLF to each line and dot-stuffs: give it plain lines."""
    return wire.replace(b"\r\n", b"\n")


def _wait_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"smtp-sink exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            time.sleep(0.05)
        else:
            return
    process.kill()
    raise RuntimeError(f"smtp-sink did not listen on port {port} within {PATIENCE:g} s")
