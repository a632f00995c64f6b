"""docs/guarantees.md is the operator's fault table: it names real tests, and every guarantee test."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TABLE = ROOT / "docs" / "guarantees.md"
# The files whose every test proves a row of the table.
GUARANTEE_TESTS = ("test_faults.py", "test_crash.py", "test_concurrency.py", "test_hostile.py")
NAMED = re.compile(r"\btest_\w+\b(?!\.py)")
DEFINED = re.compile(r"^(?:async )?def (test_\w+)", re.MULTILINE)


def defined(*files: Path) -> set[str]:
    return {name for file in files for name in DEFINED.findall(file.read_text())}


def test_every_test_the_fault_table_names_exists() -> None:
    named = set(NAMED.findall(TABLE.read_text()))
    assert named - defined(*(ROOT / "tests").glob("test_*.py")) == set()


def test_the_fault_table_names_every_guarantee_test() -> None:
    proofs = defined(*(ROOT / "tests" / name for name in GUARANTEE_TESTS))
    checks_of_docs = {name for name in proofs if "readme" in name}
    assert proofs - checks_of_docs - set(NAMED.findall(TABLE.read_text())) == set()


def test_the_readme_links_the_fault_table() -> None:
    assert "(docs/guarantees.md)" in (ROOT / "README.md").read_text()
