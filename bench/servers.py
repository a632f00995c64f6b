"""The benchmark's servers, each a process of its own: the SMTP sink and the delaying relay."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import postfix

BENCH = Path(__file__).resolve().parent


def script(name: str, *args: str) -> subprocess.Popen[bytes]:
    """Start bench/NAME with args and wait for its `ready`."""
    process = subprocess.Popen([sys.executable, str(BENCH / name), *args], stdout=subprocess.PIPE)
    assert process.stdout is not None
    if process.stdout.readline().strip() != b"ready":
        process.kill()
        raise RuntimeError(f"bench/{name} did not start")
    return process


def sink(tools: postfix.Tools | None, port: int, *, pipelining: bool) -> subprocess.Popen[bytes]:
    """Postfix's smtp-sink when its tools are here, else bench/sink.py."""
    if tools is not None:
        return tools.start_sink(port, pipelining=pipelining)
    return script("sink.py", str(port), *([] if pipelining else ["--no-pipelining"]))


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait()
    if process.stdout is not None:
        process.stdout.close()
