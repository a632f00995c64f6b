"""A built wheel works wherever it is installed: mail, pages, static files and migrations ship inside it.

The wheel is built (offline, with the dev venv's setuptools) from what the Docker image's build gets
(.dockerignore), installed into a fresh venv, and run from an empty folder with only DIGEST_*
variables: no repository beside it, no config file, no PYTHONPATH.
"""

from __future__ import annotations

import email
import re
import shutil
import subprocess
import sys
import sysconfig
import urllib.request
import venv
import zipfile
from email.message import Message
from pathlib import Path

import pytest
from processes import (
    CONFIRMED,
    MONDAY_0900,
    ROOT,
    digest,
    digest_env,
    running_daemon,
    stop_cleanly,
    wait_for,
)
from smtp_server import SmtpServer

# The image's build context (.dockerignore): the wheel must be buildable from these alone.
BUILD_CONTEXT = ("pyproject.toml", "README.md", "requirements.lock", "digest")
READER = "reader@example.org"
TITLE = "Sleep and the heart: a new study"


def pip(*args: str) -> None:
    # --no-index: everything needed is at hand, so the test runs offline.
    done = subprocess.run(
        [sys.executable, "-m", "pip", *args, "--no-index"], capture_output=True, text=True
    )
    assert done.returncode == 0, f"pip {' '.join(args)}: {done.stderr}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("source")
    for name in BUILD_CONTEXT:
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy
        copy(ROOT / name, source / name)
    dist = tmp_path_factory.mktemp("dist")
    pip("wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(dist), str(source))
    (built,) = dist.glob("digest-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bin/digest of a fresh venv that holds the wheel and, by reference, the dev venv's dependencies."""
    home = tmp_path_factory.mktemp("venv")
    venv.create(home, with_pip=False)
    python = home / "bin" / "python"
    pip("--python", str(python), "install", "--no-deps", str(wheel))
    # A plain path line: the dependencies become importable, but the dev venv's own .pth files
    # (its editable install of this repository) are not run, so `digest` is the wheel's.
    site = sysconfig.get_path("purelib", vars={"base": str(home), "platbase": str(home)})
    (Path(site) / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    where = subprocess.run(
        [python, "-c", "import digest; print(digest.__file__)"],
        env={},
        cwd=home,
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(where.stdout.strip()).is_relative_to(home), where.stdout
    return home / "bin" / "digest"


def test_the_wheel_carries_every_file_of_the_package(wheel: Path) -> None:
    package = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "digest").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    with zipfile.ZipFile(wheel) as archive:
        assert package - set(archive.namelist()) == set()


def test_the_installed_wheel_migrates_previews_sends_and_serves_from_any_folder(
    installed: Path, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    database = f"sqlite:///{tmp_path / 'digest.db'}"
    env = {k: v for k, v in digest_env(database, smtp_server).items() if k.startswith("DIGEST_")}

    def run(*args: str) -> str:
        try:
            return digest(env, *args, command=[str(installed)], cwd=elsewhere).stdout
        except subprocess.CalledProcessError as failed:
            raise AssertionError(f"digest {' '.join(args)}: {failed.stderr}") from None

    run("db", "upgrade")
    run("subscribers", "add", READER, "--frequency", "weekly", "--confirmed", "--now", CONFIRMED)
    run(
        *("articles", "add", "--url", "https://miasfeed.example/articles/sleep"),
        *("--title", TITLE, "--summary", "Eight hours, the study says.", "--now", CONFIRMED),
    )
    assert TITLE in run("preview", READER, "--now", MONDAY_0900)
    assert (
        run("send", "--now", MONDAY_0900)
        .strip()
        .endswith("sent 1, skipped 0, retrying 0, failed 0")
    )
    (received,) = smtp_server.messages
    parts = {
        part.get_content_type(): part for part in email.message_from_bytes(received.data).walk()
    }
    assert TITLE in text_of(parts["text/plain"])
    assert TITLE in text_of(parts["text/html"])

    log = tmp_path / "serve.log"
    with running_daemon(env, log=log, command=[str(installed)], cwd=elsewhere) as (process, port):
        page = f"http://127.0.0.1:{port}/subscribe"
        wait_for(lambda: answers(page), f"{page} (log: {log})")
        status, html = get(page)
        assert status == 200
        (stylesheet,) = re.findall(r'href="(/static/[^"]+\.css)"', html)
        assert get(f"http://127.0.0.1:{port}{stylesheet}")[0] == 200
        stop_cleanly(process)
    assert not list(elsewhere.iterdir())  # nothing was written beside the commands


def text_of(part: Message) -> str:
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode(part.get_content_charset() or "utf-8")


def get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.read().decode()


def answers(url: str) -> bool:
    try:
        get(url)
    except OSError:
        return False
    return True
