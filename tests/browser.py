"""Headless Chromium for browser tests: Debian's own binary, driven by Playwright (a pytest plugin).

Playwright's wheel brings its driver but no browser: it launches the system Chromium
(``CHROMIUM_BIN``, else /usr/bin/chromium) and never downloads one. When Chromium, Playwright
or the launch is missing, tests using ``chromium`` skip with one line naming what is missing;
under CI=true they fail instead (as pg_cluster does), so CI never goes green by skipping.

Screenshots go to ``DIGEST_SCREENSHOTS`` when set, else a folder under pytest's tmp dir; the
run's summary prints where.

PYTEST_DONT_REWRITE: a test module may import this before listing it in pytest_plugins.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Generator, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from unavailable import Requirement

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Playwright

DEFAULT_CHROMIUM = "/usr/bin/chromium"
# Headless as root on a machine with no outside network: no sandbox (root), no GPU, and none of
# Chromium's background calls home, which this network refuses many at a time.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
LAUNCH_TIMEOUT_MS = 30_000
_MAX_REASON = 300

_SCREENSHOTS_KEY = pytest.StashKey[Path]()


class ChromiumUnavailable(RuntimeError):
    """Chromium could not be started; ``reason`` is a single line."""

    def __init__(self, reason: str) -> None:
        line = " ".join(reason.split())
        self.reason = line if len(line) <= _MAX_REASON else line[: _MAX_REASON - 3] + "..."
        super().__init__(self.reason)


def chromium_path(environ: Mapping[str, str] | None = None) -> str:
    """The Chromium binary to launch; a wrong CHROMIUM_BIN is reported, not silently ignored."""
    env = os.environ if environ is None else environ
    wanted = env.get("CHROMIUM_BIN") or DEFAULT_CHROMIUM
    found = shutil.which(wanted)
    if found is None:
        raise ChromiumUnavailable(
            f"{wanted} not found (apt-get install chromium, or set CHROMIUM_BIN)"
        )
    return found


def _launch_failure(message: str) -> str:
    """The line of Playwright's launch error (dozens of lines) that says why Chromium stopped."""
    # Chromium's own last complaint, e.g. "[pid=7][err] [7:7:1124/...:ERROR:zygote...] Running
    # as root without --no-sandbox is not supported.", without its log prefix.
    said: list[str] = re.findall(r"\[pid=\d+\]\[err\] (?:\[[^\]]*\] )?(.+)", message)
    if said:
        return said[-1]
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return lines[0] if lines else "(no message)"


def _launch() -> tuple[Playwright, Browser]:
    """Playwright's driver and a headless Chromium, or ChromiumUnavailable saying what is missing."""
    executable = chromium_path()
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError as exc:
        raise ChromiumUnavailable(
            f"the playwright package is missing ({exc}); "
            "pip install -c requirements.lock -e '.[dev]'"
        ) from None
    playwright = sync_playwright().start()
    try:
        browser = playwright.chromium.launch(
            executable_path=executable, args=list(CHROMIUM_ARGS), timeout=LAUNCH_TIMEOUT_MS
        )
    except Error as exc:
        playwright.stop()
        raise ChromiumUnavailable(
            f"{executable} did not start: {_launch_failure(str(exc))}"
        ) from None
    return playwright, browser


def _start_browser(config: pytest.Config) -> tuple[Playwright, Browser]:
    """Start a browser, or skip (fail under CI=true)."""
    try:
        return _launch()
    except ChromiumUnavailable as exc:
        reason = exc.reason
    # Outside the except block, so no chained traceback is shown.
    return CHROMIUM.refuse(config, reason)


CHROMIUM = Requirement(
    "Chromium", "browser", "browser tests", (__file__, _start_browser.__code__.co_firstlineno)
)
unavailable_action = CHROMIUM.action


@pytest.fixture(scope="module")
def chromium(request: pytest.FixtureRequest) -> Iterator[Browser]:
    """One headless Chromium per test module; each test opens its own context.

    Not per session: while Playwright's sync API is started, the main thread counts as inside
    a running event loop and every asyncio.run() elsewhere fails. Tests in a module using this
    must not call asyncio.run() themselves (the SMTP server's own loop, in its thread, is fine).
    """
    playwright, browser = _start_browser(request.config)
    try:
        yield browser
    finally:
        browser.close()
        playwright.stop()


@pytest.fixture(scope="session")
def screenshots(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where browser tests save their screenshots (DIGEST_SCREENSHOTS, else a tmp folder)."""
    chosen = os.environ.get("DIGEST_SCREENSHOTS")
    folder = Path(chosen).resolve() if chosen else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    request.config.stash[_SCREENSHOTS_KEY] = folder
    return folder


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    CHROMIUM.fold_skip(item, report)
    return report


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    CHROMIUM.summary(terminalreporter, config)
    folder = config.stash.get(_SCREENSHOTS_KEY, None)
    if folder is not None and any(folder.glob("*.png")):
        terminalreporter.write_line(f"browser screenshots: {folder}")
