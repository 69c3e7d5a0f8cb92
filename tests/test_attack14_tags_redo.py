"""attack14: whether a policy ever kept sub-address tags, against listings the run sees
(docs/policy.md "[suppression]", docs/guarantees.md "Suppression").

Rule: once a policy with `keep_subaddress = false` is in force, a listing of alice+news@
made while tags were kept bars alice@ (the same address then) for marketing, from the
listing on, unless the person's own opt-in is in force. An ingest run decides with the
list as it knows it: a subject it loads from the store carries its listings into the run
(`RunListings`), so a CRM row the run decides after it saw the listing is refused, as
alice+news@ itself is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lifecycle.services import ingest
from lifecycle.services.ledger import Ledger
from lifecycle.store.settings import Settings
from tests.facts_builder import collected, fact, lines
from tests.suppression_setup import ADOPTED, HQIP, NOW
from tests.test_subaddress_switch import SWITCHED, tagged_alice_unsubscribes, variant


def the_run(address: str) -> list[str]:
    """The run: a fact on subscriber:alice dated before the CRM row (so alice is loaded and
    touched before it), and a CRM import of `address` after alice's unsubscribe."""
    return lines([
        collected("subscriber:alice", "2024-05-01T09:00:00Z", "enquiry", {"note": "hi"},
                  purpose="enquiries-complaints", basis="legitimate-interests",
                  category="contact", id="run-alice"),
        fact("consent-given", "crm:0", "2024-06-01T00:00:00Z", purpose="direct-marketing",
             method="crm-import", id="run-crm-consent"),
        collected("crm:0", "2024-06-01T09:00:00Z", "crm-row", {"email": address},
                  source="third-party", id="run-crm-row"),
    ])


def _ingest_with_the_other_process_before_the_first_save(
        backend: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        address: str, switch_back: bool = True) -> tuple[Any, list[Any]]:
    with Ledger(backend) as setup:
        setup.adopt_policy(HQIP, ADOPTED)  # keep_subaddress = false; none ever kept tags
    original = ingest.save_then_destroy
    calls = {"n": 0}

    def other_process_first(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:  # the run applied its batch (and read the list): not saved yet
            with Ledger(backend) as other:
                other.adopt_policy(variant(tmp_path, "2023-12", keep=True), ADOPTED)
                tagged_alice_unsubscribes(other)
                if switch_back:  # every policy since the run began then agrees that
                    # alice@ is alice+news@ from the listing on
                    other.adopt_policy(variant(tmp_path, "2024-04", keep=False), SWITCHED)
        return original(*args, **kwargs)

    monkeypatch.setattr(ingest, "save_then_destroy", other_process_first)
    with Ledger(backend) as run:
        report = run.ingest(the_run(address), NOW)
    with Ledger(backend) as reader:
        breaches = reader.subject_view("crm:0")["limit_breaches"] if report.ok else []
    assert calls["n"] >= 2, "the run's batch was not redone"
    return report, breaches


def test_control_the_tagged_address_itself_is_refused_after_the_redo(
        backend: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The redo reloads subscriber:alice, listed meanwhile as alice+news@ under a keep-tags
    policy: the CRM row of alice+news@ dated after the listing is refused."""
    report, _ = _ingest_with_the_other_process_before_the_first_save(
        backend, tmp_path, monkeypatch, "alice.smith+news@example.org")
    assert [r.fact_id for r in report.rejected] == ["run-crm-row"], report.as_dict()


@pytest.mark.parametrize("switch_back", [True, False])
def test_the_untagged_address_is_refused_after_the_redo_too(
        backend: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        switch_back: bool) -> None:
    """Same run, the CRM row holds alice@ (the same address under the run's policy, which
    drops tags): it is refused like alice+news@, not accepted (as
    tests/test_subaddress_switch_race.py expects when the listing is made before the run
    reads the list). Without the switch back the accepted row is not even flagged on read
    (the latest policy keeps tags)."""
    report, breaches = _ingest_with_the_other_process_before_the_first_save(
        backend, tmp_path, monkeypatch, "Alice.Smith@example.org", switch_back)
    assert [r.fact_id for r in report.rejected] == ["run-crm-row"], (
        report.as_dict(), breaches)


def test_a_listing_made_between_batches_under_a_keep_tags_policy_bars_alice_too(
        backend: Settings, tmp_path: Path) -> None:
    """No conflict needed: the run's first batch (BATCH_LINES facts) checks a CRM row, so
    it reads the list (empty; no policy ever kept tags). Between its batches another
    process adopts a keep-tags policy, lists alice+news@ and goes back to dropping tags.
    The second batch touches subscriber:alice, then decides a CRM row of alice@ dated after
    the listing: refused, as the one of alice+news@ in the same batch is."""
    with Ledger(backend) as setup:
        setup.adopt_policy(HQIP, ADOPTED)
    first = [fact("consent-given", "crm:early", "2023-02-01T00:00:00Z",
                  purpose="direct-marketing", method="crm-import", id="early-consent"),
             collected("crm:early", "2023-02-01T09:00:00Z", "crm-row",
                       {"email": "bob@example.org"}, source="third-party", id="early-row")]
    filler = [fact("consent-given", "filler", f"2023-03-01T00:{n // 60:02d}:{n % 60:02d}Z",
                   purpose="website-analytics", method="cookie-banner", id=f"fill-{n}")
              for n in range(ingest.BATCH_LINES - len(first))]
    second = [
        collected("subscriber:alice", "2024-05-01T09:00:00Z", "enquiry", {"note": "hi"},
                  purpose="enquiries-complaints", basis="legitimate-interests",
                  category="contact", id="run-alice"),
        *(item for n, address in enumerate(("Alice.Smith@example.org",
                                            "alice.smith+news@example.org"))
          for item in (fact("consent-given", f"crm:{n}", "2024-06-01T00:00:00Z",
                            purpose="direct-marketing", method="crm-import",
                            id=f"crm-consent-{n}"),
                       collected(f"crm:{n}", "2024-06-01T09:00:00Z", "crm-row",
                                 {"email": address}, source="third-party",
                                 id=f"crm-row-{n}")))]
    batches = {"n": 0}

    def between_batches(_: int) -> None:
        batches["n"] += 1
        if batches["n"] == 1:
            with Ledger(backend) as other:
                other.adopt_policy(variant(tmp_path, "2023-12", keep=True), ADOPTED)
                tagged_alice_unsubscribes(other)
                other.adopt_policy(variant(tmp_path, "2024-04", keep=False), SWITCHED)

    with Ledger(backend) as run:
        report = run.ingest(lines([*first, *filler, *second]), NOW, between_batches)
    assert batches["n"] == 2
    assert sorted(r.fact_id for r in report.rejected) == ["crm-row-0", "crm-row-1"], (
        report.as_dict())
