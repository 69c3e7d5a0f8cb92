"""Responders' desk commands: a command for every case action, finding a person by e-mail,
desk users and the service.

Registered in `lifecycle.cli.main` (`cli.add_command(...)`, `subject.add_command(...)`,
`notifications.add_command(...)`). The shared helpers (`open_ledger`, `parse_time`, ...)
are imported from `lifecycle.cli.main` when a command runs. Every write names its actor:
--actor, else $LIFECYCLE_ACTOR, else the operating-system user.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any

import click

from lifecycle.store.actor import ACTOR_ENV, command_line_actor
from lifecycle.services.cases.actions import REQUEST_ACTIONS, ActionResult
from lifecycle.domain.errors import LifecycleError


def actor_of(given: str | None) -> str:
    """Who is acting: the command's --actor, else the main group's (`command_line_actor`)."""
    from lifecycle.cli.main import given_actor

    return command_line_actor(given or given_actor())


actor_option = click.option("--actor", help=f"Who acts (default: ${ACTOR_ENV}, else the "
                                            "operating-system user).")
at_option = click.option("--at", "at_text", help="When it happened (RFC 3339); default now.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
key_option = click.option(
    "--idempotency-key", "submission", metavar="KEY",
    help="Any text naming this submission: run again with the same KEY (a retry after a "
         "timeout), it records nothing twice and says `already recorded`.")


def _run(action: Callable[[Any, datetime], ActionResult], at_text: str | None,
         as_json: bool) -> None:
    from lifecycle.cli.main import EXIT_REFUSED, emit_json, open_ledger, parse_time, utc_now

    now = utc_now()
    at = parse_time(at_text, "--at") or now
    with open_ledger() as ledger:
        try:
            result = action(ledger, at)
        except LifecycleError as error:
            click.echo(f"lifecycle: {error}", err=True)
            sys.exit(EXIT_REFUSED)
    if as_json:
        emit_json(result.as_dict())
    else:
        fact = result.fact
        state = "already recorded" if result.duplicate else "recorded"
        when = f" at {fact['at']}" if "at" in fact else ""
        click.echo(f"{fact['type']} {state} for {fact['subject']}{when} "
                   f"by {result.actor} (fact {fact['id']})")


# -- request actions -------------------------------------------------------------------

@click.group("request")
def request_group() -> None:
    """Act on one rights request: each action records the fact an ingest would."""


def _request_command(action: str) -> click.Command:
    fact_type = REQUEST_ACTIONS[action]

    @click.argument("request")
    @click.option("--subject", help="The subject, when the request id is not unique.")
    @actor_option
    @at_option
    @key_option
    @json_option
    def command(request: str, subject: str | None, actor: str | None, at_text: str | None,
                submission: str | None, as_json: bool, reason: str | None = None,
                months: int | None = None) -> None:
        from lifecycle.services.cases.actions import act_on_request
        from lifecycle.cli.main import utc_now

        who = actor_of(actor)
        _run(lambda ledger, at: act_on_request(
            ledger, action, request, subject=subject, at=at, now=utc_now(), actor=who,
            reason=reason, months=months, submission=submission), at_text, as_json)

    if action in ("extend", "pause", "refuse"):
        command = click.option("--reason", required=action == "refuse",
                               help="A slug, e.g. complex-or-numerous, "
                                    "clarification-requested, manifestly-unfounded.")(command)
    if action == "extend":
        command = click.option("--months", type=click.IntRange(1, 2),
                               help="1 or 2 (default 2).")(command)
    return click.command(action, help=f"Record `{fact_type}` on REQUEST.")(command)


for _action in REQUEST_ACTIONS:
    request_group.add_command(_request_command(_action))


# -- holds -------------------------------------------------------------------------------

@click.group("hold")
def hold_group() -> None:
    """Place or release a legal hold on a subject."""


@hold_group.command("place")
@click.argument("subject")
@click.argument("hold")
@click.option("--scope", default="all", show_default=True,
              help="A policy purpose, or all.")
@click.option("--reason", required=True, help="Why (free text, stored sealed).")
@click.option("--until", "until_text", help="When the hold ends (RFC 3339).")
@actor_option
@at_option
@key_option
@json_option
def hold_place(subject: str, hold: str, scope: str, reason: str, until_text: str | None,
               actor: str | None, at_text: str | None, submission: str | None,
               as_json: bool) -> None:
    """Place legal hold HOLD on SUBJECT (records `legal-hold-placed`)."""
    from lifecycle.services.cases.actions import place_hold
    from lifecycle.cli.main import parse_time, utc_now

    until = parse_time(until_text, "--until")
    who = actor_of(actor)
    _run(lambda ledger, at: place_hold(ledger, subject, hold, scope, reason, at, utc_now(),
                                       who, until, submission=submission), at_text, as_json)


@hold_group.command("release")
@click.argument("subject")
@click.argument("hold")
@actor_option
@at_option
@key_option
@json_option
def hold_release(subject: str, hold: str, actor: str | None, at_text: str | None,
                 submission: str | None, as_json: bool) -> None:
    """Release legal hold HOLD of SUBJECT (records `legal-hold-released`)."""
    from lifecycle.services.cases.actions import release_hold
    from lifecycle.cli.main import utc_now

    who = actor_of(actor)
    _run(lambda ledger, at: release_hold(ledger, subject, hold, at, utc_now(), who,
                                         submission=submission), at_text, as_json)


# -- notifications ----------------------------------------------------------------------

@click.command("ack")
@click.argument("erasure")
@click.option("--recipient", help="The recipient, when several were told of ERASURE.")
@click.option("--subject", help="The subject, when the erasure id is not unique.")
@actor_option
@at_option
@key_option
@json_option
def notifications_ack(erasure: str, recipient: str | None, subject: str | None,
                      actor: str | None, at_text: str | None, submission: str | None,
                      as_json: bool) -> None:
    """Record a recipient's acknowledgement of ERASURE (`erasure-acknowledged`); ERASURE is
    the erasure column of `notifications list`."""
    from lifecycle.services.cases.actions import acknowledge
    from lifecycle.cli.main import utc_now

    who = actor_of(actor)
    _run(lambda ledger, at: acknowledge(ledger, erasure, at, utc_now(), who,
                                        recipient=recipient, subject=subject,
                                        submission=submission), at_text, as_json)


# -- finding a person -------------------------------------------------------------------

@click.command("find")
@click.option("--email", "address", required=True, metavar="ADDR",
              help="The address, in any spelling (case, sub-address, display name); `-` "
                   "reads it from standard input, keeping it out of shell history and ps.")
@json_option
def subject_find(address: str, as_json: bool) -> None:
    """The subjects whose live records hold the e-mail ADDR (through a keyed-hash index;
    no plaintext index exists). Exit 1 when none does."""
    from lifecycle.services.cases.address_index import AddressIndex
    from lifecycle.cli.main import EXIT_OK, EXIT_REFUSED, emit_json, open_ledger

    if address == "-":
        raw = sys.stdin.buffer.readline()
        try:
            address = raw.decode("utf-8-sig").strip()
        except UnicodeDecodeError:
            raise click.BadParameter("standard input is not valid UTF-8",
                                     param_hint="--email") from None
    with open_ledger() as ledger:
        result = AddressIndex(ledger).find(address)
    if as_json:
        emit_json(result.as_dict())
    else:
        if not result.is_address:
            click.echo("lifecycle: --email: not an e-mail address", err=True)
        for match in result.subjects:
            click.echo(f"{match.subject}  (records: {', '.join(match.records)})")
        if not result.subjects:
            click.echo("no subject holds this address")
        if result.suppressed:
            click.echo("the address is on the suppression list")
    sys.exit(EXIT_OK if result.subjects else EXIT_REFUSED)


# -- users ------------------------------------------------------------------------------

@click.group("users")
def users_group() -> None:
    """Desk users and their API tokens (for `lifecycle serve`)."""


@users_group.command("add")
@click.argument("name")
@click.option("--role", required=True, type=click.Choice(["dpo", "responder", "auditor",
                                                          "ingest"]))
@actor_option
def users_add(name: str, role: str, actor: str | None) -> None:
    """Add user NAME; prints its API token once (only a hash of it is kept)."""
    from lifecycle.services.cases.users import UserBook, UserRefused
    from lifecycle.cli.main import EXIT_USAGE, open_ledger, utc_now

    with open_ledger() as ledger:
        try:
            token = UserBook(ledger.vault.engine).add(name, role, utc_now(), actor_of(actor))
        except UserRefused as error:
            click.echo(f"lifecycle: users add: {error}", err=True)
            sys.exit(EXIT_USAGE)
    click.echo(f"user {name} ({role}) added; the token, shown only now:", err=True)
    click.echo(token)


@users_group.command("list")
@json_option
def users_list(as_json: bool) -> None:
    """Users, roles, and when each was added or revoked (never a token)."""
    from lifecycle.services.cases.users import UserBook
    from lifecycle.cli.main import emit_json, open_ledger

    with open_ledger() as ledger:
        rows = UserBook(ledger.vault.engine).list()
    if as_json:
        emit_json({"users": rows})
        return
    for row in rows:
        state = f"revoked {row['revoked_at'][:10]}" if row["revoked_at"] else "active"
        click.echo(f"{row['name']:20} {row['role']:10} {state}")


@users_group.command("revoke")
@click.argument("name")
def users_revoke(name: str) -> None:
    """Revoke user NAME: its token stops working at once."""
    from lifecycle.services.cases.users import UserBook, UserRefused
    from lifecycle.cli.main import EXIT_REFUSED, open_ledger, utc_now

    with open_ledger() as ledger:
        try:
            UserBook(ledger.vault.engine).revoke(name, utc_now())
        except UserRefused as error:
            click.echo(f"lifecycle: users revoke: {error}", err=True)
            sys.exit(EXIT_REFUSED)
    click.echo(f"user {name} revoked")


# -- the service ------------------------------------------------------------------------

@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False),
              help="Serve over TLS with this certificate (PEM); cookies are then Secure.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False),
              help="The TLS private key (PEM).")
def serve(host: str, port: int, tls_cert: str | None, tls_key: str | None) -> None:
    """The responders' desk: the API under /api and the pages, in one process."""
    from lifecycle.web.server import run

    run(host, port, tls_cert, tls_key)
