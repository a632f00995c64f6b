#!/usr/bin/env python3
"""Set up and check digest with nothing but Python 3.11+ on the machine.

    python3 dev.py demo     the daemon on sample data at http://127.0.0.1:8000/ (Ctrl-C stops it);
                            digest demo's options follow, e.g. --port 8001
    python3 dev.py check    ruff (format and lint), mypy --strict, and the whole test suite with
                            the lines of digest/ it leaves unreached; pytest's options follow

The first run makes .venv/ and installs the pinned dependencies (requirements.lock) into it:
`demo` only what digest itself needs, `check` the test tools as well. Later runs reuse it until
pyproject.toml or the lock changes, or `check` needs the tools a `demo` did not install.
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
STAMP = VENV / ".digest-installed"  # the fingerprint, then the set it installed
RUNTIME, DEV = ".", ".[dev]"  # what pip installs for `demo`, and for `check`: DEV holds RUNTIME
CHECKS = (
    ("ruff format", ["ruff", "format", "--check", "."]),
    ("ruff check", ["ruff", "check", "."]),
    ("mypy", ["mypy", "--strict", "digest", "tests"]),  # a test helper typed loosely hides bugs too
    ("hadolint", ["hadolint", "Dockerfile"]),
    # Coverage of digest/ in-process, as a report to read and not a gate: the lines no test reaches,
    # per file. What the tests reach only through a spawned `digest` is not counted.
    ("pytest", ["pytest", "--cov=digest", "--cov-report=term-missing:skip-covered"]),
)


def _fingerprint() -> str:
    digest = hashlib.sha256()
    for name in ("pyproject.toml", "requirements.lock"):
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


def to_install(stamp: str | None, fingerprint: str, wanted: str) -> str | None:
    """The set pip must install so that wanted is there, or None when it already is.

    stamp is what the last install wrote (None: nothing installed yet). A stamp with no set names
    an install from before `demo` installed less, which was always the dev set.
    """
    if stamp is None:
        return wanted
    installed_for, _, installed = stamp.partition("\n")
    if installed_for == fingerprint and (wanted == RUNTIME or (installed or DEV) == DEV):
        return None
    return wanted


def ensure_environment(wanted: str = DEV) -> None:
    fingerprint = _fingerprint()
    needed = to_install(STAMP.read_text() if STAMP.exists() else None, fingerprint, wanted)
    if needed is None:
        return
    if not (BIN / "python").exists():
        print("creating .venv ...", flush=True)
        venv.create(VENV, with_pip=True)
        _pip("--upgrade", "pip")
    what = "digest's dependencies" if needed == RUNTIME else "digest's dependencies and test tools"
    print(f"installing {what} into .venv (pinned by requirements.lock) ...", flush=True)
    # pip skips what is already there: a `check` after a `demo` fetches only the test tools.
    _pip("-c", "requirements.lock", "-e", needed)
    STAMP.write_text(f"{fingerprint}\n{needed}")


def _pip(*args: str) -> None:
    pip = [str(BIN / "python"), "-m", "pip", "--disable-pip-version-check", "install", "-q"]
    subprocess.run([*pip, *args], check=True, cwd=ROOT)


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
    if argv[0] == "demo":
        ensure_environment(RUNTIME)
        # Ctrl-C reaches the demo too, which stops itself cleanly: wait for it instead of dying
        # with a traceback. A handler, not SIG_IGN, which the demo would inherit.
        signal.signal(signal.SIGINT, lambda sig, frame: None)
        return run(["digest", "demo", *argv[1:]])
    ensure_environment(DEV)
    return check(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
