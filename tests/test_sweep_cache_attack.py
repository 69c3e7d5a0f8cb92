"""Attacks on the sweep deciding on the subjects the projection runner holds (f8acf64):
a long-lived process (the daemon: one Ledger, repeated sweeps) whose cached subjects
another process changed. Real stores, real child processes, both backends."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from lifecycle.aggregates.data_subject import DataSubject
from lifecycle.services.ledger import Ledger
from lifecycle.store.settings import Settings
from tests.facts_builder import collected, fact, lines
from tests.processes import json_of, lifecycle
from tests.read_models import snapshot_views

CONFIG = Path(__file__).resolve().parents[1] / "config"
ADOPTED = datetime(2023, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 1, 1, tzinfo=UTC)
REVIEW = datetime(2025, 7, 1, tzinfo=UTC)


def member(ref: str, n: int) -> list[dict[str, Any]]:
    """A marketing record, unsubscribed 2024-03-10: due at the 2025-07-01 review."""
    return [fact("consent-given", ref, "2023-05-02T09:00:00Z", purpose="direct-marketing"),
            collected(ref, "2023-05-02T09:01:00Z", "list-0", {"email": f"{n}@e.org"}),
            fact("unsubscribed", ref, "2024-03-10T10:00:00Z")]


def ingest_elsewhere(settings: Settings, tmp_path: Path, facts: list[dict[str, Any]]) -> None:
    """Another process ingests the facts, and a third reads the status (which catches
    the shared views up past them, as any `lifecycle status` or `subject show` does)."""
    path = tmp_path / f"facts-{len(list(tmp_path.glob('facts-*')))}.jsonl"
    path.write_text("\n".join(lines(facts)) + "\n")
    result = lifecycle(settings, "ingest", str(path))
    assert result.returncode == 0, result.stderr
    json_of(lifecycle(settings, "status", "--json"))


def test_a_hold_released_elsewhere_is_erased_by_the_long_lived_sweeper(
        backend: Settings, tmp_path: Path) -> None:
    """A record kept only by a legal hold is erased by the next sweep once the hold is
    released, whichever process recorded the release and whichever process caught the
    views up: a daemon that held the subject (with its hold) from an earlier catch-up
    must not decide on that copy and keep the record past its due date."""
    with Ledger(backend) as daemon:
        daemon.adopt_policy(CONFIG / "hqip.toml", ADOPTED)
        facts = member("member:held", 0) + [fact(
            "legal-hold-placed", "member:held", "2024-06-01T09:00:00Z", hold="H-1",
            scope="direct-marketing", reason="claim")]
        assert daemon.ingest(lines(facts), NOW).ok
        first = daemon.sweep(NOW, NOW)  # a daemon tick: holds the subject, hold and all
        assert [p["subject"] for p in first.paused] == ["member:held"]
        ingest_elsewhere(backend, tmp_path, [fact(
            "legal-hold-released", "member:held", "2025-08-01T09:00:00Z", hold="H-1")])
        second = daemon.sweep(NOW, NOW)  # the next tick
        stored = daemon.store.get_subject("member:held")
        assert stored is not None
        assert stored.records["list-0"].erased_at is not None, (
            "the released record was kept: the sweep decided on its stale cached copy "
            f"(paused: {second.paused})")
        assert [e["subject"] for e in second.erased] == ["member:held"]


HOLD = fact("legal-hold-placed", "member:0", "2024-06-01T09:00:00Z", hold="H-1",
            scope="direct-marketing", reason="claim")
# (what the daemon holds, what another process records after, what the next tick must do)
CHANGES = {
    "hold-released": ([HOLD], [fact("legal-hold-released", "member:0", "2025-08-01T09:00:00Z",
                                    hold="H-1")], "erased"),
    "restriction-lifted": (
        [fact("restricted", "member:0", "2024-06-01T09:00:00Z", scope="direct-marketing",
              reason="contested-accuracy")],
        [fact("restriction-lifted", "member:0", "2025-08-01T09:00:00Z",
              scope="direct-marketing")], "erased"),
    "late-record": (
        [], [collected("member:0", "2023-05-03T09:00:00Z", "list-late", {"email": "l@e.org"})],
        "erased"),
    "hold-placed": ([], [HOLD], "paused"),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_the_next_tick_decides_on_what_another_process_recorded(
        backend: Settings, tmp_path: Path, change: str) -> None:
    """Whatever another process records about a subject the daemon holds (and whoever
    catches the views up after), the daemon's next sweep decides as a fresh process
    would: a released hold or a lifted restriction lets the record go, a late record
    that is due goes, a hold placed keeps it."""
    before, after, expected = CHANGES[change]
    with Ledger(backend) as daemon:
        daemon.adopt_policy(CONFIG / "hqip.toml", ADOPTED)
        facts = member("member:0", 0) + member("member:1", 1)
        assert daemon.ingest(lines(facts + before), NOW).ok
        # A tick: the daemon now holds member:0 (before anything is due for a hold to come;
        # after its first record went for a late record to come).
        first_tick = {"hold-placed": datetime(2025, 1, 1, tzinfo=UTC), "late-record": REVIEW}
        daemon.sweep(first_tick.get(change, NOW), NOW)
        ingest_elsewhere(backend, tmp_path, after)
        report = daemon.sweep(NOW, NOW)  # the next tick
        with Ledger(backend) as fresh:  # what a fresh process decides (a dry run)
            truth = fresh.sweep(NOW, NOW, dry_run=True)
        assert truth.erased == [] and truth.paused == report.paused, (
            f"{change}: the daemon left {[e['record'] for e in truth.erased]} due; "
            f"it paused {report.paused}")
        stored = daemon.store.get_subject("member:0")
        assert stored is not None
        records = [r for r in stored.records.values() if r.erased_at is None]
        if expected == "erased":
            assert records == []
        else:
            assert [p["subject"] for p in report.paused] == ["member:0"]


def test_stored_versions_are_the_latest_of_each_aggregate(ledger: Ledger) -> None:
    """`stored_versions` gives each aggregate's latest stored version, and nothing for an
    id without events (what `lend` checks a cached subject against)."""
    from uuid import uuid4

    assert ledger.ingest(lines(member("member:0", 0) + member("member:1", 1)[:2]), NOW).ok
    ids = [DataSubject.create_id(f"member:{n}") for n in range(2)]
    expected = {}
    for subject_id in ids:
        subject = ledger.store.get_subject_by_id(subject_id)
        assert subject is not None
        expected[subject_id] = subject.version
    assert expected[ids[0]] != expected[ids[1]]
    assert ledger.store.stored_versions([*ids, uuid4()]) == expected
    assert ledger.store.stored_versions([]) == {}


def test_the_desks_dry_run_decides_on_what_is_stored(
        backend: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`lifecycle serve`'s desk catches its writer's runner up only for writes; a dry run
    (the web's sweep preview) through it must still say what a sweep would do now: a
    record whose hold another process released is shown as erased, not paused, and the
    real sweep through the desk erases it."""
    from lifecycle.web import desk as desk_module
    from lifecycle.web.desk import Desk

    monkeypatch.setattr(desk_module, "CATCH_UP_SECONDS", 0.0)
    with Ledger(backend) as setup:
        setup.adopt_policy(CONFIG / "hqip.toml", ADOPTED)
    desk = Desk(backend)
    try:
        facts = member("member:held", 0) + [fact(
            "legal-hold-placed", "member:held", "2024-06-01T09:00:00Z", hold="H-1",
            scope="direct-marketing", reason="claim")]
        assert desk.write(lambda ledger: ledger.ingest(lines(facts), NOW)).ok
        ingest_elsewhere(backend, tmp_path, [fact(
            "legal-hold-released", "member:held", "2025-08-01T09:00:00Z", hold="H-1")])
        preview = desk.run(lambda ledger: ledger.sweep(NOW, NOW, dry_run=True))
        assert [e["subject"] for e in preview.erased] == ["member:held"], preview.as_dict()
        assert preview.paused == []
        swept = desk.write(lambda ledger: ledger.sweep(NOW, NOW))
        assert [e["subject"] for e in swept.erased] == ["member:held"]
    finally:
        desk.close()


