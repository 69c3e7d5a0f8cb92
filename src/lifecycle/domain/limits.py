"""Processing limits: what the law forbids doing with a person's data from a moment on.

Pure domain: a subject's state, the adopted policy and one fact in, a refusal naming the
limit out. Each fact is judged against the state at its own time (`at`), folded from every
fact known then (docs/guarantees.md, "Processing limits"):

- direct-marketing-stopped: after an unsubscribe or an objection to direct marketing (and
  until the person re-subscribes), no direct-marketing collection, activity or share
  (UK GDPR Art 21(3), PECR reg 22);
- consent-required: data processed on consent needs a consent for its purpose in force at
  its time: none after a withdrawal (Art 7(3)), none before one is given (Art 6(1)(a));
- restriction: while a restriction covers a purpose, no new collection or share for it,
  except under an Art 18(2) exception recorded on the fact;
- recipient-purpose: a share goes only to a recipient the policy declares for its purpose
  (a recipient without `purposes` is declared for every purpose);
- art-9-condition: a record of category `special` only for a purpose that names its
  Art 9(2) condition; art-10-condition: a record of category `criminal-offence` only for
  a purpose that declares criminal-offence data with its Art 10 condition.

`breaches` finds accepted facts a limit dated before them bars, now that it is known (a
limit that arrived after them): the same facts give the same list in any arrival order.
`suppression_breaches` adds the direct-marketing records holding an address the
suppression list (any subject's unsubscribe, marketing objection or exclusion) barred at
their time, given the list's listings and the records' address hashes.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from datetime import datetime
from typing import Any

from lifecycle.aggregates.data_subject import (
    GIVEN, GIVEN_BY_OTHERS, DataSubject, Record, _Preferences, fold_preferences,
)
from lifecycle.domain.email_address import method_slug
from lifecycle.domain.errors import InvalidFact
from lifecycle.policy.model import Policy
from lifecycle.domain.vocabulary import ALL_SCOPE, DIRECT_MARKETING

# A time an address was on the suppression list: from, and until the listing subject's own
# opt-in lifted it (None: listed now).
Listing = tuple[datetime, datetime | None]


def listed_from(listings: Collection[Listing], at: datetime) -> datetime | None:
    """When the listing in force at `at` began (the earliest, if several are), or None:
    the list as it stood at `at`, lifted listings included."""
    return min((since for since, until in listings
                if since <= at and (until is None or at < until)), default=None)

ART_18_2 = {
    "consent": "with the data subject's consent",
    "legal-claims": "for the establishment, exercise or defence of legal claims",
    "protection-of-others": "for the protection of the rights of another person",
    "public-interest": "for reasons of important public interest",
}


class ProcessingLimit(InvalidFact):
    """A fact that a processing limit in force at its time forbids."""


def _day(at: datetime) -> str:
    return at.isoformat()


def _prefs_at(subject: DataSubject, at: datetime) -> _Preferences:
    """The subject's preferences in force at `at`: when every entry is in force by then
    (facts arriving in time order), the subject's own fold of its whole log, kept until
    the log changes (read only)."""
    log = subject.preference_log
    for entry in log:
        if entry[0] > at:
            return fold_preferences(log, until=at)
    return subject._prefs


def _marketing_stopped(prefs: _Preferences) -> str | None:
    if prefs.unsubscribed_at is not None:
        return (f"limit direct-marketing-stopped: the person unsubscribed at "
                f"{_day(prefs.unsubscribed_at)} (Art 21(3), PECR reg 22); no new "
                "direct-marketing collection, activity or share until they re-subscribe")
    objected = prefs.objected_at.get(DIRECT_MARKETING)
    if objected is not None:
        return (f"limit direct-marketing-stopped: the person objected to direct "
                f"marketing at {_day(objected)} (Art 21(3)); no new direct-marketing "
                "collection, activity or share until they re-subscribe")
    return None


def _consent_missing(prefs: _Preferences, purpose: str) -> str | None:
    consent = prefs.consents.get(purpose)
    if consent is None:
        return (f"limit consent-required: no consent for purpose {purpose!r} was in "
                "force at the time of this fact (Art 6(1)(a)); record the "
                "consent-given first")
    if consent.withdrawn_at is not None:
        return (f"limit consent-required: consent for purpose {purpose!r} was "
                f"withdrawn at {_day(consent.withdrawn_at)} (Art 7(3)); no new "
                "processing for it on the consent basis")
    return None


def _restricted(subject: DataSubject, prefs: _Preferences | None, purpose: str,
                purposes: set[str], at: datetime, exception: str | None, what: str
                ) -> str | None:
    for restriction in sorted(subject.restrictions, key=lambda r: r.placed_at):
        if not (restriction.in_force(at) and (restriction.scope == ALL_SCOPE
                                              or restriction.scope in purposes)):
            continue
        if exception == "consent" and _consent_missing(
                _prefs_at(subject, at) if prefs is None else prefs, purpose) is not None:
            # The one Art 18(2) exception the log can check: the consent itself.
            return (f"limit restriction: processing of {restriction.scope!r} is "
                    f"restricted since {_day(restriction.placed_at)}; the fact claims "
                    f"the Art 18(2) consent exception but no consent for purpose "
                    f"{purpose!r} was in force at its time")
        if exception is None:
            return (f"limit restriction: processing of {restriction.scope!r} is "
                    f"restricted since {_day(restriction.placed_at)} "
                    f"({restriction.reason}, Art 18(1)); no {what} in its scope unless "
                    "the fact gives an Art 18(2) restriction_exception (consent, "
                    "legal-claims, protection-of-others, public-interest)")
        return None
    return None


class _Judge:
    """One subject's limits at given times; the preference fold is cached per time."""

    def __init__(self, subject: DataSubject) -> None:
        self.subject = subject
        self._folds: dict[datetime, _Preferences] = {}

    def judge(self, at: datetime, purpose: str, basis: str, purposes: set[str],
              exception: str | None, what: str | None) -> str | None:
        """The first limit that bars processing `purpose` on `basis` at `at`, if any;
        `what` (a "collection", a "share") is checked against restrictions, None: not."""
        return _first_limit(self.subject, self._folds.get(at), at, purpose, basis, purposes,
                            exception, what, self._folds)


