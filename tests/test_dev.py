"""dev.py, the README's two commands: `demo` installs what digest needs, `check` adds the test tools."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from processes import ROOT

sys.path.insert(0, str(ROOT))  # dev.py lives at the root, outside the package
import dev

LOCK = "fingerprint-of-pyproject-and-lock"


@pytest.mark.parametrize(
    ("stamp", "wanted", "installs"),
    [
        (None, dev.RUNTIME, dev.RUNTIME),  # the first demo: no test tools
        (None, dev.DEV, dev.DEV),  # the first check
        (f"{LOCK}\n{dev.RUNTIME}", dev.RUNTIME, None),
        (f"{LOCK}\n{dev.RUNTIME}", dev.DEV, dev.DEV),  # check after demo: the rest
        (f"{LOCK}\n{dev.DEV}", dev.DEV, None),
        (f"{LOCK}\n{dev.DEV}", dev.RUNTIME, None),  # demo after check: nothing
        (LOCK, dev.RUNTIME, None),  # a stamp from before the split: the dev set
        (LOCK, dev.DEV, None),
        (f"old-lock\n{dev.DEV}", dev.RUNTIME, dev.RUNTIME),  # the lock changed
        (f"old-lock\n{dev.RUNTIME}", dev.DEV, dev.DEV),
        ("old-lock", dev.DEV, dev.DEV),
    ],
)
def test_the_stamp_decides_what_pip_installs(
    stamp: str | None, wanted: str, installs: str | None
) -> None:
    assert dev.to_install(stamp, LOCK, wanted) == installs


def test_demo_installs_only_the_runtime_then_check_adds_the_tools_then_neither_repeats(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    venv = tmp_path / ".venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").touch()  # the venv exists; only what pip is asked for is watched
    monkeypatch.setattr(dev, "BIN", venv / "bin")
    monkeypatch.setattr(dev, "STAMP", venv / ".digest-installed")
    installed: list[tuple[str, ...]] = []
    monkeypatch.setattr(dev, "_pip", lambda *args: installed.append(args))
    for wanted in (dev.RUNTIME, dev.RUNTIME, dev.DEV, dev.DEV, dev.RUNTIME):
        dev.ensure_environment(wanted)
    assert installed == [
        ("-c", "requirements.lock", "-e", "."),
        ("-c", "requirements.lock", "-e", ".[dev]"),
    ]


def test_check_types_the_tests_as_strictly_as_the_package() -> None:
    assert {"--strict", "digest", "tests"} <= set(dict(dev.CHECKS)["mypy"])


def test_check_passes_its_extra_arguments_to_pytest_which_reports_coverage_of_digest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ran: list[list[str]] = []

    def run(args: list[str]) -> int:
        ran.append(args)
        return 0

    monkeypatch.setattr(dev, "run", run)
    assert dev.check(["-k", "serve"]) == 0
    [pytest_args] = [args for args in ran if args[0] == "pytest"]
    assert pytest_args[-2:] == ["-k", "serve"]
    assert "--cov=digest" in pytest_args
    assert not [arg for arg in pytest_args if arg.startswith("--cov-fail-under")]  # not a gate


def test_the_checks_pytest_prints_the_lines_of_digest_no_test_reached(tmp_path: Path) -> None:
    [pytest_args] = [args for name, args in dev.CHECKS if name == "pytest"]
    selected = ["tests/test_domain.py", "-p", "no:cacheprovider", "-q", "-k", "weekly"]
    result = subprocess.run(
        [str(dev.BIN / pytest_args[0]), *pytest_args[1:], *selected],
        cwd=ROOT, capture_output=True, text=True, check=False,
        env={**os.environ, "COVERAGE_FILE": str(tmp_path / ".coverage")},  # not the check's own
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^digest/\S+\.py\s+\d+\s+\d+\s+\d+%\s+\d", result.stdout, re.M), result.stdout
