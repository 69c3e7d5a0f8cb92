"""A full rebuild of the projections, shared among processes by aggregate.

In one process a rebuild reads, decodes and applies every event and writes every row on one
core. Here N processes (this one and N-1 forked children) each read from the log, up to the
head seen at the start, only the events of their share of the aggregates (and the policy
register's), apply them and write their rows. Nothing is visible until one transaction
puts every share's rows in place and sets each projection's position to that head; a
catch-up then follows for the events stored meanwhile. Until that commit readers see the
views as they were, and a share that fails or is killed leaves them so.

- PostgreSQL: every share writes into the same scratch schema; the transaction swaps the
  scratch tables in for the views (DROP, then ALTER TABLE ... SET SCHEMA): no row copied.
- SQLite (one writer per file): each share writes into a scratch file of its own beside
  views.sqlite; once every share is done, the transaction empties the views and copies
  every file's rows in (attached), so the views' write lock is held only for that.

Scratch places are dropped on the way out. One left by a rebuild that was killed is
dropped by the next shared rebuild: each is claimed by a lease (an advisory lock, or an
flock) that dies with its holder, so a scratch place whose lease is free is abandoned.
The children die with this process (Linux), so they do not keep its lease alive.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import secrets
import shutil
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection as PipeEnd
from multiprocessing.process import BaseProcess
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from lifecycle.store.engines import create_store_engine
from lifecycle.domain.errors import RebuildFailed
from lifecycle.store.event_store import BUCKETS, Partition, SubjectStore
from lifecycle.store.lease import AdvisoryLease, FileLease, Lease
from lifecycle.projections import tables
from lifecycle.projections.runner import ProjectionRunner
from lifecycle.projections.views import Projection

MAX_WORKERS = 4
# Below this many events forking and merging cost more than sharing the work saves.
MIN_EVENTS = 20_000

Child = tuple[BaseProcess, PipeEnd]


def available_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def worker_count(events: int, asked: int | None = None) -> int:
    """How many processes share a full rebuild of `events` events: `asked`, else one per
    CPU once the log is long enough; at most MAX_WORKERS; one without fork."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return 1
    if asked is None:
        asked = available_cpus() if events >= MIN_EVENTS else 1
    return max(1, min(MAX_WORKERS, asked))


def partitions(count: int) -> list[Partition]:
    """`count` disjoint partitions of every bucket, as even as can be, the smallest first:
    the first is this process's, which has the final transaction to run as well."""
    found = [Partition(frozenset(range(k, BUCKETS, count))) for k in range(count)]
    return sorted(found, key=lambda partition: len(partition.buckets))


def rebuild(runner: ProjectionRunner, names: Sequence[str] | None = None,
            workers: int | None = None) -> int:
    """Empties the named projections (all by default) and replays them from zero; returns
    the events read. A rebuild of every projection is shared among
    `worker_count(events, workers)` processes; any other runs in this process, because a
    share's schedule re-plans its subjects (for a new policy) from its own subjects view."""
    chosen = {runner.by_name(n).name for n in names} if names else None
    head = runner.head()
    count = worker_count(head, workers)
    if count < 2 or head == 0 or (chosen is not None
                                  and chosen != {p.name for p in runner.projections}):
        return runner.rebuild(names)
    view_tables = [table for p in runner.projections for table in p.tables]
    own, *others = partitions(count)
    if runner.engine.dialect.name == "postgresql":
        missing = _missing_privileges(runner.engine, view_tables)
        if missing and workers is None:  # not asked for: rebuild in one process, as before
            return runner.rebuild(names)
        if missing:
            raise RebuildFailed(f"a shared rebuild on PostgreSQL needs {missing}; the views "
                                "are unchanged; rebuild in one process (--workers 1)")
        with _scratch_schema(runner.engine, view_tables) as scratch:
            with _children(runner, [scratch] * (count - 1), others, head) as children:
                _build_share(runner.store, runner.projections, scratch, own, head)
                _wait_for(children)
                _swap_in(runner, scratch, view_tables, head)
    else:
        with _scratch_files(runner.engine, count, view_tables) as scratches:
            with _children(runner, scratches[1:], others, head) as children:
                _build_share(runner.store, runner.projections, scratches[0], own, head)
                _wait_for(children)
            _copy_in(runner, scratches, view_tables, head)
    runner.forget()
    return head + runner.catch_up()


@dataclass(frozen=True)
class _Scratch:
    """Where shares write their rows: a schema (PostgreSQL) or a file (SQLite)."""
    url: sa.URL
    name: str  # the schema, or the name the file is attached under for the copy
    path: Path | None  # SQLite only
    view_tables: tuple[sa.Table, ...]

    def engine(self) -> sa.Engine:
        """An engine on the scratch place (its tables are made by `create_tables`)."""
        if self.path is not None:  # scratch data: no journal, no syncing
            return create_store_engine(f"sqlite:///{self.path}", sa.MetaData(),
                                       ("journal_mode=OFF", "synchronous=OFF"))
        # scratch data: commits need not wait for the disk (the swap's does)
        options = f"-csearch_path={self.name} -csynchronous_commit=off"
        return sa.create_engine(self.url, poolclass=NullPool,
                                connect_args={"options": options})

    def create_tables(self) -> None:
        engine = self.engine()
        try:
            tables.metadata.create_all(engine, tables=self.view_tables)
        finally:
            engine.dispose()


