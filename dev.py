#!/usr/bin/env python3
"""Set up and check digest with nothing but Python 3.11+ on the machine.

    python3 dev.py demo     the daemon on sample data at http://127.0.0.1:8000/ (Ctrl-C stops it);
                            digest demo's options follow, e.g. --port 8001
    python3 dev.py check    ruff (format and lint), mypy --strict, and the whole test suite

The first run makes .venv/ and installs the pinned dependencies (requirements.lock) into it;
later runs reuse it until pyproject.toml or the lock changes.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".digest-installed"
CHECKS = (
    ("ruff format", ["ruff", "format", "--check", "."]),
    ("ruff check", ["ruff", "check", "."]),
    ("mypy", ["mypy", "--strict", "digest"]),
    ("hadolint", ["hadolint", "Dockerfile"]),
    ("pytest", ["pytest"]),
)


def _fingerprint() -> str:
    digest = hashlib.sha256()
    for name in ("pyproject.toml", "requirements.lock"):
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


def ensure_environment() -> None:
    if STAMP.exists() and STAMP.read_text() == _fingerprint():
        return
    if not (BIN / "python").exists():
        print("creating .venv ...", flush=True)
        venv.create(VENV, with_pip=True)
    print("installing pinned dependencies into .venv (first run only) ...", flush=True)
    pip = [str(BIN / "python"), "-m", "pip", "--disable-pip-version-check", "install", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-c", "requirements.lock", "-e", ".[dev]"], check=True, cwd=ROOT)
    STAMP.write_text(_fingerprint())


def run(args: list[str]) -> int:
    return subprocess.run([str(BIN / args[0]), *args[1:]], cwd=ROOT, check=False).returncode


def check(extra: list[str]) -> int:
    failed = []
    for name, args in CHECKS:
        print(f"== {name}", flush=True)
        if run(args + extra if name == "pytest" else args) != 0:
            failed.append(name)
    print("== all checks passed" if not failed else f"== failed: {', '.join(failed)}", flush=True)
    return 1 if failed else 0


def main(argv: list[str]) -> int:
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py must run on an old Python to say so
        print("digest needs Python 3.11 or newer", file=sys.stderr)
        return 2
    if not argv or argv[0] not in ("demo", "check"):
        print(__doc__, file=sys.stderr)
        return 2
    ensure_environment()
    if argv[0] == "demo":
        # Ctrl-C reaches the demo too, which stops itself cleanly: wait for it instead of dying
        # with a traceback. A handler, not SIG_IGN, which the demo would inherit.
        signal.signal(signal.SIGINT, lambda sig, frame: None)
        return run(["digest", "demo", *argv[1:]])
    return check(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
