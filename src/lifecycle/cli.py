"""The `lifecycle` command line. Exit codes: 0 ok, 1 done but something refused, 2 usage/config."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from lifecycle.errors import ConfigurationError, LifecycleError
from lifecycle.facts import Rejection
from lifecycle.ingest import IngestReport
from lifecycle.ledger import Ledger
from lifecycle.logs import configure_logging, get_logger
from lifecycle.settings import load_settings

log = get_logger("lifecycle.cli")
EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2


def utc_now() -> datetime:
    """The one place the command line reads the clock."""
    return datetime.now(UTC)


def emit_json(document: Any) -> None:
    click.echo(json.dumps(document, indent=2, default=str, ensure_ascii=False))


@contextmanager
def open_ledger() -> Iterator[Ledger]:
    try:
        ledger = Ledger(load_settings())
    except ConfigurationError as error:
        click.echo(f"lifecycle: configuration error: {error}", err=True)
        sys.exit(EXIT_USAGE)
    try:
        yield ledger
    finally:
        ledger.close()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]))
def cli(log_level: str) -> None:
    """lifecycle: an event-sourced personal-data ledger with retention and crypto-shredding.

    Data lives in $LIFECYCLE_HOME (default ./lifecycle-data).
    """
    configure_logging(log_level)


# -- ingest ---------------------------------------------------------------------------

def _count_lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(1 for _ in handle)


def run_ingest(ledger: Ledger, source: Iterable[str], total: int | None, show_progress: bool,
               now: datetime) -> IngestReport:
    def on_rejected(rejection: Rejection) -> None:
        log.warning("ingest.rejected", line=rejection.line, fact=rejection.fact_id,
                    reason=rejection.reason)

    if not show_progress:
        return ledger.ingest(source, now, on_rejected=on_rejected)
    progress = Progress(TextColumn("ingesting"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=Console(stderr=True), transient=True)
    with progress:
        task = progress.add_task("ingest", total=total)
        advance: Callable[[int], None] = lambda n: progress.advance(task, n)  # noqa: E731
        return ledger.ingest(source, now, on_progress=advance, on_rejected=on_rejected)


def print_ingest_summary(name: str, report: IngestReport) -> None:
    click.echo(f"{name}: {report.accepted} accepted, {report.duplicates} duplicates, "
               f"{len(report.rejected)} rejected")
    for rejection in report.rejected:
        click.echo(f"  line {rejection.line}: {rejection.reason}")


@cli.command()
@click.argument("file", type=click.Path(allow_dash=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def ingest(file: Path, as_json: bool) -> None:
    """Ingest facts (JSON Lines, format v1) from FILE, or - for standard input."""
    from_stdin = str(file) == "-"
    if not from_stdin and not file.exists():
        raise click.BadParameter(f"{file} does not exist", param_hint="FILE")
    with open_ledger() as ledger:
        show_progress = sys.stderr.isatty() and not as_json
        if from_stdin:
            report = run_ingest(ledger, sys.stdin, None, show_progress, utc_now())
        else:
            total = _count_lines(file) if show_progress else None
            with file.open(encoding="utf-8") as source:
                report = run_ingest(ledger, source, total, show_progress, utc_now())
    log.info("ingest.finished", file=str(file), accepted=report.accepted,
             duplicates=report.duplicates, rejected=len(report.rejected))
    if as_json:
        emit_json({"file": str(file), **report.as_dict()})
    else:
        print_ingest_summary(str(file), report)
    sys.exit(EXIT_OK if report.ok else EXIT_REFUSED)


# -- read side ---------------------------------------------------------------------------

@cli.group()
def subject() -> None:
    """Look at one data subject."""


@subject.command("show")
@click.argument("reference")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def subject_show(reference: str, as_json: bool) -> None:
    """Everything held about REFERENCE now (values, or "erased")."""
    with open_ledger() as ledger:
        view = _or_exit(lambda: ledger.subject_view(reference))
    if as_json:
        emit_json(view)
    else:
        render_subject(view)


@cli.command()
@click.argument("reference")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def history(reference: str, as_json: bool) -> None:
    """The event timeline of REFERENCE, oldest first."""
    with open_ledger() as ledger:
        timeline = _or_exit(lambda: ledger.history(reference))
    if as_json:
        emit_json({"subject": reference, "events": timeline})
        return
    table = Table(title=f"history of {reference}")
    for column in ("#", "event", "at", "details"):
        table.add_column(column)
    for entry in timeline:
        details = {k: v for k, v in entry.items()
                   if k not in ("version", "event", "at", "recorded_at", "fact_id")}
        table.add_row(str(entry["version"]), entry["event"], str(entry.get("at", "")),
                      ", ".join(f"{k}={v}" for k, v in details.items() if v not in (None, [])))
    Console().print(table)


def render_subject(view: dict[str, Any]) -> None:
    console = Console()
    console.print(f"[bold]{view['subject']}[/bold]  suppressed: {view['suppressed']}")
    records = Table(title="records")
    for column in ("record", "category", "purpose", "basis", "source", "collected", "data"):
        records.add_column(column)
    for r in view["records"]:
        data = r["data"] if isinstance(r["data"], str) else json.dumps(r["data"],
                                                                       ensure_ascii=False)
        records.add_row(r["record"], r["category"], r["purpose"], r["basis"], r["source"],
                        r["collected_at"], data)
    console.print(records)
    for section in ("consents", "recipients", "restrictions", "objections", "holds",
                    "requests", "erasure_refusals"):
        rows = view[section]
        if not rows:
            continue
        table = Table(title=section.replace("_", " "))
        for column in rows[0]:
            table.add_column(column)
        for row in rows:
            table.add_row(*("" if v is None else str(v) for v in row.values()))
        console.print(table)


def _or_exit(action: Callable[[], Any]) -> Any:
    try:
        return action()
    except LifecycleError as error:
        click.echo(f"lifecycle: {error}", err=True)
        sys.exit(EXIT_REFUSED)


# -- demo --------------------------------------------------------------------------------

@cli.command()
@click.option("--subject", "reference", default="subscriber:demo-1", show_default=True)
def demo(reference: str) -> None:
    """Ingest the bundled sample facts of both organisations and show one subject."""
    from lifecycle.samples import ORGANISATIONS, generate_facts

    with open_ledger() as ledger:
        for org in ORGANISATIONS:
            lines = (json.dumps(fact) for fact in generate_facts(org, 600))
            report = run_ingest(ledger, lines, None, False, utc_now())
            print_ingest_summary(f"sample {org}", report)
        view = _or_exit(lambda: ledger.subject_view(reference))
    render_subject(view)


def main() -> None:
    try:
        cli.main(standalone_mode=True)
    except ConfigurationError as error:
        click.echo(f"lifecycle: configuration error: {error}", err=True)
        sys.exit(EXIT_USAGE)
