"""The sweep reads its subjects in batches and hands them to the projections: neither may
change what is stored or what the views show."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import pytest
import sqlalchemy as sa

from lifecycle.aggregates.data_subject import DataSubject
from lifecycle.services.ledger import Ledger
from lifecycle.projections import runner, tables
from lifecycle.services.sweep import Sweeper
from tests.facts_builder import collected, fact, lines
from tests.read_models import snapshot_views

CONFIG = Path(__file__).resolve().parents[1] / "config"
ADOPTED = datetime(2023, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 1, 1, tzinfo=UTC)
REVIEW = datetime(2025, 7, 1, tzinfo=UTC)


def members(ledger: Ledger, count: int, records: int) -> list[str]:
    """`count` subjects with `records` marketing records each, unsubscribed on 2024-03-10
    (every record due at the 2025-07-01 review), and one subject that stays."""
    facts = []
    refs = [f"member:{n}" for n in range(count)]
    for n, ref in enumerate(refs):
        facts.append(fact("consent-given", ref, "2023-05-02T09:00:00Z",
                          purpose="direct-marketing"))
        facts += [collected(ref, f"2023-05-02T09:0{r}:00Z", f"list-{r}", {"email": f"{n}@e.org"})
                  for r in range(records)]
        facts.append(fact("unsubscribed", ref, "2024-03-10T10:00:00Z"))
    facts.append(fact("consent-given", "member:stays", "2023-05-02T09:00:00Z",
                      purpose="direct-marketing"))
    facts.append(collected("member:stays", "2023-05-02T09:00:00Z", "list-0", {"x": 1}))
    report = ledger.ingest(lines(facts), NOW)
    assert report.accepted == len(facts), report.rejected[:3]
    return [*refs, "member:stays"]


def test_subjects_read_in_batches_equal_those_replayed_one_by_one(ledger: Ledger) -> None:
    """`get_subjects` gives each subject exactly as `get_subject_by_id` replays it, in
    chunks of any size, and skips ids that have no events."""
    refs = members(ledger, 5, 3)
    ids = [DataSubject.create_id(ref) for ref in refs]
    missing = uuid4()
    for chunk in (1, 2, 500):
        batched = list(ledger.store.get_subjects([*ids, missing, ids[0]], chunk=chunk))
        assert sorted(s.id.hex for s in batched) == sorted(i.hex for i in ids)
        for subject in batched:
            one = ledger.store.get_subject_by_id(subject.id)
            assert one is not None
            assert (subject.version, vars(subject)) == (one.version, vars(one))


def test_views_after_a_sweep_equal_a_rebuild(ledger: Ledger) -> None:
    """The subjects a sweep saved are handed to the projection catch-up, which then reads
    none of them again: the views it leaves equal a rebuild from zero."""
    ledger.adopt_policy(CONFIG / "hqip.toml", ADOPTED)
    members(ledger, 12, 3)
    ledger.projections.catch_up()
    report = ledger.sweep(REVIEW, NOW)
    assert len(report.erased) == 36
    swept = snapshot_views(ledger)
    ledger.projections.rebuild()
    assert snapshot_views(ledger) == swept


def test_a_catch_up_split_inside_a_subjects_sweep_events_still_matches_a_rebuild(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """A handed-over subject holds all its new events; when the catch-up's batches end
    between two of them, the subject is read at the batch's version instead, so no view
    is ever written ahead of its position, and the end state equals a rebuild."""
    ledger.adopt_policy(CONFIG / "hqip.toml", ADOPTED)
    members(ledger, 4, 3)
    ledger.projections.catch_up()
    monkeypatch.setattr(runner, "BATCH", 2)
    monkeypatch.setattr(runner, "WRITE_BATCH", 2)
    positions: list[tuple[int, list[int]]] = []
    apply = ledger.projections._apply

    def recording(batch: list[object], start: int) -> None:
        apply(batch, start)  # type: ignore[arg-type]
        with ledger.views.connect() as conn:
            versions = [row[0] for row in conn.execute(
                sa.select(tables.subjects.c.version)
                .where(tables.subjects.c.reference == "member:0"))]
        positions.append((batch[-1].id, versions))  # type: ignore[attr-defined]

    monkeypatch.setattr(ledger.projections, "_apply", recording)
    report = ledger.sweep(REVIEW, NOW)
    assert len(report.erased) == 12
    subject = ledger.store.get_subject("member:0")
    assert subject is not None
    # The view of member:0 never shows a version whose event lies after the batch's end.
    events = [n for n in ledger.store.recorder.select_notifications(1, 10_000)
              if n.originator_id == subject.id]
    position_of = {n.originator_version: n.id for n in events}
    for last, versions in positions:
        for version in versions:
            assert position_of[version] <= last, (version, last)
    swept = snapshot_views(ledger)
    monkeypatch.undo()
    ledger.projections.rebuild()
    assert snapshot_views(ledger) == swept


def test_a_catch_up_of_a_sweep_made_elsewhere_matches_a_rebuild(ledger: Ledger) -> None:
    """Events this runner did not see written (another process's sweep) are applied to
    subjects it reads in batches at their latest version: the views equal a rebuild."""
    ledger.adopt_policy(CONFIG / "hqip.toml", ADOPTED)
    members(ledger, 12, 3)
    ledger.projections.catch_up()
    adoption = ledger.store.latest_adoption()
    assert adoption is not None
    report = Sweeper(ledger.store, ledger.vault, ledger.views).sweep(REVIEW, NOW)
    assert len(report.erased) == 36
    read: list[int] = []
    get_aggregates = ledger.store.get_aggregates

    def counting(ids: list[object], chunk: int = 500) -> Iterator[object]:
        read.append(len(ids))
        return get_aggregates(ids, chunk)  # type: ignore[arg-type]

    ledger.store.get_aggregates = counting  # type: ignore[assignment,method-assign]
    ledger.projections.forget()  # as in a fresh process: nothing cached
    ledger.projections.catch_up()
    assert read == [12], "the swept subjects are read together, not one by one"
    swept = snapshot_views(ledger)
    ledger.projections.rebuild()
    assert snapshot_views(ledger) == swept


def test_keys_of_batches_already_recorded_are_destroyed_when_a_later_batch_fails(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sweep saves batch after batch, destroying each batch's recorded keys; when a
    later batch fails, the keys whose erasure earlier batches recorded are destroyed (and
    unmarked) by the time the error surfaces, and the failed batch destroys nothing."""
    from lifecycle.services import sweep as sweep_module
    from lifecycle.store.vault import doomed_keys

    ledger.adopt_policy(CONFIG / "hqip.toml", ADOPTED)
    refs = members(ledger, 8, 1)
    ledger.projections.catch_up()
    monkeypatch.setattr(sweep_module, "BATCH_SUBJECTS", 4)
    saves = 0
    save = ledger.store.save

    def failing_second(*aggregates: object, **kwargs: object) -> object:
        nonlocal saves
        saves += 1
        if saves == 2:
            raise RuntimeError("disk full")
        return save(*aggregates, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ledger.store, "save", failing_second)
    with pytest.raises(RuntimeError, match="disk full"):
        ledger.sweep(REVIEW, NOW)
    monkeypatch.undo()
    erased, kept = [], []
    for ref in refs[:8]:
        subject = ledger.store.get_subject(ref)
        assert subject is not None
        key_id = subject.records["list-0"].key_id
        (erased if subject.records["list-0"].erased_at else kept).append(key_id)
    assert len(erased) == 4 and len(kept) == 4
    assert ledger.vault.live_key_ids(erased) == set()
    assert ledger.vault.live_key_ids(kept) == set(kept)
    with ledger.vault.engine.connect() as conn:
        marked = {row[0] for row in conn.execute(sa.select(doomed_keys.c.key_id))}
    assert not marked & set(erased)
    # The next sweep erases the rest.
    assert len(ledger.sweep(REVIEW, NOW).erased) == 4
    assert ledger.vault.live_key_ids(kept) == set()


def test_keys_a_batch_recorded_are_destroyed_before_the_next_batch_is_read(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once a batch's erasure events are saved, its keys are destroyed before the sweep
    reads the next batch: a subject already recorded as erased leaves no key that another
    process (`lifecycle serve`, an export) could still open while the sweep goes on."""
    ledger.adopt_policy(CONFIG / "hqip.toml", ADOPTED)
    refs = members(ledger, 8, 1)
    ledger.projections.catch_up()
    from lifecycle.services import sweep as sweep_module

    monkeypatch.setattr(sweep_module, "BATCH_SUBJECTS", 4)
    key_of = {}
    for ref in refs[:8]:
        subject = ledger.store.get_subject(ref)
        assert subject is not None
        key_of[subject.id] = subject.records["list-0"].key_id
    seen_live: list[set[str]] = []  # at each batch's read, the live keys of subjects erased
    get_subjects = ledger.store.get_subjects

    def watching(ids: list[object], chunk: int = 500) -> Iterator[DataSubject]:
        erased = []
        for subject in get_subjects(list(key_of), chunk):
            record = subject.records["list-0"]
            if record.erased_at is not None:
                erased.append(record.key_id)
        seen_live.append(ledger.vault.live_key_ids(erased) if erased else set())
        return get_subjects(ids, chunk)  # type: ignore[arg-type]

    monkeypatch.setattr(ledger.store, "get_subjects", watching)
    report = ledger.sweep(REVIEW, NOW)
    monkeypatch.undo()
    assert len(report.erased) == 8
    assert len(seen_live) >= 2, "two batches, each read with get_subjects"
    assert seen_live == [set()] * len(seen_live), \
        "keys of subjects recorded as erased were still live when the next batch was read"
    assert ledger.vault.live_key_ids(list(key_of.values())) == set()


def reads_of(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many aggregates each batched read of the store asks for, from now on."""
    read: list[int] = []
    get_aggregates = ledger.store.get_aggregates

    def counting(ids: list[object], chunk: int = 500) -> Iterator[object]:
        read.append(len(ids))
        return get_aggregates(ids, chunk)  # type: ignore[arg-type]

    monkeypatch.setattr(ledger.store, "get_aggregates", counting)
    return read


def test_a_sweep_decides_on_the_subjects_the_projections_hold_without_reading_them(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """Subjects the projection runner holds (each exactly as stored at its version) are
    swept without being read again; the stored events and the views equal those of a
    sweep in a process that held none of them."""
    ledger.adopt_policy(CONFIG / "hqip.toml", ADOPTED)
    refs = members(ledger, 6, 2)
    ledger.projections.catch_up()
    held = ledger.projections.lend(DataSubject.create_id(ref) for ref in refs)
    assert len(held) == len(refs), "the catch-up holds every subject it applied"
    read = reads_of(ledger, monkeypatch)
    report = ledger.sweep(REVIEW, NOW)
    monkeypatch.undo()
    assert len(report.erased) == 12
    assert sum(read) == 0, "no swept subject was read from the store"
    for ref in refs:
        stored = ledger.store.get_subject(ref)
        assert stored is not None
        assert stored.version == held[stored.id].version
        assert stored.consents == held[stored.id].consents  # (folds the cached preferences)
        assert vars(stored) == vars(held[stored.id])
    swept = snapshot_views(ledger)
    ledger.projections.rebuild()
    assert snapshot_views(ledger) == swept


def test_a_held_subject_another_process_changed_is_decided_again_on_what_is_stored(
        ledger: Ledger, backend: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """A held subject can be behind the store (another process wrote since the last
    catch-up): it is not lent (its cached version is not the stored one). One another
    process changes after it was lent is decided on, but what the sweep decides on it is
    never saved (its next version is taken): the batch is redone on the subjects as
    stored, and nothing the stale state decided is erased: here a legal hold placed
    meanwhile pauses the erasure."""
    ledger.adopt_policy(CONFIG / "hqip.toml", ADOPTED)
    refs = members(ledger, 3, 1)
    ledger.projections.catch_up()
    subject_id = DataSubject.create_id(refs[0])

    def hold(ref: str, name: str) -> None:
        with Ledger(backend) as other:  # type: ignore[arg-type]
            report = other.ingest(lines([fact(
                "legal-hold-placed", ref, "2024-06-01T09:00:00Z", hold=name,
                scope="direct-marketing", reason="claim")]), NOW)
            assert report.accepted == 1, report.rejected

    hold(refs[0], "H-1")
    assert not ledger.projections._cache[subject_id].holds, "cached as before the hold"
    assert ledger.projections.lend([subject_id]) == {}, "a copy behind the store is not lent"
    ledger.projections.catch_up()  # holds it again, hold and all
    lend = ledger.projections.lend
    lent: list[set[str]] = []

    def lend_then_hold(ids: object) -> dict[object, DataSubject]:
        given = lend(ids)  # type: ignore[arg-type]
        lent.append({s.reference for s in given.values()})
        if len(lent) == 1:
            hold(refs[1], "H-2")  # after the check: the lent copy is now behind the store
        return given  # type: ignore[return-value]

    monkeypatch.setattr(ledger.projections, "lend", lend_then_hold)
    swept = Sweeper(ledger.store, ledger.vault, ledger.views,
                    cache=ledger.projections).sweep(REVIEW, NOW)
    monkeypatch.undo()
    assert lent == [set(refs[:3])], "lent once (the retry reads every subject)"
    assert sorted(p["subject"] for p in swept.paused) == sorted(refs[:2])
    assert [e["subject"] for e in swept.erased] == [refs[2]]
    for ref in refs[:2]:
        stored = ledger.store.get_subject(ref)
        assert stored is not None and stored.records["list-0"].erased_at is None
        assert ledger.vault.live_key_ids([stored.records["list-0"].key_id]) == {
            stored.records["list-0"].key_id}
    ledger.projections.catch_up()
    views = snapshot_views(ledger)
    ledger.projections.rebuild()
    assert snapshot_views(ledger) == views


def test_a_dry_run_leaves_the_held_subjects_as_stored(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """A dry run changes the held subjects it decides on without saving them: it drops
    them from the cache, so the real sweep after it reads them as stored and records
    every erasure; the views equal a rebuild."""
    ledger.adopt_policy(CONFIG / "hqip.toml", ADOPTED)
    refs = members(ledger, 4, 1)
    ledger.projections.catch_up()
    ids = [DataSubject.create_id(ref) for ref in refs]
    dry = ledger.sweep(REVIEW, NOW, dry_run=True)
    assert len(dry.erased) == 4
    for subject in ledger.projections.lend(ids).values():
        assert not subject.pending_events
        assert all(r.erased_at is None for r in subject.records.values())
    read = reads_of(ledger, monkeypatch)
    report = ledger.sweep(REVIEW, NOW)
    monkeypatch.undo()
    assert len(report.erased) == 4 and sum(read) >= 4
    for ref in refs[:4]:
        stored = ledger.store.get_subject(ref)
        assert stored is not None and stored.records["list-0"].erased_at is not None
    swept = snapshot_views(ledger)
    ledger.projections.rebuild()
    assert snapshot_views(ledger) == swept


def test_the_collector_stays_paused_across_a_sweeps_batches(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sweep keeps the cyclic collector paused from its first batch to its last (each
    resume would rescan every aggregate the process holds), collects in full every
    COLLECT_EVERY_BATCHES batches, and leaves the collector on after, also when a batch
    fails."""
    import gc

    from lifecycle.services import sweep as sweep_module

    ledger.adopt_policy(CONFIG / "hqip.toml", ADOPTED)
    members(ledger, 5, 1)
    ledger.projections.catch_up()
    monkeypatch.setattr(sweep_module, "BATCH_SUBJECTS", 2)
    monkeypatch.setattr(sweep_module, "COLLECT_EVERY_BATCHES", 2)
    enabled: list[bool] = []
    sweep_batch = Sweeper._sweep_batch

    def recording(self: Sweeper, *args: object) -> None:
        enabled.append(gc.isenabled())
        sweep_batch(self, *args)  # type: ignore[arg-type]

    collections: list[int] = []
    resumed: list[int] = []
    enable = gc.enable
    monkeypatch.setattr(Sweeper, "_sweep_batch", recording)
    monkeypatch.setattr(gc, "collect", lambda *args: collections.append(len(enabled)) or 0)
    monkeypatch.setattr(gc, "enable", lambda: (resumed.append(len(enabled)), enable())[1])
    report = Sweeper(ledger.store, ledger.vault, ledger.views,
                     cache=ledger.projections).sweep(REVIEW, NOW)
    assert len(report.erased) == 5
    assert enabled == [False, False, False], "paused from the first batch to the last"
    assert resumed == [3], "resumed once, after the last batch"
    assert collections == [2], "a full collection after every second batch"
    assert gc.isenabled()

    def failing(self: Sweeper, *args: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(Sweeper, "_sweep_batch", failing)
    ingested = ledger.ingest(lines([fact("consent-given", "member:late", "2023-05-02T09:00:00Z",
                                         purpose="direct-marketing"),
                                    collected("member:late", "2023-05-02T09:01:00Z", "list-0",
                                              {"x": 1}),
                                    fact("unsubscribed", "member:late",
                                         "2024-03-10T10:00:00Z")]), NOW)
    assert ingested.accepted == 3
    with pytest.raises(RuntimeError, match="disk full"):
        ledger.sweep(REVIEW, NOW)
    assert gc.isenabled()
