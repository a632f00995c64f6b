"""The command line: typing mistakes, `--version`, `--help`, and the README naming every option."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata

import pytest
import typer.main
from processes import ROOT, run_entry_point

from digest.cli import cli, main

MISTAKES = {
    "unknown command": (("bogus",), "Usage: digest [OPTIONS] COMMAND", "No such command 'bogus'"),
    "unknown option": (("send", "--bogus"), "Usage: digest send [OPTIONS]", "--bogus"),
    "value outside a choice": (
        ("send", "--frequency", "hourly"),
        "Usage: digest send [OPTIONS]",
        "'hourly' is not one of 'daily', 'weekly', 'monthly'",
    ),
    "missing argument": (
        ("subscribers", "add"),
        "Usage: digest subscribers add [OPTIONS]",
        "Missing argument 'EMAIL'",
    ),
    "not a number": (
        ("articles", "list", "--limit", "abc"),
        "Usage: digest articles list [OPTIONS]",
        "'--limit'",
    ),
}


@pytest.mark.parametrize(("args", "usage", "problem"), MISTAKES.values(), ids=MISTAKES.keys())
def test_a_usage_mistake_gets_the_usage_line_and_one_line_naming_it_and_exit_2(
    args: tuple[str, ...], usage: str, problem: str
) -> None:
    result = run_entry_point(*args)

    assert result.code == 2
    assert result.out == ""
    lines = result.err.strip().splitlines()
    assert len(lines) <= 4, result.err
    assert lines[0].startswith(usage), result.err
    assert [line for line in lines if problem in line] == [lines[-1]], result.err
    assert "Traceback" not in result.err


def test_version_prints_the_installed_version_and_exits_0() -> None:
    result = run_entry_point("--version")

    assert (result.code, result.err) == (0, "")
    assert result.out == f"digest {metadata.version('digest')}\n"


def command_paths() -> list[tuple[str, ...]]:
    """Every command and group of the CLI, the root first, as the words that name it."""
    paths: list[tuple[str, ...]] = []

    def walk(command: object, path: tuple[str, ...]) -> None:
        paths.append(path)
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, (*path, name))

    walk(typer.main.get_command(cli), ())
    return paths


# A list of choices cut before its end: `<daily|weekly|monthl` or `<pending|active|` at a line end.
UNCLOSED_CHOICES = re.compile(r"<[a-z]+\|[a-z|]*(?![a-z|>])|<[a-z|]+$", re.MULTILINE)


@pytest.mark.parametrize("path", command_paths(), ids=lambda path: " ".join(path) or "digest")
def test_help_shows_no_type_after_a_flag_keeps_each_choice_list_whole_and_cuts_no_summary(
    path: tuple[str, ...], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit) as exit:
        main([*path, "--help"])
    assert exit.value.code == 0
    text = capsys.readouterr().out

    assert "Usage: digest" in text
    assert "<bool>" not in text
    assert UNCLOSED_CHOICES.search(text) is None, text
    listed = [line for line in text.splitlines() if not line.startswith("Usage:")]
    assert not [line for line in listed if line.endswith("...")], text


# An option line of Click's help and its first long name: `--confirmed`, not its `--no-` twin.
OPTION_LINE = re.compile(r"^  (?:-\w, )?(--[a-z][\w-]*)", re.MULTILINE)


def mentions(text: str, words: str) -> bool:
    """Whether text names words whole: `--now` is not in `--nowhere`, nor `digest db` in `digest dbx`."""
    return re.search(rf"(?<![\w-]){re.escape(words)}(?![\w-])", text) is not None


def test_the_readme_names_every_command_and_each_long_option_its_help_lists() -> None:
    readme = (ROOT / "README.md").read_text()
    paths = command_paths()
    with ThreadPoolExecutor(max_workers=4) as pool:  # each is a Python start: run them side by side
        helps = list(pool.map(lambda path: run_entry_point(*path, "--help"), paths))
    missing = []
    for path, shown in zip(paths, helps, strict=True):
        assert (shown.code, shown.err) == (0, ""), shown.err
        command = " ".join(("digest", *path))
        rows = "\n".join(line for line in readme.splitlines() if mentions(line, command))
        if not rows:
            missing.append(command)
        # The root's options come before any command, in the prose under the table; a command's
        # on its own row. `--help` is documented once for all, as `digest COMMAND --help`.
        options = set(OPTION_LINE.findall(shown.out)) - {"--help"}
        where = rows if path else readme
        missing += [
            f"{command} {option}" for option in sorted(options) if not mentions(where, option)
        ]
    assert missing == [], "missing from the README's commands: " + ", ".join(missing)
