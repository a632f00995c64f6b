"""The `digest` command: parse → one call → print. Errors are turned into one line and an exit code here."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from importlib import metadata
from pathlib import Path
from typing import Annotated, Protocol, cast

import typer

from digest import app as composition
from digest import daemon, database, demo, ingest, logs, reports
from digest.addresses import check_timezone, normalise_address
from digest.app import Services, real_clock
from digest.config import load
from digest.dispatch import dry_run, run_once
from digest.domain import (
    Frequency,
    Only,
    Progress,
    RowError,
    RunSummary,
    SubscriberDraft,
    SubscriberStatus,
)
from digest.errors import DigestError, InvalidInput
from digest.feeds import import_articles
from digest.logs import LogFormat
from digest.mailer import DryRunSender, SmtpSender
from digest.render import preview_html, preview_text
from digest.sources import read_source
from digest.stopping import stop_on_signal
from digest.store import already_subscribed
from digest.subscriber_csv import parse_subscribers_csv

cli = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Click's plain help: Rich's tables print `<bool>` after every flag and cut choice lists mid-word.
    rich_markup_mode=None,
    help="digest: daily, weekly or monthly newsletter digests over SMTP.",
)
db_cli = typer.Typer(no_args_is_help=True, help="The database schema.")
subscribers_cli = typer.Typer(no_args_is_help=True, help="Manage subscribers.")
articles_cli = typer.Typer(no_args_is_help=True, help="Manage articles.")
cli.add_typer(db_cli, name="db")
cli.add_typer(subscribers_cli, name="subscribers")
cli.add_typer(articles_cli, name="articles")

NowOption = Annotated[
    str | None,
    typer.Option("--now", help="The instant to act at, ISO 8601 (default: the real clock)."),
]


class Format(StrEnum):
    HTML = "html"
    TEXT = "text"


@dataclass(frozen=True, slots=True)
class _RootOptions:
    config: Path | None
    log_format: LogFormat


def _show_version(wanted: bool) -> None:
    if wanted:
        typer.echo(f"digest {metadata.version('digest')}")
        raise typer.Exit()


@cli.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", help="Settings file (default config/digest.toml, or DIGEST_CONFIG)."
        ),
    ] = None,
    log_format: Annotated[
        LogFormat,
        typer.Option(
            "--log-format",
            envvar="DIGEST_LOG_FORMAT",
            help="Log lines as text, or as one JSON object a line for log shippers.",
        ),
    ] = LogFormat.TEXT,
    _version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_show_version, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    ctx.obj = _RootOptions(config, log_format)


def _services(
    ctx: typer.Context, *, check_schema: bool = True, log_level: int = logging.WARNING
) -> Services:
    """Load the settings, start logging (which must know the secrets to hide) and wire services."""
    options: _RootOptions = ctx.find_root().obj
    settings = load(options.config, os.environ)
    logs.configure(options.log_format, log_level, logs.secrets_of(settings))
    services = composition.build(settings, check_schema=check_schema)
    ctx.call_on_close(services.close)
    return services


def _instant(text: str | None) -> datetime:
    if text is None:
        return real_clock()
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(
            f"--now must be an ISO 8601 instant like 2026-11-30T09:00Z, got {text!r}"
        ) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _echo_errors(errors: list[RowError]) -> None:
    for error in errors:
        typer.echo(f"{error.where}: {error.reason}", err=True)


# -- db ------------------------------------------------------------------------------------


@db_cli.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Create the schema, or migrate it to the newest version. Safe to run again."""
    for note in database.upgrade(_services(ctx, check_schema=False).store.engine):
        typer.echo(note)
    typer.echo("the database schema is up to date")


# -- send, preview, status -----------------------------------------------------------------


