"""Tamper evidence: the audit hash chain catches every changed, removed or moved stored event.

The tampering is done the way an intruder would: behind the application's back, straight
in the event store (the `events.sqlite` file, or the PostgreSQL table), with the ledger
closed. Every test runs on SQLite and on PostgreSQL unless it says otherwise.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from lifecycle.audit import (
    ALTERED,
    ANCHOR_MISMATCH,
    CHAIN_ALTERED,
    INSERTED,
    REMOVED,
    REORDERED,
    UNCHAINED,
    Anchor,
    AuditChain,
    VerifyReport,
    verify,
)
from lifecycle.crypto.vault import data_keys
from lifecycle.ledger import Ledger
from lifecycle.projections.audit_chain import (
    AuditChainProjection,
    chain,
    checkpoints,
)
from lifecycle.settings import Settings
from tests.facts_builder import collected, fact, lines

NOW = datetime(2025, 1, 1, tzinfo=UTC)
MARKER = "Audit-Marker-Xq7"


def some_facts(subjects: int = 4, first: int = 1) -> list[str]:
    facts: list[dict[str, Any]] = []
    for n in range(first, first + subjects):
        subject = f"member:{n}"
        facts += [
            collected(subject, "2024-01-02T10:00:00Z", "signup",
                      {"email": f"person{n}@example.org", "first_name": f"{MARKER}{n}"}),
            fact("consent-given", subject, "2024-01-02T10:00:00Z", purpose="direct-marketing"),
            fact("rectified", subject, "2024-02-01T10:00:00Z", record="signup",
                 data={"first_name": f"Renamed{n}"}),
            fact("activity", subject, "2024-03-01T10:00:00Z"),
        ]
    return lines(facts)


def chained_ledger(settings: Settings, subjects: int = 4) -> None:
    """Ingests the facts and links every stored event into the chain; closes the ledger."""
    with Ledger(settings) as ledger:
        assert ledger.ingest(some_facts(subjects), NOW).accepted == subjects * 4
        audit = AuditChain(ledger.store, ledger.views)
        audit.catch_up(NOW)  # a no-op where the ledger already chains after each ingest
        assert audit.status().lag == 0


def unchain(ledger: Ledger) -> None:
    """Empties the chain, its checkpoints and its position."""
    with ledger.views.begin() as conn:
        conn.execute(chain.delete())
        conn.execute(checkpoints.delete())
        conn.execute(sa.text("DELETE FROM lifecycle_projection_positions "
                             "WHERE name = 'audit-chain'"))


def rechain(ledger: Ledger, **options: Any) -> list[tuple[Any, ...]]:
    """Empties the chain, links the whole log again; returns (id, seq, log digest) rows."""
    unchain(ledger)
    AuditChain(ledger.store, ledger.views, **options).catch_up(NOW)
    with ledger.views.connect() as conn:
        return [tuple(row) for row in conn.execute(
            sa.select(chain.c.notification_id, chain.c.seq, chain.c.log_digest)
            .order_by(chain.c.notification_id))]


def verify_now(settings: Settings, anchor: Anchor | None = None) -> VerifyReport:
    with Ledger(settings) as ledger:
        return verify(ledger.store, ledger.views, anchor)


def events_of(settings: Settings, reference: str) -> list[tuple[int, int, str]]:
    """(notification id, version, topic) of each stored event of one subject."""
    with Ledger(settings) as ledger:
        subject_id = str(ledger.subject(reference).id)
        notifications = ledger.store.recorder.select_notifications(
            0, 100_000, inclusive_of_start=False)
    return [(n.id, n.originator_version, n.topic) for n in notifications
            if str(n.originator_id) == subject_id]


def subject_id_of(settings: Settings, reference: str) -> str:
    with Ledger(settings) as ledger:
        return str(ledger.subject(reference).id)


class RawStore:
    """The event table, opened behind the application's back (the ledger is closed)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sqlite = settings.database_url is None
        self.table, self.id_column = (("stored_events", "rowid") if self.sqlite
                                      else ("lifecycle_events", "notification_id"))

    @contextmanager
    def _cursor(self) -> Iterator[Any]:
        if self.sqlite:
            conn = sqlite3.connect(self.settings.events_path)
            try:
                yield conn.cursor()
                conn.commit()
            finally:
                conn.close()
        else:
            import psycopg

            with psycopg.connect(self.settings.database_url or "") as pg:
                with pg.cursor() as cursor:
                    yield cursor

    def _sql(self, text: str) -> str:
        text = text.replace("{table}", self.table).replace("{id}", self.id_column)
        return text if self.sqlite else text.replace("?", "%s")

    def row(self, nid: int) -> tuple[Any, ...]:
        with self._cursor() as cur:
            cur.execute(self._sql("SELECT originator_id, originator_version, topic, state "
                                  "FROM {table} WHERE {id} = ?"), (nid,))
            found = cur.fetchone()
        assert found is not None, f"no stored event {nid}"
        return (found[0], found[1], found[2], bytes(found[3]))

    def set_state(self, nid: int, state: bytes) -> None:
        with self._cursor() as cur:
            cur.execute(self._sql("UPDATE {table} SET state = ? WHERE {id} = ?"), (state, nid))
            assert cur.rowcount == 1

    def flip_one_byte(self, nid: int) -> None:
        state = bytearray(self.row(nid)[3])
        state[len(state) // 2] ^= 0x01
        self.set_state(nid, bytes(state))

    def delete(self, nid: int) -> None:
        with self._cursor() as cur:
            cur.execute(self._sql("DELETE FROM {table} WHERE {id} = ?"), (nid,))
            assert cur.rowcount == 1

    def insert(self, nid: int, row: tuple[Any, ...]) -> None:
        with self._cursor() as cur:
            cur.execute(self._sql("INSERT INTO {table} ({id}, originator_id, "
                                  "originator_version, topic, state) VALUES (?, ?, ?, ?, ?)"),
                        (nid, *row))

    def leave_a_gap(self) -> int:
        """Moves the newest event up by one id, leaving its old id unused (as a rolled-back
        transaction does on PostgreSQL); returns the unused id."""
        with self._cursor() as cur:
            cur.execute(self._sql("SELECT MAX({id}) FROM {table}"))
            gap = int(cur.fetchone()[0])
            cur.execute(self._sql("UPDATE {table} SET {id} = ? WHERE {id} = ?"), (gap + 1, gap))
            if not self.sqlite:
                cur.execute("SELECT setval(pg_get_serial_sequence('lifecycle_events', "
                            "'notification_id'), %s)", (gap + 1,))
        return gap

    def exchange_rows(self, a: int, b: int) -> None:
        """Moves event a to position b and event b to position a (ids, versions, bytes)."""
        row_a, row_b = self.row(a), self.row(b)
        update = self._sql("UPDATE {table} SET originator_id = ?, originator_version = ?, "
                           "topic = ?, state = ? WHERE {id} = ?")
        with self._cursor() as cur:
            cur.execute(self._sql("UPDATE {table} SET originator_version = -1 "
                                  "WHERE {id} = ?"), (a,))
            cur.execute(update, (*row_a, b))
            cur.execute(update, (*row_b, a))


def only(report: VerifyReport) -> dict[str, Any]:
    assert len(report.problems) == 1, [p.describe() for p in report.problems]
    return report.problems[0].as_dict()


# -- an untouched store ----------------------------------------------------------------

def test_an_untouched_store_verifies(backend: Settings) -> None:
    """Every stored event is chained and recomputes to the recorded digests: ok."""
    chained_ledger(backend)
    report = verify_now(backend)
    assert report.ok, [p.describe() for p in report.problems]
    assert report.events_checked == report.chained == report.head == report.log_head > 16
    assert report.unchained == 0
    assert report.checkpoint is not None
    assert report.checkpoint["position"] == report.head
    assert report.checkpoint["log_digest"] == report.checkpoint["recomputed"]
    assert json.loads(json.dumps(report.as_dict()))["ok"] is True


def test_events_after_the_head_are_lag_not_tampering(backend: Settings) -> None:
    """Events stored after the chain head are reported as unchained, not as problems."""
    chained_ledger(backend)
    with Ledger(backend) as ledger:  # saved behind the chain, as if it crashed before chaining
        subject = ledger.subject("member:1")
        subject.record_activity("lag-1", datetime(2024, 4, 1, tzinfo=UTC), None)
        ledger.store.save(subject)
        report = verify(ledger.store, ledger.views)
        assert report.ok and report.unchained == 1
        audit = AuditChain(ledger.store, ledger.views)
        assert audit.status().lag == 1
        assert audit.catch_up(NOW) == 1
        assert audit.catch_up(NOW) == 0
        report = verify(ledger.store, ledger.views)
    assert report.ok and report.unchained == 0


def test_the_chain_is_the_same_however_it_is_batched(backend: Settings) -> None:
    """Chaining in many small transactions gives the digests of one pass, checkpoints every N."""
    chained_ledger(backend, subjects=5)
    with Ledger(backend) as ledger:
        stepwise = rechain(ledger, batch=3, projection=AuditChainProjection(checkpoint_every=4))
        with ledger.views.connect() as conn:
            marks = conn.execute(sa.select(checkpoints.c.events, checkpoints.c.kind)).all()
        assert {events for events, kind in marks if kind == "interval"} == set(
            range(4, len(stepwise) + 1, 4))
        assert verify(ledger.store, ledger.views).ok
        assert rechain(ledger) == stepwise
        assert verify(ledger.store, ledger.views).ok


def test_processes_chaining_at_once_never_fork_the_chain(backend: Settings) -> None:
    """Several ledgers catching up at once (threads, each with its own connections)
    chain each event exactly once, in order."""
    chained_ledger(backend, subjects=12)
    with Ledger(backend) as ledger:
        unchain(ledger)
    ledgers = [Ledger(backend) for _ in range(4)]
    counts: list[int] = []
    errors: list[BaseException] = []

    def chain_all(ledger: Ledger) -> None:
        try:
            counts.append(AuditChain(ledger.store, ledger.views, batch=5).catch_up(NOW))
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=chain_all, args=(ledger,)) for ledger in ledgers]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        report = verify(ledgers[0].store, ledgers[0].views)
    finally:
        for ledger in ledgers:
            ledger.close()
    assert errors == []
    assert report.ok, [p.describe() for p in report.problems]
    assert sum(counts) == report.chained == report.events_checked == report.log_head == 60


