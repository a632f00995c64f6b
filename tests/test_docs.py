"""The docs hold to the code: the fault table names real tests and every guarantee test, and the
architecture map names every module and only real functions."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TABLE = ROOT / "docs" / "guarantees.md"
# The files whose every test proves a row of the table.
GUARANTEE_TESTS = ("test_faults.py", "test_crash.py", "test_concurrency.py", "test_hostile.py")
MAP = ROOT / "docs" / "architecture.md"
PACKAGE = ROOT / "digest"
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


def test_the_readme_links_the_architecture_map() -> None:
    assert "(docs/architecture.md)" in (ROOT / "README.md").read_text()


def _modules() -> set[str]:
    """Every module of digest/ as the map writes it: `store`, `demo/catcher`."""
    names = set()
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE).with_suffix("")
        if relative.parts[0] in ("migrations", "samples") or relative.name in (
            "__init__",
            "__main__",
        ):
            continue
        names.add("/".join(relative.parts))
    return names


def test_the_architecture_map_names_every_module_and_no_other() -> None:
    text = MAP.read_text()
    named = set(re.findall(r"\b([a-z_]+(?:/[a-z_]+)?)\.py\b", text))
    named |= {f"demo/{m}" for m in re.findall(r"`demo/([a-z_]+)`", text)}
    assert _modules() - named == set(), "modules the map does not name"
    assert {n for n in named if "/" not in n} - {m for m in _modules() if "/" not in m} == set()


def test_every_function_the_architecture_walks_name_exists() -> None:
    import importlib

    walked = re.findall(r"`(?:(\w+)\.)?([A-Z]\w+)\.(\w+)`", MAP.read_text())
    assert len(walked) >= 10
    for module_name, class_name, attribute in walked:
        found = [
            getattr(module, class_name)
            for module in map(importlib.import_module, _candidates(module_name))
            if hasattr(module, class_name)
        ]
        assert found, f"{class_name} is in no module of digest"
        assert any(hasattr(cls, attribute) for cls in found), f"{class_name}.{attribute}"


def _candidates(module_name: str) -> list[str]:
    if module_name:
        return [f"digest.{module_name}"]
    return [f"digest.{m.replace('/', '.')}" for m in sorted(_modules())]
