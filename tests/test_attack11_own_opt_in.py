"""Attack 11: only the person's own opt-in lifts a listing (commits 0740f9f, 9350ccf).

Rules (docs/policy.md "[suppression]"; docs/guarantees.md "Suppression", "Processing
limits and arrival order"; the commit: a direct-marketing consent-given "records whether
the policy in force counted its method as the person's own; one that did not is a consent
like any other but lifts nothing"):

- a suppressed address is never accepted for direct marketing at a fact time when it was
  listed, unless that subject's own opt-in is in force then;
- a consent recorded as not the person's own stays so: a later policy does not turn it
  into an opt-in after the fact (nor drop its flag in `limit_breaches`);
- a consent by others "lifts no listing": it does not take away the person's own opt-in
  either (nobody withdrew it).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from lifecycle.aggregates import data_subject
from lifecycle.aggregates.data_subject import register
from lifecycle.domain import limits
from lifecycle.services.ledger import Ledger
from tests.facts_builder import collected, fact, lines
from tests.suppression_setup import ADOPTED, HQIP, NOW, hqip  # noqa: F401 - fixture

X = "xavier.shared@example.org"


def variant(tmp_path: Path, version: str, methods: list[str]) -> Path:
    """config/hqip.toml with another version and other resubscribe_methods."""
    text = HQIP.read_text()
    head, marker, _ = text.partition("[suppression]")
    assert marker
    path = tmp_path / f"hqip-{version}.toml"
    path.write_text(head.replace('version = "2023-11"', f'version = "{version}"')
                    + "[suppression]\nkeep_subaddress = false\n"
                    + f"resubscribe_methods = {json.dumps(methods)}\n")
    return path


def alice_lists_x() -> list[dict[str, Any]]:
    """Alice holds X and unsubscribes on 1 March 2024: X is listed from then on."""
    return [
        collected("s:alice", "2023-05-01T00:00:00Z", "newsletter", {"email": X}),
        fact("consent-given", "s:alice", "2023-05-01T00:00:00Z",
             purpose="direct-marketing", method="subscribe-form"),
        fact("unsubscribed", "s:alice", "2024-03-01T00:00:00Z"),
    ]


def consent_flags(ledger: Ledger, reference: str) -> list[dict[str, Any]]:
    return [b for b in ledger.subject_view(reference)["limit_breaches"]
            if b["fact"] == "consent-given"]


def test_a_consent_by_others_stays_one_under_a_later_policy(ledger: Ledger,
                                                             tmp_path: Path) -> None:
    """Under a policy whose resubscribe_methods is [subscribe-form], Bob (who holds X in
    an enquiry) is given a direct-marketing consent by crm-import dated 1 May 2024; it
    arrives before Alice's listing of X (1 March), so it is kept, recorded as not Bob's
    own opt-in and flagged. A later policy adds crm-import to resubscribe_methods. The
    consent it recorded is still not Bob's own opt-in: its flag stays, and Bob's marketing
    row holding X dated 1 June 2024 (while X is listed, no own opt-in of Bob's) is
    refused."""
    ledger.adopt_policy(variant(tmp_path, "2023-12", ["subscribe-form"]), ADOPTED)
    assert ledger.ingest(lines([
        collected("s:bob", "2023-06-01T00:00:00Z", "enquiry", {"email": X},
                  purpose="enquiries-complaints", basis="legitimate-interests"),
        fact("consent-given", "s:bob", "2024-05-01T00:00:00Z", purpose="direct-marketing",
             method="crm-import"),
    ]), NOW).ok
    assert ledger.ingest(lines(alice_lists_x()), NOW).ok
    before = consent_flags(ledger, "s:bob")
    assert [b["at"] for b in before] == ["2024-05-01T00:00:00+00:00"]  # holds

    ledger.adopt_policy(variant(tmp_path, "2024-08", ["subscribe-form", "crm-import"]),
                        datetime(2024, 8, 1, tzinfo=UTC))
    after = consent_flags(ledger, "s:bob")
    report = ledger.ingest(lines([
        collected("s:bob", "2024-06-01T00:00:00Z", "crm-row", {"email": X},
                  source="third-party")]), NOW)
    assert after == before, after
    assert [r.line for r in report.rejected] == [1], report.as_dict()


def test_a_later_consent_by_others_does_not_cancel_the_persons_own_opt_in(
        hqip: Ledger) -> None:  # noqa: F811
    """In fact-time order: Alice lists X (1 March 2024); Bob opts in himself
    (subscribe-form, 1 April); a CRM import gives Bob a consent by crm-import (1 May,
    accepted: Bob holds no address yet); Bob's own marketing record holding X is dated
    1 June. Bob's own opt-in was never withdrawn, so it is in force on 1 June and the
    record lands, as it does when the CRM consent is refused (Bob already holding X)."""
    assert hqip.ingest(lines(alice_lists_x()), NOW).ok
    steps = [
        fact("consent-given", "s:bob", "2024-04-01T00:00:00Z", purpose="direct-marketing",
             method="subscribe-form"),
        fact("consent-given", "s:bob", "2024-05-01T00:00:00Z", purpose="direct-marketing",
             method="crm-import"),
    ]
    for step in steps:
        assert hqip.ingest(lines([step]), NOW).ok  # holds
    report = hqip.ingest(lines([
        collected("s:bob", "2024-06-01T00:00:00Z", "newsletter", {"email": X})]), NOW)
    assert report.ok, report.as_dict()
    assert hqip.subject_view("s:bob")["limit_breaches"] == []


def test_many_consents_by_others_are_judged_in_one_fold(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A subject with 2,000 unsubscribes, each followed by a consent by others (a CRM that
    re-imports weekly, every import kept as it arrived before the unsubscribe): its
    limit_breaches (computed for every projection of it, subject show, the DSAR export
    and rebuild) fold the preference log once, not once per consent (was quadratic:
    2.4 s here for 2,000, 5.3 s for 3,000), and flag each."""
    subject = register("s:alice")
    base = datetime(2023, 6, 1, tzinfo=UTC)
    subject.give_consent("c", base, "direct-marketing", "subscribe-form", True)
    for i in range(2000):
        at = base + timedelta(hours=2 * i + 1)
        subject.give_consent(f"c{i}", at + timedelta(minutes=30), "direct-marketing",
                             "crm-import", False)
        subject.unsubscribe(f"u{i}", at, None, ["0" * 64])
    folds = []
    real_fold = data_subject.fold_preferences

    def counted(*args: Any, **kwargs: Any) -> Any:
        folds.append(1)
        return real_fold(*args, **kwargs)

    monkeypatch.setattr(data_subject, "fold_preferences", counted)
    monkeypatch.setattr(limits, "fold_preferences", counted)
    found = [b for b in limits.breaches(subject) if b["fact"] == "consent-given"]
    assert len(found) == 2000  # each is flagged
    assert len(folds) <= 1, len(folds)
