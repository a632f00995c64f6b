"""The `digest` command: parse → one call → print. Errors are turned into one line and an exit code here."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum
from importlib import metadata
from pathlib import Path
from typing import Annotated, Protocol, cast

import typer

from digest import app as composition
from digest import daemon, demo, reports
from digest.app import Services, real_clock
from digest.config import LogFormat, load
from digest.domain import WEEKDAYS, Frequency, RowError, SubscriberStatus
from digest.errors import DigestError, InvalidInput
from digest.stopping import stop_on_signal

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
inbound_cli = typer.Typer(
    no_args_is_help=True, help="Bounces, complaints and unsubscribes that come back."
)
cli.add_typer(articles_cli, name="articles")
cli.add_typer(inbound_cli, name="inbound")

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
    """Load the settings, then start logging and the services; closed when the command ends."""
    options: _RootOptions = ctx.find_root().obj
    settings = load(options.config, os.environ)
    services = composition.start(settings, options.log_format, log_level, check_schema=check_schema)
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
    return _in_utc(value)


def _in_utc(value: datetime) -> datetime:
    """An instant as given on the command line: without an offset, it is UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _echo_errors(errors: list[RowError]) -> None:
    for error in errors:
        typer.echo(f"{error.where}: {error.reason}", err=True)


# -- db ------------------------------------------------------------------------------------


@db_cli.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Create the schema, or migrate it to the newest version. Safe to run again."""
    for note in _services(ctx, check_schema=False).upgrade_schema():
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
    services = _services(ctx)
    at = _instant(now)
    only = services.only(frequency, email)
    for warning in services.settings.warnings():
        typer.echo(f"warning: {warning}", err=True)
    if dry:
        summary = asyncio.run(services.dry_run(at, only))
        typer.echo(
            f"dry run: would send {summary.sent}, skip {summary.skipped}; nothing was sent or changed"
        )
        return

    def clock() -> datetime:
        return at if now is not None else real_clock()

    with (
        stop_on_signal(lambda note: typer.echo(note, err=True)) as should_stop,
        reports.progress_bar(enabled=sys.stdout.isatty()) as progress,
    ):
        sent = asyncio.run(services.send(at, clock, only, progress, should_stop))
    if should_stop():
        left = services.count_claimable(clock(), only)
        typer.echo(f"stopped early: {left} due digest(s) left for the next run", err=True)
    if sent.unreachable is not None:
        # Each digest is already back in the ledger with its retry time; cron must still notice.
        relay = f"{services.settings.smtp_host}:{services.settings.smtp_port}"
        typer.echo(
            f"error: cannot reach the SMTP relay {relay}: {sent.unreachable}",
            err=True,
        )
    typer.echo(sent.summary.line())
    if sent.summary.failed or sent.unreachable is not None:
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
    shown = services.preview(email, at, html=format is Format.HTML)
    subscriber = shown.subscriber
    typer.echo(reports.due_line(services, subscriber, at, news=shown.news), err=True)
    if subscriber.status is not SubscriberStatus.ACTIVE:
        return
    if shown.text is None:
        typer.echo(f"nothing new for {subscriber.email} since their last digest", err=True)
        return
    text = shown.text
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
    services = _services(ctx, log_level=logging.INFO)
    options: _RootOptions = ctx.find_root().obj
    daemon.serve(services, real_clock, host, port, options.log_format)


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
    send_time: Annotated[
        str | None,
        typer.Option(
            metavar="HH:MM", help="Their own send time, in their timezone; default: the site's."
        ),
    ] = None,
    weekday: Annotated[
        str | None,
        typer.Option(
            metavar="NAME", help="A weekly reader's own day, e.g. sunday; default: the site's."
        ),
    ] = None,
    confirmed: Annotated[bool, typer.Option(help="The reader has already opted in.")] = False,
    topics: Annotated[
        str,
        typer.Option(
            help='Categories, comma-separated, e.g. "Nutrition, Public Health"; none: every topic.'
        ),
    ] = "",
    despite_complaint: Annotated[
        bool,
        typer.Option(
            "--despite-complaint",
            help="Take back a reader who reported a digest as spam; otherwise they stay out.",
        ),
    ] = False,
    now: NowOption = None,
) -> None:
    """Add one reader (pending until confirmed, unless --confirmed)."""
    draft = _services(ctx).add_subscriber(
        email,
        frequency,
        timezone,
        send_time,
        weekday,
        confirmed=confirmed,
        now=_instant(now),
        topics=topics,
        despite_complaint=despite_complaint,
    )
    state = "active" if confirmed else "pending confirmation"
    own = "".join(
        [
            "" if draft.send_time is None else f", at {draft.send_time:%H:%M}",
            "" if draft.send_weekday is None else f", on {WEEKDAYS[draft.send_weekday]}s",
        ]
    )
    chosen = "every topic" if draft.topics is None else ", ".join(sorted(draft.topics))
    typer.echo(f"added {draft.email}: {draft.frequency}, {draft.timezone}{own}, {chosen}, {state}")


@subscribers_cli.command("import")
def subscribers_import(
    ctx: typer.Context,
    file: Annotated[
        Path,
        typer.Argument(
            metavar="FILE",
            help="CSV with the header email,frequency[,timezone][,send_time][,weekday][,topics].",
        ),
    ],
    confirmed: Annotated[bool, typer.Option(help="The readers have already opted in.")] = False,
    now: NowOption = None,
) -> None:
    """Import readers from CSV. Good rows are imported, bad ones reported by line."""
    imported = _services(ctx).import_subscribers(file, confirmed=confirmed, now=_instant(now))
    _echo_errors(imported.errors)
    for where, line in imported.known:
        typer.echo(f"{where}: {line}, left as it was", err=True)
    typer.echo(
        f"imported {imported.added}, already subscribed {len(imported.known)}, "
        f"bad rows {len(imported.errors)}"
    )
    if imported.errors:
        raise typer.Exit(1)


@subscribers_cli.command("list")
def subscribers_list(
    ctx: typer.Context,
    status: Annotated[
        SubscriberStatus | None, typer.Option(help="Only readers in this state.")
    ] = None,
    now: NowOption = None,
) -> None:
    """List readers, one a line.

    A reader paused at --now ends with when the pause ends, in their timezone.
    """
    at = _instant(now)
    for subscriber in _services(ctx).subscribers(status):
        typer.echo(reports.subscriber_line(subscriber, at))


@subscribers_cli.command("pause")
def subscribers_pause(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(metavar="EMAIL", help="The reader's address.")],
    until: Annotated[
        str,
        typer.Option(
            "--until",
            help="ISO 8601: a date (the reader's own midnight that starts it) or an instant.",
        ),
    ],
    now: NowOption = None,
) -> None:
    """Pause a reader's digests until a date.

    Nothing goes to them meanwhile; the first slot after it brings one digest with what they missed.
    """
    reader = _services(ctx).pause_subscriber(email, _date_or_instant(until), _instant(now))
    typer.echo(f"{reader.email}: {reports.pause_words(reader)}")


@subscribers_cli.command("resume")
def subscribers_resume(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(metavar="EMAIL", help="The reader's address.")],
    now: NowOption = None,
) -> None:
    """End a reader's pause: their next slot brings what they missed."""
    reader = _services(ctx).pause_subscriber(email, None, _instant(now))
    typer.echo(f"{reader.email}: {reports.pause_words(reader)}")