def _first_limit(subject: DataSubject, prefs: _Preferences | None, at: datetime,
                 purpose: str, basis: str, purposes: set[str], exception: str | None,
                 what: str | None, folds: dict[datetime, _Preferences] | None = None
                 ) -> str | None:
    """`_Judge.judge` given the preferences at `at` (None: folded here when needed, and
    kept in `folds` if given)."""
    if purpose == DIRECT_MARKETING or basis == "consent":
        if prefs is None:
            prefs = _prefs_at(subject, at)
            if folds is not None:
                folds[at] = prefs
        if purpose == DIRECT_MARKETING:
            reason = _marketing_stopped(prefs)
            if reason is not None:
                return reason
        if basis == "consent":
            reason = _consent_missing(prefs, purpose)
            if reason is not None:
                return reason
    if what is not None and subject.restrictions:
        return _restricted(subject, prefs, purpose, purposes, at, exception, what)
    return None


def _condition_missing(policy: Policy, category: str, purpose: str) -> str | None:
    """Special-category and criminal-offence data need their condition on the purpose."""
    declared = policy.purposes[purpose]
    if category == "special" and not declared.special_category_condition:
        return (f"category: limit art-9-condition: special-category data for purpose "
                f"{purpose!r}, which names no Art 9(2) condition "
                "(special_category_condition in the policy)")
    if category == "criminal-offence" and not (declared.criminal_offence_data
                                               and declared.criminal_offence_condition):
        return (f"category: limit art-10-condition: criminal-offence data for purpose "
                f"{purpose!r}, which declares no criminal-offence data with an Art 10 "
                "condition (criminal_offence_condition in the policy)")
    return None


def check_limits(policy: Policy, subject: DataSubject, fact: Any,
                 between: Callable[[], None] | None = None) -> None:
    """Raises ProcessingLimit, naming the limit, when one in force at the fact's time
    forbids it (judged from the facts known when it arrives). With `between` (the
    suppression list's check of a direct-marketing collection): the person's own stop of
    direct marketing is judged first, then `between` runs, then the rest, in one pass."""
    at = fact.at
    prefs: _Preferences | None = None  # the preferences at `at`, folded once if needed
    if between is not None:
        if getattr(fact, "purpose", None) == DIRECT_MARKETING:
            prefs = _prefs_at(subject, at)
            reason = _marketing_stopped(prefs)
            if reason is not None:
                raise ProcessingLimit(f"{fact.type}: {reason}")
        between()
    kind = fact.type
    if kind == "collected":
        missing = _condition_missing(policy, fact.category, fact.purpose)
        if missing is not None:
            raise ProcessingLimit(missing)
        reason = _first_limit(subject, prefs, at, fact.purpose, fact.basis, {fact.purpose},
                              fact.restriction_exception, "new collection")
    elif kind == "shared":
        if not policy.may_receive(fact.recipient, fact.purpose):
            declared = policy.recipients[fact.recipient].purposes
            raise ProcessingLimit(
                f"recipient: limit recipient-purpose: {fact.recipient!r} is declared for "
                f"{', '.join(declared)}, not for purpose {fact.purpose!r}")
        named = [subject.records[r] for r in fact.records or [] if r in subject.records]
        # Special-category data keeps needing its condition when it leaves for another
        # purpose, whether the share names the category or the records.
        for category in sorted(set(fact.categories or []) | {r.category for r in named}):
            missing = _condition_missing(policy, category, fact.purpose)
            if missing is not None:
                raise ProcessingLimit(missing)
        purposes = _share_scope(subject, fact.purpose, named, fact.categories or [], at)
        reason = _first_limit(subject, prefs, at, fact.purpose, fact.basis, purposes,
                              fact.restriction_exception, "share")
    elif kind == "activity" and fact.record is not None:
        record = subject.records.get(fact.record)
        if record is None:
            return
        reason = _first_limit(subject, prefs, at, record.purpose, record.basis, set(), None,
                              None)
    else:
        return
    if reason is not None:
        raise ProcessingLimit(f"{kind}: {reason}")


