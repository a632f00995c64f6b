"""Throwaway PostgreSQL cluster for the test suite (also a pytest plugin).

Importable without pytest: the ``PgCluster`` class and helpers need only the
standard library (plus psycopg for ``create_database``). When pytest is
importable, this module also defines the session-scoped ``pg_cluster`` fixture
and a terminal-summary hook; load it with ``pytest_plugins = ["pg_cluster"]``.

PYTEST_DONT_REWRITE: lets a test module import this module before listing it in
``pytest_plugins`` without an "already imported, cannot be rewritten" warning.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any, Self

__all__ = [
    "PgCluster",
    "PgUnavailable",
    "find_pg_bin",
    "unavailable_action",
]

_PG_TOOLS = ("initdb", "pg_ctl", "postgres")
_UNPRIVILEGED_USERS = ("postgres", "nobody")
_START_ATTEMPTS = 3  # a new port each time, in case another process grabbed ours
_MAX_REASON = 300


class PgUnavailable(RuntimeError):
    """PostgreSQL could not be started; ``reason`` is a single line."""

    def __init__(self, reason: str) -> None:
        self.reason = _one_line(reason)
        super().__init__(self.reason)


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= _MAX_REASON else line[: _MAX_REASON - 3] + "..."


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def _has_tools(directory: Path) -> bool:
    return all((directory / tool).is_file() for tool in _PG_TOOLS)


def _version_key(directory: Path) -> tuple[int, ...]:
    # /usr/lib/postgresql/<version>/bin
    try:
        return tuple(int(part) for part in directory.parent.name.split("."))
    except ValueError:
        return (-1,)


def find_pg_bin() -> Path | None:
    """Directory holding initdb/pg_ctl/postgres, or None.

    ``PG_BIN`` wins when set (even if it turns out to be wrong, so a bad setting
    is reported rather than silently ignored); then ``pg_ctl`` on PATH (symlinks
    resolved: Debian's /usr/bin/pg_ctl is a wrapper script, skipped unless its
    directory also holds initdb and postgres); then the highest
    /usr/lib/postgresql/*/bin.
    """
    env_bin = os.environ.get("PG_BIN")
    if env_bin:
        return Path(env_bin)
    on_path = shutil.which("pg_ctl")
    if on_path:
        directory = Path(on_path).resolve().parent
        if _has_tools(directory):
            return directory
    candidates = [d for d in Path("/usr/lib/postgresql").glob("*/bin") if _has_tools(d)]
    if candidates:
        return max(candidates, key=_version_key)
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _unprivileged_user() -> pwd.struct_passwd | None:
    """The account to run the server as: None means "as ourselves"."""
    if os.geteuid() != 0:
        return None
    wanted = os.environ.get("PG_CLUSTER_USER")
    for name in (wanted,) if wanted else _UNPRIVILEGED_USERS:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise PgUnavailable(
        "running as root and no unprivileged user "
        f"({wanted or ' or '.join(_UNPRIVILEGED_USERS)}) exists to run postgres"
    )


# Started next to the server: waits for EOF on stdin, which happens when the owning
# process closes the pipe (normal stop) or dies in any way, even SIGKILL or os._exit
# (pytest-timeout's thread method), when atexit hooks do not run. It then shuts the
# postmaster down (SIGQUIT = immediate shutdown) and removes the temp dir.
_WATCHDOG = r"""
import os, shutil, signal, sys, time
root, pidfile = sys.argv[1], sys.argv[2]
sys.stdin.buffer.read()
try:
    with open(pidfile) as f:
        pid = int(f.readline())
    os.kill(pid, signal.SIGQUIT)
    # Like pg_ctl: the postmaster removes its pid file on exit. (Probing the pid
    # is unreliable: with no reaping init it lingers as a zombie.)
    for _ in range(200):
        time.sleep(0.05)
        if not os.path.exists(pidfile):
            break
except (OSError, ValueError):
    pass
shutil.rmtree(root, ignore_errors=True)
"""

