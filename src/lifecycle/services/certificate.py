"""The deletion certificate: what an erasure request erased, kept, shredded and notified.

Built from the subject's state, the request case, the key vault's record of destroyed keys
and the stored events, whose subject-chain digest (the same fold as the audit chain's, see
`lifecycle.store.event_chain`) lets an auditor check it against `audit verify`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from eventsourcing.persistence import StoredEvent

from lifecycle.aggregates.data_subject import DataSubject
from lifecycle.aggregates.request_case import RequestCase
from lifecycle.domain.errors import LifecycleError
from lifecycle.store.event_chain import event_digest, link, originator_text, subject_genesis
from lifecycle.domain.vocabulary import ERASURE_GROUNDS


class NotAnErasureRequest(LifecycleError):
    """A certificate was asked for a request that is not an erasure request."""


def events_digest(subject: DataSubject, stored: Iterable[StoredEvent]) -> tuple[int, str]:
    """How many events, and the subject-chain digest over them (oldest first)."""
    digest, count = subject_genesis(originator_text(subject.id)), 0
    for event in stored:
        digest = link(digest, event_digest(originator_text(event.originator_id),
                                           event.originator_version, event.topic,
                                           bytes(event.state)))
        count += 1
    return count, digest.hex()


def deletion_certificate(subject: DataSubject, request: str, case: RequestCase | None,
                         destroyed_keys: dict[str, dict[str, Any]],
                         stored: Iterable[StoredEvent], issued_at: datetime,
                         steps: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """`steps`: the request's timeline (each step with when, recorded when and by whom)."""
    found = subject.requests.get(request)
    if found is None or found.kind != "erasure":
        raise NotAnErasureRequest(f"request {request!r} is not an erasure request of this "
                                  "subject")
    acts = [e for e in subject.erasures if e.ref == request]
    # Records collected before the request but recorded after it were erased on arrival
    # (a record there all along but kept until a late release was not).
    erased = [
        {"record": r, "category": subject.records[r].category,
         "purpose": subject.records[r].purpose, "basis": subject.records[r].basis,
         "erased_at": act.at.isoformat(),
         "erased_on_arrival": subject.erased_on_arrival(r, request)}
        for act in acts for r in act.records]
    keys = [
        {"key_id": k, **destroyed_keys.get(k, {"destroyed_at": None, "destroyed_by": None})}
        for act in acts for k in act.key_ids]
    count, digest = events_digest(subject, stored)
    return {
        "certificate": "lifecycle-deletion/1",
        "issued_at": issued_at.isoformat(),
        "subject": subject.reference,
        "request": request,
        "received_at": found.received_at.isoformat(),
        "ground": ERASURE_GROUNDS.get(found.ground or "", "not stated"),  # Art 17(1)
        "status": case.status if case else None,
        "answered_at": case.closed_at.isoformat() if case and case.closed_at else None,
        "deadline": case.deadline.isoformat() if case and case.deadline else None,
        "erased": erased,
        "kept": [{"record": x.record, "ground": x.ground, "at": x.at.isoformat()}
                 for x in subject.refusals if x.request == request],
        "keys_destroyed": keys,
        "all_keys_destroyed": all(k["destroyed_at"] is not None for k in keys),
        "recipients": [
            {"recipient": n.recipient, "records": n.records,
             "notified_at": n.erased_at.isoformat(),
             "acknowledged_at": n.acknowledged_at.isoformat() if n.acknowledged_at else None}
            for n in subject.notifications() if n.erasure == request],
        "timeline": steps or [],
        "events": {"count": count, "subject_chain_digest": digest,
                   "algorithm": "sha256 chain, as lifecycle_event_chain.subject_digest"},
    }
