"""Ingest and sweep pause the cyclic garbage collector for each batch and leave it as found."""

from __future__ import annotations

import gc
from datetime import UTC, datetime
from typing import Any

import pytest

from lifecycle.services.ledger import Ledger
from tests.facts_builder import collected, lines

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_an_ingest_pauses_the_collector_per_batch_and_restores_it(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """While a batch is applied and saved the collector is off; between batches and after
    the run it is on again, also when a batch fails; a collector the caller turned off
    stays off."""
    from lifecycle.services import ingest

    monkeypatch.setattr(ingest, "BATCH_LINES", 2)
    seen: list[bool] = []
    save = ledger.store.save

    def recording(*aggregates: Any, **kwargs: Any) -> Any:
        seen.append(gc.isenabled())
        return save(*aggregates, **kwargs)

    monkeypatch.setattr(ledger.store, "save", recording)
    facts = [collected(f"member:gc-{n}", "2024-01-01T09:00:00Z", "r", {"n": n})
             for n in range(5)]
    assert ledger.ingest(lines(facts), NOW).accepted == 5
    assert seen == [False, False, False] and gc.isenabled()

    def failing(*aggregates: Any, **kwargs: Any) -> Any:
        raise RuntimeError("disk full")

    monkeypatch.setattr(ledger.store, "save", failing)
    with pytest.raises(RuntimeError):
        ledger.ingest(lines([collected("member:gc-x", "2024-01-01T09:00:00Z", "r", {})]), NOW)
    assert gc.isenabled()
    gc.disable()
    try:
        monkeypatch.setattr(ledger.store, "save", save)
        ledger.ingest(lines([collected("member:gc-y", "2024-01-01T09:00:00Z", "r", {})]), NOW)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_an_ingest_parses_with_the_collector_paused_a_batch_of_lines_at_a_time(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """Parsing holds every parsed fact of the file: each line is parsed with the collector
    off, which is on again between batches of lines (cyclic garbage of bad lines stays
    bounded) and after the run."""
    from lifecycle.domain import facts as fact_module
    from lifecycle.services import ingest

    monkeypatch.setattr(ingest, "BATCH_LINES", 2)
    parsed: list[bool] = []
    parse_line = fact_module.parse_line

    def recording(text: str, now: Any = None) -> Any:
        parsed.append(gc.isenabled())
        return parse_line(text, now)

    monkeypatch.setattr(fact_module, "parse_line", recording)
    enabled_between: list[bool] = []
    islice = ingest.islice

    def watching(iterable: Any, *args: Any) -> Any:
        enabled_between.append(gc.isenabled())
        return islice(iterable, *args)

    monkeypatch.setattr(ingest, "islice", watching)
    facts = [collected(f"member:gc-p{n}", "2024-01-01T09:00:00Z", "r", {"n": n})
             for n in range(5)]
    assert ledger.ingest(lines(facts) + ["not json"], NOW).accepted == 5
    assert parsed and not any(parsed)
    assert len(enabled_between) == 4  # 6 lines, 2 a batch, then the empty end
    assert gc.isenabled()


def test_a_sweep_pauses_the_collector_per_batch_and_restores_it(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each sweep batch is planned and saved with the collector off; it is on again after
    the sweep."""
    from pathlib import Path

    from lifecycle.services import sweep
    from tests.facts_builder import fact

    ledger.adopt_policy(Path(__file__).resolve().parents[1] / "config" / "hqip.toml",
                        datetime(2023, 1, 1, tzinfo=UTC))
    facts: list[dict[str, Any]] = []
    for n in range(3):
        ref = f"member:gc-sweep-{n}"
        facts += [fact("consent-given", ref, "2023-05-02T09:00:00Z", purpose="direct-marketing"),
                  collected(ref, "2023-05-02T09:01:00Z", "list", {"email": f"{n}@e.org"}),
                  fact("unsubscribed", ref, "2024-03-10T10:00:00Z")]
    assert ledger.ingest(lines(facts), NOW).accepted == len(facts)
    monkeypatch.setattr(sweep, "BATCH_SUBJECTS", 2)
    seen: list[bool] = []
    save = ledger.store.save

    def recording(*aggregates: Any, **kwargs: Any) -> Any:
        seen.append(gc.isenabled())
        return save(*aggregates, **kwargs)

    monkeypatch.setattr(ledger.store, "save", recording)
    report = ledger.sweep(datetime(2025, 7, 1, tzinfo=UTC), NOW)
    assert len(report.erased) == 3
    assert seen == [False, False] and gc.isenabled()


def _full_collections_during(action: Any) -> list[int]:
    """Runs `action`; returns the generations of the collections that ran meanwhile."""
    generations: list[int] = []

    def watch(phase: str, info: dict[str, Any]) -> None:
        if phase == "stop":
            generations.append(int(info["generation"]))

    gc.callbacks.append(watch)
    try:
        action()
    finally:
        gc.callbacks.remove(watch)
    return generations


def _young_objects() -> int:
    """Objects the collector tracks in its two younger generations."""
    return len(gc.get_objects(generation=0)) + len(gc.get_objects(generation=1))


def test_a_catch_up_that_fills_its_cache_collects_once_as_it_ends(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """A catch-up that leaves more new objects alive than SETTLE_OBJECTS collects them
    fully before it returns, so the collection its pause put off does not fall on the next
    operation (a sweep scanned them all); one that leaves fewer does not collect."""
    from lifecycle.projections import runner

    facts = [collected(f"member:gc-settle-{n}", "2024-01-01T09:00:00Z", "r", {"n": n})
             for n in range(60)]
    assert ledger.ingest(lines(facts), NOW).accepted == 60
    gc.collect()
    monkeypatch.setattr(runner, "SETTLE_OBJECTS", 10**9)
    generations = _full_collections_during(ledger.projections.rebuild)
    assert 2 not in generations
    assert _young_objects() > 1_000  # the rebuilt cache is still young

    gc.collect()
    monkeypatch.setattr(runner, "SETTLE_OBJECTS", 1_000)
    generations = _full_collections_during(ledger.projections.rebuild)
    assert generations.count(2) == 1
    assert _young_objects() < 1_000 and gc.isenabled()


def test_a_rebuild_workers_catch_up_does_not_collect_before_it_exits(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """A partition's runner (a parallel rebuild's worker, which exits after its catch-up)
    leaves its objects as they are, however many: a full collection would be wasted."""
    from lifecycle.projections import runner
    from lifecycle.store.event_store import BUCKETS, Partition

    facts = [collected(f"member:gc-share-{n}", "2024-01-01T09:00:00Z", "r", {"n": n})
             for n in range(60)]
    assert ledger.ingest(lines(facts), NOW).accepted == 60
    monkeypatch.setattr(runner, "SETTLE_OBJECTS", 1_000)
    scratch = runner.create_views_engine(f"sqlite:///{tmp_path / 'scratch.sqlite'}")
    share = runner.ProjectionRunner(ledger.store, scratch,
                                    partition=Partition(frozenset(range(BUCKETS))),
                                    stop=ledger.projections.head())
    try:
        gc.collect()
        generations = _full_collections_during(share.catch_up)
    finally:
        scratch.dispose()
    assert 2 not in generations and _young_objects() > 1_000