@cli.command()
def send(
    ctx: typer.Context,
    frequency: Annotated[
        Frequency | None, typer.Option(help="Only readers of this frequency.")
    ] = None,
    email: Annotated[str | None, typer.Option(help="Only this reader.")] = None,
    now: NowOption = None,
    dry: Annotated[
        bool, typer.Option("--dry-run", help="Render and report; send and change nothing.")
    ] = False,
) -> None:
    """Send every digest that is due now (or at --now)."""
    services = _services(ctx).for_dry_run() if dry else _services(ctx)
    at = _instant(now)
    only = Only(frequency, normalise_address(email) if email else None)
    job = services.job(at, only)
    mail = services.digest_mail()
    if dry:
        summary = asyncio.run(dry_run(job, services.store, mail, DryRunSender()))
        typer.echo(
            f"dry run: would send {summary.sent}, skip {summary.skipped}; nothing was sent or changed"
        )
        return

    def clock() -> datetime:
        return at if now is not None else real_clock()

    smtp = services.smtp()

    async def go(
        progress: Progress | None, should_stop: Callable[[], bool]
    ) -> tuple[RunSummary, str | None]:
        async with SmtpSender(smtp) as sender:
            summary = await run_once(
                job, services.store, mail, sender, clock, progress, should_stop
            )
            return summary, sender.unreachable

    with (
        stop_on_signal(lambda note: typer.echo(note, err=True)) as should_stop,
        reports.progress_bar(enabled=sys.stdout.isatty()) as progress,
    ):
        summary, unreachable = asyncio.run(go(progress, should_stop))
    if should_stop():
        left = services.store.count_claimable(clock(), only)
        typer.echo(f"stopped early: {left} due digest(s) left for the next run", err=True)
    if unreachable is not None:
        # Each digest is already back in the ledger with its retry time; cron must still notice.
        typer.echo(
            f"error: cannot reach the SMTP relay {smtp.host}:{smtp.port}: {unreachable}", err=True
        )
    typer.echo(summary.line())
    if summary.failed or unreachable is not None:
        raise typer.Exit(1)


@cli.command()
def preview(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(metavar="EMAIL", help="The reader's address.")],
    now: NowOption = None,
    format: Annotated[Format, typer.Option(help="Which part to show.")] = Format.HTML,
    output: Annotated[
        Path | None, typer.Option(help="Write to this file instead of stdout.")
    ] = None,
) -> None:
    """Show the digest a reader would get now; changes nothing.

    Shows the digest this reader would get now (or at --now), and when their next one goes out.
    """
    services = _services(ctx)
    at = _instant(now)
    subscriber = services.store.find_subscriber(normalise_address(email))
    newest = services.store.newest_seq(at)
    news = subscriber.cursor < newest
    typer.echo(reports.due_line(services, subscriber, at, news=news), err=True)
    if subscriber.status is not SubscriberStatus.ACTIVE:
        return
    if not news:
        typer.echo(f"nothing new for {subscriber.email} since their last digest", err=True)
        return
    mail = services.digest_mail()
    body = mail.body(subscriber.frequency, subscriber.cursor, newest)
    links = mail.links(subscriber.id, subscriber.token_version)
    text = preview_html(body, links) if format is Format.HTML else preview_text(body, links)
    if output is None:
        typer.echo(text)
    else:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {output}", err=True)


@cli.command()
def status(ctx: typer.Context, now: NowOption = None) -> None:
    """Readers, next digests, recent runs and pending retries.

    Readers by frequency and status, when each frequency's readers get their next digest, the last
    runs, the pending retries and each feed's state.
    """
    typer.echo(reports.status(_services(ctx), _instant(now)))


@cli.command()
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
) -> None:
    """The daemon: send digests on schedule, serve the web pages.

    It runs until SIGTERM or SIGINT.
    """
    daemon.serve(_services(ctx, log_level=logging.INFO), real_clock, host, port)


@cli.command("demo")
def run_demo(
    ctx: typer.Context,
    folder: Annotated[
        Path, typer.Option(help="Where the demo keeps its database and caught mail.")
    ] = Path("demo"),
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(min=1, max=65535, help="Port to listen on; taken means exit 2.")
    ] = 8000,
) -> None:
    """The daemon on sample data: browse the digests it sent.

    The sample data is fresh each start; every minute it publishes another article. It runs until
    Ctrl-C.
    """
    options: _RootOptions = ctx.find_root().obj
    demo.run(folder, host, port, options.log_format, typer.echo)


# -- subscribers ---------------------------------------------------------------------------


@subscribers_cli.command("add")
def subscribers_add(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(metavar="EMAIL", help="The reader's address.")],
    frequency: Annotated[Frequency | None, typer.Option(help="daily, weekly or monthly.")] = None,
    timezone: Annotated[str | None, typer.Option(help="IANA timezone, e.g. Europe/Madrid.")] = None,
    confirmed: Annotated[bool, typer.Option(help="The reader has already opted in.")] = False,
    now: NowOption = None,
) -> None:
    """Add one reader (pending until confirmed, unless --confirmed)."""
    services = _services(ctx)
    settings = services.settings
    draft = SubscriberDraft(
        normalise_address(email),
        frequency or settings.default_frequency,
        check_timezone(timezone or settings.default_timezone),
    )
    services.store.add_subscriber(draft, confirmed=confirmed, now=_instant(now))
    state = "active" if confirmed else "pending confirmation"
    typer.echo(f"added {draft.email}: {draft.frequency}, {draft.timezone}, {state}")


