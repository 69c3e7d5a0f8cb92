"""A full rebuild shared among processes: the same views as one process builds, or none."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID, uuid4

import pytest
import sqlalchemy as sa

from lifecycle.aggregates.policy_register import REGISTER_ID
from lifecycle.store.engines import create_store_engine
from lifecycle.domain.errors import RebuildFailed
from lifecycle.store.event_store import BUCKETS, Partition
from lifecycle.services.ledger import Ledger
from lifecycle.projections import parallel, tables
from lifecycle.projections.runner import ProjectionRunner
from lifecycle.services.samples import generate_facts
from lifecycle.store.settings import Settings
from tests.policies import CONFIG, revised_policy
from tests.processes import lifecycle
from tests.read_models import snapshot_views, table_rows

ADOPTED = datetime(2023, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def varied_log(ledger: Ledger, tmp_path: Path) -> None:
    """Subjects, requests, shares, unsubscribes and erasures, with a second policy adopted
    between two ingests (so the schedule is re-planned midway)."""
    facts = [json.dumps(f) for f in generate_facts("hqip", 40)]
    ledger.adopt_policy(CONFIG / "hqip.toml", ADOPTED)
    ledger.ingest(facts[:len(facts) // 2], NOW)
    ledger.sweep(datetime(2025, 7, 1, tzinfo=UTC), NOW)
    ledger.adopt_policy(revised_policy(tmp_path), datetime(2025, 8, 1, tzinfo=UTC))
    ledger.ingest(facts[len(facts) // 2:], NOW)


def scratch_left(ledger: Ledger) -> set[str]:
    """The names of the scratch schemas (PostgreSQL) or folders and their lease files
    (SQLite) that parallel rebuilds left behind, without their prefix."""
    if ledger.views.dialect.name == "postgresql":
        with ledger.views.connect() as conn:
            schemas = conn.execute(sa.text(
                "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'lifecycle_rebuild_%'"
            )).scalars()
            return {name.removeprefix(parallel.SCHEMA_PREFIX) for name in schemas}
    return {p.name.removeprefix(parallel.FOLDER_PREFIX).removesuffix(".lease")
            for p in ledger.settings.home.glob(parallel.FOLDER_PREFIX + "*")}


@pytest.mark.parametrize("workers", [2, 3, 4])
def test_a_shared_rebuild_builds_the_views_one_process_builds(
        ledger: Ledger, tmp_path: Path, workers: int) -> None:
    """A rebuild shared among several processes gives every view the rows a rebuild in
    one process gives, sets every position to the head and leaves no scratch tables."""
    varied_log(ledger, tmp_path)
    head = ledger.projections.head()
    ledger.projections.rebuild()
    alone = snapshot_views(ledger)
    assert sum(len(rows) for rows in alone.values()) > 100
    assert ledger.rebuild_projections(workers=workers) == head
    assert snapshot_views(ledger) == alone
    assert set(ledger.projections.positions().values()) == {head}
    assert scratch_left(ledger) == set()


def corrupt_an_event_of_the_second_partition(ledger: Ledger) -> None:
    """Overwrites one stored event of an aggregate in the child's partition (of 2) with
    bytes that cannot be decoded."""
    recorder = ledger.store.recorder
    page = recorder.select_notifications(1, ledger.projections.head())
    child_partition = parallel.partitions(2)[1]
    victim = next(n for n in page if n.originator_version > 1
                  and child_partition.holds(UUID(str(n.originator_id))))
    table = sa.table(recorder.events_table_name, sa.column("originator_id"),
                     sa.column("originator_version"), sa.column("state"))
    stored_id: object = victim.originator_id
    if ledger.views.dialect.name == "sqlite":
        stored_id = UUID(str(victim.originator_id)).hex
        events = sa.create_engine(f"sqlite:///{ledger.settings.events_path}")
    else:
        events = ledger.views
    with events.begin() as conn:
        conn.execute(table.update().where(table.c.originator_id == stored_id)
                     .where(table.c.originator_version == victim.originator_version)
                     .values(state=b"{not json"))


def test_a_failed_share_leaves_the_views_as_they_were(ledger: Ledger, tmp_path: Path) -> None:
    """When one process cannot build its share (here: an event it cannot decode), the
    rebuild fails as a whole: every view and position stays as it was, no scratch remains."""
    varied_log(ledger, tmp_path)
    ledger.projections.catch_up()
    before = snapshot_views(ledger), ledger.projections.positions()
    corrupt_an_event_of_the_second_partition(ledger)
    with pytest.raises(RebuildFailed, match="share 1 of 2 failed"):
        ledger.rebuild_projections(workers=2)
    assert (snapshot_views(ledger), ledger.projections.positions()) == before
    assert scratch_left(ledger) == set()


def test_the_cli_reports_a_failed_shared_rebuild_without_a_traceback(
        ledger: Ledger, tmp_path: Path) -> None:
    """`projections rebuild` refuses a failed shared rebuild like any other refusal: exit
    code 1 and one line saying what failed and that nothing changed, no traceback."""
    varied_log(ledger, tmp_path)
    ledger.projections.catch_up()
    corrupt_an_event_of_the_second_partition(ledger)
    result = lifecycle(ledger.settings, "projections", "rebuild", "--workers", "2")
    assert result.returncode == 1, result.stderr
    assert "rebuild share 1 of 2 failed" in result.stderr
    assert "the views are unchanged" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("count", [2, 3, 4])
def test_partitions_split_the_log_by_aggregate(
        ledger: Ledger, tmp_path: Path, count: int) -> None:
    """Each event of a subject or request case is read by exactly one of the partitions a
    rebuild is shared by, all of an aggregate's events by the same one; the policy
    register's are read by every partition. Partitions differ by at most one bucket."""
    varied_log(ledger, tmp_path)
    head = ledger.projections.head()
    everything = ledger.store.recorder.select_notifications(1, head)
    register = {n.id for n in everything if n.originator_id == REGISTER_ID}
    chosen = parallel.partitions(count)
    sizes = [len(p.buckets) for p in chosen]
    assert sum(sizes) == BUCKETS and max(sizes) - min(sizes) <= 1
    read = [ledger.store.partition_notifications(p, 0, head) for p in chosen]
    owners: dict[int, int] = {}
    for k, (partition, notifications) in enumerate(zip(chosen, read, strict=True)):
        ids = [n.id for n in notifications]
        assert ids == sorted(ids) and register <= set(ids)
        for n in notifications:
            if n.id not in register:
                assert n.id not in owners
                owners[n.id] = k
                assert partition.holds(UUID(str(n.originator_id)))
    assert set(owners) | register == {n.id for n in everything}
    assert len(set(owners.values())) == count  # every partition got some of 40 subjects


