"""Tamper evidence: the audit chain is written with the events, so every changed, removed,
moved or forged stored event is caught from the moment its ingest returns.

The tampering is done the way an intruder would: behind the application's back, straight
in the event store (the `events.sqlite` file, or the PostgreSQL tables), with the ledger
closed, and without the signing key. Nothing here runs the daemon or `audit chain` before
verifying. Every test runs on SQLite and on PostgreSQL unless it says otherwise.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lifecycle.services.audit import (
    ALTERED,
    ANCHOR_MISMATCH,
    CHAIN_ALTERED,
    CHECKPOINT,
    REMOVED,
    REORDERED,
    UNCHAINED,
    Anchor,
    chain_lag,
    VerifyReport,
    signed_head,
    verify,
)
from lifecycle.store.signing_key import Signer
from lifecycle.store.vault import data_keys
from lifecycle.domain.errors import ConfigurationError
from lifecycle.store.event_chain import (
    LOG_GENESIS,
    BrokenEvent,
    ChainBroken,
    Checkpoint,
    event_digest,
    link,
    originator_text,
    subject_genesis,
)
from lifecycle.aggregates.data_subject import DataSubject
from lifecycle.store.event_store import (
    SubjectStore,
    attach_signing_key,
    chained_recorder,
    persistence_env,
)
from lifecycle.services.ledger import Ledger
from lifecycle.projections import tables
from lifecycle.store.settings import Settings
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


def ingested(settings: Settings, subjects: int = 4, first: int = 1) -> None:
    """Ingests the facts and closes the ledger: no daemon, no `audit chain`."""
    with Ledger(settings) as ledger:
        assert ledger.ingest(some_facts(subjects, first), NOW).accepted == subjects * 4


def verify_now(settings: Settings, anchor: Anchor | None = None) -> VerifyReport:
    with Ledger(settings) as ledger:
        return verify(ledger.store, ledger.views, anchor)


def problems(report: VerifyReport) -> list[tuple[str, int | None]]:
    return [(p.kind, p.position) for p in report.problems]


def only(report: VerifyReport) -> dict[str, Any]:
    assert len(report.problems) == 1, [p.describe() for p in report.problems]
    return report.problems[0].as_dict()


def events_of(settings: Settings, reference: str) -> list[tuple[int, int, str]]:
    """(notification id, version, topic) of each stored event of one subject."""
    with Ledger(settings) as ledger:
        subject_id = str(ledger.subject(reference).id)
        notifications = ledger.store.recorder.select_notifications(
            0, 100_000, inclusive_of_start=False)
    return [(n.id, n.originator_version, n.topic) for n in notifications
            if str(n.originator_id) == subject_id]


class RawStore:
    """The event, chain and checkpoint tables, opened behind the application's back."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sqlite = settings.database_url is None
        self.table, self.id_column = (("stored_events", "rowid") if self.sqlite
                                      else ("lifecycle_events", "notification_id"))

    @contextmanager
    def cursor(self) -> Iterator[Any]:
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

    def sql(self, text: str) -> str:
        text = text.replace("{table}", self.table).replace("{id}", self.id_column)
        return text if self.sqlite else text.replace("?", "%s")

    def run(self, text: str, *params: Any) -> list[tuple[Any, ...]]:
        with self.cursor() as cur:
            cur.execute(self.sql(text), params)
            return list(cur.fetchall()) if cur.description else []

    def ids(self) -> list[int]:
        return [int(r[0]) for r in self.run("SELECT {id} FROM {table} ORDER BY {id}")]

    def row(self, nid: int) -> tuple[Any, ...]:
        found = self.run("SELECT originator_id, originator_version, topic, state "
                         "FROM {table} WHERE {id} = ?", nid)
        assert found, f"no stored event {nid}"
        return (found[0][0], found[0][1], found[0][2], bytes(found[0][3]))

    def set_state(self, nid: int, state: bytes) -> None:
        self.run("UPDATE {table} SET state = ? WHERE {id} = ?", state, nid)

    def flip_one_byte(self, nid: int, at: int | None = None) -> bytes:
        """Flips one bit of one byte of the event's state; returns the original state."""
        original = self.row(nid)[3]
        state = bytearray(original)
        state[len(state) // 2 if at is None else at] ^= 0x01
        self.set_state(nid, bytes(state))
        return original

    def delete(self, nid: int) -> None:
        self.run("DELETE FROM {table} WHERE {id} = ?", nid)

    def insert(self, nid: int, row: tuple[Any, ...]) -> None:
        self.run("INSERT INTO {table} ({id}, originator_id, originator_version, topic, state) "
                 "VALUES (?, ?, ?, ?, ?)", nid, *row)

    def exchange_rows(self, a: int, b: int) -> None:
        """Moves event a to position b and event b to position a (ids, versions, bytes)."""
        row_a, row_b = self.row(a), self.row(b)
        update = ("UPDATE {table} SET originator_id = ?, originator_version = ?, "
                  "topic = ?, state = ? WHERE {id} = ?")
        self.run("UPDATE {table} SET originator_version = -1 WHERE {id} = ?", a)
        self.run(update, *row_a, b)
        self.run(update, *row_b, a)

    def forge(self, template: int, nid: int | None = None) -> int:
        """Stores a copy of event `template` under a new originator (the next id unless
        given), as someone with only database access would; returns its id."""
        originator, _, topic, state = self.row(template)
        forged = ("f" * 8 + str(originator)[8:]) if self.sqlite else \
            "ffffffff" + str(originator)[8:]
        if nid is None and not self.sqlite:  # the id from the table's own sequence
            return int(self.run("INSERT INTO {table} (originator_id, originator_version, "
                                "topic, state) VALUES (?, 1, ?, ?) RETURNING {id}",
                                forged, topic, state)[0][0])
        if nid is None:
            nid = max(self.ids()) + 1
        self.insert(nid, (forged, 1, topic, state))
        return nid

    def rechain(self, signer: Signer | None) -> None:
        """Recomputes every chain row from the stored events, as an intruder who knows the
        scheme would, and replaces the checkpoints with one at the head signed by
        `signer` (not the store's key) or, without one, keeps the old checkpoints."""
        events = self.run("SELECT {id}, originator_id, originator_version, topic, state "
                          "FROM {table} ORDER BY {id}")
        log_digest, subjects = LOG_GENESIS, {}
        rows = []
        for nid, originator_id, version, topic, state in events:
            originator = originator_text(originator_id)
            digest = event_digest(originator, version, topic, bytes(state))
            subject = link(subjects.get(originator) or subject_genesis(originator), digest)
            subjects[originator] = subject
            log_digest = link(log_digest, digest)
            rows.append((nid, originator_id, version, digest, subject, log_digest))
        self.run("DELETE FROM lifecycle_event_chain")
        with self.cursor() as cur:
            cur.executemany(self.sql("INSERT INTO lifecycle_event_chain VALUES "
                                     "(?, ?, ?, ?, ?, ?)"), rows)
        if signer is not None:
            self.run("DELETE FROM lifecycle_event_checkpoints")
            mark = Checkpoint.signed(signer, 1, rows[-1][0], len(rows), log_digest, NOW)
            self.run("INSERT INTO lifecycle_event_checkpoints VALUES (?, ?, ?, ?, ?, ?, ?)",
                     *mark.row())


def intruder_key() -> Signer:
    return Signer(Ed25519PrivateKey.generate(), "an intruder's key")


# -- an untouched store ----------------------------------------------------------------

def test_every_event_is_chained_and_signed_when_ingest_returns(backend: Settings) -> None:
    """Right after ingest (no daemon, no `audit chain`) every stored event is in the chain
    and its checkpoints are signed: verify is ok and checks every event."""
    ingested(backend)
    report = verify_now(backend)
    assert report.ok, [p.describe() for p in report.problems]
    assert report.events_checked == report.chained == report.head == report.log_head > 16
    assert report.checkpoints >= 1 and report.unchained == 0
    assert report.checkpoint is not None
    assert report.checkpoint["position"] == report.head
    assert report.checkpoint["log_digest"] == report.checkpoint["recomputed"]
    assert json.loads(json.dumps(report.as_dict()))["ok"] is True
    with Ledger(backend) as ledger:
        assert chain_lag(ledger.store) == 0


def test_each_transaction_leaves_one_signed_checkpoint_at_its_last_event(
        backend: Settings) -> None:
    """Each save is its own checkpoint, numbered without gaps, at its last event."""
    with Ledger(backend) as ledger:
        ledger.ingest(some_facts(2), NOW)
        before = ledger.store.recorder.max_notification_id()
        subject = ledger.subject("member:1")
        subject.record_activity("one-more", datetime(2024, 4, 1, tzinfo=UTC), None)
        ledger.store.save(subject)
        marks = RawStore(backend).run("SELECT seq, position, events FROM "
                                      "lifecycle_event_checkpoints ORDER BY seq")
        head = ledger.store.recorder.max_notification_id()
    assert [m[0] for m in marks] == list(range(1, len(marks) + 1))
    assert marks[-1][1] == head and marks[-1][2] == head
    assert marks[-2][1] == before


# -- tampering with the event store -------------------------------------------------------

def test_one_flipped_byte_in_any_event_right_after_ingest_is_named(backend: Settings) -> None:
    """For every stored event in turn: one byte flipped right after ingest makes verify
    report exactly that event (position, version) as altered; restored, it verifies."""
    ingested(backend, subjects=2)
    raw = RawStore(backend)
    for nid in raw.ids():
        original = raw.flip_one_byte(nid)
        problem = only(verify_now(backend))
        raw.set_state(nid, original)
        assert (problem["kind"], problem["position"]) == (ALTERED, nid)
        assert problem["expected"] != problem["found"]
    assert verify_now(backend).ok


def test_an_altered_event_is_named_with_its_subject(backend: Settings) -> None:
    """The altered event's subject reference and version are in the problem."""
    ingested(backend)
    nid, version, _ = events_of(backend, "member:2")[2]
    # The opening brace becomes "z": the event no longer even decodes (a byte in the
    # middle may fall inside a string and still decode, depending on the event's length).
    RawStore(backend).flip_one_byte(nid, at=0)
    problem = only(verify_now(backend))
    assert (problem["kind"], problem["position"], problem["originator_version"]) == (
        ALTERED, nid, version)
    assert problem["subject"] == "member:2"
    assert "no longer decodes" in problem["detail"]


def test_a_byte_changed_in_the_sqlite_file_itself_is_caught(sqlite_settings: Settings) -> None:
    """Editing events.sqlite as a file (no SQL at all) is caught and the event named."""
    ingested(sqlite_settings)
    with Ledger(sqlite_settings) as ledger:
        notifications = ledger.store.recorder.select_notifications(
            0, 1000, inclusive_of_start=False)
    needle = b'"fact_id":"'
    target = next(n for n in notifications if n.originator_version == 2
                  and needle in n.state and n.state.count(needle) == 1)
    fact_id = target.state.split(needle)[1].split(b'"')[0]
    quoted = needle + fact_id + b'"'
    blob = bytearray(sqlite_settings.events_path.read_bytes())
    assert blob.count(quoted) == 1, "the fact id must be stored exactly once in the file"
    blob[blob.index(quoted) + len(needle)] ^= 0x01
    sqlite_settings.events_path.write_bytes(bytes(blob))
    problem = only(verify_now(sqlite_settings))
    assert (problem["kind"], problem["position"], problem["originator_version"]) == (
        ALTERED, target.id, 2)


def test_a_deleted_event_is_reported_as_removed(backend: Settings) -> None:
    """A stored event deleted from the table is reported as removed at its position."""
    ingested(backend)
    nid, version, _ = events_of(backend, "member:3")[1]
    RawStore(backend).delete(nid)
    problem = only(verify_now(backend))
    assert (problem["kind"], problem["position"], problem["originator_version"]) == (
        REMOVED, nid, version)
    assert problem["subject"] == "member:3"


def test_swapping_the_state_of_two_events_is_caught(backend: Settings) -> None:
    """Two events exchanging their state bytes are both reported as altered."""
    ingested(backend)
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
    ingested(backend)
    a = events_of(backend, "member:1")[1][0]
    b = events_of(backend, "member:4")[2][0]
    RawStore(backend).exchange_rows(a, b)
    report = verify_now(backend)
    assert problems(report) == [(REORDERED, a), (REORDERED, b)]
    assert f"chained at position {b}" in report.problems[0].detail


def test_a_forged_event_appended_behind_the_application_is_caught(backend: Settings) -> None:
    """An event appended with sqlite3 / psql is reported as unchained; the application
    refuses to write on after it (its events would be chained over the unchained one),
    and the forged event stays reported."""
    ingested(backend, subjects=2)
    raw = RawStore(backend)
    forged = raw.forge(raw.ids()[0])
    assert problems(verify_now(backend)) == [(UNCHAINED, forged)]
    with Ledger(backend) as ledger:  # the application would write on after it
        subject = ledger.subject("member:1")
        subject.record_activity("later", datetime(2024, 4, 1, tzinfo=UTC), None)
        with pytest.raises(ChainBroken, match=f"position {forged} is not in it"):
            ledger.store.save(subject)
    assert max(raw.ids()) == forged
    assert problems(verify_now(backend)) == [(UNCHAINED, forged)]


def test_the_views_name_an_event_forged_behind_the_application(backend: Settings) -> None:
    """Catching the views up over an event forged behind the application (a copy of another
    subject's event under a new subject) stops with the broken event named by position,
    not with an internal assertion; the views keep what they held before it."""
    ingested(backend, subjects=2)
    raw = RawStore(backend)
    forged = raw.forge(raw.ids()[1])
    with Ledger(backend) as ledger:
        before = ledger.projections.positions()
        with pytest.raises(BrokenEvent, match=f"position {forged}: .* does not follow"):
            ledger.projections.catch_up()
        assert max(ledger.projections.positions().values()) < forged
        assert ledger.projections.positions() == before


@pytest.mark.parametrize("position", [0, -1])
def test_an_event_forged_below_the_first_position_is_caught(
        backend: Settings, position: int) -> None:
    """An event stored at position 0 or below (never used by the application, but the
    database takes it) is reported as unchained: the subject's history loads it, so
    verify cannot skip it. Also a copy of a subject's own last event as its next version."""
    ingested(backend, subjects=2)
    raw = RawStore(backend)
    forged = raw.forge(raw.ids()[0], nid=position)
    assert problems(verify_now(backend)) == [(UNCHAINED, forged)]
    raw.delete(forged)
    last = raw.ids()[-1]
    originator, version, topic, state = raw.row(last)
    raw.insert(position, (originator, version + 1, topic, state))
    assert problems(verify_now(backend)) == [(UNCHAINED, position)]


def test_batches_committed_between_verifys_first_reads_are_no_problem(
        backend: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """`audit verify` while other processes write: a batch that commits between its read of
    the checkpoints and of the chain's head, and another after that, is not reported as a
    checkpoint beyond the chain."""
    ingested(backend, subjects=1)
    with Ledger(backend) as reader, Ledger(backend) as writer:
        recorder = chained_recorder(reader.store)
        read_checkpoints, read_heads = recorder.checkpoints, recorder.chain_heads
        commits = iter(range(2, 4))

        def a_batch_commits() -> None:
            n = next(commits, None)
            if n is not None:
                assert writer.ingest(some_facts(1, first=n), NOW).accepted == 4

        def checkpoints() -> list[Checkpoint]:
            marks = read_checkpoints()
            a_batch_commits()
            return marks

        def chain_heads() -> tuple[int, int, int]:
            heads = read_heads()
            a_batch_commits()
            return heads

        monkeypatch.setattr(recorder, "checkpoints", checkpoints)
        monkeypatch.setattr(recorder, "chain_heads", chain_heads)
        report = verify(reader.store, None)

    assert report.ok, [p.describe() for p in report.problems]
    assert problems(verify_now(backend)) == []


def test_an_event_slipped_into_a_gap_is_caught(backend: Settings) -> None:
    """An event written into an unused id below the head is reported as unchained."""
    ingested(backend, subjects=1)
    ingested(backend, subjects=1, first=2)
    raw = RawStore(backend)
    ids = raw.ids()
    first_of_second = events_of(backend, "member:2")[0][0]
    raw.run("UPDATE {table} SET {id} = {id} + 1000 WHERE {id} >= ?", first_of_second)
    raw.run("UPDATE lifecycle_event_chain SET position = position + 1000 "
            "WHERE position >= ?", first_of_second)
    raw.run("UPDATE lifecycle_event_checkpoints SET position = position + 1000 "
            "WHERE position >= ?", first_of_second)
    # Moving rows keeps the hashes but not the signed positions: only checkpoints complain.
    report = verify_now(backend)
    assert {kind for kind, _ in problems(report)} == {CHECKPOINT}
    gap = first_of_second
    raw.forge(ids[0], nid=gap)
    assert (UNCHAINED, gap) in problems(verify_now(backend))


# -- tampering with the chain and its checkpoints -------------------------------------------

def test_deleting_the_read_models_does_not_reset_the_chain(backend: Settings) -> None:
    """The chain lives beside the events: dropping every read model (views.sqlite deleted,
    or the read-model tables dropped) leaves an edited event caught."""
    ingested(backend)
    nid = events_of(backend, "member:1")[1][0]
    if backend.database_url is None:
        for path in backend.home.glob("views.sqlite*"):
            path.unlink()
    else:
        engine = sa.create_engine(backend.sqlalchemy_url or "")
        tables.metadata.drop_all(engine)
        engine.dispose()
    RawStore(backend).flip_one_byte(nid)
    assert (ALTERED, nid) in problems(verify_now(backend))


def test_an_emptied_chain_is_reported_and_never_silently_rebuilt(backend: Settings) -> None:
    """Chain rows and checkpoints deleted: verify exits 1 naming every event unchained,
    and reopening the store (its signing key exists) does not chain them again."""
    ingested(backend, subjects=2)
    raw = RawStore(backend)
    raw.run("DELETE FROM lifecycle_event_chain")
    raw.run("DELETE FROM lifecycle_event_checkpoints")
    report = verify_now(backend)
    assert not report.ok
    assert {kind for kind, _ in problems(report)} == {UNCHAINED, CHAIN_ALTERED}
    assert report.unchained == len(raw.ids())
    assert verify_now(backend).unchained == len(raw.ids())  # still, after another open


def test_a_missing_subject_link_refuses_to_extend_and_verify_reports_it(
        backend: Settings) -> None:
    """The chain row of a subject's latest event deleted: the subject's next event is not
    chained from genesis over the gap; the write is refused naming the audit chain, nothing
    is stored, and `audit verify` reports the same break as before the write."""
    ingested(backend, subjects=2)
    raw = RawStore(backend)
    last_of_first = events_of(backend, "member:1")[-1][0]
    raw.run("DELETE FROM lifecycle_event_chain WHERE position = ?", last_of_first)
    stored, before = raw.ids(), problems(verify_now(backend))
    assert (UNCHAINED, last_of_first) in before
    with Ledger(backend) as ledger:
        with pytest.raises(ChainBroken, match="audit chain") as refused:
            ledger.ingest(lines([fact("activity", "member:1", "2024-04-01T10:00:00Z")]), NOW)
    assert "audit verify" in str(refused.value) and "member" not in str(refused.value)
    assert raw.ids() == stored
    assert problems(verify_now(backend)) == before


def test_deleted_checkpoints_refuse_to_restart_the_chain_at_genesis(backend: Settings) -> None:
    """Every checkpoint deleted (chain rows kept): the next write is refused rather than
    starting a second chain at genesis and checkpoint 1 after the existing events."""
    ingested(backend, subjects=1)
    raw = RawStore(backend)
    raw.run("DELETE FROM lifecycle_event_checkpoints")
    stored = raw.ids()
    with Ledger(backend) as ledger:
        with pytest.raises(ChainBroken, match="no event was stored"):
            ledger.ingest(some_facts(1, 5), NOW)
    assert raw.ids() == stored
    assert raw.run("SELECT COUNT(*) FROM lifecycle_event_checkpoints")[0][0] == 0
    assert not verify_now(backend).ok


def test_a_refused_extension_exits_1_and_verify_exits_1(sqlite_settings: Settings,
                                                        tmp_path: Any) -> None:
    """On the command line the refused write is one line without a traceback, exit 1, and
    `audit verify` exits 1 naming the break."""
    from tests.processes import lifecycle

    ingested(sqlite_settings, subjects=1)
    RawStore(sqlite_settings).run("DELETE FROM lifecycle_event_checkpoints")
    path = tmp_path / "more.jsonl"
    path.write_text("\n".join(some_facts(1, 7)) + "\n")
    result = lifecycle(sqlite_settings, "ingest", str(path))
    assert result.returncode == 1, result.stderr
    assert "audit chain" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    verified = lifecycle(sqlite_settings, "audit", "verify")
    assert verified.returncode == 1 and CHECKPOINT in verified.stdout


def test_truncating_the_chain_is_caught(backend: Settings) -> None:
    """The newest chain rows deleted (events kept): those events are unchained and the
    newest checkpoint points past the chain."""
    ingested(backend)
    raw = RawStore(backend)
    last = max(raw.ids())
    raw.run("DELETE FROM lifecycle_event_chain WHERE position > ?", last - 3)
    report = verify_now(backend)
    assert {(UNCHAINED, last - 2), (UNCHAINED, last - 1), (UNCHAINED, last)} <= set(
        problems(report))
    assert any(kind == CHECKPOINT for kind, _ in problems(report))


def test_deleted_checkpoints_are_caught(backend: Settings) -> None:
    """Removing the newest checkpoint, or one in the middle, is reported."""
    ingested(backend, subjects=1)
    ingested(backend, subjects=1, first=2)
    ingested(backend, subjects=1, first=3)
    raw = RawStore(backend)
    raw.run("DELETE FROM lifecycle_event_checkpoints WHERE seq = 2")
    assert {kind for kind, _ in problems(verify_now(backend))} == {CHECKPOINT}
    raw.run("DELETE FROM lifecycle_event_checkpoints WHERE seq = 3")
    assert {kind for kind, _ in problems(verify_now(backend))} == {CHECKPOINT}


def test_altering_an_older_checkpoint_is_caught(backend: Settings) -> None:
    """Any checkpoint, not only the newest, is checked: a changed time, count or digest in
    the first one breaks its signature."""
    ingested(backend, subjects=1)
    ingested(backend, subjects=1, first=2)
    raw = RawStore(backend)
    first = raw.run("SELECT position FROM lifecycle_event_checkpoints WHERE seq = 1")[0][0]
    for change in ("signed_at = '2020-01-01T00:00:00+00:00'", "events = events + 1"):
        raw.run(f"UPDATE lifecycle_event_checkpoints SET {change} WHERE seq = 1")
        report = verify_now(backend)
        assert (CHECKPOINT, first) in problems(report)
        assert any("not signed" in p.detail for p in report.problems)


def test_rewriting_chain_and_checkpoints_together_is_caught_by_the_signatures(
        backend: Settings) -> None:
    """An intruder edits an event and recomputes every chain row: the old checkpoints no
    longer agree; re-signed with the intruder's own key, the signatures do not verify.
    No anchor is needed for either."""
    ingested(backend)
    nid = events_of(backend, "member:1")[0][0]
    raw = RawStore(backend)
    raw.flip_one_byte(nid)
    raw.rechain(None)
    report = verify_now(backend)
    assert not report.ok and {kind for kind, _ in problems(report)} == {CHECKPOINT}
    raw.rechain(intruder_key())
    report = verify_now(backend)
    assert not report.ok and {kind for kind, _ in problems(report)} == {CHECKPOINT}
    assert "not this store's signing key" in report.problems[0].detail


def test_a_rolled_back_log_is_caught_by_an_anchor(backend: Settings) -> None:
    """Removing the newest batch whole (events, chain rows, checkpoint) leaves a log that
    verifies on its own; an anchor kept from before catches it."""
    ingested(backend, subjects=1)
    raw = RawStore(backend)
    first_batch = max(raw.ids())
    ingested(backend, subjects=1, first=2)
    with Ledger(backend) as ledger:
        head = signed_head(ledger.store)
    assert head is not None
    anchor = Anchor.parse(head["anchor"])
    assert anchor.key_id == head["key_fingerprint"]
    assert verify_now(backend, anchor).ok
    raw.run("DELETE FROM {table} WHERE {id} > ?", first_batch)
    raw.run("DELETE FROM lifecycle_event_chain WHERE position > ?", first_batch)
    raw.run("DELETE FROM lifecycle_event_checkpoints WHERE position > ?", first_batch)
    assert verify_now(backend).ok  # a rollback leaves nothing inside the store to see
    assert [kind for kind, _ in problems(verify_now(backend, anchor))] == [ANCHOR_MISMATCH]


def test_an_anchor_from_another_key_is_a_mismatch(backend: Settings) -> None:
    """An anchor naming another signing key than the store's is reported."""
    ingested(backend, subjects=1)
    with Ledger(backend) as ledger:
        head = signed_head(ledger.store)
    assert head is not None
    anchor = Anchor(head["position"], head["log_digest"], "0" * 16)
    assert [kind for kind, _ in problems(verify_now(backend, anchor))] == [ANCHOR_MISMATCH]


def test_a_malformed_anchor_is_refused() -> None:
    """An anchor is POSITION:SHA256-HEX[:FINGERPRINT]; anything else is a ValueError."""
    for text in ("12:nothex", f"x:{'a' * 64}", f"12:{'a' * 64}:short"):
        with pytest.raises(ValueError):
            Anchor.parse(text)
    assert str(Anchor.parse(f"12:{'A' * 64}")) == f"12:{'a' * 64}"
    assert Anchor.parse(f"12:{'a' * 64}:{'b' * 16}").key_id == "b" * 16


# -- the signing key -------------------------------------------------------------------------

def test_the_signing_key_file_is_created_private_on_first_use(sqlite_settings: Settings) -> None:
    """signing.key appears in the home with mode 0600 when the store is first opened."""
    with Ledger(sqlite_settings):
        pass
    path = sqlite_settings.home / "signing.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_missing_signing_key_for_a_signed_chain_is_a_configuration_error(
        backend: Settings) -> None:
    """Once checkpoints exist, a missing key is not replaced by a new one: the store does
    not open (a new key would start a second, unverifiable chain)."""
    ingested(backend, subjects=1)
    os.unlink(backend.signing_key_path)
    with pytest.raises(ConfigurationError, match="signing key file .* does not exist"):
        Ledger(backend)


def test_the_key_can_come_from_the_environment(backend: Settings) -> None:
    """LIFECYCLE_SIGNING_KEY (base64) signs instead of a key file; none is created. Another
    key fails every signature, and writing with it is refused before anything is stored."""
    import base64

    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )

    raw = Ed25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw,
                                                    NoEncryption())
    settings = Settings(backend.home, backend.database_url, None, backend.master_key_file,
                        signing_key=base64.b64encode(raw).decode())
    ingested(settings, subjects=1)
    assert not settings.signing_key_path.exists()
    assert verify_now(settings).ok
    other = Settings(backend.home, backend.database_url, None, backend.master_key_file,
                     signing_key=base64.b64encode(os.urandom(32)).decode())
    assert {kind for kind, _ in problems(verify_now(other))} == {CHECKPOINT}
    with Ledger(other) as ledger:  # nor does another key write on the chain
        with pytest.raises(ConfigurationError, match="not the key the audit chain is signed"):
            ledger.ingest(some_facts(1, 9), NOW)
    assert verify_now(settings).ok