def test_a_subject_that_fails_half_way_leaves_no_change_in_the_cache(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """A held subject whose sweep fails after one of its records was decided (its first
    erasure pending, the second raising) is reported failed and nothing else (not as
    erasing its first record), nothing of it is saved or destroyed, and the runner keeps no copy carrying the unsaved erasure: another
    writer's next event for it is applied to the subject as stored, the next sweep erases
    both records, and the views equal a rebuild."""
    ledger.adopt_policy(CONFIG / "hqip.toml", ADOPTED)
    facts = member("member:0", 0) + [collected("member:0", "2023-05-02T09:02:00Z", "list-1",
                                               {"email": "second@e.org"})]
    assert ledger.ingest(lines(facts + member("member:1", 1)), NOW).ok
    ledger.projections.catch_up()
    subject_id = DataSubject.create_id("member:0")
    expire = DataSubject.expire

    def failing(self: DataSubject, at: datetime, record: str, *args: Any) -> str | None:
        if self.id == subject_id and record == "list-1":
            raise RuntimeError("disk full")
        return expire(self, at, record, *args)

    monkeypatch.setattr(DataSubject, "expire", failing)
    report = ledger.sweep(REVIEW, NOW)
    monkeypatch.undo()
    assert [f["subject"] for f in report.failed] == ["member:0"]
    assert [e["subject"] for e in report.erased] == ["member:1"]
    stored = ledger.store.get_subject("member:0")
    assert stored is not None and all(r.erased_at is None for r in stored.records.values())
    keys = [r.key_id for r in stored.records.values()]
    assert ledger.vault.live_key_ids(keys) == set(keys)
    for held in ledger.projections.lend([subject_id]).values():
        assert not held.pending_events and held.version == stored.version
        assert all(r.erased_at is None for r in held.records.values())
    # Another writer's next event (the version the unsaved erasure had taken).
    assert ledger.ingest(lines([fact("activity", "member:0", "2025-06-01T09:00:00Z")]),
                         NOW).ok
    ledger.projections.catch_up()
    report = ledger.sweep(REVIEW, NOW)
    assert sorted(e["record"] for e in report.erased) == ["list-0", "list-1"]
    views = snapshot_views(ledger)
    ledger.projections.rebuild()
    assert snapshot_views(ledger) == views
