"""Processing limits judged the faster way (`check_limits` folding a subject's preferences
at most once per fact, skipping the fold when neither direct marketing nor consent is in
question, and the restriction walk when there is none) decide exactly as the code before
did: for any subject state (preference log in or out of time order, restrictions placed
and lifted, records and shares) and any collected, shared or activity fact, the same
refusal with the same words, or none, and `between` run at the same point; and `breaches`
lists the same facts. The code before is kept below, verbatim, as the reference.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from hypothesis import given, settings as hsettings, strategies as st

from lifecycle.aggregates.data_subject import (
    DataSubject, Record, Restriction, Share, _Preferences, fold_preferences, register,
)
from lifecycle.domain import limits
from lifecycle.domain.limits import (
    ProcessingLimit, _all_consented, _condition_missing, _day, _in_order, _share_scope,
)
from lifecycle.domain.vocabulary import ALL_SCOPE, DIRECT_MARKETING
from lifecycle.policy.loader import load_policy
from lifecycle.policy.model import Policy

CONFIG = Path(__file__).resolve().parents[1] / "config"
POLICIES = [load_policy(CONFIG / "hqip.toml"), load_policy(CONFIG / "ihpa.toml")]
START = datetime(2024, 1, 1, tzinfo=UTC)
# Few values of each, so that times, purposes and scopes meet often.
TIMES = st.integers(0, 3).map(lambda d: START + timedelta(days=d))
BASES = st.sampled_from(["consent", "legitimate-interests"])
CATEGORIES = st.sampled_from(["contact", "special", "criminal-offence"])
EXCEPTIONS = st.sampled_from([None, "consent", "legal-claims"])
NAMES = st.sampled_from(["a", "b", "c", "missing"])


# -- the code before (lifecycle/domain/limits.py), verbatim ------------------------------

class _Judge:
    """One subject's limits at given times; the preference fold is cached per time."""

    def __init__(self, subject: DataSubject) -> None:
        self.subject = subject
        self._folds: dict[datetime, _Preferences] = {}

    def prefs(self, at: datetime) -> _Preferences:
        found = self._folds.get(at)
        if found is None:
            log = self.subject.preference_log
            if not log or max(entry[0] for entry in log) <= at:
                # Every entry is in force by `at` (facts arriving in time order): the
                # subject's own fold of its whole log, kept until the log changes. Read only.
                found = self.subject._prefs
            else:
                found = fold_preferences(log, until=at)
            self._folds[at] = found
        return found

    def marketing_stopped(self, at: datetime) -> str | None:
        prefs = self.prefs(at)
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

    def consent_missing(self, purpose: str, at: datetime) -> str | None:
        consent = self.prefs(at).consents.get(purpose)
        if consent is None:
            return (f"limit consent-required: no consent for purpose {purpose!r} was in "
                    "force at the time of this fact (Art 6(1)(a)); record the "
                    "consent-given first")
        if consent.withdrawn_at is not None:
            return (f"limit consent-required: consent for purpose {purpose!r} was "
                    f"withdrawn at {_day(consent.withdrawn_at)} (Art 7(3)); no new "
                    "processing for it on the consent basis")
        return None

    def restricted(self, purpose: str, purposes: set[str], at: datetime,
                   exception: str | None, what: str) -> str | None:
        for restriction in sorted(self.subject.restrictions, key=lambda r: r.placed_at):
            if not (restriction.in_force(at) and (restriction.scope == ALL_SCOPE
                                                  or restriction.scope in purposes)):
                continue
            if exception == "consent" and self.consent_missing(purpose, at) is not None:
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

    def judge(self, at: datetime, purpose: str, basis: str, purposes: set[str],
              exception: str | None, what: str | None) -> str | None:
        """The first limit that bars processing `purpose` on `basis` at `at`, if any;
        `what` (a "collection", a "share") is checked against restrictions, None: not."""
        if purpose == DIRECT_MARKETING:
            reason = self.marketing_stopped(at)
            if reason is not None:
                return reason
        if basis == "consent":
            reason = self.consent_missing(purpose, at)
            if reason is not None:
                return reason
        if what is not None:
            return self.restricted(purpose, purposes, at, exception, what)
        return None


def check_limits(policy: Policy, subject: DataSubject, fact: Any,
                 between: Callable[[], None] | None = None) -> None:
    """Raises ProcessingLimit, naming the limit, when one in force at the fact's time
    forbids it (judged from the facts known when it arrives). With `between` (the
    suppression list's check of a direct-marketing collection): the person's own stop of
    direct marketing is judged first, then `between` runs, then the rest, in one pass."""
    judge = _Judge(subject)
    reason: str | None = None
    if between is not None:
        if getattr(fact, "purpose", None) == DIRECT_MARKETING:
            reason = judge.marketing_stopped(fact.at)
            if reason is not None:
                raise ProcessingLimit(f"{fact.type}: {reason}")
        between()
    if fact.type == "collected":
        missing = _condition_missing(policy, fact.category, fact.purpose)
        if missing is not None:
            raise ProcessingLimit(missing)
        reason = judge.judge(fact.at, fact.purpose, fact.basis, {fact.purpose},
                             fact.restriction_exception, "new collection")
    elif fact.type == "shared":
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
        purposes = _share_scope(subject, fact.purpose, named, fact.categories or [], fact.at)
        reason = judge.judge(fact.at, fact.purpose, fact.basis, purposes,
                             fact.restriction_exception, "share")
    elif fact.type == "activity" and fact.record is not None:
        record = subject.records.get(fact.record)
        if record is not None:
            reason = judge.judge(fact.at, record.purpose, record.basis, set(), None, None)
    if reason is not None:
        raise ProcessingLimit(f"{fact.type}: {reason}")