SCHEMA_PREFIX = "lifecycle_rebuild_"
FOLDER_PREFIX = ".rebuild-"


def _schema_lease(views: sa.Engine, schema: str) -> Lease:
    url = views.url.set(drivername="postgresql").render_as_string(hide_password=False)
    return AdvisoryLease(url, f"rebuild {schema}")


def _folder_lease(folder: Path) -> Lease:
    return FileLease(folder.with_name(folder.name + ".lease"))


@contextmanager
def _claimed(lease: Lease, name: str) -> Iterator[None]:
    if not lease.acquire():  # a fresh random name: nobody else should hold it
        raise RebuildFailed(f"another process holds scratch place {name}")
    try:
        yield
    finally:
        lease.release()


def drop_abandoned_scratch(views: sa.Engine) -> list[str]:
    """Drops the scratch places of rebuilds that were killed; returns their names."""
    dropped: list[str] = []
    if views.dialect.name == "postgresql":
        with views.connect() as conn:
            schemas = list(conn.execute(sa.text(
                "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, :prefix)"),
                {"prefix": SCHEMA_PREFIX}).scalars())
        for schema in schemas:
            lease = _schema_lease(views, schema)
            if lease.acquire():
                try:
                    with views.begin() as conn:
                        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
                    dropped.append(schema)
                finally:
                    lease.release()
        return dropped
    assert views.url.database, "the SQLite views are a file"
    folders = {entry.with_name(entry.name.removesuffix(".lease")) for entry
               in Path(views.url.database).parent.glob(FOLDER_PREFIX + "*")}
    for folder in sorted(folders):
        lease = _folder_lease(folder)
        if lease.acquire():
            try:
                if folder.is_dir():
                    shutil.rmtree(folder, ignore_errors=True)
                    dropped.append(folder.name)
            finally:
                lease.release()
                folder.with_name(folder.name + ".lease").unlink(missing_ok=True)
    return dropped


@contextmanager
def _scratch_schema(views: sa.Engine, view_tables: list[sa.Table]) -> Iterator[_Scratch]:
    drop_abandoned_scratch(views)
    scratch = _Scratch(views.url, SCHEMA_PREFIX + secrets.token_hex(4), None,
                       tuple(view_tables))
    with _claimed(_schema_lease(views, scratch.name), scratch.name):
        try:
            with views.begin() as conn:
                conn.execute(sa.text(f'CREATE SCHEMA "{scratch.name}"'))
            scratch.create_tables()  # before any share starts
            yield scratch
        finally:
            with views.begin() as conn:
                conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{scratch.name}" CASCADE'))


@contextmanager
def _scratch_files(views: sa.Engine, count: int,
                   view_tables: list[sa.Table]) -> Iterator[list[_Scratch]]:
    drop_abandoned_scratch(views)
    assert views.url.database, "the SQLite views are a file"
    folder = Path(views.url.database).parent / (FOLDER_PREFIX + secrets.token_hex(4))
    try:
        with _claimed(_folder_lease(folder), folder.name):
            try:
                folder.mkdir(mode=0o700)  # the read models are the owner's only
                scratches = [_Scratch(views.url, f"share_{k}", folder / f"share-{k}.sqlite",
                                      tuple(view_tables)) for k in range(count)]
                for scratch in scratches:
                    scratch.create_tables()
                yield scratches
            finally:
                shutil.rmtree(folder, ignore_errors=True)
    finally:
        folder.with_name(folder.name + ".lease").unlink(missing_ok=True)


@contextmanager
def _children(runner: ProjectionRunner, scratches: list[_Scratch],
              others: list[Partition], head: int) -> Iterator[list[Child]]:
    """Forks a child for each of the `others` partitions, writing into the matching
    scratch place; kills any still running on the way out."""
    context = multiprocessing.get_context("fork")
    env = dict(runner.store.env)
    parent = os.getpid()
    children: list[Child] = []
    try:
        for index, (scratch, partition) in enumerate(zip(scratches, others, strict=True),
                                                     start=1):
            receiving, sending = context.Pipe(duplex=False)
            child = context.Process(target=_build_share_in_child, daemon=True,
                                    name=f"rebuild-share-{index}",
                                    args=(parent, env, runner.projections, scratch,
                                          partition, head, sending))
            child.start()
            sending.close()
            children.append((child, receiving))
        yield children
    finally:
        for process, receiving in children:
            receiving.close()
            if process.is_alive():
                process.kill()
                process.join()


def _build_share(store: SubjectStore, projections: Sequence[Projection], scratch: _Scratch,
                 partition: Partition, head: int) -> None:
    engine = scratch.engine()
    try:
        ProjectionRunner(store, engine, projections, partition=partition,
                         stop=head).catch_up()
    finally:
        engine.dispose()


