"""The DataSubject aggregate: everything that happened to one person's data.

Personal values arrive already sealed (encrypted under a per-subject key held
outside the event store); the aggregate only ever sees opaque sealed strings
and the id of the key that opens them, so erasure is destroying that key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from lifecycle.domain.errors import (
    MissingSafeguard,
    NoSuchConsent,
    NoSuchHold,
    NoSuchNotification,
    NoSuchRequest,
    NoSuchRestriction,
    RecordErased,
    RecordExists,
    RequestExists,
    UnknownRecord,
)
from lifecycle.aggregates.fast_events import FastCreate, fast_commands
from lifecycle.domain.vocabulary import ALL_SCOPE, DIRECT_MARKETING, HOME_COUNTRY

SUBJECT_NAMESPACE = uuid5(NAMESPACE_URL, "https://lifecycle.invalid/subject")

# A sealed personal value: "<key id>.<base64 nonce+ciphertext>", opaque here.
Sealed = str


def key_scope(record: str) -> str:
    """Data keys are per subject and record (so per purpose too): each can be shredded alone,
    when its own retention runs out, without touching the subject's other data."""
    return f"record/{record}"


def note_scope(fact_id: str) -> str:
    """Each free-text note has its own key, so an erasure takes the notes from before it
    and leaves a later note (whatever arrived first)."""
    return f"notes/{fact_id}"


@dataclass
class Record:
    record: str
    category: str
    purpose: str
    basis: str
    source: str
    collected_at: datetime
    key_id: str
    values: list[Sealed]
    rectified_at: list[datetime] = field(default_factory=list)
    rectifications: list[tuple[datetime, str, Sealed | None]] = field(default_factory=list)
    erased_at: datetime | None = None
    erased_by: str | None = None
    source_name: str | None = None
    restriction_exception: str | None = None


@dataclass
class Consent:
    purpose: str
    given_at: datetime | None
    method: str | None
    withdrawn_at: datetime | None = None
    # Whether the policy in force when it was recorded counted it as the person's own
    # opt-in (direct marketing only; None: not recorded, the policy in force decides).
    by_person: bool | None = None


@dataclass
class Share:
    recipient: str
    role: str
    purpose: str
    basis: str
    records: list[str]
    categories: list[str]
    country: str
    safeguard: str | None
    at: datetime
    restriction_exception: str | None = None


@dataclass
class Restriction:
    scope: str
    reason: str
    placed_at: datetime
    lifted_at: datetime | None = None

    def in_force(self, at: datetime | None = None) -> bool:
        """Placed by `at` and not lifted by then (`at` None: now, whatever arrives later)."""
        if at is None:
            return self.lifted_at is None
        return self.placed_at <= at and (self.lifted_at is None or at < self.lifted_at)


@dataclass
class Hold:
    """One placing of a legal hold (an id may be placed more than once)."""

    hold: str
    scope: str
    reason: Sealed | None
    placed_at: datetime
    until: datetime | None
    released_at: datetime | None = None
    notes_key: str | None = None  # the key sealing this placing's reason

    def order(self) -> tuple[datetime, str, str, bool, datetime]:
        """Fact time first, then what the placing says (never the order of arrival); an
        open-ended placing after one with an end (times compared as times, never against
        a sentinel an offset could push out of the calendar)."""
        return (self.placed_at, self.hold, self.scope, self.until is None,
                self.until or self.placed_at)

    def in_force(self, at: datetime) -> bool:
        """Fact time: placed by `at`, not yet released or expired."""
        return (self.placed_at <= at and (self.released_at is None or at < self.released_at)
                and (self.until is None or at < self.until))

    def covers(self, purpose: str, at: datetime) -> bool:
        return self.in_force(at) and self.scope in (purpose, ALL_SCOPE)


@dataclass(frozen=True)
class Note:
    """A free-text note sealed under its own key: when, from which fact kind (a hold's,
    an exclusion's, a relationship's end) and, for a hold, which."""

    at: datetime
    kind: str
    hold: str | None = None


@dataclass
class Request:
    request: str
    kind: str
    received_at: datetime
    verified_at: datetime | None = None
    extended_at: datetime | None = None
    extension_months: int = 0
    fulfilled_at: datetime | None = None
    refused_at: datetime | None = None
    paused: bool = False
    ground: str | None = None  # an erasure request's Art 17(1) letter
    identity_received_at: datetime | None = None


@dataclass(frozen=True)
class Consequence:
    """A consequence the policy ties to a right the person exercised (e.g. IHPA suspends
    the membership account on erasure, restriction or objection)."""

    at: datetime
    right: str
    name: str


@dataclass
class Refusal:
    record: str
    ground: str
    at: datetime
    request: str


@dataclass
class Erasure:
    """One act of erasure: by a request (its id) or a retention rule (`retention:<record>`)."""

    ref: str
    by: str
    at: datetime
    records: list[str]
    key_ids: list[str]


@dataclass(frozen=True)
class Notification:
    """Art 19: a recipient that received data later erased must be told."""

    erasure: str
    recipient: str
    records: list[str]
    erased_at: datetime
    acknowledged_at: datetime | None


