"""A TCP proxy on 127.0.0.1 that delays every byte by a fixed time each way: a relay far away.

    .venv/bin/python bench/relay.py LISTEN_PORT TARGET_PORT DELAY_MS

Each chunk read from one side is written to the other DELAY_MS later, in order, while later chunks
keep arriving: latency without a bandwidth cap, as a long fat link has. On loopback SMTP's round
trips cost nothing; through this proxy each one costs 2 × DELAY_MS, which is what the connection
count and PIPELINING are for. Prints `ready` once it listens.
"""

from __future__ import annotations

import argparse
import asyncio

CHUNK = 1 << 16


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    loop = asyncio.get_running_loop()
    due: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def forward() -> None:
        while True:
            at, data = await due.get()
            await asyncio.sleep(at - loop.time())
            if not data:  # the other side finished sending: pass the half-close on
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    forwarding = asyncio.create_task(forward())
    try:
        while data := await reader.read(CHUNK):
            due.put_nowait((loop.time() + delay, data))
        due.put_nowait((loop.time() + delay, b""))
        await forwarding
    finally:
        forwarding.cancel()


async def _connection(
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    target: int,
    delay: float,
) -> None:
    try:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", target)
    except OSError:
        client_writer.close()
        return
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(_pump(client_reader, server_writer, delay))
            group.create_task(_pump(server_reader, client_writer, delay))
    except* OSError:
        pass  # one side went away: the session is over either way
    finally:
        client_writer.close()
        server_writer.close()


async def serve(port: int, target: int, delay: float) -> None:
    server = await asyncio.start_server(
        lambda r, w: _connection(r, w, target, delay), "127.0.0.1", port
    )
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("port", type=int)
    parser.add_argument("target", type=int)
    parser.add_argument("delay_ms", type=float)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.target, args.delay_ms / 1000))


if __name__ == "__main__":
    main()