_live: set[PgCluster] = set()
_live_lock = threading.Lock()


@atexit.register
def _stop_live_clusters() -> None:
    with _live_lock:
        clusters = list(_live)
    for cluster in clusters:
        cluster.stop()


class PgCluster:
    """A private PostgreSQL server on 127.0.0.1 with trust auth for user ``postgres``.

    Use as a context manager, or call ``start()``/``stop()``. ``start()`` raises
    ``PgUnavailable`` (and leaves nothing behind) when the server cannot be started.
    """

    def __init__(self, pg_bin: Path | None = None) -> None:
        self._pg_bin = pg_bin
        self.port: int | None = None
        self.root: Path | None = None
        self._user: pwd.struct_passwd | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None

    # -- public API ---------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        return self._require_root() / "data"

    @property
    def log_file(self) -> Path:
        return self._require_root() / "log"

    def url(self, dbname: str = "postgres") -> str:
        if self.port is None:
            raise RuntimeError("PgCluster is not running")
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        """CREATE DATABASE ``name``; return its SQLAlchemy URL."""
        import psycopg
        from psycopg import sql

        if self.port is None:
            raise RuntimeError("PgCluster is not running")
        with psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user="postgres",
            dbname="postgres",
            autocommit=True,
            connect_timeout=10,
        ) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def start(self) -> Self:
        if self.root is not None:
            raise RuntimeError("PgCluster already started")
        try:
            self._start()
        except PgUnavailable:
            self.stop()
            raise
        except Exception as exc:  # anything unexpected is still "unavailable"
            self.stop()
            raise PgUnavailable(f"{type(exc).__name__}: {exc}") from exc
        except BaseException:  # KeyboardInterrupt etc.: clean up, re-raise as is
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server (immediate mode) and remove the temp dir. Idempotent."""
        root = self.root
        if root is None:
            return
        try:
            if (self.data_dir / "postmaster.pid").exists():
                # Best effort: if this fails, the watchdog below still kills it.
                with contextlib.suppress(PgUnavailable):
                    self._run("pg_ctl", "stop", "-D", str(self.data_dir), "-m", "immediate", "-w")
        finally:
            shutil.rmtree(root, ignore_errors=True)
            self._stop_watchdog()
            self.root = None
            self.port = None
            with _live_lock:
                _live.discard(self)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- internals ----------------------------------------------------------

    def _require_root(self) -> Path:
        if self.root is None:
            raise RuntimeError("PgCluster is not running")
        return self.root

    def _tool(self, name: str) -> str:
        assert self._pg_bin is not None
        return str(self._pg_bin / name)

    def _run(self, tool: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        user = self._user
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"  # English, parseable messages
        extra: dict[str, Any] = {}
        if user is not None:
            env.update(HOME=str(self.root), USER=user.pw_name, LOGNAME=user.pw_name)
            extra = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        try:
            return self._spawn(tool, args, env, timeout, extra)
        except subprocess.TimeoutExpired:
            raise PgUnavailable(f"{tool} timed out after {timeout:g}s") from None
        except (OSError, subprocess.SubprocessError) as exc:
            raise PgUnavailable(f"{tool} could not be run: {exc}") from exc

    def _spawn(
        self,
        tool: str,
        args: tuple[str, ...],
        env: dict[str, str],
        timeout: float,
        extra: dict[str, Any],
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self._tool(tool), *args],
            cwd=self.root,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            # Own session: a terminal Ctrl-C must not reach the postmaster that
            # pg_ctl leaves behind; our stop()/atexit/watchdog shut it down.
            start_new_session=True,
            **extra,
        )

    def _start(self) -> None:
        if self._pg_bin is None:
            self._pg_bin = find_pg_bin()
        if self._pg_bin is None:
            raise PgUnavailable("initdb not found (set PG_BIN or put pg_ctl on PATH)")
        for tool in _PG_TOOLS:
            if not (self._pg_bin / tool).is_file():
                raise PgUnavailable(f"{tool} not found in {self._pg_bin}")
        self._user = _unprivileged_user()

        self.root = Path(tempfile.mkdtemp(prefix="pgcluster-"))
        with _live_lock:
            _live.add(self)
        self._start_watchdog()
        if self._user is not None:
            os.chown(self.root, self._user.pw_uid, self._user.pw_gid)
        self.root.chmod(0o700)

        result = self._run(
            "initdb",
            "-D", str(self.data_dir),
            "-A", "trust",
            "-U", "postgres",
            "--no-sync",
            "-E", "UTF8",
            "--locale=C",
        )  # fmt: skip
        if result.returncode != 0:
            raise PgUnavailable(f"initdb failed: {_last_line(result.stderr or result.stdout)}")

        for attempt in range(1, _START_ATTEMPTS + 1):
            port = _free_port()
            options = " ".join(
                [
                    "-h 127.0.0.1",
                    f"-p {port}",
                    f"-k {shlex.quote(str(self.root))}",
                    "-F",
                    "-c fsync=off",
                    "-c synchronous_commit=off",
                    "-c full_page_writes=off",
                    "-c max_connections=200",
                ]
            )
            result = self._run(
                "pg_ctl",
                "start",
                "-D", str(self.data_dir),
                "-l", str(self.log_file),
                "-w",
                "-t", "30",
                "-o", options,
                timeout=60,
            )  # fmt: skip
            if result.returncode == 0:
                self.port = port
                return
            log = self._read_log()
            if "could not bind" in log and attempt < _START_ATTEMPTS:
                # Lost the port race; make sure nothing half-started is left behind.
                self._run("pg_ctl", "stop", "-D", str(self.data_dir), "-m", "immediate")
                self.log_file.unlink(missing_ok=True)
                continue
            raise PgUnavailable(f"pg_ctl start failed: {self._failure_line(log, result)}")

    def _read_log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""

    @staticmethod
    def _failure_line(log: str, result: subprocess.CompletedProcess[str]) -> str:
        for line in reversed(log.splitlines()):
            if "FATAL" in line or "PANIC" in line or "ERROR" in line:
                return line.strip()
        return _last_line(log or result.stderr or result.stdout)

    def _start_watchdog(self) -> None:
        self._watchdog = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _WATCHDOG,
                str(self.root),
                str(self.data_dir / "postmaster.pid"),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def _stop_watchdog(self) -> None:
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is None:
            return
        assert watchdog.stdin is not None
        with contextlib.suppress(OSError):
            watchdog.stdin.close()
        try:
            watchdog.wait(timeout=10)
        except subprocess.TimeoutExpired:
            watchdog.kill()
            watchdog.wait()


# -- pytest plugin ------------------------------------------------------------

try:
    import pytest
except ImportError:  # pragma: no cover - plain import outside pytest
    pass
else:
    from unavailable import Requirement

    def _start_session_cluster(config: pytest.Config) -> PgCluster:
        """Start the session's cluster, or skip (fail under CI=true)."""
        cluster = PgCluster()
        try:
            return cluster.start()
        except PgUnavailable as exc:
            reason = exc.reason
        # Outside the except block, so no chained traceback is shown.
        return POSTGRES.refuse(config, reason)

    POSTGRES = Requirement(
        "PostgreSQL",
        "pg_cluster",
        "tests needing PostgreSQL",
        (__file__, _start_session_cluster.__code__.co_firstlineno),
    )
    unavailable_action = POSTGRES.action

    @pytest.fixture(scope="session")
    def pg_cluster(request: pytest.FixtureRequest) -> Iterator[PgCluster]:
        """One throwaway PostgreSQL cluster per test session."""
        cluster = _start_session_cluster(request.config)
        try:
            yield cluster
        finally:
            cluster.stop()

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        POSTGRES.fold_skip(item, report)
        return report

    def pytest_terminal_summary(
        terminalreporter: pytest.TerminalReporter, config: pytest.Config
    ) -> None:
        POSTGRES.summary(terminalreporter, config)
