"""The KeyRotations aggregate: every master-key rotation, recorded as an event.

A rotation is recorded once every live data key is re-wrapped under the new epoch and
before the old epoch's key is destroyed (record before destroy), naming who rotated, the
two epochs (ids and key fingerprints, never keys) and the counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

from lifecycle.aggregates.data_subject import SUBJECT_NAMESPACE

ROTATIONS_ID = uuid5(SUBJECT_NAMESPACE, "key-rotations")


@dataclass(frozen=True)
class Rotation:
    old_epoch: int
    new_epoch: int
    old_fingerprint: str
    new_fingerprint: str
    started_at: datetime
    at: datetime
    by: str
    rewrapped: int
    live_keys: int


class KeyRotations(Aggregate):
    @staticmethod
    def create_id() -> UUID:
        return ROTATIONS_ID

    @event("Opened")
    def __init__(self) -> None:
        self.rotations: list[Rotation] = []

    def record(self, old_epoch: int, new_epoch: int, old_fingerprint: str,
               new_fingerprint: str, started_at: datetime, at: datetime, by: str,
               rewrapped: int, live_keys: int) -> bool:
        """Records a rotation into `new_epoch`; recording it again is a no-op (False)."""
        if any(r.new_epoch == new_epoch for r in self.rotations):
            return False
        self._rotated(old_epoch=old_epoch, new_epoch=new_epoch,
                      old_fingerprint=old_fingerprint, new_fingerprint=new_fingerprint,
                      started_at=started_at, at=at, by=by, rewrapped=rewrapped,
                      live_keys=live_keys)
        return True

    @event("KeysRotated")
    def _rotated(self, old_epoch: int, new_epoch: int, old_fingerprint: str,
                 new_fingerprint: str, started_at: datetime, at: datetime, by: str,
                 rewrapped: int, live_keys: int) -> None:
        self.rotations.append(Rotation(old_epoch, new_epoch, old_fingerprint, new_fingerprint,
                                       started_at, at, by, rewrapped, live_keys))
