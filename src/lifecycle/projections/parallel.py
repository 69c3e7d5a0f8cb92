"""A full rebuild of the projections, shared among processes by aggregate.

In one process a rebuild reads, decodes and applies every event and writes every row on one
core. Here N processes (this one and N-1 forked children) each read from the log, up to the
head seen at the start, only the events of their share of the aggregates (and the policy
register's), and apply them. The children write their rows into scratch tables of their
own: a schema on PostgreSQL, a file beside views.sqlite on SQLite. This process empties the
views and writes its own share into them in one transaction, which, once the children are
done, copies their rows in (inside the database), sets each projection's position to that
head and commits; a catch-up follows for the events stored meanwhile. Until that commit
readers see the views as they were, and a share that fails or is killed leaves them so.
Other writers of the views wait for the commit.
"""

from __future__ import annotations

import multiprocessing
import os
import secrets
import shutil
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection as PipeEnd
from multiprocessing.process import BaseProcess
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from lifecycle.engines import create_store_engine
from lifecycle.errors import RebuildFailed
from lifecycle.event_store import Share, SubjectStore
from lifecycle.projections import tables
from lifecycle.projections.runner import ProjectionRunner

MAX_WORKERS = 4  # a power of two (see Share)
# Below this many events forking and merging cost more than sharing the work saves.
MIN_EVENTS = 20_000


def available_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def worker_count(events: int) -> int:
    """How many processes share a full rebuild of `events` events: one per CPU, at most
    MAX_WORKERS, rounded down to a power of two; one for a short log or without fork."""
    if events < MIN_EVENTS or "fork" not in multiprocessing.get_all_start_methods():
        return 1
    return 1 << (min(MAX_WORKERS, available_cpus()).bit_length() - 1)


def rebuild(runner: ProjectionRunner, names: Sequence[str] | None = None,
            workers: int | None = None) -> int:
    """Empties the named projections (all by default) and replays them from zero; returns
    the events read. A rebuild of every projection is shared among `workers` processes
    (default: `worker_count`); any other runs in this process, because a share's schedule
    re-plans its subjects (for a new policy) from its own subjects view."""
    chosen = {runner.by_name(n).name for n in names} if names else None
    head = runner.head()
    count = worker_count(head) if workers is None else workers
    if count < 2 or head == 0 or (chosen is not None
                                  and chosen != {p.name for p in runner.projections}):
        return runner.rebuild(names)
    with _scratch_space(runner.engine, count - 1) as scratches:
        children = _start_children(runner.store, scratches, count, head)
        try:
            _build_and_merge(runner, scratches, children, count, head)
        finally:
            for child, receiving in children:
                receiving.close()
                if child.is_alive():
                    child.kill()
                    child.join()
    runner.forget()
    return head + runner.catch_up()


@dataclass(frozen=True)
class _Scratch:
    """Where a child writes its share's rows: a schema (PostgreSQL) or a file (SQLite)."""
    url: sa.URL
    name: str  # the schema, or the name the file is attached under for the merge
    path: Path | None  # SQLite only

    def engine(self) -> sa.Engine:
        """An engine on the scratch tables, created if need be."""
        if self.path is not None:  # scratch data: no journal, no syncing
            return create_store_engine(f"sqlite:///{self.path}", tables.metadata,
                                       ("journal_mode=OFF", "synchronous=OFF"))
        engine = sa.create_engine(self.url, poolclass=NullPool,
                                  connect_args={"options": f"-csearch_path={self.name}"})
        tables.metadata.create_all(engine)
        return engine