@subscribers_cli.command("import")
def subscribers_import(
    ctx: typer.Context,
    file: Annotated[
        Path, typer.Argument(metavar="FILE", help="CSV with the header email,frequency[,timezone].")
    ],
    confirmed: Annotated[bool, typer.Option(help="The readers have already opted in.")] = False,
    now: NowOption = None,
) -> None:
    """Import readers from CSV. Good rows are imported, bad ones reported by line."""
    services = _services(ctx)
    parsed = parse_subscribers_csv(
        read_source(str(file)), default_timezone=services.settings.default_timezone
    )
    known = services.store.add_subscribers(parsed.items, confirmed=confirmed, now=_instant(now))
    _echo_errors(parsed.errors)
    for where, draft in zip(parsed.places, parsed.items, strict=True):
        if draft.email in known:
            line = already_subscribed(draft.email, known[draft.email])
            typer.echo(f"{where}: {line}, left as it was", err=True)
    added = len(parsed.items) - len(known)
    typer.echo(f"imported {added}, already subscribed {len(known)}, bad rows {len(parsed.errors)}")
    if parsed.errors:
        raise typer.Exit(1)


@subscribers_cli.command("list")
def subscribers_list(
    ctx: typer.Context,
    status: Annotated[
        SubscriberStatus | None, typer.Option(help="Only readers in this state.")
    ] = None,
) -> None:
    """List readers, one a line."""
    for subscriber in _services(ctx).store.subscribers(status):
        typer.echo(reports.subscriber_line(subscriber))


@subscribers_cli.command("remove")
def subscribers_remove(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(metavar="EMAIL", help="The reader's address.")],
) -> None:
    """Erase a reader and every record of mail to them."""
    removed = _services(ctx).store.remove_subscriber(normalise_address(email))
    typer.echo(f"removed {removed} and their delivery records")


# -- articles ------------------------------------------------------------------------------


@articles_cli.command("add")
def articles_add(
    ctx: typer.Context,
    url: Annotated[str, typer.Option(help="The article's address (http or https).")],
    title: Annotated[str, typer.Option()],
    summary: Annotated[str, typer.Option()],
    category: Annotated[str, typer.Option()] = "General",
    reading_minutes: Annotated[
        int | None, typer.Option(help="Default: estimated from the summary.")
    ] = None,
    published_at: Annotated[str | None, typer.Option(help="ISO 8601 (default: now).")] = None,
    now: NowOption = None,
) -> None:
    """Add one article, or update the one with the same URL."""
    services = _services(ctx)
    at = _instant(now)
    fields = {
        "url": url,
        "title": title,
        "summary": summary,
        "category": category,
        "reading_minutes": reading_minutes,
        "published_at": published_at,
    }
    draft = ingest.article_from_fields(fields, at)
    result = services.store.upsert_articles([draft], at)
    typer.echo(f"{'added' if result.added else 'updated'} {draft.url}")


@articles_cli.command("import")
def articles_import(
    ctx: typer.Context,
    source: Annotated[
        str,
        typer.Argument(
            metavar="FILE_OR_URL",
            help="A file or http(s) URL: RSS 2.0, Atom, JSON Feed or a JSON list.",
        ),
    ],
    now: NowOption = None,
) -> None:
    """Import articles from a feed or file. The same URL again updates, never duplicates."""
    imported = import_articles(_services(ctx).store, source, _instant(now))
    _echo_errors(imported.errors)
    typer.echo(
        f"added {imported.added}, updated {imported.updated}, skipped {len(imported.errors)}"
    )
    if imported.errors:
        raise typer.Exit(1)


@articles_cli.command("list")
def articles_list(
    ctx: typer.Context, limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20
) -> None:
    """List the newest articles."""
    for article in _services(ctx).store.recent_articles(limit):
        typer.echo(reports.article_line(article))


# -- entry point ---------------------------------------------------------------------------


class _ClickError(Protocol):
    def show(self) -> None: ...


def _click_error() -> type[Exception]:
    """The base of the errors Typer's parser raises, wherever its Click lives.

    The locked Typer carries its own copy of Click, so `click.ClickException` never matches what
    it raises; its public BadParameter derives from the class that does.
    """
    found = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
    assert issubclass(found, Exception)
    return found


_CLICK_ERROR = _click_error()


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; every DigestError ends as one line on stderr and its exit code."""
    try:
        code = cli(args=argv, prog_name="digest", standalone_mode=False)
    except DigestError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except _CLICK_ERROR as exc:
        # Click's own words: the usage line, a hint to --help and what is wrong (a bare group,
        # `digest subscribers`, shows its help instead).
        cast(_ClickError, exc).show()
        sys.exit(2)  # every one is about the command line: bad usage
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("interrupted", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