@dataclass
class ErasureDecision:
    """What an erasure request does: scopes to shred and records refused, with grounds."""

    key_ids: list[str]
    records: list[str]
    refusals: list[tuple[str, str]]


@dataclass
class _Preferences:
    """What the preference log decides, folded in fact time."""

    consents: dict[str, Consent] = field(default_factory=dict)
    suppressed_at: datetime | None = None
    unsubscribed_at: datetime | None = None
    objected_at: dict[str, datetime] = field(default_factory=dict)
    # Each time the subject's addresses were on the list: from, and until the person's
    # own opt-in lifted it (None: still listed). Lifted listings are kept, so a fact
    # is checked against the list as it stood at its own time whenever it arrives.
    listings: list[tuple[datetime, datetime | None]] = field(default_factory=list)
    # Each direct-marketing consent by others dated while the subject was suppressed (as
    # the facts up to its time leave it): when, and since when the subject was suppressed.
    given_by_others_while_suppressed: list[tuple[datetime, datetime]] = field(
        default_factory=list)


SUPPRESSING = ("unsubscribed", "objected", "excluded")
# A direct-marketing consent that was, or was not, the person's own opt-in by the policy
# in force when it was recorded ("given": not recorded, or another purpose). One by
# others is a consent like any other, but it lifts no suppression, and while a consent
# is in force it does not replace it.
GIVEN_BY_PERSON = "given-by-person"
GIVEN_BY_OTHERS = "given-by-others"
GIVEN = ("given", GIVEN_BY_PERSON, GIVEN_BY_OTHERS)


def fold_preferences(log: list[tuple[datetime, str, str, str, str | None]],
                     until: datetime | None = None) -> _Preferences:
    """Consents and suppression from the log sorted by fact time (then fact id), so the
    same facts give the same state in whatever order they arrived."""
    state = _Preferences()

    def withdraw(purpose: str, at: datetime) -> None:
        consent = state.consents.get(purpose)
        if consent is not None and consent.withdrawn_at is None:
            consent.withdrawn_at = at

    def suppress(at: datetime) -> None:
        if state.suppressed_at is None:
            state.suppressed_at = at
            state.listings.append((at, None))

    def lift(at: datetime) -> None:
        if state.suppressed_at is not None:
            since = state.listings.pop()[0]
            if since < at:  # lifted at the very time it began: never in force
                state.listings.append((since, at))
            state.suppressed_at = None

    # Consents by others at the instant being folded: judged once all of it is folded.
    pending: list[datetime] = []

    def judge_pending() -> None:
        since = state.suppressed_at
        if since is not None:
            state.given_by_others_while_suppressed.extend((at, since) for at in pending)
        pending.clear()

    for at, _, kind, purpose, method in sorted(log, key=lambda e: (e[0], e[1])):
        if until is not None and at > until:
            break
        if pending and at > pending[0]:
            judge_pending()
        if kind == GIVEN_BY_OTHERS and purpose == DIRECT_MARKETING:
            pending.append(at)
        if kind in GIVEN:
            if kind == GIVEN_BY_OTHERS:
                held = state.consents.get(purpose)
                if held is None or held.withdrawn_at is not None:
                    state.consents[purpose] = Consent(purpose, at, method, None, False)
                continue  # an objection or a listing stays: only the person lifts them
            state.consents[purpose] = Consent(
                purpose, at, method, None, True if kind == GIVEN_BY_PERSON else None)
            state.objected_at.pop(purpose, None)
            if purpose == DIRECT_MARKETING:
                # Re-subscribing is the person's own choice; it lifts the suppression.
                lift(at)
                state.unsubscribed_at = None
        elif kind == "withdrawn":
            withdraw(purpose, at)
        elif kind == "unsubscribed":
            withdraw(DIRECT_MARKETING, at)
            state.unsubscribed_at = at
            suppress(at)
        elif kind == "objected":
            state.objected_at[purpose] = at
            if purpose == DIRECT_MARKETING:
                withdraw(DIRECT_MARKETING, at)
                suppress(at)
        elif kind == "excluded":
            suppress(at)
    judge_pending()
    return state


ART_17_3_B = "Art 17(3)(b): retained to comply with a legal obligation"
ART_17_3_E = "Art 17(3)(e): needed for the establishment, exercise or defence of legal claims"
EXEMPT_BASES = {"legal-obligation": ART_17_3_B, "public-task": ART_17_3_B}
OVERRIDING_GROUNDS = ("Art 17(1)(c) with Art 21(1): overriding legitimate grounds "
                      "(blocklist of an excluded member)")