def _date_or_instant(text: str) -> date | datetime:
    try:
        return date.fromisoformat(text)
    except ValueError:
        pass
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(
            f"--until must be an ISO 8601 date or instant like 2026-12-09, got {text!r}"
        ) from None
    return _in_utc(value)


@subscribers_cli.command("remove")
def subscribers_remove(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(metavar="EMAIL", help="The reader's address.")],
) -> None:
    """Erase a reader and every record of mail to them."""
    removed = _services(ctx).remove_subscriber(email)
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
    featured: Annotated[
        bool,
        typer.Option(
            "--featured", help="An editor's pick: it leads the digest and is shown first."
        ),
    ] = False,
    now: NowOption = None,
) -> None:
    """Add one article, or update the one with the same URL."""
    fields = {
        "url": url,
        "title": title,
        "summary": summary,
        "category": category,
        "reading_minutes": reading_minutes,
        "published_at": published_at,
        "featured": featured,
    }
    added_url, added = _services(ctx).add_article(fields, _instant(now))
    typer.echo(f"{'added' if added else 'updated'} {added_url}")


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
    imported = _services(ctx).import_articles(source, _instant(now))
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
    for article in _services(ctx).recent_articles(limit):
        typer.echo(reports.article_line(article))


@inbound_cli.command("import")
def inbound_import(
    ctx: typer.Context,
    files: Annotated[
        list[Path],
        typer.Argument(
            metavar="FILE...",
            help=".eml files, or mbox files of many mails, as a relay's bounce mailbox keeps them.",
        ),
    ],
    now: NowOption = None,
) -> None:
    """Take bounces, complaints and unsubscribes from mail files.

    As if they had come over SMTP; each is taken once, so importing a file again changes nothing.
    """
    services = _services(ctx)
    try:
        result = services.import_inbound(files, _instant(now))
    except OSError as exc:
        raise InvalidInput(f"cannot read {exc.filename}: {exc.strerror}") from None
    _echo_errors(result.skipped)
    typer.echo(f"read {result.mails} mail(s): {result.taken}")
    if result.skipped:
        raise typer.Exit(1)


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