def test_a_rebuild_is_shared_only_for_a_long_log_or_when_asked(
        ledger: Ledger, tmp_path: Path) -> None:
    """Below MIN_EVENTS a rebuild runs in this process (it never looks at scratch places,
    so another rebuild's stays); asked for workers, it is shared (and drops that scratch,
    its lease being free). Worker counts are capped at MAX_WORKERS."""
    varied_log(ledger, tmp_path)
    assert ledger.projections.head() < parallel.MIN_EVENTS
    abandon_scratch(ledger, "earlier")
    ledger.rebuild_projections()
    assert scratch_left(ledger) == {"earlier"}
    ledger.rebuild_projections(workers=2)
    assert scratch_left(ledger) == set()
    assert parallel.worker_count(parallel.MIN_EVENTS - 1) == 1
    assert [parallel.worker_count(10, asked) for asked in (0, 1, 3, 9)] == [1, 1, 3, 4]


def test_partitions_built_one_after_another_give_the_rows_of_one_process(
        ledger: Ledger, tmp_path: Path) -> None:
    """A partition's runner touches only its own subjects' rows, even when a policy adopted
    midway makes it re-plan every subject it knows: two partitions built one after the
    other into the same tables give exactly the rows of a rebuild in one process, and the
    second leaves the first's schedule rows alone (marked here to tell)."""
    varied_log(ledger, tmp_path)
    head = ledger.projections.head()
    ledger.projections.rebuild()
    first, second = parallel.partitions(2)
    for mark in (False, True):
        scratch = create_store_engine(f"sqlite:///{tmp_path / f'scratch-{mark}.sqlite'}",
                                      tables.metadata, ())
        try:
            ProjectionRunner(ledger.store, scratch, partition=first, stop=head).catch_up()
            if mark:
                with scratch.begin() as conn:
                    marked = conn.execute(tables.schedule.update()
                                          .values(action="marked")).rowcount
                assert marked > 0
            ProjectionRunner(ledger.store, scratch, partition=second, stop=head).catch_up()
            if mark:
                with scratch.connect() as conn:
                    still = conn.execute(sa.select(sa.func.count()).select_from(tables.schedule)
                                         .where(tables.schedule.c.action == "marked")).scalar()
                assert still == marked
            else:
                for projection in ledger.projections.projections:
                    for table in projection.tables:
                        assert table_rows(scratch, table) == table_rows(ledger.views, table)
        finally:
            scratch.dispose()


def test_a_partition_is_some_of_the_buckets() -> None:
    """A partition names at least one bucket, each an id's possible last hex digit."""
    with pytest.raises(ValueError):
        Partition(frozenset())
    with pytest.raises(ValueError):
        Partition(frozenset({BUCKETS}))