# -- upgrading a store written before the chain was kept with the events ----------------------

def older_store(settings: Settings, subjects: int = 5) -> None:
    """Events as a version before actors and the chain stored them: no actor in their
    state (the chain rows and the signing key are removed afterwards)."""
    store = SubjectStore(env=persistence_env(settings))  # the library's plain mapper
    attach_signing_key(store, settings)
    try:
        store.save(*(DataSubject(reference=f"member:{n}") for n in range(subjects)))
    finally:
        store.close()


def test_an_older_store_is_chained_once_when_first_opened(backend: Settings) -> None:
    """A store whose events were stored without a chain (and with no signing key yet) is
    chained when the new version first opens it; from then on it verifies."""
    older_store(backend)
    raw = RawStore(backend)
    raw.run("DELETE FROM lifecycle_event_chain")
    raw.run("DELETE FROM lifecycle_event_checkpoints")
    os.unlink(backend.signing_key_path)  # as before the upgrade: no key, no chain
    report = verify_now(backend)
    assert report.ok and report.events_checked == len(raw.ids())
    nid = raw.ids()[3]
    raw.flip_one_byte(nid)
    assert problems(verify_now(backend)) == [(ALTERED, nid)]


def test_a_removed_chain_and_signing_key_are_not_mistaken_for_an_older_store(
        backend: Settings) -> None:
    """Chain, checkpoints and signing key deleted under events that name their actor
    (stored by a version that chains every event): opening the store is a configuration
    error naming the first such event, and no new key is made to vouch for the log."""
    ingested(backend, subjects=2)
    raw = RawStore(backend)
    raw.run("DELETE FROM lifecycle_event_chain")
    raw.run("DELETE FROM lifecycle_event_checkpoints")
    os.unlink(backend.signing_key_path)
    with pytest.raises(ConfigurationError, match="stored by a version that chains"):
        verify_now(backend)
    assert not backend.signing_key_path.exists()