# -- tampering with the event store -------------------------------------------------------

def test_one_changed_byte_is_reported_as_altered_with_its_position(backend: Settings) -> None:
    """One byte flipped in one stored event: exactly that event (position, version) is altered."""
    chained_ledger(backend)
    nid, version, _ = events_of(backend, "member:2")[2]
    subject_id = subject_id_of(backend, "member:2")
    RawStore(backend).flip_one_byte(nid)  # the event no longer even decodes
    problem = only(verify_now(backend))
    assert problem["kind"] == ALTERED
    assert (problem["position"], problem["originator_version"]) == (nid, version)
    assert problem["originator_id"] == subject_id
    assert problem["subject"] == "member:2"
    assert problem["expected"] != problem["found"]


def test_a_byte_changed_in_the_sqlite_file_itself_is_caught(sqlite_settings: Settings) -> None:
    """Editing events.sqlite as a file (no SQL at all) is caught and the event named."""
    chained_ledger(sqlite_settings)
    with Ledger(sqlite_settings) as ledger:  # find the event that holds the marker's record
        notifications = ledger.store.recorder.select_notifications(
            0, 1000, inclusive_of_start=False)
    needle = b'"fact_id":"'
    target = next(n for n in notifications if n.originator_version == 2
                  and needle in n.state and n.state.count(needle) == 1)
    fact_id = target.state.split(needle)[1].split(b'"')[0]
    quoted = needle + fact_id + b'"'
    blob = bytearray(sqlite_settings.events_path.read_bytes())
    assert blob.count(quoted) == 1, "the fact id must be stored exactly once in the file"
    at = blob.index(quoted) + len(needle)
    blob[at] ^= 0x01  # one byte of one stored event, e.g. "t-12" becomes "u-12"
    sqlite_settings.events_path.write_bytes(bytes(blob))
    problem = only(verify_now(sqlite_settings))
    assert problem["kind"] == ALTERED
    assert (problem["position"], problem["originator_version"]) == (target.id, 2)


