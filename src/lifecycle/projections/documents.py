"""A subject's current state as a JSON-ready document, personal values still sealed.

The document is what the `subjects` projection stores and what `subject show` and the
DSAR export open: sealed values stay ciphertext until a reader with the vault opens them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson

from lifecycle.aggregates.data_subject import DataSubject
from lifecycle.domain.limits import breaches
from lifecycle.domain.vocabulary import ERASURE_GROUNDS
from lifecycle.store.fast_json import plain


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def record_entries(s: DataSubject) -> list[dict[str, Any]]:
    """The document's "records" (the one part an erasure by retention changes)."""
    return [
        {
            "record": r.record, "category": r.category, "purpose": r.purpose,
            "basis": r.basis, "source": r.source, "source_name": r.source_name,
            "collected_at": r.collected_at.isoformat(),
            "restriction_exception": r.restriction_exception,
            "sealed": [] if r.erased_at else list(r.values),
            "erased_at": _iso(r.erased_at), "erased_by": r.erased_by,
        }
        for r in s.records.values()
    ]


def subject_document(s: DataSubject) -> dict[str, Any]:
    return {
        "subject": s.reference,
        "records": record_entries(s),
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
            for h in s.holds
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


# The keys of `subject_document`, in its order (tests/test_sweep_speed_documents.py).
DOCUMENT_KEYS = (
    "subject", "records", "consents", "recipients", "restrictions", "objections", "holds",
    "requests", "activities", "consequences", "limit_breaches", "erasure_refusals",
    "suppressed", "suppressed_at", "unsubscribed_at", "excluded_at",
    "relationship_ended_at", "last_activity_at")
# How the stored text of a document written by orjson begins (json.dumps writes a space
# after the colon): see `bulk.json_text`.
_ORJSON_OPENING = '{"subject":"'


def document_after_erasures(stored: str, s: DataSubject) -> str | None:
    """The text `bulk.json_text(subject_document(s))` gives, from `stored` (the text stored
    for `s` before events that were all erasures by retention), without building the rest
    of the document again; None where that cannot be shown (then build it in full).

    An erasure by retention changes a record's erased_at and erased_by (and so its
    sealed values), nothing else the document shows; the limit breaches read a record's
    erasure only through the purposes a share carries, which only a restriction looks at,
    so for a subject without restrictions they stay as stored. A stored text orjson wrote
    held only values it writes as json does (`json_text`): it reads back as those values
    and is written again as the same characters; the new records are checked alike."""
    if s.restrictions or not stored.startswith(_ORJSON_OPENING):
        return None
    try:
        document = orjson.loads(stored)
    except orjson.JSONDecodeError:
        return None
    if (type(document) is not dict or tuple(document) != DOCUMENT_KEYS
            or document["subject"] != s.reference):
        return None
    records = record_entries(s)
    before = document["records"]
    if (type(before) is not list or len(before) != len(records)
            or any(type(old) is not dict or old.get("record") != new["record"]
                   for old, new in zip(before, records))
            or not plain(records)):
        return None
    document["records"] = records
    try:
        return orjson.dumps(document).decode()
    except orjson.JSONEncodeError:
        return None


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
