"""`lifecycle breaches list` and `lifecycle breaches impact BREACH` (Art 33/34).

Registered on the main group in `lifecycle.cli.main` (`cli.add_command(breaches)`); the shared
command-line helpers are imported from `lifecycle.cli.main` when a command runs. Exit codes as
everywhere: 0 ok, 1 refused (an unknown breach), 2 usage or configuration error.
"""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from lifecycle.services.breaches import breach_impact, list_breaches
from lifecycle.domain.errors import LifecycleError


@click.group()
def breaches() -> None:
    """The breach register: 72-hour reports to the ICO and the people affected."""


@breaches.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def breaches_list(as_json: bool) -> None:
    """Every breach with its 72-hour deadline (from awareness), report and flags."""
    from lifecycle.cli.main import emit_json, open_ledger, utc_now

    now = utc_now()
    with open_ledger() as ledger:
        rows = list_breaches(ledger.store, now)
    if as_json:
        emit_json({"at": now.isoformat(), "breaches": rows})
        return
    table = Table(title=f"breaches ({len(rows)})")
    for column in ("breach", "aware", "risk", "report by", "reported", "state"):
        table.add_column(column)
    for r in rows:
        state = ("OVERDUE" if r["overdue"] else "reported late" if r["reported_late"]
                 else "no report needed" if not r["must_report"] else
                 "reported" if r["reported_at"] else "open")
        if r["subjects_to_notify"]:
            state += ", people to notify (Art 34)"
        table.add_row(r["breach"], r["aware_at"][:16], r["risk"] or "not assessed",
                      r["report_deadline"][:16],
                      f"{r['reported_at'][:16]} ({r['ico_reference']})" if r["reported_at"]
                      else "", state)
    Console().print(table)


@breaches.command("impact")
@click.argument("breach")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def breaches_impact(breach: str, as_json: bool) -> None:
    """The subjects whose affected records were held and readable during BREACH's
    exposure window (for Art 34 notices), reconstructed from the event log."""
    from lifecycle.cli.main import emit_json, open_ledger, refuse

    with open_ledger() as ledger:
        try:
            document = breach_impact(ledger.store, breach)
        except LifecycleError as error:
            refuse(error)
    if as_json:
        emit_json(document)
        return
    click.echo(f"breach {document['breach']}: exposed {document['exposed_from']} to "
               f"{document['exposed_until']}; {document['subject_count']} subjects, "
               f"{document['records_affected']} records")
    for item in document["subjects"]:
        click.echo(f"  {item['subject']}: " + ", ".join(r["record"] for r in item["records"]))