def test_a_deleted_event_is_reported_as_removed(backend: Settings) -> None:
    """A stored event deleted from the table is reported as removed at its position."""
    chained_ledger(backend)
    nid, version, topic = events_of(backend, "member:3")[1]
    RawStore(backend).delete(nid)
    problem = only(verify_now(backend))
    assert problem["kind"] == REMOVED
    assert (problem["position"], problem["originator_version"]) == (nid, version)
    assert problem["topic"] == topic and problem["subject"] == "member:3"


def test_swapping_the_state_of_two_events_is_caught(backend: Settings) -> None:
    """Two events exchanging their state bytes are both reported as altered."""
    chained_ledger(backend)
    (first, v1, _), (second, v2, _) = events_of(backend, "member:1")[1:3]
    raw = RawStore(backend)
    state_1, state_2 = raw.row(first)[3], raw.row(second)[3]
    raw.set_state(first, state_2)
    raw.set_state(second, state_1)
    report = verify_now(backend)
    assert [(p.kind, p.position, p.originator_version) for p in report.problems] == [
        (ALTERED, first, v1), (ALTERED, second, v2)]


def test_events_moved_to_other_positions_are_reported_as_reordered(backend: Settings) -> None:
    """Genuine events exchanged between two positions are reported as reordered."""
    chained_ledger(backend)
    a = events_of(backend, "member:1")[1][0]
    b = events_of(backend, "member:4")[2][0]
    RawStore(backend).exchange_rows(a, b)
    report = verify_now(backend)
    assert [(p.kind, p.position) for p in report.problems] == [(REORDERED, a), (REORDERED, b)]
    assert f"chained at position {b}" in report.problems[0].detail


