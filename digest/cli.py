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
from pathlib import Path
from typing import Annotated

import click
import typer

from digest import app as composition
from digest import daemon, database, demo, ingest, logs, reports
from digest.addresses import check_timezone, normalise_address
from digest.app import Services, real_clock
from digest.config import load
from digest.dispatch import Progress, dry_run, run_once
from digest.domain import Frequency, RunSummary, SubscriberDraft, SubscriberStatus
from digest.errors import DigestError, InvalidInput
from digest.feeds import import_articles
from digest.ledger import Only
from digest.logs import LogFormat
from digest.mailer import DryRunSender, SmtpSender
from digest.render import preview_html, preview_text
from digest.sources import RowError, read_source
from digest.stopping import stop_on_signal
from digest.subscriber_csv import parse_subscribers_csv

cli = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
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
    database.upgrade(_services(ctx, check_schema=False).store.engine)
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
    services = _services(ctx)
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

    async def go(progress: Progress | None, should_stop: Callable[[], bool]) -> RunSummary:
        async with SmtpSender(services.smtp()) as sender:
            return await run_once(job, services.store, mail, sender, clock, progress, should_stop)

    with (
        stop_on_signal(lambda note: typer.echo(note, err=True)) as should_stop,
        reports.progress_bar(enabled=sys.stdout.isatty()) as progress,
    ):
        summary = asyncio.run(go(progress, should_stop))
    if should_stop():
        left = services.store.count_claimable(clock(), only)
        typer.echo(f"stopped early: {left} due digest(s) left for the next run", err=True)
    typer.echo(summary.line())
    if summary.failed:
        raise typer.Exit(1)


@cli.command()
def preview(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(help="The reader's address.")],
    now: NowOption = None,
    format: Annotated[Format, typer.Option(help="Which part to show.")] = Format.HTML,
    output: Annotated[
        Path | None, typer.Option(help="Write to this file instead of stdout.")
    ] = None,
) -> None:
    """Show the digest this reader would get now; changes nothing."""
    services = _services(ctx)
    subscriber = services.store.find_subscriber(normalise_address(email))
    newest = services.store.newest_seq()
    if subscriber.cursor >= newest:
        typer.echo(f"nothing new for {subscriber.email} since their last digest", err=True)
        return
    mail = services.digest_mail()
    body = mail.body(subscriber.frequency, subscriber.cursor, newest)
    links = mail.links(subscriber.id, subscriber.token_version)
    text = preview_html(body, links) if format is Format.HTML else preview_text(body, links)
    typer.echo(reports.due_line(services, subscriber, _instant(now)), err=True)
    if output is None:
        typer.echo(text)
    else:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {output}", err=True)


@cli.command()
def status(ctx: typer.Context, now: NowOption = None) -> None:
    """Readers by frequency and status, the next slots, recent runs and pending retries."""
    typer.echo(reports.status(_services(ctx), _instant(now)))


@cli.command()
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
) -> None:
    """The daemon: send digests on schedule and serve the web endpoints, until SIGTERM."""
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
    """The daemon on sample data, fresh each start, publishing an article a minute, until Ctrl-C."""
    options: _RootOptions = ctx.find_root().obj
    demo.run(folder, host, port, options.log_format, typer.echo)


# -- subscribers ---------------------------------------------------------------------------


@subscribers_cli.command("add")
def subscribers_add(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(help="The reader's address.")],
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
    file: Annotated[Path, typer.Argument(help="CSV with the header email,frequency[,timezone].")],
    confirmed: Annotated[bool, typer.Option(help="The readers have already opted in.")] = False,
    now: NowOption = None,
) -> None:
    """Import readers from CSV; good rows are imported, bad ones reported by line."""
    services = _services(ctx)
    parsed = parse_subscribers_csv(
        read_source(str(file)), default_timezone=services.settings.default_timezone
    )
    known = services.store.add_subscribers(parsed.items, confirmed=confirmed, now=_instant(now))
    _echo_errors(parsed.errors)
    for email in known:
        typer.echo(f"{email}: already subscribed, left as it was", err=True)
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
    ctx: typer.Context, email: Annotated[str, typer.Argument(help="The reader's address.")]
) -> None:
    """Erase a reader and every record of mail to them."""
    address = normalise_address(email)
    _services(ctx).store.remove_subscriber(address)
    typer.echo(f"removed {address} and their delivery records")


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
        str, typer.Argument(help="A file or http(s) URL: RSS 2.0, Atom or a JSON list.")
    ],
    now: NowOption = None,
) -> None:
    """Import articles; the same URL again updates the article instead of duplicating it."""
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


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; every DigestError ends as one line on stderr and its exit code."""
    try:
        code = cli(args=argv, prog_name="digest", standalone_mode=False)
    except DigestError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (click.Abort, KeyboardInterrupt):
        typer.echo("interrupted", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