def _share_scope(subject: DataSubject, purpose: str, named: list[Record],
                 categories: list[str], at: datetime) -> set[str]:
    """The purposes whose data a share carries, for restrictions: its own, its named
    records', and for a category its purpose holds no record of at `at`, the purposes of
    the person's records of that category held then (the data can only come from them)."""
    scope = {purpose} | {r.purpose for r in named}
    held = [r for r in subject.records.values()
            if r.collected_at <= at and (r.erased_at is None or r.erased_at > at)]
    for category in categories:
        of_category = [r for r in held if r.category == category]
        if not any(r.purpose == purpose for r in of_category):
            scope |= {r.purpose for r in of_category}
    return scope


def _all_consented(subject: DataSubject) -> bool:
    """The common case, without a fold: nothing was ever withdrawn, unsubscribed or
    objected to, so a consent is in force from its first giving; every consent-based fact
    came after one."""
    first: dict[str, datetime] = {}
    for at, _, kind, purpose, _ in subject.preference_log:
        if kind in ("withdrawn", "unsubscribed", "objected"):
            return False
        if kind in GIVEN and (purpose not in first or at < first[purpose]):
            first[purpose] = at

    def consented(purpose: str, at: datetime) -> bool:
        return purpose in first and first[purpose] <= at

    records = subject.records
    return (all(consented(r.purpose, r.collected_at) for r in records.values()
                if r.basis == "consent")
            and all(consented(sh.purpose, sh.at) for sh in subject.shares
                    if sh.basis == "consent")
            and all(consented(records[name].purpose, at) for at, name in subject.activities
                    if name in records and records[name].basis == "consent"))


def breaches(subject: DataSubject) -> list[dict[str, Any]]:
    """Accepted facts a limit in force at their time bars, known only now (it arrived
    after them): for the controller to act on (e.g. erase under Art 17(1)(d))."""
    found = _consents_by_others_while_suppressed(subject)
    if not subject.restrictions and _all_consented(subject):
        return _in_order(found)
    judge = _Judge(subject)
    for rec in subject.records.values():
        reason = judge.judge(rec.collected_at, rec.purpose, rec.basis, {rec.purpose},
                             rec.restriction_exception, "new collection")
        if reason is not None:
            found.append({"fact": "collected", "at": rec.collected_at.isoformat(),
                          "record": rec.record, "limit": reason})
    for share in subject.shares:
        purposes = _share_scope(subject, share.purpose,
                                [subject.records[r] for r in share.records
                                 if r in subject.records], share.categories, share.at)
        reason = judge.judge(share.at, share.purpose, share.basis, purposes,
                             share.restriction_exception, "share")
        if reason is not None:
            found.append({"fact": "shared", "at": share.at.isoformat(),
                          "recipient": share.recipient, "limit": reason})
    for at, name in subject.activities:
        about = subject.records.get(name) if name is not None else None
        if about is None:
            continue
        reason = judge.judge(at, about.purpose, about.basis, set(), None, None)
        if reason is not None:
            found.append({"fact": "activity", "at": at.isoformat(), "record": name,
                          "limit": reason})
    return _in_order(found)


CONSENT_NEEDS_OWN_OPT_IN = (
    "only the person's own opt-in (a direct-marketing consent-given by one of the policy's "
    "resubscribe_methods) gives a direct-marketing consent then")


def _consents_by_others_while_suppressed(subject: DataSubject) -> list[dict[str, Any]]:
    """Each direct-marketing consent-given that was not the person's own opt-in, dated
    while the subject was suppressed: ingest refuses it when the suppression came first."""
    return [{"fact": "consent-given", "at": at.isoformat(), "limit": (
                f"limit direct-marketing-stopped: the person's e-mail is on the suppression "
                f"list since {_day(since)} (Art 21(3), PECR reg 22); "
                f"{CONSENT_NEEDS_OWN_OPT_IN}")}
            for at, since in subject.consents_by_others_while_suppressed]