def test_an_event_slipped_into_a_gap_below_the_head_is_reported_as_inserted(
        backend: Settings) -> None:
    """A gap in the ids is fine; an event later written into it is reported as inserted."""
    with Ledger(backend) as ledger:
        ledger.ingest(some_facts(2), NOW)
    raw = RawStore(backend)
    gap = raw.leave_a_gap()
    with Ledger(backend) as ledger:
        rechain(ledger)
    report = verify_now(backend)
    assert report.ok and report.head == gap + 1 and report.events_checked == gap
    originator, _, topic, state = raw.row(gap - 1)
    raw.insert(gap, ("0" * 8 + str(originator)[8:], 1, topic, state))
    problem = only(verify_now(backend))
    assert (problem["kind"], problem["position"], problem["originator_version"]) == (
        INSERTED, gap, 1)


# -- tampering with the chain itself --------------------------------------------------------

def test_a_changed_chain_row_is_reported_as_chain_altered(backend: Settings) -> None:
    """Editing a recorded digest breaks the chain's own links: reported as chain-altered."""
    chained_ledger(backend)
    nid = events_of(backend, "member:2")[1][0]
    with Ledger(backend) as ledger, ledger.views.begin() as conn:
        conn.execute(chain.update().where(chain.c.notification_id == nid)
                     .values(log_digest="0" * 64))
    kinds = {(p.kind, p.position) for p in verify_now(backend).problems}
    assert (CHAIN_ALTERED, nid) in kinds
    assert not {kind for kind, _ in kinds} & {ALTERED, REMOVED, INSERTED}


