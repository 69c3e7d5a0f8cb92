"""The `lifecycle` command line. Exit codes: 0 ok, 1 done but something refused, 2 usage/config."""

from __future__ import annotations

import json
import math
import os
import sqlite3
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import click
from eventsourcing.persistence import MapperDeserialisationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from lifecycle.store.actor import ACTOR_ENV, command_line_actor
from lifecycle.aggregates.request_case import DUE_SOON_DAYS
from lifecycle.domain.errors import ArgumentRefused, ConfigurationError, LifecycleError
from lifecycle.domain.facts import Rejection, refuse_adoption_time, within_time_bounds
from lifecycle.services.ingest import IngestReport
from lifecycle.services.line_reader import count_lines, read_lines
from lifecycle.services.ledger import Ledger
from lifecycle.support.logs import configure_logging, get_logger
from lifecycle.policy.loader import bundled_policy
from lifecycle.projections.parallel import MAX_WORKERS, MIN_EVENTS
from lifecycle.store.settings import load_settings

log = get_logger("lifecycle.cli")
EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2


def utc_now() -> datetime:
    """The one place the command line reads the clock."""
    return datetime.now(UTC)


def emit_json(document: Any) -> None:
    click.echo(json.dumps(document, indent=2, default=str, ensure_ascii=False))


def given_actor() -> str | None:
    """The `--actor` given before the command, if any."""
    context = click.get_current_context(silent=True)
    root = context.find_root() if context is not None else None
    given = root.params.get("actor") if root is not None else None
    return given if isinstance(given, str) else None


@contextmanager
def open_ledger() -> Iterator[Ledger]:
    try:
        actor = command_line_actor(given_actor())
    except ArgumentRefused as error:
        refuse(error, EXIT_USAGE)
    try:
        ledger = Ledger(load_settings(), actor=actor)
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
@click.option("--actor", metavar="NAME",
              help=f"Who is acting: recorded on every event this command stores (default "
                   f"${ACTOR_ENV}, else the OS user).")
def cli(log_level: str, actor: str | None) -> None:
    """lifecycle: an event-sourced personal-data ledger with retention and crypto-shredding.

    Data lives in $LIFECYCLE_HOME (default ./lifecycle-data).
    """
    configure_logging(log_level)


# -- ingest ---------------------------------------------------------------------------

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
        # Bytes, each line decoded on its own: a bad line is rejected, not the whole input.
        if from_stdin:
            report = run_ingest(ledger, read_lines(sys.stdin.buffer), None, show_progress,
                                utc_now())
        else:
            total = count_lines(file) if show_progress else None
            with file.open("rb") as source:
                report = run_ingest(ledger, read_lines(source), total, show_progress,
                                    utc_now())
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
    for column in ("#", "event", "at", "actor", "details"):
        table.add_column(column)
    for entry in timeline:
        details = {k: v for k, v in entry.items()
                   if k not in ("version", "event", "at", "recorded_at", "fact_id", "actor")}
        table.add_row(str(entry["version"]), entry["event"], str(entry.get("at", "")),
                      entry["actor"],
                      ", ".join(f"{k}={v}" for k, v in details.items() if v not in (None, [])))
    Console().print(table)


def render_subject(view: dict[str, Any]) -> None:
    console = Console()
    console.print(f"[bold]{view['subject']}[/bold]  suppressed: {view['suppressed']}")
    records = Table(title="records")
    for column in ("record", "category", "purpose", "basis", "source", "collected", "data",
                   "retention"):
        records.add_column(column)
    for r in view["records"]:
        data = r["data"] if isinstance(r["data"], str) else json.dumps(r["data"],
                                                                       ensure_ascii=False)
        kept = r.get("retention") or {}
        decided = (f"{kept['rule']}: {kept['action']} {kept['dispose_at'][:10]}"
                   if kept.get("rule") else "")
        records.add_row(r["record"], r["category"], r["purpose"], r["basis"], r["source"],
                        r["collected_at"], data, decided)
    console.print(records)
    print_sections(console, view)


