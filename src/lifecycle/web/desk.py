"""What the service holds: one Ledger (behind a lock: its caches are not thread-safe), the
users, the address index and the signed-in sessions.

Reads catch the views up with the log (what other processes wrote) before they take the
lock, through a projection runner of their own (its own store connection and caches): one
request applies another process's events while the others are served, instead of all of
them queueing behind it. Writes catch up under the lock, before and after (so the next
read shows what was written)."""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from lifecycle.services.cases.address_index import AddressIndex
from lifecycle.services.cases.users import User, UserBook
from lifecycle.projections.runner import ProjectionRunner
from lifecycle.services.ledger import Ledger
from lifecycle.store.event_store import open_subject_store
from lifecycle.store.settings import Settings

T = TypeVar("T")
SESSION_SECONDS = 8 * 3600
# Reads catch the views up with the log at most this often (writes by this process always
# first and after): under another process's ingest, a request does not apply its events one
# by one.
CATCH_UP_SECONDS = 1.0
MAX_SESSIONS = 10_000


@dataclass(frozen=True)
class Session:
    user: User
    csrf: str
    expires: float


class Sessions:
    """Signed-in browsers: a random session id (the cookie) -> the user and its CSRF token.
    Bounded; the oldest go first. A revoked user's sessions end at its next request."""

    def __init__(self) -> None:
        self._by_id: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def start(self, user: User) -> tuple[str, Session]:
        sid = secrets.token_urlsafe(32)
        session = Session(user, secrets.token_urlsafe(32), time.monotonic() + SESSION_SECONDS)
        with self._lock:
            self._by_id[sid] = session
            while len(self._by_id) > MAX_SESSIONS:
                self._by_id.popitem(last=False)
        return sid, session

    def get(self, sid: str) -> Session | None:
        with self._lock:
            session = self._by_id.get(sid)
            if session is not None and session.expires < time.monotonic():
                del self._by_id[sid]
                return None
            return session

    def end(self, sid: str) -> None:
        with self._lock:
            self._by_id.pop(sid, None)


class Desk:
    def __init__(self, settings: Settings, clock: Callable[[], datetime] | None = None) -> None:
        self.ledger = Ledger(settings)
        # A value erased by another process (ingest, sweep, daemon) is never served from a
        # key cached here: every open asks the vault whether the key still lives.
        self.ledger.vault.check_destroyed_on_open = True
        self._catch_up = self.ledger.projections.catch_up
        self._caught_up_at = float("-inf")
        self._writing = False
        # Inside the lock the Ledger's own catch-ups run only for a write: a read's views
        # were caught up before it took the lock.
        self.ledger.projections.catch_up = self._catch_up_if_writing  # type: ignore[method-assign]
        self._reader = ProjectionRunner(open_subject_store(settings), self.ledger.views)
        self._reader_lock = threading.Lock()
        self.users = UserBook(self.ledger.vault.engine)
        self.index = AddressIndex(self.ledger)
        self.sessions = Sessions()
        self.clock = clock or (lambda: datetime.now(UTC))
        self._lock = threading.RLock()

    @contextmanager
    def using(self) -> Iterator[Ledger]:
        self._catch_up_for_reads()
        with self._lock:
            yield self.ledger

    def run(self, action: Callable[[Ledger], T]) -> T:
        with self.using() as ledger:
            return action(ledger)

    def write(self, action: Callable[[Ledger], T]) -> T:
        """A write: it reads the views caught up (the suppression list of an ingest), and
        catches them up again after, so the next read shows what was written."""
        with self.using() as ledger:
            self._writing = True
            try:
                return action(ledger)
            finally:
                try:
                    self._catch_up()
                finally:
                    self._writing = False
                    # What an ingest preloads (live keys by subject) is kept by the vault
                    # until told otherwise: a long-running process lets it go after each write.
                    ledger.vault.forget_loaded()

    def _catch_up_if_writing(self, on_progress: Callable[[int], None] | None = None) -> int:
        return self._catch_up(on_progress) if self._writing else 0

    def _catch_up_for_reads(self) -> None:
        """Catches the views up (at most once a CATCH_UP_SECONDS), outside the lock. While
        one request does, the others read the views as they are rather than wait for it."""
        if time.monotonic() - self._caught_up_at < CATCH_UP_SECONDS:
            return
        if not self._reader_lock.acquire(blocking=False):
            return
        try:
            if time.monotonic() - self._caught_up_at >= CATCH_UP_SECONDS:
                self._reader.catch_up()
                self._caught_up_at = time.monotonic()
        finally:
            self._reader_lock.release()

    def user_still_active(self, user: User) -> bool:
        return self.users.is_active(user.name)

    def close(self) -> None:
        self._reader.store.close()
        self.ledger.close()
