"""A minimal SMTP sink for the benchmark: accepts everything, keeps nothing (or the first message).

    .venv/bin/python bench/sink.py PORT [--no-pipelining] [--keep FILE]

Just enough of RFC 5321 for our sender (EHLO, MAIL, RCPT, DATA, RSET, NOOP, QUIT), so the sink costs
far less than the sender it measures. It answers each command line as it reads it, so a client that
pipelines (RFC 2920) gets its replies in order. Run it in its own process; it prints `ready` once
it listens. Postfix's smtp-sink, in C, costs less still: bench/run.py prefers it when installed.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path


class Sink:
    def __init__(self, pipelining: bool, keep: Path | None) -> None:
        extensions = [b"8BITMIME", b"SMTPUTF8"] + ([b"PIPELINING"] if pipelining else [])
        lines = [b"sink", *extensions]
        self._ehlo = b"".join(b"250-" + line + b"\r\n" for line in lines[:-1])
        self._ehlo += b"250 " + lines[-1] + b"\r\n"
        self._keep = keep

    async def session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 sink ready\r\n")
        try:
            while line := await reader.readline():
                verb = line[:4].upper()
                if verb == b"EHLO":
                    writer.write(self._ehlo)
                elif verb == b"DATA":
                    writer.write(b"354 go on\r\n")
                    await writer.drain()
                    data = await reader.readuntil(b"\r\n.\r\n")
                    self._kept(data)
                    writer.write(b"250 kept\r\n")
                elif verb == b"QUIT":
                    writer.write(b"221 bye\r\n")
                    break
                else:
                    writer.write(b"250 ok\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    def _kept(self, data: bytes) -> None:
        """Write the first message as it was meant (dot-stuffing undone), for smtp-source -F."""
        if self._keep is None:
            return
        message = data[: -len(b".\r\n")].replace(b"\r\n..", b"\r\n.")
        self._keep.write_bytes(message[1:] if message.startswith(b"..") else message)
        self._keep = None


async def serve(port: int, sink: Sink) -> None:
    server = await asyncio.start_server(sink.session, "127.0.0.1", port, limit=1 << 24)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("port", type=int)
    parser.add_argument(
        "--pipelining",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="advertise PIPELINING (RFC 2920) in the EHLO reply",
    )
    parser.add_argument("--keep", type=Path, help="write the first message received to this file")
    args = parser.parse_args()
    asyncio.run(serve(args.port, Sink(args.pipelining, args.keep)))


if __name__ == "__main__":
    main()