def print_sections(console: Console, view: dict[str, Any]) -> None:
    """A subject view's lists (consents, recipients, ...) as one table each."""
    for section in ("consents", "recipients", "restrictions", "objections", "holds",
                    "requests", "erasure_refusals", "activities", "consequences",
                    "limit_breaches"):
        rows = view.get(section) or []
        if not rows:
            continue
        table = Table(title=section.replace("_", " "))
        for column in rows[0]:
            table.add_column(column)
        for row in rows:
            table.add_row(*("" if v is None else str(v) for v in row.values()))
        console.print(table)


def refuse(error: LifecycleError, code: int = EXIT_REFUSED) -> NoReturn:
    click.echo(f"lifecycle: {error}", err=True)
    sys.exit(code)


def _or_exit(action: Callable[[], Any]) -> Any:
    try:
        return action()
    except LifecycleError as error:
        refuse(error)


def output_refused(option: str, path: Path, what: str) -> NoReturn:
    click.echo(f"lifecycle: {option} {path}: {what}", err=True)
    sys.exit(EXIT_USAGE)


def check_output(path: Path | None, option: str, suffix: str | None = None) -> None:
    """Exits 2 with one line naming the option and the path unless a file can be written
    there: its folder exists and is writable, it is not a folder, an existing file is
    writable, and it ends in `suffix` when one is required. Checked before any work."""
    if path is None:
        return
    if suffix is not None and path.suffix.lower() != suffix:
        output_refused(option, path, f"must end in {suffix}")
    folder = path.parent
    if not folder.is_dir():
        output_refused(option, path, f"the folder {folder} does not exist")
    if path.is_dir():
        output_refused(option, path, "is a folder, not a file")
    if path.exists() and not os.access(path, os.W_OK):
        output_refused(option, path, "is not writable")
    if not path.exists() and not os.access(folder, os.W_OK | os.X_OK):
        output_refused(option, path, f"the folder {folder} is not writable")


@contextmanager
def writing(path: Path, option: str) -> Iterator[None]:
    """A write that fails after the checks (a full disk, a file changed meanwhile) is one
    line naming the option, the path and the system's reason, exit 2."""
    try:
        yield
    except OSError as error:
        output_refused(option, path, f"cannot be written ({error.strerror or error})")


def write_output(text: str, out: Path | None, option: str = "--out") -> None:
    """To standard output, or to the file `out` (saying so on standard error)."""
    if out is None:
        click.echo(text, nl=False)
    else:
        with writing(out, option):
            out.write_text(text, encoding="utf-8")
        click.echo(f"written to {out}", err=True)


# -- DSAR --------------------------------------------------------------------------------

@cli.group()
def dsar() -> None:
    """Answer data-subject requests."""


@dsar.command("export")
@click.argument("reference")
@click.option("--as-of", "as_of_text", help="Show what was held then (RFC 3339); default now.")
@click.option("--format", "fmt", type=click.Choice(["json", "csv", "html"]), default="json",
              show_default=True)
@click.option("--out", type=click.Path(path_type=Path),
              help="Write to this file instead of standard output.")
def dsar_export(reference: str, as_of_text: str | None, fmt: str, out: Path | None) -> None:
    """The subject access (and portability) export for REFERENCE."""
    from lifecycle.services.dsar_render import render_export

    as_of = parse_time(as_of_text, "--as-of") or utc_now()
    check_output(out, "--out")
    with open_ledger() as ledger:
        document = _or_exit(lambda: ledger.dsar_export(reference, as_of))
    log.info("dsar.exported", as_of=as_of.isoformat(), format=fmt,
             records=len(document["records"]))
    write_output(render_export(document, fmt), out)


@cli.group()
def requests() -> None:
    """Rights requests and their statutory deadlines."""


