"""Marketing kept before another subject's suppression of its address, flagged on read.

Ingest refuses direct-marketing data holding an address on the suppression list at the
data's time (unless the person's own opt-in is in force then). When the data arrives
first and the suppression later, possibly from another subject, the data is kept; this
lists it in the subject's `limit_breaches` (lifecycle.domain.limits
`suppression_breaches`). It is worked out when the subject is read, from the list's
listings (lifted ones too) and the record's address hashes, never stored in a view: so
it does not depend on the order subjects were projected or facts arrived in, and a
rebuild gives it back unchanged. Only keyed hashes of addresses are compared; no address leaves the vault.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from lifecycle.aggregates.data_subject import GIVEN, DataSubject
from lifecycle.domain.email_address import find_addresses
from lifecycle.domain.errors import KeyDestroyed
from lifecycle.domain.limits import Listing, suppression_breaches
from lifecycle.domain.vocabulary import DIRECT_MARKETING
from lifecycle.policy.model import Policy
from lifecycle.projections import tables
from lifecycle.store.vault import KeyVault

CHUNK = 500


def address_hashes(vault: KeyVault, address: str, keep_subaddress: bool) -> set[str]:
    """Every hash ingest looks an address up under: its one spelling (by the policy's
    keep_subaddress), that spelling with any tag kept, the older trimmed form and, while
    tags are dropped, the untagged form a listing made while they were kept holds."""
    return {*vault.lookup_hashes(address, keep_subaddress),
            vault.email_hash(address, legacy=True)}


def listings_of(views: sa.Engine, digests: set[str],
                until: datetime | None = None) -> dict[str, list[Listing]]:
    """Each of `digests` on the suppression list, with every listing of it (any subject's,
    lifted ones too), up to those begun by `until` when it is given."""
    s = tables.suppression
    found: dict[str, list[Listing]] = {}
    ordered = sorted(digests)
    with views.connect() as conn:
        for begin in range(0, len(ordered), CHUNK):
            query = (sa.select(s.c.email_hash, s.c.since, s.c.until)
                     .where(s.c.email_hash.in_(ordered[begin:begin + CHUNK])))
            for digest, since, lifted in conn.execute(query):
                if until is None or since <= until:
                    found.setdefault(digest, []).append((since, lifted))
    return found


def live_values(subject: DataSubject) -> list[tuple[str, str, str, datetime]]:
    """Each value of the subject's live records (the collected one, then each rectified
    one), with its record, purpose and the time it was held from (sealed)."""
    found = []
    for r in subject.records.values():
        if r.erased_at is not None or not r.values:
            continue
        found.append((r.record, r.purpose, r.values[0], r.collected_at))
        found.extend((r.record, r.purpose, value, at)
                     for at, _, value in r.rectifications if value is not None)
    return found


def gives_marketing_consent(subject: DataSubject) -> bool:
    return any(kind in GIVEN and purpose == DIRECT_MARKETING
               for _, _, kind, purpose, _ in subject.preference_log)


def with_suppression_breaches(known: list[dict[str, Any]],
                              values: list[tuple[str, str, str]],
                              marketing_consent: bool,
                              load_subject: Callable[[], DataSubject | None],
                              policy: Policy | None, vault: KeyVault, views: sa.Engine,
                              open_value: Callable[[str], Any] | None = None,
                              until: datetime | None = None) -> list[dict[str, Any]]:
    """`known` (the subject's limit_breaches) with its direct-marketing records, and its
    direct-marketing consents by others than the person, that came while an address they
    hold was listed (lifecycle.domain.limits `suppression_breaches`). `values`: each value
    of a live record (record, purpose, sealed), its collected value first; a record is
    judged by its collected value, a consent by every value held by its time (the
    subject's own times, read once it is loaded), so with `marketing_consent` (the subject
    was ever given a direct-marketing consent) every value is read, else only the
    collected values of direct-marketing records. `open_value` opens one (default: the
    vault), raising KeyDestroyed for an erased one (not flagged: its addresses can no
    longer be read, and erasing it was the remedy). The subject is loaded only when one
    of its addresses is listed."""
    collected: set[str] = set()
    read = []
    for record, purpose, sealed in values:
        first = record not in collected
        collected.add(record)
        if marketing_consent or (first and purpose == DIRECT_MARKETING):
            read.append((record, purpose, sealed, first))
    if not read:
        return known
    opener = open_value or vault.open
    keep = policy is not None and policy.suppression.keep_subaddress
    hashes_of: dict[str, set[str]] = {}  # sealed value -> its addresses' hashes

    def hashes(sealed: str) -> set[str]:
        found = hashes_of.get(sealed)
        if found is None:
            try:
                value = opener(sealed)
            except KeyDestroyed:
                value = None
            found = hashes_of[sealed] = {digest for address in find_addresses(value)
                                         for digest in address_hashes(vault, address, keep)}
        return found

    held = {record: hashes(sealed) for record, purpose, sealed, first in read
            if first and purpose == DIRECT_MARKETING}
    digests = set().union(*(hashes(sealed) for _, _, sealed, _ in read))
    listed = listings_of(views, digests, until) if digests else {}
    subject = load_subject() if listed else None
    if subject is None:
        return known
    # Consents are judged by the values held by their time: the subject's own record of
    # when each value was held.
    dated = ([(at, hashes(sealed)) for _, _, sealed, at in live_values(subject)]
             if marketing_consent else [])
    return suppression_breaches(subject, policy, held, listed, known, dated)
