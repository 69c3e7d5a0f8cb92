"""The suppression list keeps each listing with its interval (docs/guarantees.md,
"Suppression"): an address is listed at a time when a listing covers it, a listing
lifted by the person's own opt-in included, so a fact is checked against the list as it
stood at its own time whenever it arrives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from lifecycle.aggregates.data_subject import fold_preferences
from lifecycle.domain.limits import listed_from
from lifecycle.services.ledger import Ledger
from tests.facts_builder import collected, fact, lines
from tests.suppression_setup import HQIP, ADOPTED, NOW

BASE = datetime(2024, 1, 1, tzinfo=UTC)
KINDS = ("given", "withdrawn", "unsubscribed", "objected", "excluded")
PURPOSES = ("direct-marketing", "research")
entries = st.lists(st.tuples(st.integers(0, 20), st.sampled_from(KINDS),
                             st.sampled_from(PURPOSES)), max_size=12)


@settings(max_examples=300, deadline=None)
@given(log=entries, probe=st.integers(-1, 22))
def test_the_listings_say_what_the_fold_says_at_every_time(
        log: list[tuple[int, str, str]], probe: int) -> None:
    """At any time, the subject's listings cover it exactly when the preferences folded up
    to it (fact time, then fact id) leave it suppressed; the listings never overlap and
    only the last can be open."""
    stamped = [(BASE + timedelta(hours=h), f"id-{n:02d}", kind, purpose, "subscribe-form")
               for n, (h, kind, purpose) in enumerate(log)]
    at = BASE + timedelta(hours=probe)
    listings = fold_preferences(stamped).listings
    suppressed = fold_preferences(stamped, until=at).suppressed_at is not None
    assert (listed_from(listings, at) is not None) == suppressed
    for (since, until), (following, _) in zip(listings, listings[1:]):
        assert until is not None and since < until <= following
    assert all(until is None or since < until for since, until in listings)


def test_a_lifted_listing_is_kept_with_its_interval_and_leaves_the_list_in_force(
        ledger: Ledger) -> None:
    """After the person's own opt-in lifts a listing, the address is no longer on the
    list in force (`suppressed_hashes`), but its listing stays with when it began and
    ended; a second unsubscribe opens a second listing."""
    ledger.adopt_policy(HQIP, ADOPTED)
    alice = "subscriber:alice"
    report = ledger.ingest(lines([
        collected(alice, "2023-05-02T09:00:00Z", "newsletter",
                  {"email": "alice@example.org"}),
        fact("consent-given", alice, "2023-05-02T09:00:00Z", purpose="direct-marketing",
             method="subscribe-form"),
        fact("unsubscribed", alice, "2024-03-10T10:00:00Z"),
        fact("consent-given", alice, "2024-08-01T10:00:00Z", purpose="direct-marketing",
             method="subscribe-form"),
    ]), NOW)
    assert report.ok and report.accepted == 4, report.as_dict()
    ledger.projections.catch_up()
    assert ledger.suppressed_hashes() == set()
    (by_subject,) = ledger.suppression_listings().values()
    assert list(by_subject.values()) == [[(datetime(2024, 3, 10, 10, tzinfo=UTC),
                                           datetime(2024, 8, 1, 10, tzinfo=UTC))]]
    assert ledger.ingest(lines([fact("unsubscribed", alice, "2025-01-05T08:00:00Z")]),
                         NOW).ok
    ledger.projections.catch_up()
    assert len(ledger.suppressed_hashes()) == 1
    (by_subject,) = ledger.suppression_listings().values()
    assert sorted(next(iter(by_subject.values()))) == [
        (datetime(2024, 3, 10, 10, tzinfo=UTC), datetime(2024, 8, 1, 10, tzinfo=UTC)),
        (datetime(2025, 1, 5, 8, tzinfo=UTC), None)]


def test_a_consent_by_others_kept_before_the_persons_unsubscribe_is_flagged_not_a_lift(
        ledger: Ledger) -> None:
    """A direct-marketing consent-given that is not the person's own opt-in (crm-import),
    dated after their unsubscribe but arriving before it, is kept, lifts nothing (the
    address stays listed) and is listed in the person's `limit_breaches`; arriving after
    it, it is refused."""
    ledger.adopt_policy(HQIP, ADOPTED)
    for tag, consent_first in (("a", True), ("b", False)):
        person = f"subscriber:{tag}"
        subscribed = [
            collected(person, "2023-05-02T09:00:00Z", "newsletter",
                      {"email": f"{tag}@example.org"}),
            fact("consent-given", person, "2023-05-02T09:00:00Z",
                 purpose="direct-marketing", method="subscribe-form")]
        assert ledger.ingest(lines(subscribed), NOW).ok
        unsubscribe = fact("unsubscribed", person, "2024-03-01T10:00:00Z")
        reimport = fact("consent-given", person, "2024-04-01T10:00:00Z",
                        purpose="direct-marketing", method="crm-import")
        first, second = (reimport, unsubscribe) if consent_first else (unsubscribe, reimport)
        reports = [ledger.ingest(lines([one]), NOW) for one in (first, second)]
        view = ledger.subject_view(person)
        consent_flags = [b for b in view["limit_breaches"] if b["fact"] == "consent-given"]
        if consent_first:
            assert all(r.ok for r in reports)
            assert [b["at"] for b in consent_flags] == ["2024-04-01T10:00:00+00:00"]
            assert "suppression list since 2024-03-01" in consent_flags[0]["limit"]
        else:
            assert reports[0].ok and not reports[1].ok
            assert consent_flags == []
        assert view["suppressed"] is True