@requests.command("list")
@click.option("--overdue", is_flag=True, help="Only requests past their deadline.")
@click.option("--due-within", type=click.IntRange(0, 36_500), metavar="DAYS",
              help="Only requests due within DAYS days (overdue included).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def requests_list(overdue: bool, due_within: int | None, as_json: bool) -> None:
    """Open requests by deadline (UK ICO clock, England and Wales bank holidays)."""
    now = utc_now()
    with open_ledger() as ledger:
        rows = ledger.requests(now, overdue_only=overdue, due_within=due_within)
    if as_json:
        emit_json({"at": now.isoformat(), "requests": rows})
        return
    table = Table(title=f"open requests ({len(rows)})")
    for column in ("deadline", "days left", "request", "kind", "subject", "received", "state"):
        table.add_column(column)
    for r in rows:
        state = "overdue" if r["overdue"] else ("paused" if r["paused"] else "open")
        if r["extended_months"]:
            state += f", extended {r['extended_months']}m"
        table.add_row(r["deadline"] or "(no clock)", "" if r["days_left"] is None
                      else str(r["days_left"]), r["request"], r["kind"], r["subject"],
                      r["received_at"][:10], state)
    Console().print(table)


@cli.group()
def notifications() -> None:
    """Recipients to tell of erasures (UK GDPR Art 19)."""


@notifications.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include acknowledged items.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def notifications_list(show_all: bool, as_json: bool) -> None:
    """Open notification items; an `erasure-acknowledged` fact closes one."""
    with open_ledger() as ledger:
        rows = ledger.notifications(open_only=not show_all)
    if as_json:
        emit_json({"notifications": rows})
        return
    table = Table(title=f"erasure notifications ({len(rows)})")
    for column in ("erased", "subject", "erasure", "recipient", "records", "acknowledged"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["erased_at"][:10], r["subject"], r["erasure"], r["recipient"],
                      ", ".join(r["records"]), (r["acknowledged_at"] or "")[:10])
    Console().print(table)


@cli.command()
@click.argument("request")
@click.option("--subject", "reference", help="The subject, when the request id is not unique.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def certificate(request: str, reference: str | None, as_json: bool) -> None:
    """The deletion certificate of erasure REQUEST."""
    with open_ledger() as ledger:
        document = _or_exit(lambda: ledger.certificate(request, reference, utc_now()))
    if as_json:
        emit_json(document)
        return
    click.echo(f"Deletion certificate: request {document['request']} of {document['subject']}"
               f" (received {document['received_at'][:10]}, {document['status']})")
    for item in document["erased"]:
        click.echo(f"  erased {item['record']} ({item['category']}, {item['purpose']}) "
                   f"at {item['erased_at']}")
    for item in document["kept"]:
        click.echo(f"  kept   {item['record']}: {item['ground']}")
    click.echo(f"  keys destroyed: {len(document['keys_destroyed'])} "
               f"(all confirmed: {document['all_keys_destroyed']})")
    final = document.get("final_in_backups_from")
    click.echo(f"  final in backups from {final}" if final else
               "  not yet final in backups: until the next master-key rotation completes")
    for item in document["recipients"]:
        click.echo(f"  told {item['recipient']} at {item['notified_at'][:10]}; acknowledged: "
                   f"{(item['acknowledged_at'] or 'not yet')[:10]}")
    for item in document["timeline"]:
        click.echo(f"  step   {item['step']} at {(item['at'] or '')[:19]} recorded "
                   f"{(item['recorded_at'] or '')[:19]} by {item['actor']}")
    events = document["events"]
    click.echo(f"  covers {events['count']} events, digest {events['subject_chain_digest']}")


# -- policy ------------------------------------------------------------------------------

def finite_seconds(value: float) -> float:
    """A number of seconds that is a number (nan slips past a range's comparisons)."""
    if not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a number of seconds", param_hint="--interval")
    return value


def parse_time(value: str | None, option: str) -> datetime | None:
    """An RFC 3339 time with offset (a bare date means 00:00 UTC), between 1900-01-01 and
    2200-01-01 as every time lifecycle stores or computes with (docs/facts.md)."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an RFC 3339 time", param_hint=option)
    if parsed.tzinfo is None:
        if len(value) == 10:
            parsed = parsed.replace(tzinfo=UTC)
        else:
            raise click.BadParameter("the time needs a UTC offset, e.g. +00:00",
                                     param_hint=option)
    if not within_time_bounds(parsed):
        raise click.BadParameter(f"{value!r} is outside 1900-01-01 to 2200-01-01",
                                 param_hint=option)
    return parsed


@cli.group()
def policy() -> None:
    """Check and adopt retention policies (config/*.toml)."""


@policy.command("check")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--notice", type=click.Path(dir_okay=False, path_type=Path),
              help="Also hold FILE to this notice text: hash, verbatim quotes, rationales.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def policy_check(file: Path, notice: Path | None, as_json: bool) -> None:
    """Report every error in a policy FILE (file, key, reason); exit 2 if any."""
    from lifecycle.policy.loader import check_policy

    problems = check_policy(file, notice)
    if as_json:
        emit_json({"file": str(file), "ok": not problems,
                   "problems": [p.as_dict() for p in problems]})
    else:
        for problem in problems:
            click.echo(str(problem))
        if not problems:
            click.echo(f"{file}: ok")
    sys.exit(EXIT_USAGE if problems else EXIT_OK)


@policy.command("adopt")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--at", "at_text", help="Adoption time (RFC 3339); default now.")
@click.option("--dry-run", is_flag=True,
              help="Only report what adopting would make due at once; adopt nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def policy_adopt(file: Path, at_text: str | None, dry_run: bool, as_json: bool) -> None:
    """Adopt a policy FILE: recorded as a versioned, content-hashed event. First reports
    its impact: the records a sweep now would erase or flag under it, by rule."""
    now = utc_now()
    at = parse_time(at_text, "--at") or now
    if not dry_run:
        try:
            refuse_adoption_time(at, now)
        except ArgumentRefused as error:
            raise click.BadParameter(str(error), param_hint="--at") from None
    with open_ledger() as ledger:
        impact = ledger.adoption_impact(file, at, now)
        if dry_run:
            adoption, changed = ledger.store.latest_adoption(), False
        else:
            adoption, changed = ledger.adopt_policy(file, at, now)
    impact_document = impact.as_dict() if impact is not None else None
    document: dict[str, Any] = {"dry_run": dry_run, "new": changed, "impact": impact_document}
    if adoption is not None:
        document.update({
            "policy": adoption.policy_id, "version": adoption.version,
            "adoption": adoption.number, "content_hash": adoption.content_hash,
            "adopted_at": adoption.adopted_at.isoformat()})
    log.info("policy.adopted" if changed else "policy.adopt_checked",
             **{k: v for k, v in document.items() if k != "impact"},
             overdue=impact_document["overdue"] if impact_document else 0)
    if as_json:
        emit_json(document)
        return
    if impact_document is not None:
        print_impact(impact_document, dry_run)
    if dry_run:
        click.echo("dry run: nothing adopted")
    elif adoption is not None:
        state = "adopted" if changed else "already in force"
        click.echo(f"{adoption.label} {state} from {adoption.adopted_at.isoformat()} "
                   f"(sha256 {adoption.content_hash[:16]}…)")


def print_impact(impact: dict[str, Any], dry_run: bool) -> None:
    """What the policy makes due at once: counts by rule, then the first few items."""
    verb = "would make" if dry_run else "makes"
    if not impact["overdue"]:
        click.echo(f"impact: {impact['adoption']} {verb} no record due at once"
                   + (f" ({impact['paused']} paused by a hold or restriction)"
                      if impact["paused"] else ""))
        return
    click.echo(f"impact: {impact['adoption']} {verb} {impact['overdue']} records due at once "
               f"({impact['erase']} to erase, {impact['review']} to review; "
               f"{impact['already_due']} were already due, {impact['paused']} paused by a "
               "hold or restriction); the next sweep disposes of them")
    for row in impact["by_rule"]:
        click.echo(f"  {row['records']:6} {row['action']:6} under {row['rule']}")
    for item in impact["first"]:
        click.echo(f"  e.g. {item['subject']} {item['record']} under {item['rule']} "
                   f"(due {item['due_at'][:10]})")


# -- projections ---------------------------------------------------------------------------

@cli.group()
def projections() -> None:
    """Read models that follow the event log."""


@projections.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def projections_status(as_json: bool) -> None:
    """Each projection's position and lag behind the log."""
    with open_ledger() as ledger:
        statuses = ledger.projections.status()
    rows = [{"name": st.name, "position": st.position, "head": st.head, "lag": st.lag}
            for st in statuses]
    if as_json:
        emit_json({"projections": rows})
        return
    table = Table(title="projections")
    for column in ("name", "position", "head", "lag"):
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    Console().print(table)


@projections.command("rebuild")
@click.argument("names", nargs=-1)
@click.option("--workers", type=click.IntRange(1, MAX_WORKERS),
              help="Processes to share a full rebuild among (default: one per CPU, at "
                   f"most {MAX_WORKERS}, once the log holds {MIN_EVENTS:,} events).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def projections_rebuild(names: tuple[str, ...], workers: int | None, as_json: bool) -> None:
    """Rebuild the named projections (all by default) from the first event."""
    with open_ledger() as ledger:
        try:
            events = ledger.rebuild_projections(list(names) or None, workers)
        except KeyError as error:
            raise click.BadParameter(str(error.args[0]), param_hint="NAMES") from None
        except LifecycleError as error:  # a shared rebuild that failed: nothing changed
            refuse(error)
    chosen = list(names) or [p.name for p in ledger.projections.projections]
    if as_json:
        emit_json({"rebuilt": chosen, "events": events})
    else:
        click.echo(f"rebuilt {', '.join(chosen)} from {events} events")


# -- sweeps --------------------------------------------------------------------------------

@cli.command()
@click.option("--at", "at_text", help="Sweep as of this time (RFC 3339); default now.")
@click.option("--dry-run", is_flag=True, help="Show what is due; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def sweep(at_text: str | None, dry_run: bool, as_json: bool) -> None:
    """Erase (crypto-shred) or flag for review everything due at --at."""
    now = utc_now()
    at = parse_time(at_text, "--at") or now
    with open_ledger() as ledger:
        try:  # Ledger.sweep refuses a sweep ahead of the clock before it writes anything
            report = ledger.sweep(at, now, dry_run)
        except ArgumentRefused as error:
            refuse(error, EXIT_USAGE)
    log.info("sweep.finished", at=at.isoformat(), dry_run=dry_run, erased=len(report.erased),
             reviews=len(report.reviews), paused=len(report.paused))
    if as_json:
        emit_json(report.as_dict())
    else:
        verb = "would erase" if dry_run else "erased"
        click.echo(f"sweep at {at.isoformat()}: {verb} {len(report.erased)}, "
                   f"reviews {len(report.reviews)}, paused {len(report.paused)}")
        for item in report.erased:
            click.echo(f"  {verb} {item['subject']} {item['record']} under {item['rule']} "
                       f"({item['policy']}, due {item['due_at'][:10]})")
        for item in report.paused:
            click.echo(f"  paused {item['subject']} {item['record']}: {item['paused_by']}")
    for item in report.failed:
        click.echo(f"lifecycle: sweep: subject {item['subject']} could not be swept "
                   f"({item['error']}); the others were", err=True)
    if report.failed:
        sys.exit(EXIT_REFUSED)


# -- daemon and status -------------------------------------------------------------------

@cli.command()
@click.option("--interval", type=click.FloatRange(min=0, min_open=True, max=31_622_400),
              callback=lambda _c, _p, value: finite_seconds(value), default=300.0,
              show_default=True,
              help="Seconds between sweeps.")
@click.option("--due-soon-days", type=click.IntRange(1, 3_650), default=DUE_SOON_DAYS, show_default=True,
              help="Flag open requests due within this many days.")
def daemon(interval: float, due_soon_days: int) -> None:
    """Keep projections current, sweep and flag requests due soon or overdue, at start
    and every --interval seconds."""
    from lifecycle.daemon import Daemon

    with open_ledger() as ledger:
        Daemon(ledger, interval, due_soon_days=due_soon_days).run(restore_signals=False)


@cli.command()
@click.option("--next", "next_count", type=click.IntRange(0, 100_000), default=10,
              show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def status(next_count: int, as_json: bool) -> None:
    """The last sweep, the next items due, and projection lag."""
    from lifecycle.cli.keys import key_status, render_key_status

    with open_ledger() as ledger:
        document = ledger.status(next_count)
        document["keys"] = key_status(ledger.vault, utc_now())
    if as_json:
        emit_json(document)
        return
    for line in render_key_status(document["keys"]):
        click.echo(line)
    last = document["last_sweep"]
    click.echo("last sweep: " + ("never" if last is None else
               f"at {last['swept_at']} (ran {last['started_at']}): erased {last['erased']}, "
               f"reviews {last['reviews']}, paused {last['paused']}"))
    click.echo(f"policy: {document['policy'] or 'none adopted'}")
    click.echo("projection lag: " + ", ".join(
        f"{p['name']} {p['lag']}" for p in document["projections"]))
    click.echo(f"next due ({document['pending']} pending):")
    for item in document["next_due"]:
        click.echo(f"  {item['dispose_at'][:10]} {item['action']:6} {item['subject']} "
                   f"{item['record']} ({item['rule']})")


@cli.command()
@click.option("--months", type=click.IntRange(min=1, max=1200), default=12, show_default=True)
@click.option("--from", "from_text", help="Start of the forecast (RFC 3339); default now.")
@click.option("--plot", type=click.Path(path_type=Path),
              help="Also draw the forecast as a PNG chart (a .png file).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def forecast(months: int, from_text: str | None, plot: Path | None, as_json: bool) -> None:
    """Erasures due per month and per rule, as a table (and a chart)."""
    from lifecycle.services.forecast import draw_forecast, monthly_forecast

    start = parse_time(from_text, "--from") or utc_now()
    check_output(plot, "--plot", ".png")
    with open_ledger() as ledger:
        ledger.projections.catch_up()
        result = monthly_forecast(ledger.views, start, months, ledger.policy_zone())
    if plot is not None:
        with writing(plot, "--plot"):
            draw_forecast(result, plot)
    if as_json:
        emit_json(result)
        return
    table = Table(title=f"erasures due per month from {result['from'][:10]}")
    table.add_column("month")
    for rule in result["rules"]:
        table.add_column(rule, justify="right")
    table.add_column("total", justify="right")
    for row in result["months"]:
        table.add_row(row["month"], *(str(row["by_rule"].get(r, 0)) for r in result["rules"]),
                      str(row["total"]))
    Console().print(table)
    if plot is not None:
        click.echo(f"chart written to {plot}")


# -- demo --------------------------------------------------------------------------------

@cli.command()
@click.option("--org", type=click.Choice(["hqip", "ihpa"]), default="hqip", show_default=True)
@click.option("--subjects", type=click.IntRange(1, 1_000_000), default=600, show_default=True)
@click.option("--subject", "reference", default="subscriber:demo-1", show_default=True)
def demo(org: str, subjects: int, reference: str) -> None:
    """Adopt a policy, ingest the sample, then sweep month by month over two years."""
    from dateutil.relativedelta import relativedelta

    from lifecycle.services.samples import generate_facts

    started = utc_now()
    policy_file = bundled_policy(org)
    adopted_at = datetime(2023, 1, 1, tzinfo=UTC)
    first_sweep = datetime(2024, 1, 1, tzinfo=UTC)
    with open_ledger() as ledger:
        adoption, _ = ledger.adopt_policy(policy_file, adopted_at)
        click.echo(f"policy {adoption.label} in force from {adopted_at.date()}")
        lines = (json.dumps(fact) for fact in generate_facts(org, subjects))
        print_ingest_summary(f"sample {org}", run_ingest(ledger, lines, None, False, started))
        totals: dict[str, int] = {}
        for month in range(24):
            at = first_sweep + relativedelta(months=month)
            report = ledger.sweep(at, utc_now())
            for item in report.erased:
                totals[item["rule"]] = totals.get(item["rule"], 0) + 1
            line = (f"{at.date()}: erased {len(report.erased):4}, "
                    f"reviews {len(report.reviews):3}, paused {len(report.paused):2}")
            rules = sorted({item["rule"] for item in report.erased})
            click.echo(line + (f"  ({', '.join(rules)})" if rules else ""))
        click.echo("summary: " + (", ".join(f"{n} under {rule}" for rule, n in
                                             sorted(totals.items())) or "nothing erased"))
        click.echo(f"demo finished in {(utc_now() - started).total_seconds():.1f} s")
        view = _or_exit(lambda: ledger.subject_view(reference))
    render_subject(view)


from lifecycle.cli.auditor import audit, replay, report  # noqa: E402 (their own module)

cli.add_command(audit)
cli.add_command(replay)
cli.add_command(report)
from lifecycle.cli.keys import register as register_key_commands  # noqa: E402

register_key_commands(cli)

from lifecycle.cli.breaches import breaches  # noqa: E402 (the breach register's commands)

cli.add_command(breaches)


def undecodable_event(error: MapperDeserialisationError) -> str:
    """Which stored event cannot be decoded (its topic, aggregate and version, never its
    content): the library's message up to the reason, which may quote the content."""
    where = str(error).split(": ", 1)[0].removeprefix("Failed to deserialise state of ")
    return (f"the event log holds an event that cannot be decoded ({where}); the store is "
            "damaged: run `lifecycle audit verify`")


def damaged_store(error: BaseException) -> str | None:
    """One line for a SQLite file that is not a database or is damaged (found when it is
    first read): the home and SQLite's reason; None for any other error."""
    cause: BaseException | None = error
    while cause is not None and not isinstance(cause, sqlite3.DatabaseError):
        cause = getattr(cause, "orig", None) or cause.__cause__
    if cause is None or isinstance(cause, sqlite3.IntegrityError):
        return None
    settings = load_settings()
    if settings.database_url is not None:
        return None
    return str(settings.open_error(cause))

from lifecycle.cli import cases as cli_cases  # noqa: E402 (the responders' desk commands)

for _desk_command in (cli_cases.request_group, cli_cases.hold_group, cli_cases.users_group,
                      cli_cases.serve):
    cli.add_command(_desk_command)
subject.add_command(cli_cases.subject_find)
notifications.add_command(cli_cases.notifications_ack)


def undecodable_argument(arguments: list[str]) -> str | None:
    """Where an argument holds bytes that are not UTF-8 (the shell's or a script's other
    encoding), named by its option or its place after the command; never the value."""
    words: list[str] = []  # the command's words: `hold place`
    positional = 0
    skip = False
    for position, argument in enumerate(arguments):
        try:
            argument.encode("utf-8")
        except UnicodeEncodeError:
            before = arguments[position - 1] if position else ""
            if before.startswith("-") and "=" not in before:
                return f"{before}: not valid UTF-8"
            if argument.startswith("-"):
                name = argument.partition("=")[0]
                if "=" in argument and name.isascii():
                    return f"{name}: not valid UTF-8"
                return "an option's name is not valid UTF-8"
            command = " ".join(words) or "lifecycle"
            return f"argument {positional - len(words) + 1} of `{command}` is not valid UTF-8"
        if skip:
            skip = False
        elif argument in ("--log-level", "--actor") and not words:
            skip = True
        elif not argument.startswith("-"):
            if (len(words) == positional and argument.isascii()
                    and argument.replace("-", "").isalpha()):
                words.append(argument)
            positional += 1
    return None


def writing_standard_output(error: OSError) -> bool:
    """Whether the error came from writing standard output (the commands print through
    click.echo, and tables through a rich Console)."""
    frame = error.__traceback__
    while frame is not None:
        code, local = frame.tb_frame.f_code, frame.tb_frame.f_locals
        where = code.co_filename.replace("\\", "/")
        if code.co_name == "echo" and where.endswith("click/utils.py"):
            return not local.get("err")
        if where.endswith("rich/console.py") and hasattr(local.get("self"), "file"):
            return bool(local["self"].file is sys.stdout)
        frame = frame.tb_next
    return False


def lost_standard_output(error: OSError) -> NoReturn:
    """One line for a standard output that cannot be written, exit 2."""
    sys.stdout = open(os.devnull, "w")  # the interpreter's own flush at exit stays quiet
    click.echo("lifecycle: standard output cannot be written "
               f"({error.strerror or type(error).__name__}); use --out FILE where the "
               "command has it", err=True)
    sys.exit(EXIT_USAGE)


def main() -> None:
    # Owner only for whatever the process creates: stores, their journals, leases, exports.
    os.umask(0o077)
    if sys.stdout is None:  # started with standard output closed (`>&-`)
        click.echo("lifecycle: standard output is closed (give the command somewhere to "
                   "write, e.g. >/dev/null); nothing was done", err=True)
        sys.exit(EXIT_USAGE)
    undecodable = undecodable_argument(sys.argv[1:])
    if undecodable is not None:
        click.echo(f"lifecycle: {undecodable} (give references, options and text in UTF-8); "
                   "nothing was done", err=True)
        sys.exit(EXIT_USAGE)
    try:
        code = cli.main(standalone_mode=False)
        try:
            sys.stdout.flush()  # what is still buffered: its error is standard output's
        except OSError as error:
            lost_standard_output(error)
    except click.exceptions.NoArgsIsHelpError as error:  # no command: the help, exit 2
        error.show()
        sys.exit(EXIT_USAGE)
    except click.ClickException as error:  # a usage error: one line, exit 2
        message = " ".join(error.format_message().split())
        click.echo(f"lifecycle: {message}", err=True)
        sys.exit(error.exit_code)
    except click.Abort:
        click.echo("lifecycle: aborted", err=True)
        sys.exit(EXIT_REFUSED)
    except ConfigurationError as error:
        click.echo(f"lifecycle: configuration error: {error}", err=True)
        sys.exit(EXIT_USAGE)
    except ArgumentRefused as error:
        refuse(error, EXIT_USAGE)
    except LifecycleError as error:
        refuse(error)
    except MapperDeserialisationError as error:
        log.debug("undecodable event", exc_info=True)
        click.echo(f"lifecycle: {undecodable_event(error)}", err=True)
        sys.exit(EXIT_REFUSED)
    except Exception as error:  # noqa: BLE001 - one line, never a traceback
        if isinstance(error, OSError) and writing_standard_output(error):
            lost_standard_output(error)
        damaged = damaged_store(error)
        if damaged is not None:
            log.debug("damaged store", exc_info=True)
            click.echo(f"lifecycle: configuration error: {damaged}", err=True)
            sys.exit(EXIT_USAGE)
        # Only the type: a driver's message may quote the values of a statement.
        log.debug("unexpected error", exc_info=True)
        click.echo(f"lifecycle: unexpected error ({type(error).__name__}); what was "
                   "stored before it stays stored, run with --log-level DEBUG for details",
                   err=True)
        sys.exit(EXIT_REFUSED)
    sys.exit(code if isinstance(code, int) else EXIT_OK)