def test_audit_chain_refuses_to_rechain_events_a_chaining_version_stored(
        cli_env: Settings) -> None:
    """`audit chain` on an emptied chain (its key kept) refuses, exit 1: events that name
    their actor were chained as they were stored, so their chain was removed; the log is
    left unchained and verify keeps reporting it."""
    from lifecycle.cli.main import cli

    ingested(cli_env, subjects=1)
    raw = RawStore(cli_env)
    raw.run("DELETE FROM lifecycle_event_chain")
    raw.run("DELETE FROM lifecycle_event_checkpoints")
    result = CliRunner().invoke(cli, ["audit", "chain"])
    assert result.exit_code == 1 and "tampering" in result.stderr
    assert verify_now(cli_env).unchained == len(raw.ids())


# -- shredding ---------------------------------------------------------------------------

def test_erasure_does_not_break_verification(backend: Settings) -> None:
    """Crypto-shredding destroys keys, never events: the chain still verifies after it."""
    ingested(backend)
    with Ledger(backend) as ledger:
        subject_id = str(ledger.subject("member:2").id)
        ingested_now = ledger.ingest(lines([fact("erasure-requested", "member:2",
                                                 "2024-05-01T10:00:00Z", request="ER-1")]), NOW)
        assert ingested_now.accepted == 1
        assert ledger.subject_view("member:2")["records"][0]["data"] == "erased"
        with ledger.vault.engine.connect() as conn:
            destroyed = conn.execute(sa.select(data_keys.c.wrapped)
                                     .where(data_keys.c.subject_id == subject_id)).all()
        assert destroyed and all(wrapped is None for (wrapped,) in destroyed)
    report = verify_now(backend)
    assert report.ok, [p.describe() for p in report.problems]