def test_truncating_the_chain_is_caught(backend: Settings) -> None:
    """Deleting the newest chain rows (to pass edits off as lag) is reported."""
    chained_ledger(backend)
    with Ledger(backend) as ledger, ledger.views.begin() as conn:
        last = conn.execute(sa.select(sa.func.max(chain.c.notification_id))).scalar_one()
        conn.execute(chain.delete().where(chain.c.notification_id > last - 3))
    report = verify_now(backend)
    assert {(p.kind, p.position) for p in report.problems} == {
        (CHAIN_ALTERED, last), (UNCHAINED, last - 2), (UNCHAINED, last - 1), (UNCHAINED, last)}


def test_a_rewritten_chain_is_caught_by_an_anchor_kept_elsewhere(backend: Settings) -> None:
    """Someone who edits an event and recomputes the whole chain is caught by an anchor."""
    chained_ledger(backend)
    checkpoint = verify_now(backend).checkpoint
    assert checkpoint is not None
    anchor = Anchor.parse(checkpoint["anchor"])
    assert verify_now(backend, anchor).ok
    nid = events_of(backend, "member:1")[0][0]
    RawStore(backend).flip_one_byte(nid)
    with Ledger(backend) as ledger:
        rechain(ledger)
        assert verify(ledger.store, ledger.views).ok  # the chain alone can be fooled
        problem = only(verify(ledger.store, ledger.views, anchor))
    assert (problem["kind"], problem["position"]) == (ANCHOR_MISMATCH, anchor.position)


def test_a_malformed_anchor_is_refused() -> None:
    """An anchor is POSITION:SHA256-HEX; anything else is refused with a ValueError."""
    with pytest.raises(ValueError):
        Anchor.parse("12:nothex")
    assert str(Anchor.parse(f"12:{'A' * 64}")) == f"12:{'a' * 64}"


# -- shredding ---------------------------------------------------------------------------

def test_erasure_does_not_break_verification(backend: Settings) -> None:
    """Crypto-shredding destroys keys, never events: the chain still verifies after it."""
    chained_ledger(backend)
    with Ledger(backend) as ledger:
        subject_id = str(ledger.subject("member:2").id)
        ingested = ledger.ingest(lines([fact("erasure-requested", "member:2",
                                             "2024-05-01T10:00:00Z", request="ER-1")]), NOW)
        assert ingested.accepted == 1
        AuditChain(ledger.store, ledger.views).catch_up(NOW)
        assert ledger.subject_view("member:2")["records"][0]["data"] == "erased"
        with ledger.vault.engine.connect() as conn:
            destroyed = conn.execute(sa.select(data_keys.c.wrapped)
                                     .where(data_keys.c.subject_id == subject_id)).all()
        assert destroyed and all(wrapped is None for (wrapped,) in destroyed)
    report = verify_now(backend)
    assert report.ok, [p.describe() for p in report.problems]
    assert report.unchained == 0


# -- the command line ---------------------------------------------------------------------------

def test_audit_verify_exits_0_untouched_and_1_naming_the_changed_event(
        sqlite_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """`lifecycle audit verify` exits 0 on an untouched store, 1 naming an altered event."""
    from lifecycle.cli import cli

    monkeypatch.setenv("LIFECYCLE_HOME", str(sqlite_settings.home))
    monkeypatch.delenv("LIFECYCLE_DATABASE_URL", raising=False)
    monkeypatch.delenv("LIFECYCLE_MASTER_KEY", raising=False)
    monkeypatch.delenv("LIFECYCLE_MASTER_KEY_FILE", raising=False)
    chained_ledger(sqlite_settings)
    run = CliRunner()
    result = run.invoke(cli, ["audit", "verify", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["ok"] is True
    nid, version, _ = events_of(sqlite_settings, "member:3")[1]
    RawStore(sqlite_settings).flip_one_byte(nid)
    result = run.invoke(cli, ["audit", "verify"])
    assert result.exit_code == 1
    assert f"altered at position {nid}: member:3 v{version}" in result.stdout
    document = json.loads(run.invoke(cli, ["audit", "verify", "--json"]).stdout)
    assert [(p["kind"], p["position"]) for p in document["problems"]] == [(ALTERED, nid)]