class DataSubject(Aggregate):
    """One data subject's aggregate, identified by the controller's reference."""

    @staticmethod
    def create_id(reference: str) -> UUID:
        return uuid5(SUBJECT_NAMESPACE, reference)

    @event("Registered")
    def __init__(self, reference: str) -> None:
        self.reference = reference
        self.fact_ids: dict[str, None] = {}
        self.records: dict[str, Record] = {}
        # Consents, unsubscribes, objections and exclusions in fact time: the state they
        # decide (consents, suppression) is folded from this, whatever the arrival order.
        self.preference_log: list[tuple[datetime, str, str, str, str | None]] = []
        self._preferences: _Preferences | None = None
        self.shares: list[Share] = []
        self.restrictions: list[Restriction] = []
        self.restriction_lifts: list[tuple[datetime, str]] = []
        self.objection_log: list[tuple[str, datetime]] = []
        # Every placing of a legal hold, in fact time (placing an id again, e.g. to widen
        # it, adds one: the earlier keeps what it kept), and every release of an id.
        self.holds: list[Hold] = []
        self.hold_releases: list[tuple[datetime, str]] = []
        self.requests: dict[str, Request] = {}
        self.refusals: list[Refusal] = []
        self.reviews_flagged: dict[str, datetime] = {}
        # Each listed address's keyed hash (in the order listed), with when the subject
        # first held it, as far as its listing facts tell (None: recorded before this was
        # kept, so from its listings' start).
        self.suppression_held_from: dict[str, datetime | None] = {}
        self.excluded_at: datetime | None = None
        self.excluded_reason: Sealed | None = None
        self.relationship_ended_at: datetime | None = None
        self.last_activity_at: datetime | None = None
        # Each activity fact: when, and the record it was about (if named).
        self.activities: list[tuple[datetime, str | None]] = []
        self.consequences: list[Consequence] = []
        # Keys sealing free-text notes, with the fact time of the (earliest) note each
        # seals: an erasure destroys those of notes from before it (one key per note).
        self.note_keys: dict[str, Note] = {}
        self.erasures: list[Erasure] = []
        self.acknowledgements: dict[tuple[str, str], datetime] = {}
        # Records recorded after erasure requests (in recording order, not fact time):
        # the requests each found already there. Such a record erased under one of them
        # was erased on arrival.
        self.recorded_after_requests: dict[str, frozenset[str]] = {}

    # -- queries -----------------------------------------------------------------

    def has_seen(self, fact_id: str) -> bool:
        return fact_id in self.fact_ids

    @property
    def _prefs(self) -> _Preferences:
        if self._preferences is None:
            self._preferences = fold_preferences(self.preference_log)
        return self._preferences

    def _log_preference(self, at: datetime, fact_id: str, kind: str, purpose: str,
                        method: str | None = None) -> None:
        self.preference_log.append((at, fact_id, kind, purpose, method))
        self._preferences = None

    @property
    def consents(self) -> dict[str, Consent]:
        return self._prefs.consents

    @property
    def suppressed_at(self) -> datetime | None:
        return self._prefs.suppressed_at

    @property
    def suppression_hashes(self) -> list[str]:
        """The keyed hashes of the subject's listed addresses, in the order listed."""
        return list(self.suppression_held_from)

    @property
    def suppression_listings(self) -> list[tuple[datetime, datetime | None]]:
        """Each time this subject's addresses were on the suppression list, in fact time:
        from, and until the person's own opt-in lifted it (None: listed now)."""
        return self._prefs.listings

    def listed_addresses(self) -> dict[str, list[tuple[datetime, datetime | None]]]:
        """Each hash this subject listed, with the times it listed it: its listings, each
        from when the subject held the address if that came later (an address first held
        after a listing was lifted is not on that listing)."""
        listings = self.suppression_listings
        found: dict[str, list[tuple[datetime, datetime | None]]] = {}
        for digest, held in self.suppression_held_from.items():
            clipped = []
            for since, until in listings:
                start = since if held is None or held <= since else held
                if until is None or start < until:
                    clipped.append((start, until))
            if clipped:
                found[digest] = clipped
        return found

    @property
    def consents_by_others_while_suppressed(self) -> list[tuple[datetime, datetime]]:
        """Each direct-marketing consent by others (not the person's own opt-in) dated
        while the subject was suppressed: when, and since when it was suppressed."""
        if not any(entry[2] == GIVEN_BY_OTHERS for entry in self.preference_log):
            return []
        return self._prefs.given_by_others_while_suppressed

    @property
    def unsubscribed_at(self) -> datetime | None:
        return self._prefs.unsubscribed_at

    @property
    def objected_at(self) -> dict[str, datetime]:
        return self._prefs.objected_at

    @property
    def objections(self) -> list[tuple[str, datetime]]:
        return sorted(self.objection_log, key=lambda o: (o[1], o[0]))

    def record_at(self, record: str, at: datetime) -> Record:
        """The record as a fact at `at` may refer to it: collected by then, not yet erased."""
        found = self.records.get(record)
        if found is None or found.collected_at > at:
            raise UnknownRecord(f"record {record!r} was not collected for this subject "
                                "by the time of this fact")
        if found.erased_at is not None and found.erased_at <= at:
            raise RecordErased(f"record {record!r} had been erased by the time of this fact")
        return found

    def note_erased_by(self, note: Note, at: datetime, key_id: str | None = None) -> bool:
        """Whether an erasure request made at `at` takes this note. Notes from before it
        go, except what justifies data kept whatever the request: the reason of a hold in
        force then (Art 17(3)(e)) and of an exclusion (the blocklist stays). Decided by
        times alone, so the same facts decide it in any arrival order."""
        if note.at > at or note.kind == "excluded":
            return False
        if note.kind != "hold":
            return True
        placings = [h for h in self.holds if h.notes_key == key_id] if key_id else []
        if not placings:  # the placing being recorded now, or one stored without its key
            placings = [h for h in self.holds
                        if h.hold == note.hold and h.placed_at == note.at]
        return bool(placings) and not any(h.in_force(at) for h in placings)

    def note_erased_on_arrival(self, note: Note) -> bool:
        """A late note (dated before an erasure request that has been carried out) that
        the request would have taken: it is not kept at all."""
        return any(self.note_erased_by(note, q.received_at)
                   for q in self.requests.values() if q.kind == "erasure")

    def consent_as_of(self, purpose: str, at: datetime) -> Consent | None:
        """The consent for `purpose` as it stood at `at` (fact time), if any."""
        return fold_preferences(self.preference_log, until=at).consents.get(purpose)

    def suppressed_as_of(self, at: datetime) -> bool:
        if not any(entry[2] in SUPPRESSING for entry in self.preference_log):
            return False  # never suppressed: no fold needed
        return fold_preferences(self.preference_log, until=at).suppressed_at is not None

    def suppressed_since(self, at: datetime) -> bool:
        """Whether an unsubscribe, objection to direct marketing or exclusion came at or
        after `at`: what was collected at `at` was on its list, whenever it arrives."""
        return any(kind in SUPPRESSING and (kind != "objected" or purpose == DIRECT_MARKETING)
                   and noted >= at for noted, _, kind, purpose, _ in self.preference_log)

    def active_restrictions(self, at: datetime | None = None) -> list[Restriction]:
        return [r for r in self.restrictions if r.in_force(at)]

    def consent_in_force(self, purpose: str, at: datetime | None = None) -> bool:
        consents = (self.consents if at is None
                    else fold_preferences(self.preference_log, until=at).consents)
        consent = consents.get(purpose)
        return consent is not None and consent.withdrawn_at is None

    def notifications(self) -> list[Notification]:
        """Each recipient to tell of each erasure: sent one of the erased records by name
        (whenever: a share recorded before a late request dated earlier still carried it),
        or a category of it before the erasure. Acknowledged ones carry when."""
        items = []
        for erasure in self.erasures_by_ref():
            erased = {r: self.records[r].category for r in erasure.records}
            for recipient in dict.fromkeys(sh.recipient for sh in self.shares):
                got = [r for r, category in erased.items() if any(
                    sh.recipient == recipient and (
                        r in sh.records or (category in sh.categories and sh.at <= erasure.at))
                    for sh in self.shares)]
                if got:
                    items.append(Notification(
                        erasure.ref, recipient, got, erasure.at,
                        self.acknowledgements.get((erasure.ref, recipient))))
        return items

    def erased_on_arrival(self, record: str, request: str) -> bool:
        """Whether the record was recorded after the erasure request (whatever its fact
        time): erased under it, it was erased as it arrived."""
        return request in self.recorded_after_requests.get(record, ())

    def erasures_by_ref(self) -> list[Erasure]:
        """One entry per act of erasure: a request's later erasures (of records that arrived
        after it) are merged into its first."""
        merged: dict[str, Erasure] = {}
        for e in self.erasures:
            first = merged.get(e.ref)
            if first is None:
                merged[e.ref] = Erasure(e.ref, e.by, e.at, list(e.records), list(e.key_ids))
            else:
                first.records += e.records
                first.key_ids += e.key_ids
        return list(merged.values())

    def decide_erasure(self, request: str, at: datetime) -> ErasureDecision:
        """What the erasure request made at `at` still has to do: the records collected by
        then that are neither erased nor already refused under it, whenever they arrived.

        A legal hold or a restriction for legal claims in force at `at` keeps the data
        (Art 17(3)(e)); legal-obligation and public-task data stay (Art 17(3)(b)); all
        else goes, with the notes `note_erased_by` gives to the request.
        """
        erase_keys: dict[str, None] = {}
        erase_records: list[str] = []
        refusals: list[tuple[str, str]] = []
        refused = {x.record: x.ground for x in self.refusals if x.request == request}
        for rec in self.records.values():
            if rec.erased_at is not None or rec.collected_at > at:
                continue
            # Decided again whenever a fact arrives: a hold released (or a restriction
            # lifted) before `at` that arrives late voids a refusal that cited it.
            ground = self._exemption(rec, at)
            if ground is None:
                erase_keys[rec.key_id] = None
                erase_records.append(rec.record)
            elif refused.get(rec.record) != ground:
                refusals.append((rec.record, ground))
        erase_keys.update(dict.fromkeys(k for k, note in self.note_keys.items()
                                        if self.note_erased_by(note, at, k)))
        return ErasureDecision(list(erase_keys), erase_records, refusals)

    def settle_erasures(self) -> list[tuple[list[str], datetime, str]]:
        """Carries out what every erasure request received still covers: records that
        arrived after the request but were collected before it are erased now, under it.
        Returns the keys to destroy once these events are stored, as (ids, at, by)."""
        shreds: list[tuple[list[str], datetime, str]] = []
        for request in sorted((q for q in self.requests.values() if q.kind == "erasure"),
                              key=lambda q: (q.received_at, q.request)):
            decision = self.decide_erasure(request.request, request.received_at)
            self.erase(request.received_at, request.request, decision)
            if decision.key_ids:
                shreds.append((decision.key_ids, request.received_at, request.request))
        return shreds

    def _exemption(self, rec: Record, at: datetime) -> str | None:
        for hold in self.holds:
            if hold.covers(rec.purpose, at):
                return f"{ART_17_3_E} (legal hold {hold.hold})"
        for restriction in self.active_restrictions(at):
            if restriction.reason == "legal-claims" and restriction.scope in (rec.purpose, ALL_SCOPE):
                return f"{ART_17_3_E} (restriction asked for by the subject)"
        if self.excluded_at is not None and rec.basis == "legitimate-interests" and (
                rec.collected_at >= self.excluded_at):
            return OVERRIDING_GROUNDS
        return EXEMPT_BASES.get(rec.basis)

    # -- commands (guards) and their events ----------------------------------------

    def collect(self, fact_id: str, at: datetime, record: str, category: str, purpose: str,
                basis: str, source: str, key_id: str, values: Sealed,
                source_name: str | None = None,
                restriction_exception: str | None = None) -> None:
        if record in self.records:
            raise RecordExists(f"record {record!r} already exists for this subject")
        self._collected(fact_id=fact_id, at=at, record=record, category=category,
                        purpose=purpose, basis=basis, source=source, key_id=key_id,
                        values=values, source_name=source_name,
                        restriction_exception=restriction_exception)

    @event("Collected")
    def _collected(self, fact_id: str, at: datetime, record: str, category: str,
                   purpose: str, basis: str, source: str, key_id: str, values: Sealed,
                   source_name: str | None = None,
                   restriction_exception: str | None = None) -> None:
        self.fact_ids[fact_id] = None
        self.records[record] = Record(record, category, purpose, basis, source, at, key_id,
                                      [values], source_name=source_name,
                                      restriction_exception=restriction_exception)
        requested = frozenset(q.request for q in self.requests.values() if q.kind == "erasure")
        if requested:
            self.recorded_after_requests[record] = requested
        self._touch(at)

    def rectify(self, fact_id: str, at: datetime, record: str, values: Sealed | None) -> None:
        """`values` None: the record was erased after `at`, so the late value is not kept."""
        self.record_at(record, at)
        self._rectified(fact_id=fact_id, at=at, record=record, values=values)

    @event("Rectified")
    def _rectified(self, fact_id: str, at: datetime, record: str,
                   values: Sealed | None) -> None:
        self.fact_ids[fact_id] = None
        rec = self.records[record]
        # Values are kept in fact time: the latest rectification wins, not the last to arrive.
        rec.rectifications.append((at, fact_id, values))
        rec.rectifications.sort(key=lambda r: (r[0], r[1]))
        rec.rectified_at = [t for t, _, _ in rec.rectifications]
        rec.values = rec.values[:1] + [v for _, _, v in rec.rectifications if v is not None]
        self._touch(at)

    @event("ActivityRecorded")
    def record_activity(self, fact_id: str, at: datetime, record: str | None) -> None:
        self.fact_ids[fact_id] = None
        self.activities.append((at, record))
        self._touch(at)

    @event("ConsentGiven")
    def give_consent(self, fact_id: str, at: datetime, purpose: str, method: str | None,
                     own_opt_in: bool | None = None) -> None:
        """`own_opt_in`: whether the policy in force when it is recorded counts this
        direct-marketing consent as the person's own opt-in, for good (a later policy does
        not change it). One that is not lifts no suppression, whenever the suppression
        arrives (None: recorded before this was known; the policy in force decides)."""
        self.fact_ids[fact_id] = None
        kind = "given"
        if purpose == DIRECT_MARKETING and own_opt_in is not None:
            kind = GIVEN_BY_PERSON if own_opt_in else GIVEN_BY_OTHERS
        self._log_preference(at, fact_id, kind, purpose, method)

    def withdraw_consent(self, fact_id: str, at: datetime, purpose: str,
                         method: str | None) -> None:
        if not self.consent_in_force(purpose, at):
            raise NoSuchConsent(f"no consent in force for purpose {purpose!r} at the time "
                                "of this withdrawal")
        self._consent_withdrawn(fact_id=fact_id, at=at, purpose=purpose, method=method)

    @event("ConsentWithdrawn")
    def _consent_withdrawn(self, fact_id: str, at: datetime, purpose: str,
                           method: str | None) -> None:
        self.fact_ids[fact_id] = None
        self._log_preference(at, fact_id, "withdrawn", purpose, method)

    @event("Unsubscribed")
    def unsubscribe(self, fact_id: str, at: datetime, channel: str | None,
                    email_hashes: list[str]) -> None:
        """Withdraws direct-marketing consent and suppresses the e-mail at once."""
        self.fact_ids[fact_id] = None
        self._log_preference(at, fact_id, "unsubscribed", DIRECT_MARKETING)
        self._suppress(email_hashes, at)

    def share(self, fact_id: str, at: datetime, recipient: str, role: str, purpose: str,
              basis: str, records: list[str], categories: list[str], country: str,
              safeguard: str | None, restriction_exception: str | None = None) -> None:
        if country != HOME_COUNTRY and not safeguard:
            raise MissingSafeguard(
                f"a share to {country} (outside the UK) needs a transfer safeguard")
        for record in records:
            self.record_at(record, at)
        self._shared(fact_id=fact_id, at=at, recipient=recipient, role=role, purpose=purpose,
                     basis=basis, records=records, categories=categories, country=country,
                     safeguard=safeguard, restriction_exception=restriction_exception)

    @event("Shared")
    def _shared(self, fact_id: str, at: datetime, recipient: str, role: str, purpose: str,
                basis: str, records: list[str], categories: list[str], country: str,
                safeguard: str | None, restriction_exception: str | None = None) -> None:
        self.fact_ids[fact_id] = None
        self.shares.append(Share(recipient, role, purpose, basis, list(records),
                                 list(categories), country, safeguard, at,
                                 restriction_exception))

    @event("Restricted")
    def restrict(self, fact_id: str, at: datetime, scope: str, reason: str) -> None:
        self.fact_ids[fact_id] = None
        self.restrictions.append(Restriction(scope, reason, at))
        self.restrictions.sort(key=lambda r: r.placed_at)
        self._apply_lifts()

    def lift_restriction(self, fact_id: str, at: datetime, scope: str) -> None:
        if not any(r.scope == scope for r in self.active_restrictions(at)):
            raise NoSuchRestriction(f"no restriction in force with scope {scope!r} at the "
                                    "time of this lift")
        self._restriction_lifted(fact_id=fact_id, at=at, scope=scope)

    @event("RestrictionLifted")
    def _restriction_lifted(self, fact_id: str, at: datetime, scope: str) -> None:
        self.fact_ids[fact_id] = None
        self.restriction_lifts.append((at, scope))
        self._apply_lifts()

    def _apply_lifts(self) -> None:
        """Each restriction ends at the first lift of its scope at or after its placing,
        in fact time, whatever the order the facts arrived in."""
        for restriction in self.restrictions:
            ends = [at for at, scope in self.restriction_lifts
                    if scope == restriction.scope and at >= restriction.placed_at]
            restriction.lifted_at = min(ends) if ends else None

    @event("Objected")
    def object_to(self, fact_id: str, at: datetime, purpose: str,
                  email_hashes: list[str]) -> None:
        """An objection to direct marketing is absolute: it acts at once."""
        self.fact_ids[fact_id] = None
        self.objection_log.append((purpose, at))
        self._log_preference(at, fact_id, "objected", purpose)
        if purpose == DIRECT_MARKETING:
            self._suppress(email_hashes, at)

    def request_erasure(self, fact_id: str, at: datetime, request: str,
                        ground: str | None = None) -> None:
        if request in self.requests:
            raise RequestExists(f"request {request!r} was already received for this subject")
        self._erasure_requested(fact_id=fact_id, at=at, request=request, ground=ground)

    @event("ErasureRequested")
    def _erasure_requested(self, fact_id: str, at: datetime, request: str,
                           ground: str | None = None) -> None:
        self.fact_ids[fact_id] = None
        self.requests[request] = Request(request, "erasure", at, ground=ground)

    def request_access(self, fact_id: str, at: datetime, request: str,
                       kind: str = "access") -> None:
        if request in self.requests:
            raise RequestExists(f"request {request!r} was already received for this subject")
        self._access_requested(fact_id=fact_id, at=at, request=request, kind=kind)

    @event("AccessRequested")
    def _access_requested(self, fact_id: str, at: datetime, request: str,
                          kind: str = "access") -> None:
        self.fact_ids[fact_id] = None
        self.requests[request] = Request(request, kind, at)

    def verify_identity(self, fact_id: str, at: datetime, request: str,
                        received_at: datetime | None = None) -> None:
        self._known_request(request)
        self._identity_verified(fact_id=fact_id, at=at, request=request,
                                received_at=received_at)

    @event("IdentityVerified")
    def _identity_verified(self, fact_id: str, at: datetime, request: str,
                           received_at: datetime | None = None) -> None:
        self.fact_ids[fact_id] = None
        self.requests[request].verified_at = at
        self.requests[request].identity_received_at = received_at or at

    @event("ConsequenceRecorded")
    def record_consequence(self, at: datetime, right: str, name: str) -> None:
        """The policy ties `name` to exercising `right`: it follows from this fact."""
        self.consequences.append(Consequence(at, right, name))
        self.consequences.sort(key=lambda c: (c.at, c.right, c.name))

    def extend_request(self, fact_id: str, at: datetime, request: str,
                       months: int = 2) -> None:
        """Records an extension; its statutory limits are the request case's guard."""
        self._known_request(request)
        self._request_extended(fact_id=fact_id, at=at, request=request, months=months)

    @event("RequestExtended")
    def _request_extended(self, fact_id: str, at: datetime, request: str,
                          months: int = 2) -> None:
        self.fact_ids[fact_id] = None
        self.requests[request].extended_at = at
        self.requests[request].extension_months += months

    def record_request_step(self, fact_id: str, at: datetime, request: str,
                            step: str) -> None:
        """A pause, resumption or refusal (the clock lives on the request case)."""
        self._known_request(request)
        self._request_step_recorded(fact_id=fact_id, at=at, request=request, step=step)

    @event("RequestStepRecorded")
    def _request_step_recorded(self, fact_id: str, at: datetime, request: str,
                               step: str) -> None:
        self.fact_ids[fact_id] = None
        found = self.requests[request]
        found.paused = step == "paused"
        if step == "refused":
            found.refused_at = at

    def fulfil_request(self, fact_id: str, at: datetime, request: str) -> None:
        self._known_request(request)
        self._request_fulfilled(fact_id=fact_id, at=at, request=request)

    @event("RequestFulfilled")
    def _request_fulfilled(self, fact_id: str, at: datetime, request: str) -> None:
        self.fact_ids[fact_id] = None
        self.requests[request].fulfilled_at = at

    @event("LegalHoldPlaced")
    def place_hold(self, fact_id: str, at: datetime, hold: str, scope: str,
                   reason: Sealed | None, until: datetime | None, notes_key_id: str | None) -> None:
        self.fact_ids[fact_id] = None
        self.holds.append(Hold(hold, scope, reason, at, until, notes_key=notes_key_id))
        self.holds.sort(key=Hold.order)
        self._apply_releases()
        self._note(notes_key_id, Note(at, "hold", hold))

    def release_hold(self, fact_id: str, at: datetime, hold: str) -> None:
        if not any(h.hold == hold and h.in_force(at) for h in self.holds):
            raise NoSuchHold(f"no legal hold {hold!r} in force at the time of this release")
        self._hold_released(fact_id=fact_id, at=at, hold=hold)

    @event("LegalHoldReleased")
    def _hold_released(self, fact_id: str, at: datetime, hold: str) -> None:
        self.fact_ids[fact_id] = None
        self.hold_releases.append((at, hold))
        self._apply_releases()

    def _apply_releases(self) -> None:
        """Each placing of a hold ends at the first release of its id at or after it, in
        fact time, whatever the order the facts arrived in (as restrictions end)."""
        for placing in self.holds:
            ends = [at for at, hold in self.hold_releases
                    if hold == placing.hold and at >= placing.placed_at]
            placing.released_at = min(ends) if ends else None

    @event("Excluded")
    def exclude(self, fact_id: str, at: datetime, reason: Sealed | None,
                notes_key_id: str | None, email_hashes: list[str]) -> None:
        """An excluded member's e-mail stays on the blocklist (legitimate interests)."""
        self.fact_ids[fact_id] = None
        self.excluded_at = at if self.excluded_at is None else min(self.excluded_at, at)
        self.excluded_reason = reason
        self._note(notes_key_id, Note(at, "excluded"))
        self._log_preference(at, fact_id, "excluded", DIRECT_MARKETING)
        self._suppress(email_hashes, at)

    @event("RelationshipEnded")
    def end_relationship(self, fact_id: str, at: datetime, reason: Sealed | None,
                         notes_key_id: str | None) -> None:
        self.fact_ids[fact_id] = None
        self.relationship_ended_at = max(at, self.relationship_ended_at or at)
        self._note(notes_key_id, Note(at, "relationship-ended"))

    def erase(self, at: datetime, by: str, decision: ErasureDecision) -> None:
        """Records the shredding of the decided keys and every refusal with its ground."""
        if decision.records or decision.key_ids:
            self._erased(at=at, by=by, key_ids=decision.key_ids, records=decision.records)
        for record, ground in decision.refusals:
            self._erasure_refused(at=at, by=by, record=record, ground=ground)

    @event("Erased")
    def _erased(self, at: datetime, by: str, key_ids: list[str], records: list[str]) -> None:
        self.erasures.append(Erasure(by, by, at, list(records), list(key_ids)))
        for record in records:
            rec = self.records[record]
            rec.erased_at = at
            rec.erased_by = by
        for key_id in key_ids:
            self.note_keys.pop(key_id, None)
        # A refusal of a record now erased is void if this request made it, or a request
        # made at or after this erasure (taken in time order, the record was gone by
        # then: it refused under a hold whose earlier release had not yet arrived). An
        # earlier request's refusal stands: it was right when made.
        gone = set(records)
        self.refusals = [x for x in self.refusals
                         if not (x.record in gone and (x.request == by or x.at >= at))]

    @event("ErasureRefused")
    def _erasure_refused(self, at: datetime, by: str, record: str, ground: str) -> None:
        """A request's refusal of a record, with its ground; a later one (the ground
        decided again on facts that arrived since) replaces it."""
        self.refusals = [x for x in self.refusals if (x.request, x.record) != (by, record)]
        self.refusals.append(Refusal(record, ground, at, by))

    def expire(self, at: datetime, record: str, rule: str, policy: str, trigger: str,
               due_at: datetime) -> str | None:
        """Erases a record whose retention ran out; returns its key id, None if already gone."""
        found = self.records.get(record)
        if found is None:
            raise UnknownRecord(f"record {record!r} was never collected for this subject")
        if found.erased_at is not None:
            return None
        self._retention_expired(at=at, record=record, key_id=found.key_id, rule=rule,
                                policy=policy, trigger=trigger, due_at=due_at)
        return found.key_id

    @event("RetentionExpired")
    def _retention_expired(self, at: datetime, record: str, key_id: str, rule: str,
                           policy: str, trigger: str, due_at: datetime) -> None:
        rec = self.records[record]
        self.erasures.append(Erasure(f"retention:{record}", f"rule {rule} ({policy})", at,
                                     [record], [key_id]))
        rec.erased_at = at
        rec.erased_by = f"rule {rule} ({policy})"

    def acknowledge_erasure(self, fact_id: str, at: datetime, erasure: str,
                            recipient: str) -> None:
        """A recipient confirms it erased what it received (closes the Art 19 item)."""
        if not any(n.erasure == erasure and n.recipient == recipient
                   for n in self.notifications()):
            raise NoSuchNotification(
                f"no erasure {erasure!r} to notify to recipient {recipient!r}")
        self._erasure_acknowledged(fact_id=fact_id, at=at, erasure=erasure,
                                   recipient=recipient)

    @event("ErasureAcknowledged")
    def _erasure_acknowledged(self, fact_id: str, at: datetime, erasure: str,
                              recipient: str) -> None:
        self.fact_ids[fact_id] = None
        self.acknowledgements[(erasure, recipient)] = at

    def review_flagged(self, record: str, rule: str, due_at: datetime) -> bool:
        return f"{record}|{rule}|{due_at.isoformat()}" in self.reviews_flagged

    def flag_review(self, at: datetime, record: str, rule: str, policy: str,
                    due_at: datetime) -> bool:
        """Flags a record for the controller's review once per rule and due date."""
        if self.review_flagged(record, rule, due_at):
            return False
        self._review_due(at=at, record=record, rule=rule, policy=policy, due_at=due_at)
        return True

    @event("ReviewDue")
    def _review_due(self, at: datetime, record: str, rule: str, policy: str,
                    due_at: datetime) -> None:
        self.reviews_flagged[f"{record}|{rule}|{due_at.isoformat()}"] = at

    # -- helpers ---------------------------------------------------------------------

    def _known_request(self, request: str) -> None:
        if request not in self.requests:
            raise NoSuchRequest(f"request {request!r} was never received for this subject")

    def _touch(self, at: datetime) -> None:
        if self.last_activity_at is None or at > self.last_activity_at:
            self.last_activity_at = at

    def extend_suppression(self, email_hashes: list[str], at: datetime) -> None:
        """Adds the addresses of a value held from `at` that falls under a suppression
        (collected before it, however late it arrived, or while the subject is
        suppressed), as if it had been there when it came."""
        new = [d for d in email_hashes if d not in self.suppression_held_from
               or _later(self.suppression_held_from[d], at)]
        if new:
            self._suppression_extended(email_hashes=new, at=at)

    @event("SuppressionExtended")
    def _suppression_extended(self, email_hashes: list[str],
                              at: datetime | None = None) -> None:
        self._suppress(email_hashes, at)

    def _note(self, key_id: str | None, note: Note) -> None:
        if key_id is not None:  # (stores from before one key per note share one key)
            earlier = self.note_keys.get(key_id)
            self.note_keys[key_id] = note if earlier is None or note.at < earlier.at else earlier

    def _suppress(self, email_hashes: list[str], at: datetime | None) -> None:
        for digest in email_hashes:
            if digest not in self.suppression_held_from:
                self.suppression_held_from[digest] = at
            elif _later(self.suppression_held_from[digest], at):
                self.suppression_held_from[digest] = at


def _later(held: datetime | None, at: datetime | None) -> bool:
    """Whether an address held from `held` is held earlier, from `at` (None: always)."""
    return held is not None and (at is None or at < held)


# Commands trigger their events directly (lifecycle.aggregates.fast_events): the same
# event classes and stored bytes, without the library's per-command machinery.
fast_commands(DataSubject)
_register = FastCreate(DataSubject)


def register(reference: str) -> DataSubject:
    """A new subject: `DataSubject(reference)`, its Registered event built directly."""
    subject = _register(reference)
    assert isinstance(subject, DataSubject)
    return subject


def event_summary(domain_event: Any) -> dict[str, Any]:
    """The non-personal attributes of an event, for the history timeline."""
    hidden = {"originator_id", "originator_version", "timestamp", "values", "reason"}
    return {k: v for k, v in vars(domain_event).items() if k not in hidden}
