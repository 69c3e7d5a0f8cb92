"""The PolicyRegister aggregate: every retention policy the controller adopted, in order.

Adoption is an event (versioned, content-hashed), so a replay knows which policy was in
force at any moment and every retention decision can cite it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

from lifecycle.aggregates.data_subject import SUBJECT_NAMESPACE
from lifecycle.domain.errors import LifecycleError

REGISTER_ID = uuid5(SUBJECT_NAMESPACE, "policy-register")


class PolicyNotAdopted(LifecycleError):
    """No policy was in force at the moment asked about."""


@dataclass(frozen=True)
class Adoption:
    number: int
    policy_id: str
    version: str
    content_hash: str
    adopted_at: datetime
    document: dict[str, Any]

    @property
    def label(self) -> str:
        """How decisions cite the policy: id, controller's version, adoption number."""
        return f"{self.policy_id}@{self.version}#{self.number}"


class PolicyRegister(Aggregate):
    @staticmethod
    def create_id() -> UUID:
        return REGISTER_ID

    @event("Opened")
    def __init__(self) -> None:
        self.adoptions: list[Adoption] = []

    def adopt(self, policy_id: str, version: str, content_hash: str, adopted_at: datetime,
              document: dict[str, Any]) -> bool:
        """Adopts a policy from `adopted_at`; adopting the one already in force is a no-op."""
        current = self.adoptions[-1] if self.adoptions else None
        if current is not None and current.content_hash == content_hash:
            return False
        if current is not None and adopted_at < current.adopted_at:
            raise LifecycleError("a policy cannot be adopted before the one now in force")
        self._adopted(policy_id=policy_id, version=version, content_hash=content_hash,
                      adopted_at=adopted_at, document=document)
        return True

    @event("PolicyAdopted")
    def _adopted(self, policy_id: str, version: str, content_hash: str, adopted_at: datetime,
                 document: dict[str, Any]) -> None:
        self.adoptions.append(Adoption(len(self.adoptions) + 1, policy_id, version,
                                       content_hash, adopted_at, document))

    def in_force(self, at: datetime) -> Adoption:
        adoption = self.in_force_or_none(at)
        if adoption is None:
            raise PolicyNotAdopted(f"no policy was in force at {at.isoformat()}")
        return adoption

    def in_force_or_none(self, at: datetime) -> Adoption | None:
        for adoption in reversed(self.adoptions):
            if adoption.adopted_at <= at:
                return adoption
        return None

    def latest(self) -> Adoption | None:
        return self.adoptions[-1] if self.adoptions else None
