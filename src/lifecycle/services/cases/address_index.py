"""Finding a person by e-mail: a keyed-hash index of the addresses held, no plaintext.

Each row is the keyed hash of one address (normalised as the suppression list does, and
hashed with the same derived key, `KeyVault.email_hash`) beside the subject and record that
hold it. The index follows the event log like a projection: a subject changed since the
index's position has its rows replaced from its current state, opening its live records'
values with the vault. An erased record's address leaves the index; a lookup also drops
any row whose key was destroyed meanwhile, so an erasure is never found again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

import sqlalchemy as sa

from lifecycle.aggregates.data_subject import DataSubject
from lifecycle.domain.email_address import find_addresses
from lifecycle.domain.errors import KeyDestroyed
from lifecycle.services.ledger import Ledger
from lifecycle.projections import tables

NAME = "address-index"
BATCH = 1000
INDEX_LOCK = 0x6C69666563796332  # advisory lock key: one index writer at a time

metadata = sa.MetaData()
address_index = sa.Table(
    "lifecycle_address_index", metadata,
    sa.Column("address_hash", sa.String(64), primary_key=True),
    sa.Column("subject_id", sa.String(36), primary_key=True, index=True),
    sa.Column("record", sa.String(200), primary_key=True),
    sa.Column("reference", sa.String(200), nullable=False),
    sa.Column("key_id", sa.String(64), nullable=False),
)


@dataclass(frozen=True)
class Match:
    subject: str
    records: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {"subject": self.subject, "records": self.records}


@dataclass(frozen=True)
class FindResult:
    subjects: list[Match]
    suppressed: bool
    is_address: bool

    def as_dict(self) -> dict[str, Any]:
        return {"subjects": [m.as_dict() for m in self.subjects],
                "suppressed": self.suppressed, "is_address": self.is_address}


class AddressIndex:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        metadata.create_all(ledger.views, checkfirst=True)

    def position(self) -> int:
        with self.ledger.views.connect() as conn:
            found = conn.execute(sa.select(tables.positions.c.position)
                                 .where(tables.positions.c.name == NAME)).scalar()
        return int(found or 0)

    def catch_up(self) -> int:
        """Brings the index up to the log's head; returns the events read."""
        recorder = self.ledger.store.recorder
        start = self.position()
        read = 0
        while True:
            page = recorder.select_notifications(start, BATCH, inclusive_of_start=False)
            if not page:
                return read
            changed = {n.originator_id for n in page if ":DataSubject." in n.topic}
            self._replace(changed, start, page[-1].id)
            start = page[-1].id
            read += len(page)

    def _rows_of(self, subject: DataSubject) -> list[dict[str, Any]]:
        rows: dict[tuple[str, str], dict[str, Any]] = {}
        vault = self.ledger.vault
        for record in subject.records.values():
            if record.erased_at is not None:
                continue
            values = [record.values[0], *(v for _, _, v in record.rectifications if v)]
            for sealed in values:
                try:
                    opened = vault.open(sealed)
                except KeyDestroyed:
                    continue
                for address in find_addresses(opened):
                    digest = vault.email_hash(address)
                    rows[(digest, record.record)] = {
                        "address_hash": digest, "subject_id": str(subject.id),
                        "record": record.record, "reference": subject.reference,
                        "key_id": record.key_id}
        return list(rows.values())

    def _replace(self, changed: set[Any], start: int, last: int) -> None:
        ids = [UUID(str(i)) for i in changed]
        rows = [row for subject in self.ledger.store.get_subjects(ids)
                for row in self._rows_of(subject)]
        with self.ledger.views.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": INDEX_LOCK})
            else:  # SQLite: take the write lock before reading the position
                conn.execute(tables.positions.update().where(sa.false()).values(position=0))
            stored = conn.execute(sa.select(tables.positions.c.position)
                                  .where(tables.positions.c.name == NAME)).scalar()
            if stored is not None and stored >= last:
                return  # another process indexed these events meanwhile
            text_ids = [str(i) for i in ids]
            for begin in range(0, len(text_ids), 500):
                conn.execute(address_index.delete().where(
                    address_index.c.subject_id.in_(text_ids[begin:begin + 500])))
            if rows:
                conn.execute(address_index.insert(), rows)
            if stored is None:
                conn.execute(tables.positions.insert().values(name=NAME, position=last))
            else:
                conn.execute(tables.positions.update().where(tables.positions.c.name == NAME)
                             .values(position=last))

    def find(self, address: str) -> FindResult:
        """The subjects whose live records hold `address` (any spelling of it), and whether
        it is on the suppression list. The address is hashed here and never stored."""
        from lifecycle.domain.email_address import normalise

        is_address = normalise(address) is not None
        vault = self.ledger.vault
        digests = {vault.email_hash(address), vault.email_hash(address, keep_subaddress=True)}
        self.ledger.projections.catch_up()
        self.catch_up()
        with self.ledger.views.connect() as conn:
            rows = conn.execute(sa.select(address_index).where(
                address_index.c.address_hash.in_(sorted(digests)))).all()
        live = vault.live_key_ids(r.key_id for r in rows)
        gone = [r for r in rows if r.key_id not in live]
        if gone:  # erased by another process since the index saw the subject
            with self.ledger.views.begin() as conn:
                for r in gone:
                    conn.execute(address_index.delete().where(
                        (address_index.c.subject_id == r.subject_id)
                        & (address_index.c.record == r.record)))
        found: dict[str, list[str]] = {}
        for r in rows:
            if r.key_id in live:
                found.setdefault(r.reference, []).append(r.record)
        with self.ledger.views.connect() as conn:
            listed = tables.suppression.c
            suppressed = conn.execute(sa.select(listed.email_hash).where(
                listed.email_hash.in_(sorted(digests)) & listed.until.is_(None))
                .limit(1)).first() is not None
        return FindResult([Match(ref, sorted(set(recs))) for ref, recs in sorted(found.items())],
                          suppressed, is_address)
