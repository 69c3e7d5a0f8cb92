"""A subject's current state as a JSON-ready document, personal values still sealed.

The document is what the `subjects` projection stores and what `subject show` and the
DSAR export open: sealed values stay ciphertext until a reader with the vault opens them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from lifecycle.aggregates.data_subject import DataSubject
from lifecycle.domain.limits import breaches
from lifecycle.domain.vocabulary import ERASURE_GROUNDS


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def subject_document(s: DataSubject) -> dict[str, Any]:
    return {
        "subject": s.reference,
        "records": [
            {
                "record": r.record, "category": r.category, "purpose": r.purpose,
                "basis": r.basis, "source": r.source, "source_name": r.source_name,
                "collected_at": r.collected_at.isoformat(),
                "restriction_exception": r.restriction_exception,
                "sealed": [] if r.erased_at else list(r.values),
                "erased_at": _iso(r.erased_at), "erased_by": r.erased_by,
            }
            for r in s.records.values()
        ],
        "consents": [
            {"purpose": c.purpose, "given_at": _iso(c.given_at), "method": c.method,
             "withdrawn_at": _iso(c.withdrawn_at), "in_force": c.withdrawn_at is None}
            for c in s.consents.values()
        ],
        "recipients": [
            {"recipient": sh.recipient, "role": sh.role, "purpose": sh.purpose,
             "basis": sh.basis, "records": sh.records, "categories": sh.categories,
             "country": sh.country, "safeguard": sh.safeguard, "at": sh.at.isoformat(),
             "restriction_exception": sh.restriction_exception}
            for sh in s.shares
        ],
        "restrictions": [
            {"scope": r.scope, "reason": r.reason, "placed_at": r.placed_at.isoformat(),
             "lifted_at": _iso(r.lifted_at)}
            for r in s.restrictions
        ],
        "objections": [{"purpose": p, "at": at.isoformat()} for p, at in s.objections],
        "holds": [
            {"hold": h.hold, "scope": h.scope, "sealed_reason": h.reason,
             "placed_at": h.placed_at.isoformat(), "until": _iso(h.until),
             "released_at": _iso(h.released_at)}
            for h in s.holds.values()
        ],
        "requests": [
            {"request": q.request, "kind": q.kind, "received_at": q.received_at.isoformat(),
             "identity_verified_at": _iso(q.verified_at), "extended_at": _iso(q.extended_at),
             "fulfilled_at": _iso(q.fulfilled_at), "refused_at": _iso(q.refused_at),
             "paused": q.paused,
             "identity_received_at": _iso(q.identity_received_at),
             "ground": (ERASURE_GROUNDS[q.ground] if q.ground else None)}
            for q in s.requests.values()
        ],
        "activities": [
            {"at": at.isoformat(), "record": name,
             "purpose": s.records[name].purpose if name in s.records else None}
            for at, name in sorted(s.activities, key=lambda a: (a[0], a[1] or ""))
        ],
        "consequences": [
            {"name": c.name, "right": c.right, "at": c.at.isoformat()}
            for c in s.consequences
        ],
        "limit_breaches": breaches(s),
        "erasure_refusals": [
            {"record": x.record, "ground": x.ground, "at": x.at.isoformat(),
             "request": x.request}
            for x in s.refusals
        ],
        "suppressed": s.suppressed_at is not None,
        "suppressed_at": _iso(s.suppressed_at),
        "unsubscribed_at": _iso(s.unsubscribed_at),
        "excluded_at": _iso(s.excluded_at),
        "relationship_ended_at": _iso(s.relationship_ended_at),
        "last_activity_at": _iso(s.last_activity_at),
    }


ERASED = "erased"  # what a value whose key was destroyed reads as


def open_document(document: dict[str, Any], open_values: Callable[[list[str]], Any],
                  open_note: Callable[[str | None], str | None]) -> dict[str, Any]:
    """Puts each record's `data` and each hold's `reason` in place of the sealed values,
    as the openers give them (decrypted, or only said to be sealed or erased)."""
    for record in document["records"]:
        record["data"] = open_values(record.pop("sealed"))
    for hold in document["holds"]:
        hold["reason"] = open_note(hold.pop("sealed_reason"))
    return document


def retention_entry(row: Any) -> dict[str, Any]:
    """A retention-schedule row as shown with its record: rule, trigger, policy, dates."""
    return {"rule": row.rule, "policy": row.policy, "trigger": row.trigger,
            "trigger_at": row.trigger_at.isoformat(), "due_at": row.due_at.isoformat(),
            "dispose_at": row.dispose_at.isoformat(), "action": row.action}