@contextmanager
def _scratch_space(views: sa.Engine, count: int) -> Iterator[list[_Scratch]]:
    """`count` scratch places with their tables, removed on the way out."""
    token = secrets.token_hex(4)
    if views.dialect.name == "postgresql":
        scratches = [_Scratch(views.url, f"lifecycle_rebuild_{token}_{k}", None)
                     for k in range(1, count + 1)]
        try:
            for scratch in scratches:
                with views.begin() as conn:
                    conn.execute(sa.text(f'CREATE SCHEMA "{scratch.name}"'))
                scratch.engine().dispose()
            yield scratches
        finally:
            with views.begin() as conn:
                for scratch in scratches:
                    conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{scratch.name}" CASCADE'))
        return
    assert views.url.database, "the SQLite views are a file"
    folder = Path(views.url.database).parent / f".rebuild-{token}"
    folder.mkdir()
    try:
        scratches = [_Scratch(views.url, f"share_{k}", folder / f"share-{k}.sqlite")
                     for k in range(1, count + 1)]
        for scratch in scratches:
            scratch.engine().dispose()
        yield scratches
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _start_children(store: SubjectStore, scratches: list[_Scratch], count: int,
                    head: int) -> list[tuple[BaseProcess, PipeEnd]]:
    """Forks a child per scratch place to build shares 1 .. count-1."""
    context = multiprocessing.get_context("fork")
    env = dict(store.env)
    children: list[tuple[BaseProcess, PipeEnd]] = []
    for index, scratch in enumerate(scratches, start=1):
        receiving, sending = context.Pipe(duplex=False)
        child = context.Process(target=_build_share_in_child, daemon=True,
                                name=f"rebuild-share-{index}",
                                args=(env, scratch, Share(index, count), head, sending))
        child.start()
        sending.close()
        children.append((child, receiving))
    return children


def _build_share_in_child(env: dict[str, str], scratch: _Scratch, share: Share, head: int,
                          report: PipeEnd) -> None:
    """A forked child: never touches the connections it inherited, opens its own."""
    try:
        store = SubjectStore(env={**env, "CREATE_TABLE": "n"})  # the parent created them
        engine = scratch.engine()
        try:
            ProjectionRunner(store, engine, share=share, stop=head).catch_up()
        finally:
            engine.dispose()
            store.close()
    except BaseException as error:  # reported to the parent, which raises RebuildFailed
        report.send(f"{type(error).__name__}: {error}")
        sys.exit(1)
    report.send(None)


def _build_and_merge(runner: ProjectionRunner, scratches: list[_Scratch],
                     children: list[tuple[BaseProcess, PipeEnd]], count: int,
                     head: int) -> None:
    """In one transaction: empties the views, builds share 0 into them, adds the
    children's shares and sets every position to `head`."""
    names = [p.name for p in runner.projections]
    views = [table for p in runner.projections for table in p.tables]
    with runner.engine.connect() as conn:
        quote = conn.dialect.identifier_preparer.quote
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:  # outside a transaction, as SQLite requires
            for scratch in scratches:
                conn.exec_driver_sql(f"ATTACH DATABASE ? AS {quote(scratch.name)}",
                                     (str(scratch.path),))
            conn.commit()
        try:
            with conn.begin():
                runner.lock_views(conn)
                for table in views:  # a DELETE, not TRUNCATE: readers go on meanwhile
                    conn.execute(table.delete())
                conn.execute(tables.positions.delete()
                             .where(tables.positions.c.name.in_(names)))
                ProjectionRunner(runner.store, runner.engine, runner.projections,
                                 share=Share(0, count), stop=head, connection=conn).catch_up()
                _wait_for(children, count)
                for table in views:
                    columns = ", ".join(quote(c.name) for c in table.columns)
                    for scratch in scratches:
                        conn.exec_driver_sql(
                            f"INSERT INTO {quote(table.name)} ({columns}) SELECT {columns} "
                            f"FROM {quote(scratch.name)}.{quote(table.name)}")
                conn.execute(tables.positions.delete()
                             .where(tables.positions.c.name.in_(names)))
                conn.execute(tables.positions.insert(),
                             [{"name": name, "position": head} for name in names])
        finally:
            if sqlite:
                for scratch in scratches:
                    conn.exec_driver_sql(f"DETACH DATABASE {quote(scratch.name)}")
                conn.commit()


def _wait_for(children: list[tuple[BaseProcess, PipeEnd]], count: int) -> None:
    for index, (child, receiving) in enumerate(children, start=1):
        try:
            failure = receiving.recv()
        except EOFError:
            failure = "it ended without reporting"
        child.join()
        if failure is not None or child.exitcode != 0:
            raise RebuildFailed(f"rebuild share {index} of {count} failed: {failure} "
                                f"(exit code {child.exitcode}); the views are unchanged")
