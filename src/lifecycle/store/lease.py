"""The sweep lease: of several daemons against one store, only one sweeps at a time.

`acquire()` says whether this process holds the lease (taking it if it is free, keeping it
once held); `release()` gives it up. The lease is held for the daemon's lifetime, so the
other daemons stand by; it is tied to something the operating system or the database
server cleans up when the holder dies, so a daemon killed with SIGKILL (no chance to run
`release()`) frees it at once and a standby takes over at its next tick.

- PostgreSQL: a session-level advisory lock (`pg_try_advisory_lock`) on a connection of
  its own. The server drops the lock with the session: when the holder's process dies its
  socket closes; a holder whose host vanishes is noticed by TCP keepalives (about 25 s).
- SQLite: an exclusive `flock` on `$LIFECYCLE_HOME/daemon.lease`; the kernel drops it when
  the holder's process dies. (SQLite stores are local, so every daemon shares the host.)

The lease is an optimisation of who works, not the guarantee of correctness: sweeps stay
idempotent (every item is re-checked against its subject's current state, and a
concurrent save fails the optimistic-concurrency check and is redone), so even two
sweepers never erase an item twice.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import psycopg

from lifecycle.store.settings import Settings

SWEEP_LEASE = "sweep"
SCHEMA_LOCK = "schema"
LEASE_FILE = "daemon.lease"
CONNECT_TIMEOUT_SECONDS = 5
# How a silent (crashed or cut-off) holder's session is detected by the server and by the
# holder: idle 10 s, then 3 probes 5 s apart.
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 10, 5, 3


class Lease(Protocol):
    @property
    def holder(self) -> str:
        """Who this process is, in logs and in the lease file: host:pid."""

    def acquire(self) -> bool:
        """True if this process holds the lease (now or already); False if another does."""

    def release(self) -> None:
        """Gives the lease up (idempotent; never raises)."""


def holder_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def advisory_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for `name` (advisory locks are per database,
    so daemons of different databases on one server never contend)."""
    digest = hashlib.sha256(f"lifecycle lease {name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class AdvisoryLease:
    """A PostgreSQL session-level advisory lock held on a dedicated connection."""

    def __init__(self, database_url: str, name: str = SWEEP_LEASE) -> None:
        self.database_url = database_url
        self.key = advisory_key(name)
        self._holder = holder_id()
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self._held = False

    @property
    def holder(self) -> str:
        return self._holder

    def acquire(self) -> bool:
        if self._held:
            if self._alive():
                return True  # a live session keeps its advisory lock
            self._reset()  # the session died, and the lock with it: try again, afresh
        if not self._alive():
            self._reset()
            self._conn = self._connect()
        assert self._conn is not None
        row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", [self.key]).fetchone()
        self._held = bool(row and row[0])
        return self._held

    def release(self) -> None:
        conn, held = self._conn, self._held
        self._conn, self._held = None, False
        if conn is None:
            return
        try:
            if held and not conn.closed and not conn.broken:
                conn.execute("SELECT pg_advisory_unlock(%s)", [self.key])
        except psycopg.Error:
            pass  # the session is gone, and the lock with it
        finally:
            conn.close()

    def _alive(self) -> bool:
        """Whether the lock's session still exists (if it died, so did the lock)."""
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            return False
        try:
            conn.execute("SELECT 1")
        except psycopg.Error:
            return False
        return True

    def _reset(self) -> None:
        conn, self._conn, self._held = self._conn, None, False
        if conn is not None:
            try:
                conn.close()
            except psycopg.Error:
                pass

    def _connect(self) -> psycopg.Connection[tuple[object, ...]]:
        conn = psycopg.connect(
            self.database_url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS,
            application_name=f"lifecycle lease {self._holder}"[:63],
            keepalives=1, keepalives_idle=KEEPALIVE_IDLE,
            keepalives_interval=KEEPALIVE_INTERVAL, keepalives_count=KEEPALIVE_COUNT)
        # The server-side half of dead-peer detection, and no idle timeout for a session
        # that is idle by design between ticks.
        for setting, value in (("tcp_keepalives_idle", KEEPALIVE_IDLE),
                               ("tcp_keepalives_interval", KEEPALIVE_INTERVAL),
                               ("tcp_keepalives_count", KEEPALIVE_COUNT),
                               ("idle_session_timeout", 0)):
            try:
                conn.execute("SELECT set_config(%s, %s, false)", [setting, str(value)])
            except psycopg.errors.UndefinedObject:
                pass  # idle_session_timeout is new in PostgreSQL 14
        return conn


class FileLease:
    """An exclusive flock on a file in the data directory (SQLite stores)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._holder = holder_id()
        self._fd: int | None = None

    @property
    def holder(self) -> str:
        return self._holder

    def acquire(self) -> bool:
        if self._fd is not None:
            return True  # an flock lasts as long as its open file
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # BlockingIOError: another process holds it
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{self._holder}\n".encode())  # for people: who holds it
        self._fd = fd
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError:
            pass
        finally:
            os.close(fd)


def lease_for(settings: Settings, name: str = SWEEP_LEASE) -> Lease:
    """The lease that fits the configured store."""
    if settings.database_url is not None:
        return AdvisoryLease(settings.database_url, name)
    suffix = "" if name == SWEEP_LEASE else f".{name}"
    return FileLease(settings.home / f"{LEASE_FILE}{suffix}")


@contextmanager
def schema_lock(settings: Settings) -> Iterator[None]:
    """Processes that start together create (or check) the schema one at a time.

    On PostgreSQL, opening the event store runs eventsourcing's `CREATE OR REPLACE
    FUNCTION` (and SQLAlchemy's `create_all` makes missing tables): two processes doing it
    at the same moment fail with "tuple concurrently updated" or a duplicate-key error on
    the catalog. A blocking advisory lock, held while the store is opened, serialises
    them. On SQLite, `create_all` checks then creates (two fresh processes race to "table
    already exists"), so a blocking flock on a file in the home serialises them.
    """
    if settings.database_url is None:
        settings.ensure_home()
        fd = os.open(settings.home / f"{LEASE_FILE}.{SCHEMA_LOCK}", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the file drops the flock
        return
    with psycopg.connect(settings.database_url, autocommit=True,
                         connect_timeout=CONNECT_TIMEOUT_SECONDS) as conn:
        key = advisory_key(SCHEMA_LOCK)
        conn.execute("SELECT pg_advisory_lock(%s)", [key])
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", [key])
