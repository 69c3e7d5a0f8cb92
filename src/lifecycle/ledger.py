"""The Ledger: the application service that owns the event store and the key vault.

Thin methods: references and values in, get -> command -> save, results out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from lifecycle.aggregates.data_subject import DataSubject, Record
from lifecycle.crypto.master_key import load_master_key
from lifecycle.crypto.vault import KeyVault, create_vault_engine
from lifecycle.errors import KeyDestroyed, SubjectNotFound
from lifecycle.event_store import SubjectStore, open_subject_store
from lifecycle.facts import Rejection
from lifecycle.ingest import IngestReport, Ingestor
from lifecycle.settings import Settings

ERASED = "erased"


class Ledger:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        settings.ensure_home()
        self.vault = KeyVault(create_vault_engine(settings.vault_url), load_master_key(settings))
        self.store: SubjectStore = open_subject_store(settings)

    def close(self) -> None:
        self.store.close()
        self.vault.engine.dispose()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- write side -------------------------------------------------------------------

    def ingest(self, lines: Iterable[str], now: datetime,
               on_progress: Callable[[int], None] | None = None,
               on_rejected: Callable[[Rejection], None] | None = None) -> IngestReport:
        return Ingestor(self.store, self.vault, now, on_progress, on_rejected).run(lines)

    # -- read side --------------------------------------------------------------------

    def subject(self, reference: str) -> DataSubject:
        subject = self.store.get_subject(reference)
        if subject is None:
            raise SubjectNotFound(f"no facts recorded for subject {reference!r}")
        return subject

    def open_values(self, record: Record) -> dict[str, Any] | str:
        """The record's current values (rectifications applied), or "erased"."""
        if record.erased_at is not None:
            return ERASED
        merged: dict[str, Any] = {}
        try:
            for sealed in record.values:
                merged.update(self.vault.open(sealed))
        except KeyDestroyed:
            return ERASED
        return merged

    def open_note(self, sealed: str | None) -> str | None:
        if sealed is None:
            return None
        try:
            text = self.vault.open(sealed)
        except KeyDestroyed:
            return ERASED
        return str(text)

    def subject_view(self, reference: str) -> dict[str, Any]:
        """Everything held about one subject now, values opened where keys survive."""
        s = self.subject(reference)
        return {
            "subject": s.reference,
            "records": [
                {
                    "record": r.record, "category": r.category, "purpose": r.purpose,
                    "basis": r.basis, "source": r.source,
                    "collected_at": r.collected_at.isoformat(),
                    "data": self.open_values(r),
                    "erased_at": r.erased_at.isoformat() if r.erased_at else None,
                    "erased_by": r.erased_by,
                }
                for r in s.records.values()
            ],
            "consents": [
                {"purpose": c.purpose, "given_at": _iso(c.given_at), "method": c.method,
                 "withdrawn_at": _iso(c.withdrawn_at),
                 "in_force": c.withdrawn_at is None}
                for c in s.consents.values()
            ],
            "recipients": [
                {"recipient": sh.recipient, "role": sh.role, "purpose": sh.purpose,
                 "basis": sh.basis, "records": sh.records, "categories": sh.categories,
                 "country": sh.country, "safeguard": sh.safeguard, "at": sh.at.isoformat()}
                for sh in s.shares
            ],
            "restrictions": [
                {"scope": r.scope, "reason": r.reason, "placed_at": r.placed_at.isoformat(),
                 "lifted_at": _iso(r.lifted_at)}
                for r in s.restrictions
            ],
            "objections": [{"purpose": p, "at": at.isoformat()} for p, at in s.objections],
            "holds": [
                {"hold": h.hold, "scope": h.scope, "reason": self.open_note(h.reason),
                 "placed_at": h.placed_at.isoformat(), "until": _iso(h.until),
                 "released_at": _iso(h.released_at)}
                for h in s.holds.values()
            ],
            "requests": [
                {"request": q.request, "kind": q.kind, "received_at": q.received_at.isoformat(),
                 "identity_verified_at": _iso(q.verified_at),
                 "extended_at": _iso(q.extended_at), "fulfilled_at": _iso(q.fulfilled_at)}
                for q in s.requests.values()
            ],
            "erasure_refusals": [
                {"record": x.record, "ground": x.ground, "at": x.at.isoformat(),
                 "request": x.request}
                for x in s.refusals
            ],
            "suppressed": s.suppressed_at is not None,
            "suppressed_at": _iso(s.suppressed_at),
            "excluded_at": _iso(s.excluded_at),
            "relationship_ended_at": _iso(s.relationship_ended_at),
            "last_activity_at": _iso(s.last_activity_at),
        }

    def history(self, reference: str) -> list[dict[str, Any]]:
        """The subject's event timeline: what happened, when, in stored order."""
        s = self.subject(reference)
        timeline = []
        for domain_event in self.store.events.get(s.id):
            attrs = dict(vars(domain_event))
            entry: dict[str, Any] = {
                "version": attrs.pop("originator_version"),
                "event": type(domain_event).__name__,
                "recorded_at": attrs.pop("timestamp").isoformat(),
            }
            attrs.pop("originator_id", None)
            for name, value in attrs.items():
                if name in ("values", "reason") and isinstance(value, str) and "." in value:
                    value = "<sealed>"
                elif name == "email_hashes":
                    value = len(value)
                elif isinstance(value, datetime):
                    value = value.isoformat()
                entry[name] = value
            timeline.append(entry)
        return timeline


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
