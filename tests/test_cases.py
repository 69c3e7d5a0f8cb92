"""The responders' desk commands: every case action records the fact an ingest would,
with its actor; finding a person by e-mail through a keyed-hash index; desk users."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from lifecycle.services.cases.actions import (ActionRefused, AmbiguousReference, acknowledge,
                                     act_on_request, place_hold, release_hold)
from lifecycle.services.cases import actions
from lifecycle.services.cases.address_index import AddressIndex, address_index
from lifecycle.services.cases.users import UserBook, UserRefused, users
from lifecycle.cli.main import cli
from lifecycle.services.ledger import Ledger
from tests.facts_builder import collected, fact, lines

NOW = datetime(2025, 3, 3, 12, 0, tzinfo=UTC)
EMAIL = "Ngozi.Okafor-Lindqvist+news@Example.ORG"


def seed(ledger: Ledger) -> None:
    report = ledger.ingest(lines([
        collected("m:1", "2025-01-02T10:00:00Z", "signup", {"email": EMAIL, "name": "Ngozi"}),
        fact("access-requested", "m:1", "2025-02-01T09:00:00Z", request="SAR-1",
             identity_check=True),
        collected("m:2", "2025-01-03T10:00:00Z", "signup", {"email": "other@example.org"}),
        fact("shared", "m:2", "2025-01-04T10:00:00Z", recipient="mailhouse", role="processor",
             purpose="direct-marketing", basis="consent", categories=["contact"],
             country="GB"),
        fact("erasure-requested", "m:2", "2025-02-02T09:00:00Z", request="ER-2"),
    ]), NOW)
    assert report.ok, report.as_dict()


def open_request(ledger: Ledger, request: str) -> dict[str, object]:
    return next(r for r in ledger.requests(NOW) if r["request"] == request)


def test_each_request_action_records_the_fact_an_ingest_would(ledger: Ledger) -> None:
    """A case action's fact, ingested again as a line, is a duplicate: the same fact an
    ingest of it writes; the case moves as the statutory clock says."""
    seed(ledger)
    before = open_request(ledger, "SAR-1")
    assert before["deadline"] is None  # waits for identity
    result = act_on_request(ledger, "verify", "SAR-1", subject=None,
                            at=datetime(2025, 2, 3, 9, tzinfo=UTC), now=NOW, actor="ana")
    assert result.fact["type"] == "identity-verified" and result.fact["subject"] == "m:1"
    again = ledger.ingest([json.dumps(result.fact)], NOW)
    assert (again.accepted, again.duplicates) == (0, 1)
    assert open_request(ledger, "SAR-1")["deadline"] == "2025-03-03"
    act_on_request(ledger, "extend", "SAR-1", subject="m:1", at=datetime(
        2025, 2, 10, tzinfo=UTC), now=NOW, actor="ana", months=1, reason="complex-or-numerous")
    assert open_request(ledger, "SAR-1")["extended_months"] == 1
    act_on_request(ledger, "fulfil", "SAR-1", subject=None, at=NOW, now=NOW, actor="ana")
    assert all(r["request"] != "SAR-1" for r in ledger.requests(NOW))
    events = [e["event"] for e in ledger.history("m:1")]
    assert events[-3:] == ["IdentityVerified", "RequestExtended", "RequestFulfilled"]


def test_a_refused_action_stores_nothing_and_says_why(ledger: Ledger) -> None:
    """An action the ingest would reject (a step on a closed request, an unknown request, a
    bad reason) raises with the reason and stores nothing."""
    seed(ledger)
    act_on_request(ledger, "verify", "SAR-1", subject="m:1", at=NOW, now=NOW, actor="ana")
    act_on_request(ledger, "fulfil", "SAR-1", subject="m:1", at=NOW, now=NOW, actor="ana")
    version = len(ledger.history("m:1"))
    with pytest.raises(ActionRefused, match="identity-verified: .*nothing was stored"):
        act_on_request(ledger, "verify", "SAR-1", subject="m:1", at=NOW, now=NOW, actor="a")
    with pytest.raises(ActionRefused, match="reason"):
        act_on_request(ledger, "refuse", "SAR-1", subject="m:1", at=NOW, now=NOW,
                       actor="a", reason="Not A Slug")
    with pytest.raises(ActionRefused, match="never received"):
        act_on_request(ledger, "pause", "NOPE", subject="m:1", at=NOW, now=NOW, actor="a")
    assert len(ledger.history("m:1")) == version


def test_holds_and_acknowledgements_are_case_actions(ledger: Ledger) -> None:
    """A hold is placed and released, and an Art 19 item acknowledged, without any
    hand-written fact; the acknowledged item leaves the open list."""
    seed(ledger)
    place_hold(ledger, "m:1", "LIT-9", "all", "pending claim", NOW, NOW, "dpo-1")
    view = ledger.subject_view("m:1")
    assert [h["hold"] for h in view["holds"]] == ["LIT-9"]
    release_hold(ledger, "m:1", "LIT-9", NOW, NOW, "dpo-1")
    items = ledger.notifications()
    assert [(i["erasure"], i["recipient"]) for i in items] == [("ER-2", "mailhouse")]
    acknowledge(ledger, "ER-2", NOW, NOW, "ana")
    assert ledger.notifications() == []
    with pytest.raises(Exception, match="no open notification"):
        acknowledge(ledger, "ER-2", NOW, NOW, "ana")


def test_find_by_email_through_keyed_hashes_only(ledger: Ledger) -> None:
    """Any spelling of an address finds its subject; the index holds only keyed hashes
    (no row contains the address or its local part); an unknown address finds nobody."""
    seed(ledger)
    index = AddressIndex(ledger)
    found = index.find("  ngozi.okafor-lindqvist@EXAMPLE.org ")
    assert [m.subject for m in found.subjects] == ["m:1"] and not found.suppressed
    assert index.find("Ngozi <NGOZI.OKAFOR-LINDQVIST+x@example.org>").subjects[0].subject == "m:1"
    assert index.find("nobody@example.org").subjects == []
    with ledger.views.connect() as conn:
        rows = [" ".join(map(str, r)) for r in conn.execute(sa.select(address_index))]
    assert rows and not any("okafor" in r.lower() or "example" in r.lower() for r in rows)


def test_an_erased_address_leaves_the_index_and_a_suppressed_one_says_so(
        ledger: Ledger) -> None:
    """After an erasure the address finds nobody (its rows are gone); after an unsubscribe
    the subject is still found and the address is reported as suppressed."""
    seed(ledger)
    index = AddressIndex(ledger)
    assert index.find("other@example.org").subjects == []  # m:2 was erased at once
    ledger.ingest(lines([fact("unsubscribed", "m:1", "2025-02-05T00:00:00Z")]), NOW)
    found = index.find(EMAIL)
    assert [m.subject for m in found.subjects] == ["m:1"] and found.suppressed
    ledger.ingest(lines([fact("erasure-requested", "m:1", "2025-02-06T00:00:00Z",
                              request="ER-1")]), NOW)
    found = index.find(EMAIL)
    assert found.subjects == [] and found.suppressed
    with ledger.views.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(address_index)).scalar() == 0


def test_users_tokens_are_stored_only_as_hashes_and_revocation_is_immediate(
        ledger: Ledger) -> None:
    """A token authenticates its user until revoked; the table never holds the token;
    unknown roles and duplicate names are refused."""
    book = UserBook(ledger.vault.engine)
    token = book.add("ana", "responder", NOW, "os:root")
    assert book.authenticate(token) is not None and book.authenticate(token + "x") is None
    with ledger.vault.engine.connect() as conn:
        stored = " ".join(str(v) for row in conn.execute(sa.select(users)) for v in row)
    assert token not in stored and token[3:20] not in stored
    with pytest.raises(UserRefused, match="exists"):
        book.add("ana", "dpo", NOW, "x")
    with pytest.raises(UserRefused, match="role"):
        book.add("bo", "admin", NOW, "x")
    book.revoke("ana", NOW)
    assert book.authenticate(token) is None


# -- the command line ------------------------------------------------------------------

@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("LIFECYCLE_HOME", str(tmp_path / "home"))
    for name in ("LIFECYCLE_DATABASE_URL", "LIFECYCLE_MASTER_KEY", "LIFECYCLE_MASTER_KEY_FILE",
                 "LIFECYCLE_ACTOR"):
        monkeypatch.delenv(name, raising=False)
    return CliRunner()


def cli_seed(run: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "seed.jsonl"
    path.write_text("\n".join(lines([
        collected("m:1", "2025-01-02T10:00:00Z", "signup", {"email": EMAIL}),
        fact("access-requested", "m:1", "2025-02-01T09:00:00Z", request="SAR-1"),
        fact("access-requested", "m:2", "2025-02-01T09:00:00Z", request="SAR-1"),
    ])) + "\n")
    assert run.invoke(cli, ["ingest", str(path)]).exit_code == 0


def test_cli_request_actions_with_actor_and_clear_refusals(
        run: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`lifecycle request pause|resume|refuse` record their facts naming the actor (--actor,
    else $LIFECYCLE_ACTOR); an ambiguous request id, a bad time or a refused step is one
    line on standard error with exit 1 or 2, never a traceback."""
    cli_seed(run, tmp_path)
    result = run.invoke(cli, ["request", "pause", "SAR-1"])
    assert result.exit_code == 1 and "several subjects: name one with --subject" in result.stderr
    result = run.invoke(cli, ["request", "pause", "SAR-1", "--subject", "m:1", "--actor", "ana",
                              "--at", "2025-02-02T00:00:00Z", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["actor"] == "ana" and document["fact"]["type"] == "request-paused"
    monkeypatch.setenv("LIFECYCLE_ACTOR", "bo")
    result = run.invoke(cli, ["request", "resume", "SAR-1", "--subject", "m:1",
                              "--at", "2025-02-03T00:00:00Z"])
    assert result.exit_code == 0 and "by bo" in result.stdout
    result = run.invoke(cli, ["request", "refuse", "SAR-1", "--subject", "m:1"])
    assert result.exit_code == 2 and "--reason" in result.output
    result = run.invoke(cli, ["request", "extend", "SAR-1", "--subject", "m:1", "--at", "soon"])
    assert result.exit_code == 2 and "--at" in result.output
    result = run.invoke(cli, ["request", "fulfil", "SAR-1", "--subject", "m:1",
                              "--at", "2025-02-05T00:00:00Z"])
    assert result.exit_code == 0
    result = run.invoke(cli, ["request", "verify", "SAR-1", "--subject", "m:1"])
    assert result.exit_code == 1 and "nothing was stored" in result.stderr
    assert "Traceback" not in result.output


def test_cli_subject_find_and_users(run: CliRunner, tmp_path: Path) -> None:
    """`subject find --email` prints the subject (exit 0) or says none (exit 1), with the
    address given or read from standard input (`-`);
    `users add` prints a token once, `users list` never shows it, `users revoke` ends it."""
    cli_seed(run, tmp_path)
    result = run.invoke(cli, ["subject", "find", "--email", EMAIL.upper(), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["subjects"] == [{"subject": "m:1", "records": ["signup"]}]
    result = run.invoke(cli, ["subject", "find", "--email", "no@example.org"])
    assert result.exit_code == 1 and "no subject holds this address" in result.stdout
    piped = run.invoke(cli, ["subject", "find", "--email", "-", "--json"],
                       input=f"  {EMAIL.upper()}\n")  # off the command line: from stdin
    assert piped.exit_code == 0, piped.output
    assert json.loads(piped.stdout)["subjects"][0]["subject"] == "m:1"
    result = run.invoke(cli, ["users", "add", "ana", "--role", "responder"])
    assert result.exit_code == 0
    token = result.stdout.strip()
    assert token.startswith("lc_")
    listing = run.invoke(cli, ["users", "list", "--json"])
    assert token not in listing.stdout and json.loads(listing.stdout)["users"][0]["role"] == \
        "responder"
    assert run.invoke(cli, ["users", "add", "ana", "--role", "dpo"]).exit_code == 2
    assert run.invoke(cli, ["users", "revoke", "ana"]).exit_code == 0
    assert run.invoke(cli, ["users", "revoke", "ana"]).exit_code == 1


def test_cli_hold_and_notification_ack(run: CliRunner, tmp_path: Path) -> None:
    """`hold place|release` and `notifications ack` record their facts from the command
    line; an ack for an unknown erasure exits 1 with one line."""
    cli_seed(run, tmp_path)
    result = run.invoke(cli, ["hold", "place", "m:1", "LIT-1", "--reason", "claim",
                              "--actor", "dpo"])
    assert result.exit_code == 0, result.output
    assert run.invoke(cli, ["hold", "release", "m:1", "LIT-1"]).exit_code == 0
    assert run.invoke(cli, ["hold", "release", "m:1", "LIT-1"]).exit_code == 1
    result = run.invoke(cli, ["notifications", "ack", "ER-404"])
    assert result.exit_code == 1 and "no open notification" in result.stderr


def test_cli_a_retried_action_with_its_idempotency_key_records_nothing_twice(
        run: CliRunner, tmp_path: Path) -> None:
    """`--idempotency-key KEY` run again (a retry after a timeout, its time defaulting to a
    later now) says `already recorded` and stores nothing; another key is another
    action."""
    cli_seed(run, tmp_path)
    place = ["hold", "place", "m:1", "LIT-2", "--reason", "claim", "--idempotency-key", "t-1"]
    first = run.invoke(cli, [*place, "--json"])
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["duplicate"] is False
    events = len(json.loads(run.invoke(cli, ["history", "m:1", "--json"]).stdout)["events"])
    again = run.invoke(cli, place)
    assert again.exit_code == 0 and "already recorded" in again.stdout, again.output
    verify = ["request", "pause", "SAR-1", "--subject", "m:1", "--idempotency-key", "v-1",
              "--at", "2025-02-02T00:00:00Z"]
    verified = run.invoke(cli, verify)
    assert verified.exit_code == 0, verified.output
    again = run.invoke(cli, verify)
    assert again.exit_code == 0 and "already recorded" in again.stdout, again.output
    history = json.loads(run.invoke(cli, ["history", "m:1", "--json"]).stdout)["events"]
    assert len(history) == events + 1  # the pause (the hold was counted before)


def test_a_retried_submission_is_one_fact_on_every_store(ledger: Ledger) -> None:
    """The same submission key from the same actor names one fact (on SQLite and
    PostgreSQL): the retry, at a later time, is a duplicate and stores nothing; the same
    key from another actor is another fact."""
    assert ledger.ingest(lines([
        collected("m:1", "2025-01-02T10:00:00Z", "signup", {"email": EMAIL})]), NOW).ok
    first = actions.place_hold(ledger, "m:1", "LIT-3", "all", "claim", NOW, NOW, "ana",
                               submission="s-1")
    later = NOW.replace(hour=NOW.hour + 1)
    retry = actions.place_hold(ledger, "m:1", "LIT-3", "all", "claim", later, later, "ana",
                               submission="s-1")
    assert (first.duplicate, retry.duplicate) == (False, True)
    assert retry.fact["id"] == first.fact["id"]
    other = actions.place_hold(ledger, "m:1", "LIT-4", "all", "claim", later, later, "bo",
                               submission="s-1")
    assert other.fact["id"] != first.fact["id"] and not other.duplicate
    holds = [h["hold"] for h in ledger.subject_view("m:1")["holds"]]
    assert sorted(holds) == ["LIT-3", "LIT-4"]


def test_a_key_reused_for_another_action_is_not_taken_for_a_retry(ledger: Ledger) -> None:
    """An idempotency key names one submission, not whatever is sent with it: the same key
    and actor sent with another hold, or another request's step, records that action (on
    SQLite and PostgreSQL), where it used to report `duplicate` and store nothing."""
    assert ledger.ingest(lines([
        collected("m:1", "2025-01-02T10:00:00Z", "signup", {"email": EMAIL}),
        fact("access-requested", "m:1", "2025-02-01T09:00:00Z", request="SAR-1",
             identity_check=True),
        fact("access-requested", "m:1", "2025-02-01T09:30:00Z", request="SAR-2",
             identity_check=True)]), NOW).ok
    first = actions.place_hold(ledger, "m:1", "LIT-3", "all", "claim", NOW, NOW, "ana",
                               submission="s-1")
    other = actions.place_hold(ledger, "m:1", "LIT-5", "all", "another claim", NOW, NOW,
                               "ana", submission="s-1")
    assert (first.duplicate, other.duplicate) == (False, False)
    holds = [h["hold"] for h in ledger.subject_view("m:1")["holds"]]
    assert sorted(holds) == ["LIT-3", "LIT-5"]
    at = datetime(2025, 2, 2, tzinfo=UTC)
    one = actions.act_on_request(ledger, "verify", "SAR-1", subject="m:1", at=at, now=NOW,
                                 actor="ana", submission="p-1")
    two = actions.act_on_request(ledger, "verify", "SAR-2", subject="m:1", at=at, now=NOW,
                                 actor="ana", submission="p-1")
    assert (one.duplicate, two.duplicate) == (False, False)
    assert one.fact["id"] != two.fact["id"]


def test_a_retried_acknowledgement_with_its_key_records_one_fact(ledger: Ledger) -> None:
    """An Art 19 acknowledgement retried with its key (the item no longer open) reports a
    duplicate and stores nothing, on SQLite and PostgreSQL."""
    seed(ledger)
    first = acknowledge(ledger, "ER-2", NOW, NOW, "ana", submission="a-1")
    later = NOW.replace(hour=NOW.hour + 1)
    retry = acknowledge(ledger, "ER-2", later, later, "ana", submission="a-1")
    assert (first.duplicate, retry.duplicate) == (False, True)
    assert retry.fact["id"] == first.fact["id"]
    with pytest.raises(actions.SubjectNotFound):  # without the key: nothing left open
        acknowledge(ledger, "ER-2", later, later, "ana")