def abandon_scratch(ledger: Ledger, name: str) -> None:
    """A scratch place as a rebuild killed with SIGKILL leaves it: nobody holds its lease."""
    if ledger.views.dialect.name == "postgresql":
        with ledger.views.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{parallel.SCHEMA_PREFIX}{name}"'))
            conn.execute(sa.text(f'CREATE TABLE "{parallel.SCHEMA_PREFIX}{name}".t (x int)'))
    else:
        folder = ledger.settings.home / f"{parallel.FOLDER_PREFIX}{name}"
        folder.mkdir()
        (folder / "share-1.sqlite").write_bytes(b"")
        folder.with_name(folder.name + ".lease").write_text("")


def test_a_rebuild_drops_the_scratch_a_killed_rebuild_left(
        ledger: Ledger, tmp_path: Path) -> None:
    """Scratch tables left by a rebuild killed part way (its lease died with it) are
    dropped by the next shared rebuild; scratch whose lease is held is left alone."""
    varied_log(ledger, tmp_path)
    abandon_scratch(ledger, "abandoned")
    abandon_scratch(ledger, "running")
    if ledger.views.dialect.name == "postgresql":
        in_use = parallel._schema_lease(ledger.views, parallel.SCHEMA_PREFIX + "running")
    else:
        in_use = parallel._folder_lease(
            ledger.settings.home / f"{parallel.FOLDER_PREFIX}running")
    assert in_use.acquire()
    try:
        assert scratch_left(ledger) == {"abandoned", "running"}
        ledger.rebuild_projections(workers=2)
        assert scratch_left(ledger) == {"running"}
    finally:
        in_use.release()
    assert parallel.drop_abandoned_scratch(ledger.views)
    assert scratch_left(ledger) == set()


@contextmanager
def caught_up_ledger(database_url: str, tmp_path: Path) -> Iterator[Ledger]:
    """A ledger on the given PostgreSQL database holding `varied_log`, views caught up."""
    home = tmp_path / "data"
    settings = Settings(home=home, database_url=database_url, master_key=None,
                        master_key_file=home / "master.key")
    with Ledger(settings) as ledger:
        varied_log(ledger, tmp_path)
        ledger.projections.catch_up()
        yield ledger


def test_a_database_view_over_a_read_model_stops_the_swap_cleanly(
        postgres_database: str, tmp_path: Path) -> None:
    """On PostgreSQL a shared rebuild swaps new tables in; if a database view depends on a
    read model the swap is refused: the rebuild fails with a reason, the read models stay
    as they were, and a rebuild in one process still works."""
    with caught_up_ledger(postgres_database, tmp_path) as ledger:
        with ledger.views.begin() as conn:
            conn.execute(sa.text("CREATE VIEW report AS SELECT reference FROM lifecycle_subjects"))
        before = snapshot_views(ledger), ledger.projections.positions()
        with pytest.raises(RebuildFailed, match="could not be replaced.*--workers 1"):
            ledger.rebuild_projections(workers=2)
        assert (snapshot_views(ledger), ledger.projections.positions()) == before
        assert scratch_left(ledger) == set()
        assert ledger.rebuild_projections(workers=1) == ledger.projections.head()
        assert snapshot_views(ledger) == before[0]


@pytest.fixture
def limited_role_database(postgres_database: str) -> Iterator[str]:
    """The test database as a role that owns its tables in `public` but may not create
    schemas (no CREATE on the database): a least-privilege deployment."""
    import psycopg

    role = f"lifecycle_limited_{uuid4().hex[:8]}"
    database = postgres_database.rsplit("/", 1)[1]
    with psycopg.connect(postgres_database, autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN')
        admin.execute(f'GRANT CONNECT ON DATABASE "{database}" TO "{role}"')
        admin.execute(f'GRANT USAGE, CREATE ON SCHEMA public TO "{role}"')
    yield sa.make_url(postgres_database).set(username=role).render_as_string(
        hide_password=False)
    with psycopg.connect(postgres_database, autocommit=True) as admin:
        admin.execute(f'DROP OWNED BY "{role}"')
        admin.execute(f'DROP ROLE "{role}"')


def test_without_the_privileges_for_a_swap_a_rebuild_runs_in_one_process(
        limited_role_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On PostgreSQL a shared rebuild needs CREATE on the database (for its scratch schema).
    A role without it still rebuilds: in one process when workers were not asked for, and
    with a clear refusal, nothing changed, when they were."""
    with caught_up_ledger(limited_role_database, tmp_path) as ledger:
        before = snapshot_views(ledger), ledger.projections.positions()
        with pytest.raises(RebuildFailed, match="needs CREATE on the database"):
            ledger.rebuild_projections(workers=2)
        assert (snapshot_views(ledger), ledger.projections.positions()) == before
        monkeypatch.setattr(parallel, "MIN_EVENTS", 1)  # a log long enough to share
        assert ledger.rebuild_projections() == ledger.projections.head()
        assert snapshot_views(ledger) == before[0]