# -- the command line ---------------------------------------------------------------------------

@pytest.fixture
def cli_env(sqlite_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("LIFECYCLE_HOME", str(sqlite_settings.home))
    for name in ("LIFECYCLE_DATABASE_URL", "LIFECYCLE_MASTER_KEY", "LIFECYCLE_MASTER_KEY_FILE",
                 "LIFECYCLE_SIGNING_KEY", "LIFECYCLE_SIGNING_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    return sqlite_settings


def test_audit_verify_exits_0_untouched_and_1_naming_the_changed_event(
        cli_env: Settings) -> None:
    """`lifecycle audit verify` exits 0 on an untouched store, 1 naming an altered event."""
    from lifecycle.cli.main import cli

    ingested(cli_env)
    run = CliRunner()
    result = run.invoke(cli, ["audit", "verify", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["ok"] is True
    nid, version, _ = events_of(cli_env, "member:3")[1]
    RawStore(cli_env).flip_one_byte(nid)
    result = run.invoke(cli, ["audit", "verify"])
    assert result.exit_code == 1
    assert f"altered at position {nid}: member:3 v{version}" in result.stdout
    document = json.loads(run.invoke(cli, ["audit", "verify", "--json"]).stdout)
    assert [(p["kind"], p["position"]) for p in document["problems"]] == [(ALTERED, nid)]


def test_audit_anchor_prints_the_signed_head_that_verify_anchor_checks(
        cli_env: Settings) -> None:
    """`audit anchor` prints position, digest, signature and key fingerprint; its anchor
    line passes `audit verify --anchor`, and fails it once the log is rolled back."""
    from lifecycle.cli.main import cli

    ingested(cli_env, subjects=1)
    run = CliRunner()
    result = run.invoke(cli, ["audit", "anchor"])
    assert result.exit_code == 0, result.output
    fields = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    assert {"position", "log digest", "signature", "key fingerprint", "public key",
            "anchor"} <= fields.keys()
    document = json.loads(run.invoke(cli, ["audit", "anchor", "--json"]).stdout)
    assert document["anchor"] == fields["anchor"]
    assert run.invoke(cli, ["audit", "verify", "--anchor", fields["anchor"]]).exit_code == 0
    ingested(cli_env, subjects=1, first=2)
    assert run.invoke(cli, ["audit", "verify", "--anchor", fields["anchor"]]).exit_code == 0
    raw = RawStore(cli_env)
    raw.flip_one_byte(int(fields["position"]))
    raw.rechain(None)
    result = run.invoke(cli, ["audit", "verify", "--anchor", fields["anchor"]])
    assert result.exit_code == 1 and ANCHOR_MISMATCH in result.stdout
    bad = run.invoke(cli, ["audit", "verify", "--anchor", "12:nothex"])
    assert bad.exit_code == 2 and "Traceback" not in bad.output


def test_audit_chain_refuses_a_store_that_is_already_chained(cli_env: Settings) -> None:
    """`audit chain` only chains an older store's backlog: on a chained store it exits 1."""
    from lifecycle.cli.main import cli

    ingested(cli_env, subjects=1)
    result = CliRunner().invoke(cli, ["audit", "chain"])
    assert result.exit_code == 1 and "already holds events" in result.stderr


# -- writers at once ------------------------------------------------------------------------

def test_two_ingest_processes_at_once_write_one_consistent_chain(
        backend: Settings, tmp_path: Any) -> None:
    """Two `lifecycle ingest` processes writing at the same time (real processes) leave one
    chain: every event chained once, in log order, checkpoints numbered without gaps."""
    import subprocess
    import sys

    from tests.processes import env_for

    ingested(backend, subjects=1)  # the store, its keys and the policy-less schema exist
    files = []
    for n, first in enumerate((100, 1000)):
        path = tmp_path / f"facts-{n}.jsonl"
        path.write_text("\n".join(some_facts(550, first)) + "\n")  # two batches each
        files.append(path)
    writers = [subprocess.Popen([sys.executable, "-m", "lifecycle", "ingest", str(path)],
                                env=env_for(backend), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for path in files]
    for writer in writers:
        _, err = writer.communicate(timeout=300)
        assert writer.returncode == 0, err
    report = verify_now(backend)
    assert report.ok, [p.describe() for p in report.problems[:5]]
    assert report.events_checked == report.chained == len(RawStore(backend).ids()) > 4400
    seqs = [r[0] for r in RawStore(backend).run(
        "SELECT seq FROM lifecycle_event_checkpoints ORDER BY seq")]
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) >= 5
