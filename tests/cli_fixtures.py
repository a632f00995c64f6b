"""The `digest` command run in this process against a real SMTP server, on SQLite and PostgreSQL (a pytest plugin).

`cli("send", "--now", ...)` runs one command and returns its exit code, stdout and stderr;
`upgraded` has the schema; `three_readers` adds a daily, a weekly and a monthly reader confirmed
a week before Monday 30 November 2026 09:00 UTC, and five articles.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from smtp_server import SmtpServer

from digest.cli import main

ROOT = Path(__file__).resolve().parent.parent
SECRET = "s" * 40
CONFIRMED = "2026-11-23T09:00Z"  # a week before...
MONDAY_0900 = "2026-11-30T09:00Z"  # ... Monday 09:00 UTC
NEXT_DAY = "2026-12-01T09:00Z"
POSTAL_ADDRESS = "Mia's Feed, 1 Harbour Street, Leith EH6 6QW, United Kingdom"


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    @property
    def last_line(self) -> str:
        """The last line on stdout: a send's `sent N, skipped N, retrying N, failed N`."""
        return self.out.strip().splitlines()[-1]


Cli = Callable[..., Result]


@pytest.fixture
def environment(
    database_url: str, smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    env = {
        "DIGEST_DATABASE_URL": database_url,
        "DIGEST_SMTP_HOST": smtp_server.host,
        "DIGEST_SMTP_PORT": str(smtp_server.port),
        "DIGEST_SECRET_KEY": SECRET,
        "DIGEST_SENDER": "Mia's Feed <digest@miasfeed.example>",
        "DIGEST_BASE_URL": "https://news.example",
        "DIGEST_SITE_URL": "https://miasfeed.example",
        "DIGEST_POSTAL_ADDRESS": POSTAL_ADDRESS,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("DIGEST_CONFIG", raising=False)
    return env


@pytest.fixture
def cli(environment: dict[str, str], capsys: pytest.CaptureFixture[str]) -> Cli:
    def run(*args: str) -> Result:
        capsys.readouterr()
        try:
            main(list(args))
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else 0
        else:  # pragma: no cover - main always exits
            code = 0
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


@pytest.fixture
def upgraded(cli: Cli) -> Cli:
    assert cli("db", "upgrade").code == 0
    return cli


def five_articles(tmp_path: Path, start: int = 0, count: int = 5) -> Path:
    items = [
        {
            "url": f"https://miasfeed.example/articles/{n}",
            "title": f"Study {n}: sleep and the heart",
            "summary": f"<p>Finding number {n}.</p>",
            "category": "Medical News & Research" if n % 2 else "Nutrition",
            "reading_minutes": 2 + n % 3,
            "published_at": f"2026-11-2{n % 5}T10:00:00Z",
        }
        for n in range(start, start + count)
    ]
    path = tmp_path / f"articles-{start}.json"
    path.write_text(json.dumps(items))
    return path


@pytest.fixture
def three_readers(upgraded: Cli, tmp_path: Path) -> Cli:
    for address, frequency in (
        ("daily@example.org", "daily"),
        ("weekly@example.org", "weekly"),
        ("monthly@example.org", "monthly"),
    ):
        result = upgraded(
            "subscribers",
            "add",
            address,
            "--frequency",
            frequency,
            "--confirmed",
            "--now",
            CONFIRMED,
        )
        assert result.code == 0, result.err
    assert (
        upgraded("articles", "import", str(five_articles(tmp_path)), "--now", CONFIRMED).code == 0
    )
    return upgraded