def _build_share_in_child(parent: int, env: dict[str, str], projections: Sequence[Projection],
                          scratch: _Scratch, partition: Partition, head: int,
                          report: PipeEnd) -> None:
    """A forked child: never touches the connections it inherited, opens its own."""
    _die_with(parent)
    try:
        store = SubjectStore(env={**env, "CREATE_TABLE": "n"})  # the parent created them
        try:
            _build_share(store, projections, scratch, partition, head)
        finally:
            store.close()
    except BaseException as error:  # reported to the parent, which raises RebuildFailed
        first_line = (str(error).strip().splitlines() or [""])[0]  # no SQL, no parameters
        report.send(f"{type(error).__name__}: {first_line}")
        sys.exit(1)
    report.send(None)


PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _die_with(parent: int) -> None:
    """Has the kernel kill this child when the parent dies (Linux): else a killed rebuild's
    children would build their shares for nothing and keep its scratch lease alive."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before that
        os._exit(1)


def _wait_for(children: list[Child]) -> None:
    for index, (child, receiving) in enumerate(children, start=1):
        failure: str | None
        try:
            failure = receiving.recv()
        except EOFError:
            failure = "it ended without reporting"
        child.join()
        if failure is not None or child.exitcode != 0:
            raise RebuildFailed(f"rebuild share {index} of {len(children) + 1} failed: "
                                f"{failure} (exit code {child.exitcode}); the views are "
                                "unchanged")


def _missing_privileges(views: sa.Engine, view_tables: list[sa.Table]) -> str | None:
    """What this role lacks for a swap (a scratch schema, then moving tables into the
    views' schema in place of the old ones), or None."""
    with views.connect() as conn:
        database, schema, owner = conn.execute(sa.text(
            "SELECT has_database_privilege(current_database(), 'CREATE'), "
            "has_schema_privilege(current_schema(), 'CREATE'), "
            "coalesce(bool_and(pg_has_role(tableowner, 'USAGE')), true) FROM pg_tables "
            "WHERE schemaname = current_schema() AND tablename = ANY(:names)"),
            {"names": [t.name for t in view_tables]}).one()
    missing = [what for what, held in (
        ("CREATE on the database", database), ("CREATE on the views' schema", schema),
        ("ownership of the read-model tables", owner)) if not held]
    return " and ".join(missing) or None


def _set_positions(runner: ProjectionRunner, conn: sa.Connection, head: int) -> None:
    names = [p.name for p in runner.projections]
    conn.execute(tables.positions.delete().where(tables.positions.c.name.in_(names)))
    conn.execute(tables.positions.insert(), [{"name": n, "position": head} for n in names])


def _swap_in(runner: ProjectionRunner, scratch: _Scratch, view_tables: list[sa.Table],
             head: int) -> None:
    """PostgreSQL: replaces each view by its scratch table, in one transaction."""
    try:
        with runner.engine.begin() as conn:
            runner.lock_views(conn)
            quote = conn.dialect.identifier_preparer.quote
            home = quote(conn.execute(sa.text("SELECT current_schema()")).scalar_one())
            for table in view_tables:
                name = quote(table.name)
                conn.execute(sa.text(f"DROP TABLE {home}.{name}"))
                conn.execute(sa.text(f"ALTER TABLE {quote(scratch.name)}.{name} "
                                     f"SET SCHEMA {home}"))
            _set_positions(runner, conn, head)
    except sa.exc.DBAPIError as error:  # e.g. a database view depends on a read model
        reason = str(error.orig).strip().splitlines()[0]
        raise RebuildFailed(f"the read models could not be replaced ({reason}); they are "
                            "unchanged; rebuild in one process (--workers 1)") from error


def _copy_in(runner: ProjectionRunner, scratches: list[_Scratch], view_tables: list[sa.Table],
             head: int) -> None:
    """SQLite: replaces the views' rows with the scratch files' rows, in one transaction."""
    with runner.engine.connect() as conn:
        quote = conn.dialect.identifier_preparer.quote
        attached: list[str] = []
        try:
            for scratch in scratches:  # outside a transaction, as SQLite requires
                conn.exec_driver_sql(f"ATTACH DATABASE ? AS {quote(scratch.name)}",
                                     (str(scratch.path),))
                attached.append(scratch.name)
            conn.commit()
            with conn.begin():
                runner.lock_views(conn)
                for table in view_tables:
                    conn.execute(table.delete())
                for scratch in scratches:
                    _copy_rows(conn, scratch, view_tables)
                _set_positions(runner, conn, head)
        finally:
            try:
                for name in attached:
                    conn.exec_driver_sql(f"DETACH DATABASE {quote(name)}")
                conn.commit()
            except sa.exc.DBAPIError:
                conn.invalidate()  # never back to the pool with a file attached


def _copy_rows(conn: sa.Connection, scratch: _Scratch, view_tables: list[sa.Table]) -> None:
    quote = conn.dialect.identifier_preparer.quote
    for table in view_tables:
        columns = ", ".join(quote(c.name) for c in table.columns)
        conn.exec_driver_sql(f"INSERT INTO {quote(table.name)} ({columns}) SELECT {columns} "
                             f"FROM {quote(scratch.name)}.{quote(table.name)}")
