"""Parts a machine may lack (PostgreSQL, Chromium): their tests skip with one line, or fail under CI=true.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal, NoReturn

import pytest


class Requirement:
    """One part the tests need; `where` is the (file, line) their skips are reported at."""

    def __init__(self, part: str, label: str, tests: str, where: tuple[str, int]) -> None:
        self._part = part  # "PostgreSQL"
        self._label = label  # "pg_cluster", the summary line's prefix
        self._tests = tests  # "tests needing PostgreSQL"
        self._where = where
        self._key = pytest.StashKey[str]()

    def action(
        self, reason: str, environ: Mapping[str, str] | None = None
    ) -> tuple[Literal["fail", "skip"], str]:
        """CI=true (exactly): fail, so CI never goes green by skipping; otherwise skip."""
        env = os.environ if environ is None else environ
        if env.get("CI") == "true":
            return "fail", f"{self._part} unavailable (CI=true, so failing): {reason}"
        return "skip", f"{self._part} unavailable: {reason}"

    def refuse(self, config: pytest.Config, reason: str) -> NoReturn:
        config.stash[self._key] = reason
        action, message = self.action(reason)
        if action == "fail":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)

    def fold_skip(self, item: pytest.Item, report: pytest.TestReport) -> None:
        """Report a fixture's skip at one place, not at each test, so ``-ra`` prints one line."""
        reason = item.config.stash.get(self._key, None)
        longrepr = report.longrepr
        if (
            reason is not None
            and report.when == "setup"
            and report.skipped
            and isinstance(longrepr, tuple)
            and str(longrepr[2]).endswith(self.action(reason)[1])
        ):
            report.longrepr = (*self._where, longrepr[2])

    def summary(self, terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
        reason = config.stash.get(self._key, None)
        if reason is None:
            return
        action, message = self.action(reason)
        verb = "errored" if action == "fail" else "were skipped"
        terminalreporter.write_line(
            f"{self._label}: {message} -- {self._tests} {verb}",
            yellow=action == "skip",
            red=action == "fail",
            bold=True,
        )
