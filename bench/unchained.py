"""The shipped recorders with the audit chain switched off, for baselines and for measuring
what the chain costs (never used by lifecycle itself)."""

from __future__ import annotations

from collections.abc import Sequence

from eventsourcing.persistence import StoredEvent

from lifecycle.store.event_chain import Pending
from lifecycle.store.postgres_recorder import LockLightPostgresRecorder
from lifecycle.store.sqlite_recorder import ChainedSQLiteRecorder


class UnchainedSQLiteRecorder(ChainedSQLiteRecorder):
    def _pending(self, stored_events: Sequence[StoredEvent]) -> Pending | None:
        return None


class UnchainedPostgresRecorder(LockLightPostgresRecorder):
    def _pending(self, stored_events: Sequence[StoredEvent]) -> Pending | None:
        return None