def breaches(subject: DataSubject) -> list[dict[str, Any]]:
    """Accepted facts a limit in force at their time bars, known only now (it arrived
    after them): for the controller to act on (e.g. erase under Art 17(1)(d))."""
    if not subject.restrictions and _all_consented(subject):
        return []
    judge = _Judge(subject)
    found: list[dict[str, Any]] = []
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


# -- states and facts ----------------------------------------------------------------------

@st.composite
def cases(draw: st.DrawFn) -> tuple[Policy, DataSubject, Any, bool | None]:
    policy = draw(st.sampled_from(POLICIES))
    other = next(p for p in policy.purposes if p != DIRECT_MARKETING)
    purposes = st.sampled_from([DIRECT_MARKETING, other])
    subject = register("person:limits")
    for n in range(draw(st.integers(0, 4))):  # in any order of fact time
        kind = draw(st.sampled_from(["given", "withdrawn", "unsubscribed", "objected",
                                     "excluded"]))
        subject._log_preference(draw(TIMES), f"p{n}", kind, draw(purposes),
                                draw(st.sampled_from([None, "web-form"])))
    for _ in range(draw(st.integers(0, 3))):
        placed = draw(TIMES)
        lifted = draw(st.one_of(st.none(), TIMES.filter(lambda t: t >= placed)))
        subject.restrictions.append(Restriction(
            draw(st.one_of(st.just(ALL_SCOPE), purposes)), "accuracy", placed, lifted))
    subject.restrictions.sort(key=lambda r: r.placed_at)
    for name in draw(st.lists(st.sampled_from(["a", "b", "c"]), unique=True)):
        subject.records[name] = Record(
            name, draw(CATEGORIES), draw(purposes), draw(BASES), "data-subject", draw(TIMES),
            "key", [], erased_at=draw(st.one_of(st.none(), TIMES)),
            restriction_exception=draw(EXCEPTIONS))
    for _ in range(draw(st.integers(0, 2))):
        subject.shares.append(Share(
            draw(st.sampled_from(sorted(policy.recipients))), "processor", draw(purposes),
            draw(BASES), draw(st.lists(NAMES, max_size=2)),
            draw(st.lists(CATEGORIES, max_size=2)), "GB", None, draw(TIMES),
            draw(EXCEPTIONS)))
    for _ in range(draw(st.integers(0, 2))):
        subject.activities.append((draw(TIMES), draw(st.one_of(st.none(), NAMES))))
    kind = draw(st.sampled_from(["collected", "shared", "activity", "consent-given"]))
    fields: dict[str, Any] = {"type": kind, "at": draw(TIMES)}
    if kind in ("collected", "shared", "consent-given"):
        fields["purpose"] = draw(purposes)
    if kind in ("collected", "shared"):
        fields.update(basis=draw(BASES), restriction_exception=draw(EXCEPTIONS))
    if kind == "collected":
        fields["category"] = draw(CATEGORIES)
    elif kind == "shared":
        fields.update(recipient=draw(st.sampled_from(sorted(policy.recipients))),
                      records=draw(st.one_of(st.none(), st.lists(NAMES, max_size=2))),
                      categories=draw(st.one_of(st.none(), st.lists(CATEGORIES, max_size=2))))
    elif kind == "activity":
        fields["record"] = draw(st.one_of(st.none(), NAMES))
    # `between`: none, one that passes, or one that refuses.
    between = draw(st.sampled_from([None, True, False]))
    return policy, subject, SimpleNamespace(**fields), between


class Refused(Exception):
    """What the test's `between` raises when it refuses."""


def outcome(check: Callable[..., None], policy: Policy, subject: DataSubject, fact: Any,
            between: bool | None) -> tuple[Any, ...]:
    """What one check did: ran `between` or not (and when), and what it raised."""
    calls: list[str] = []

    def run_between() -> None:
        calls.append("between")
        if not between:
            raise Refused("suppressed")

    try:
        check(policy, copy.deepcopy(subject), fact,
              None if between is None else run_between)
    except (ProcessingLimit, Refused, KeyError) as error:
        return tuple(calls), type(error).__name__, str(error)
    return tuple(calls), None, None


@hsettings(max_examples=1500, deadline=None)
@given(cases())
def test_check_limits_decides_as_before(case: tuple[Policy, DataSubject, Any, bool | None]
                                        ) -> None:
    """The same refusal (type and words) or none, with `between` run as before."""
    policy, subject, fact, between = case
    assert outcome(limits.check_limits, policy, subject, fact, between) == outcome(
        check_limits, policy, subject, fact, between)


@hsettings(max_examples=500, deadline=None)
@given(cases())
def test_breaches_are_as_before(case: tuple[Policy, DataSubject, Any, bool | None]) -> None:
    """`breaches` lists the same facts with the same limits."""
    subject = case[1]
    assert limits.breaches(copy.deepcopy(subject)) == breaches(copy.deepcopy(subject))