def _in_order(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(found, key=lambda b: (b["at"], b["fact"], b.get("record", ""),
                                        b.get("recipient", "")))


def own_opt_in(policy: Policy | None, method: str | None) -> bool:
    """A consent method the policy names as the person's own opt-in ([suppression]
    resubscribe_methods): the one thing that lifts suppression. Without a policy, none."""
    if method is None or policy is None:
        return False
    return method_slug(method) in policy.suppression.resubscribe_methods


def resubscribed(subject: DataSubject, policy: Policy | None, at: datetime) -> bool:
    """The subject's own opt-in to direct marketing is in force at `at` (fact time)."""
    consent = subject.consent_as_of(DIRECT_MARKETING, at)
    if consent is None or consent.withdrawn_at is not None:
        return False
    if consent.by_person is not None:  # as the policy in force when it was recorded said
        return consent.by_person
    return own_opt_in(policy, consent.method)


def suppression_breaches(subject: DataSubject, policy: Policy | None,
                         held: Mapping[str, Collection[str]],
                         listed: Mapping[str, Collection[Listing]],
                         known: list[dict[str, Any]],
                         dated: Collection[tuple[datetime, Collection[str]]] = ()
                         ) -> list[dict[str, Any]]:
    """`known` (the subject's `breaches`) with each direct-marketing record whose collected
    value held an address on the suppression list at the record's time, and each
    marketing use of such a record while the address was listed (an `activity` on it, a
    direct-marketing `shared` of it), the subject's own opt-in not in force then: what
    ingest refuses when the suppression arrives first (the record), and what marketing
    to a listed address is (its uses); and each direct-marketing consent by others dated
    while an address of a record the subject held then was listed (ingest refuses it
    when the listing comes first). `held`: each direct-marketing record's keyed address
    hashes (of its collected value); `dated`: the hashes of every value of a live record,
    with the time it was held from;
    `listed`: each hash with every listing of it (any subject's, lifted ones too). No
    value, and no word of the subject that suppressed it, goes into the entry: not even
    the time of its unsubscribe, only the day."""
    flagged = {(b["fact"], b["at"], b.get("record"), b.get("recipient")) for b in known}
    found = list(known)

    def flag(fact: str, at: datetime, since: datetime, what: str,
             holder: str = "an e-mail in it", **about: str) -> None:
        key = (fact, at.isoformat(), about.get("record"), about.get("recipient"))
        if key in flagged or resubscribed(subject, policy, at):
            return
        flagged.add(key)
        found.append({
            "fact": fact, "at": at.isoformat(), **about,
            "limit": (f"limit direct-marketing-stopped: {holder} is on the "
                      f"suppression list since {since.date().isoformat()} (Art 21(3), "
                      f"PECR reg 22); "
                      f"{what} until the person's own opt-in (a direct-marketing "
                      "consent-given by one of the policy's resubscribe_methods)")})

    # A direct-marketing consent by others than the person, while an address the subject
    # held then was listed (ingest refuses it when the listing came first).
    for at, _, kind, purpose, _ in subject.preference_log:
        if kind != GIVEN_BY_OTHERS or purpose != DIRECT_MARKETING:
            continue
        listings = [listing for held_from, hashes in dated if held_from <= at
                    for h in hashes for listing in listed.get(h, ())]
        since = listed_from(listings, at)
        if since is not None:
            flag("consent-given", at, since, "no direct-marketing consent",
                 holder="an e-mail the subject held then")
    collected = {b.get("record") for b in known if b["fact"] == "collected"}
    for name, hashes in sorted(held.items()):
        record = subject.records.get(name)
        if record is None or record.purpose != DIRECT_MARKETING:
            continue
        listings = [listing for h in hashes for listing in listed.get(h, ())]
        if not listings:
            continue
        since = listed_from(listings, record.collected_at)
        if since is not None and name not in collected:
            flag("collected", record.collected_at, since,
                 "no new direct-marketing collection holding it", record=name)
        for at, about in subject.activities:
            since = listed_from(listings, at) if about == name else None
            if since is not None:
                flag("activity", at, since, "no direct marketing to it", record=name)
        for share in subject.shares:
            since = (listed_from(listings, share.at) if share.purpose == DIRECT_MARKETING
                     and name in share.records else None)
            if since is not None:
                flag("shared", share.at, since, "no direct-marketing disclosure of it",
                     recipient=share.recipient)
    return _in_order(found)
