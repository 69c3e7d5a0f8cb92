"""Auditor commands: `lifecycle audit ...`, `lifecycle replay` and `lifecycle report ropa`.

Registered on the main group in `lifecycle.cli.main` (`cli.add_command(audit)`,
`cli.add_command(replay)`, `cli.add_command(report)`). The shared command-line helpers
(`open_ledger`, `parse_time`, ...) are imported from `lifecycle.cli.main` when a command runs,
so `lifecycle.cli.main` may import this module wherever it likes. Exit codes as everywhere:
0 ok, 1 refused (unknown subject, no policy in force, a log that does not verify), 2 usage
or configuration error.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from lifecycle.domain.errors import LifecycleError
from lifecycle.support.logs import get_logger
from lifecycle.services.replay import ReplayReport, ReplayTargetNotFresh, replay as run_replay

log = get_logger("lifecycle.auditor")


# -- audit -------------------------------------------------------------------------------

@click.group()
def audit() -> None:
    """Tamper evidence: a hash chain over every stored event, with signed checkpoints."""


@audit.command("verify")
@click.option("--anchor", "anchor_text", metavar="POSITION:DIGEST[:KEY]",
              help="Also check the log against a head kept outside the system "
                   "(as `audit anchor` prints it).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def audit_verify(anchor_text: str | None, as_json: bool) -> None:
    """Recompute every digest from the stored events and check every checkpoint's
    signature; exit 1 naming each problem."""
    from lifecycle.services.audit import Anchor, verify
    from lifecycle.cli.main import EXIT_OK, EXIT_REFUSED, emit_json, open_ledger

    try:
        anchor = Anchor.parse(anchor_text) if anchor_text else None
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--anchor") from None
    with open_ledger() as ledger:
        report = verify(ledger.store, ledger.views, anchor)
    log.info("audit.verified", ok=report.ok, events=report.events_checked, head=report.head,
             checkpoints=report.checkpoints, problems=len(report.problems))
    if as_json:
        emit_json(report.as_dict())
    else:
        for line in report.render():
            click.echo(line)
    sys.exit(EXIT_OK if report.ok else EXIT_REFUSED)


@audit.command("anchor")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def audit_anchor(as_json: bool) -> None:
    """Print the signed head of the chain, for an auditor to keep outside the system."""
    from lifecycle.services.audit import signed_head
    from lifecycle.cli.main import EXIT_REFUSED, emit_json, open_ledger

    with open_ledger() as ledger:
        head = signed_head(ledger.store)
    if head is None:
        click.echo("lifecycle: the store holds no events yet: nothing to anchor", err=True)
        sys.exit(EXIT_REFUSED)
    if as_json:
        emit_json(head)
        return
    for label, key in (("position", "position"), ("events", "events"),
                       ("log digest", "log_digest"), ("signed at", "signed_at"),
                       ("checkpoint", "checkpoint"), ("key fingerprint", "key_fingerprint"),
                       ("public key", "public_key"), ("signature", "signature"),
                       ("anchor", "anchor")):
        click.echo(f"{label}: {head[key]}")


@audit.command("chain")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def audit_chain(as_json: bool) -> None:
    """Chain a store written before the chain was kept with its events (once; refused
    when the chain holds anything). Vouches for the log as it stands now, not before."""
    from lifecycle.services.audit import ChainNotEmpty, chain_older_store
    from lifecycle.cli.main import EXIT_REFUSED, emit_json, open_ledger

    with open_ledger() as ledger:
        try:
            chained = chain_older_store(ledger.store)
        except ChainNotEmpty as error:
            click.echo(f"lifecycle: {error}: every event is chained as it is stored; "
                       "`lifecycle audit verify` checks it", err=True)
            sys.exit(EXIT_REFUSED)
    if as_json:
        emit_json({"chained": chained})
    else:
        click.echo(f"chained {chained} events")


# -- replay ------------------------------------------------------------------------------

@click.command()
@click.option("--until", "until_text",
              help="Rebuild the state as it stood at this time (RFC 3339); default now.")
@click.option("--subject", "reference", help="Also show this subject's replayed document.")
@click.option("--into", type=click.Path(file_okay=False, path_type=Path),
              help="Keep the replayed read models in DIR/views.sqlite (must not exist yet); "
                   "default: a temporary directory, removed afterwards.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def replay(until_text: str | None, reference: str | None, into: Path | None,
           as_json: bool) -> None:
    """Rebuild the state as of --until from the event log into fresh read models.

    A pure read of the event store: no event is written and no value is decrypted
    (values read "sealed", or "erased" once shredded).
    """
    from lifecycle.cli.main import EXIT_USAGE, open_ledger, output_refused, parse_time, refuse, utc_now

    until = parse_time(until_text, "--until") or utc_now()
    show_progress = sys.stderr.isatty() and not as_json
    with open_ledger() as ledger:
        try:
            if show_progress:
                head = ledger.projections.head()
                progress = Progress(TextColumn("replaying"), BarColumn(), MofNCompleteColumn(),
                                    TimeElapsedColumn(), console=Console(stderr=True),
                                    transient=True)
                with progress:
                    task = progress.add_task("replay", total=head)
                    advance: Callable[[int], None] = (
                        lambda n: progress.advance(task, n))  # noqa: E731
                    report = run_replay(ledger.store, until, into, reference, advance)
            else:
                report = run_replay(ledger.store, until, into, reference)
        except ReplayTargetNotFresh as error:
            refuse(error, EXIT_USAGE)
        except LifecycleError as error:
            refuse(error)
        except OSError as error:  # --into cannot be made or written
            if into is None:
                raise
            output_refused("--into", into, f"cannot be written ({error.strerror or error})")
    log.info("replay.finished", as_of=until.isoformat(), events_read=report.events_read,
             events_applied=report.events_applied, subjects=report.subjects,
             one_subject=reference is not None)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2, ensure_ascii=False, default=str))
    else:
        render_replay(report)


def render_replay(report: ReplayReport) -> None:
    console = Console()
    doc = report.as_dict()
    summary = Table(title=f"state as of {doc['as_of']} (replayed)", show_header=False)
    summary.add_column("")
    summary.add_column("", justify="right")
    policy = doc["policy"]
    events = doc["events"]
    for label, value in (
            ("policy in force", policy["label"] if policy else "none adopted"),
            ("events read", events["read"]),
            ("events applied", events["applied"]),
            ("events after as-of", events["after_as_of"]),
            ("subjects", doc["subjects"]),
            ("records held", doc["records"]["held"]),
            ("records erased by then", doc["records"]["erased"]),
            ("consents in force", doc["consents_in_force"]),
            ("suppressed", doc["suppressed"]),
            ("retention items due by then", doc["retention_due"]["total"]),
            ("read models", doc["read_models"] or "temporary (removed)")):
        summary.add_row(label, str(value))
    console.print(summary)
    if doc["disclosures_by_recipient"]:
        table = Table(title="disclosures by recipient")
        for column in ("recipient", "role", "country", "safeguard", "disclosures", "subjects"):
            table.add_column(column)
        for row in doc["disclosures_by_recipient"]:
            table.add_row(*("" if v is None else str(v) for v in row.values()))
        console.print(table)
    if doc["retention_due"]["by_rule"]:
        table = Table(title="retention items due by then, per rule")
        table.add_column("rule")
        table.add_column("items", justify="right")
        for rule, count in doc["retention_due"]["by_rule"].items():
            table.add_row(rule, str(count))
        console.print(table)
    if report.subject is not None:
        render_replayed_subject(console, report.subject)


def render_replayed_subject(console: Console, view: dict[str, Any]) -> None:
    from lifecycle.cli.main import print_sections

    console.print(f"[bold]{view['subject']}[/bold]  suppressed: {view['suppressed']}")
    records = Table(title="records (values sealed)")
    for column in ("record", "category", "purpose", "basis", "collected", "data", "retention"):
        records.add_column(column)
    for r in view["records"]:
        retention = r["retention"]
        records.add_row(r["record"], r["category"], r["purpose"], r["basis"],
                        r["collected_at"], r["data"],
                        "" if retention is None else
                        f"{retention['rule']} ({retention['action']} {retention['dispose_at']})")
    console.print(records)
    print_sections(console, view)


# -- report ropa -------------------------------------------------------------------------

@click.group()
def report() -> None:
    """Reports for auditors and the DPO."""


@report.command("ropa")
@click.option("--format", "fmt", type=click.Choice(["json", "html"]), default="json",
              show_default=True)
@click.option("--at", "at_text",
              help="The record as it stood then (RFC 3339): the policy in force and a replay "
                   "of the log; default the latest adoption and the live read models.")
@click.option("--out", type=click.Path(path_type=Path),
              help="Write to this file instead of standard output.")
def report_ropa(fmt: str, at_text: str | None, out: Path | None) -> None:
    """The Art 30(1) record of processing activities."""
    from lifecycle.cli.main import check_output, open_ledger, parse_time, refuse, utc_now, write_output
    from lifecycle.store.actor import add_adopters
    from lifecycle.services.ropa import build_ropa, to_html

    at = parse_time(at_text, "--at")
    check_output(out, "--out")
    with open_ledger() as ledger:
        try:
            document = add_adopters(build_ropa(ledger, at, utc_now()), ledger.store)
        except LifecycleError as error:
            refuse(error)
    log.info("ropa.generated", format=fmt, at=at.isoformat() if at else None,
             purposes=len(document["purposes"]), recipients=len(document["recipients"]))
    if fmt == "json":
        text = json.dumps(document, indent=2, ensure_ascii=False, default=str) + "\n"
    else:
        text = to_html(document)
    write_output(text, out)
