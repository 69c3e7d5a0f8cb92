"""Attack 10: what held of the suppression listings with their intervals (commit 52d793a).

Rules (docs/guarantees.md "Suppression", "Processing limits and arrival order"): a
direct-marketing record of any subject holding an address is refused when dated while the
address was listed (given the facts known when it arrives), else kept and, when a listing
known later covers its time, flagged in its subject's `limit_breaches`; marketing uses of
it while listed are flagged too; a listing lifted by the person's own opt-in counts up to
the lift and not after; the list survives erasure and a rebuild; the DSAR export as of a
date counts only listings begun by then.
"""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta
from typing import Any

from lifecycle.aggregates.data_subject import fold_preferences
from lifecycle.domain.limits import Listing, listed_from
from lifecycle.services.cases.address_index import AddressIndex
from lifecycle.services.ledger import Ledger
from lifecycle.store.settings import Settings
from tests.facts_builder import collected, fact, lines, t
from tests.processes import run_together
from tests.suppression_setup import ADOPTED, HQIP, NOW, hqip  # noqa: F401 - hqip is a fixture

X = "xavier.listed@example.org"
KINDS = {"unsubscribed": "unsubscribed", "consent-given": "given", "objected": "objected"}


def listing_subject(subject: str, address: str, events: list[tuple[str, str]]
                    ) -> list[dict[str, Any]]:
    """A subscriber holding `address`, then (kind, at) events: unsubscribed, own opt-in
    (consent-given by subscribe-form) or a direct-marketing objection."""
    facts = [
        collected(subject, "2023-05-01T00:00:00Z", "newsletter", {"email": address},
                  id=f"{subject}-1"),
        fact("consent-given", subject, "2023-05-01T00:00:00Z", purpose="direct-marketing",
             method="subscribe-form", id=f"{subject}-2"),
    ]
    for n, (kind, at) in enumerate(events):
        extra = ({"purpose": "direct-marketing", "method": "subscribe-form"}
                 if kind == "consent-given" else
                 {"purpose": "direct-marketing"} if kind == "objected" else {})
        facts.append(fact(kind, subject, at, id=f"{subject}-e{n}", **extra))
    return facts


def listings_of(facts: list[dict[str, Any]]) -> list[Listing]:
    """The oracle: each subject's listings folded from its preference facts."""
    logs: dict[str, list[Any]] = {}
    for f in facts:
        if f["type"] in KINDS and f["subject"].startswith("s:"):
            kind = KINDS[f["type"]]
            logs.setdefault(f["subject"], []).append(
                (t(f["at"].replace("Z", "+00:00")), f["id"], kind, "direct-marketing",
                 f.get("method")))
    return [listing for log in logs.values() for listing in fold_preferences(log).listings]


def crm(subject: str, at: str, address: str = X) -> list[dict[str, Any]]:
    return [
        fact("consent-given", subject, "2023-01-02T00:00:00Z", purpose="direct-marketing",
             method="crm-import", id=f"{subject}-c"),
        collected(subject, at, "crm-row", {"email": address}, source="third-party",
                  id=f"{subject}-r"),
    ]


def collected_flagged(ledger: Ledger, subject: str) -> bool:
    return any(b["fact"] == "collected" for b in ledger.subject_view(subject)["limit_breaches"])


GRID = [f"2024-0{m}-01T00:00:00Z" for m in range(2, 9)]


def test_listings_split_into_random_runs_refuse_or_flag_exactly_the_rows_dated_while_listed(
        hqip: Ledger) -> None:
    """Two subjects list one address each with several listings, lifts and relistings
    (times on a coarse grid so facts share instants; fact ids in random order), CRM rows
    of other subjects dated on and between the grid; all split into random runs in random
    order. A row dated while listed (all facts known) is refused or flagged; one dated
    outside every listing is never flagged, and refused only when the facts known at its
    arrival listed it then (the lift came later: it lands when re-submitted). The same
    flags after `projections rebuild`."""
    rnd = random.Random(10)
    rows: list[tuple[str, str, bool]] = []  # subject, at, listed when it arrived
    refused: set[str] = set()
    everything: list[dict[str, Any]] = []
    for trial in range(6):
        address = f"trial{trial}@example.org"
        facts: list[dict[str, Any]] = []
        for who in ("a", "c"):
            events = [(rnd.choice(["unsubscribed", "consent-given", "objected",
                                   "consent-given"]), rnd.choice(GRID))
                      for _ in range(rnd.randint(1, 5))]
            subject = f"s:{who}{trial}"
            made = listing_subject(subject, address, events)
            for f in made[2:]:
                f["id"] = f"{subject}-{rnd.randint(0, 99):02d}-{f['id']}"
            facts += made
        crms: list[dict[str, Any]] = []
        for j in range(3):
            crms += crm(f"crm:{trial}-{j}", rnd.choice([*GRID, "2024-03-15T00:00:00Z"]),
                        address)
        first = [f for f in facts + crms if f["id"].endswith(("-1", "-2", "-c"))]
        rest = [f for f in facts + crms if f not in first]
        rnd.shuffle(rest)
        runs, current = [first], []
        for f in rest:
            current.append(f)
            if rnd.random() < 0.4:
                runs.append(current)
                current = []
        runs.append(current)
        known: list[dict[str, Any]] = []
        for run in runs:
            known += run
            for f in run:
                if f["id"].endswith("-r"):
                    at = t(f["at"].replace("Z", "+00:00"))
                    rows.append((f["subject"], f["at"],
                                 listed_from(listings_of(known), at) is not None))
            report = hqip.ingest(lines(run), NOW)
            refused |= {r.fact_id for r in report.rejected}
        everything += facts
        assert not {r for r in refused if r.startswith("s:")}

    def check() -> None:
        for subject, at, listed_then in rows:
            trial = subject.split(":")[1].split("-")[0]
            listed = listed_from(listings_of([f for f in everything if f["subject"][3:]
                                              .startswith(trial)]),
                                 t(at.replace("Z", "+00:00"))) is not None
            if f"{subject}-r" in refused:
                assert listed_then, (subject, at)
            else:
                assert collected_flagged(hqip, subject) == listed, (subject, at, listed)

    check()
    hqip.rebuild_projections()
    check()


def test_marketing_uses_are_flagged_only_inside_the_intervals_and_as_of_a_date(
        hqip: Ledger) -> None:
    """Bob's CRM record holding X (kept, June 2023). Alice lists X from 1 January 2024,
    lifts it herself on 1 February, objects on 1 March. Bob's activities on the record are
    flagged at the listing instant and inside the intervals, not just before it, not at
    the lift instant, not between; the DSAR export as of a date inside the first interval
    or between the intervals flags only what is dated by then."""
    assert hqip.ingest(lines(crm("crm:bob", "2023-06-01T00:00:00Z")), NOW).ok
    assert hqip.ingest(lines(listing_subject("s:alice", X, [
        ("unsubscribed", "2024-01-01T00:00:00Z"), ("consent-given", "2024-02-01T00:00:00Z"),
        ("objected", "2024-03-01T00:00:00Z")])), NOW).ok
    times = ["2023-12-31T23:59:59Z", "2024-01-01T00:00:00Z", "2024-01-15T00:00:00Z",
             "2024-02-01T00:00:00Z", "2024-02-15T00:00:00Z", "2024-03-01T01:00:00+01:00",
             "2024-04-01T00:00:00Z"]
    assert hqip.ingest(lines([fact("activity", "crm:bob", at, record="crm-row",
                                   id=f"act-{n}") for n, at in enumerate(times)]), NOW).ok
    flagged = [(b["fact"], b["at"]) for b in hqip.subject_view("crm:bob")["limit_breaches"]]
    assert flagged == [("activity", "2024-01-01T00:00:00+00:00"),
                       ("activity", "2024-01-15T00:00:00+00:00"),
                       ("activity", "2024-03-01T01:00:00+01:00"),
                       ("activity", "2024-04-01T00:00:00+00:00")]
    for as_of, count in (("2023-12-31T23:59:59+00:00", 0), ("2024-01-15T12:00:00+00:00", 2),
                         ("2024-02-20T00:00:00+00:00", 2)):
        export = hqip.dsar_export("crm:bob", t(as_of))
        assert len(export["limit_breaches"]) == count, (as_of, export["limit_breaches"])
    assert "alice" not in json.dumps(hqip.subject_view("crm:bob")["limit_breaches"])


def test_listings_survive_the_listing_subjects_erasure_and_a_rebuild(hqip: Ledger) -> None:
    """Alice lists X, lifts it, lists it again, then asks for erasure; her own opt-in
    after that lifts it, and a late unsubscribe dated between lift and relisting moves the
    relisting's start. The listings stay, the same after `projections rebuild`, and rows
    of other subjects are refused inside them and accepted outside."""
    assert hqip.ingest(lines(listing_subject("s:alice", X, [
        ("unsubscribed", "2024-01-01T00:00:00Z"), ("consent-given", "2024-02-01T00:00:00Z"),
        ("unsubscribed", "2024-04-01T00:00:00Z")]) + [
        fact("erasure-requested", "s:alice", "2024-05-01T00:00:00Z", id="erase")]), NOW).ok
    assert hqip.ingest(lines([fact("consent-given", "s:alice", "2024-06-01T00:00:00Z",
                                   purpose="direct-marketing", method="subscribe-form",
                                   id="late-opt-in")]), NOW).ok
    assert hqip.ingest(lines([fact("unsubscribed", "s:alice", "2024-03-01T00:00:00Z",
                                   id="late-unsub")]), NOW).ok
    expected = [(t("2024-01-01T00:00:00+00:00"), t("2024-02-01T00:00:00+00:00")),
                (t("2024-03-01T00:00:00+00:00"), t("2024-06-01T00:00:00+00:00"))]

    def listings() -> list[Listing]:
        hqip.projections.catch_up()
        return sorted(listing for by_subject in hqip.suppression_listings().values()
                      for found in by_subject.values() for listing in found)

    assert set(listings()) == set(expected)
    hqip.rebuild_projections()
    assert set(listings()) == set(expected)
    for n, (at, refused) in enumerate([("2024-01-15T00:00:00Z", True),
                                       ("2024-02-15T00:00:00Z", False),
                                       ("2024-03-01T00:00:00Z", True),
                                       ("2024-06-01T00:00:00Z", False)]):
        report = hqip.ingest(lines(crm(f"crm:{n}", at)), NOW)
        assert (report.rejected != []) == refused, (at, report.as_dict())
    assert AddressIndex(hqip).find(X).suppressed is False  # lifted: not listed now


def test_one_file_with_offsets_at_the_lift_instant_lands_whole(hqip: Ledger) -> None:
    """A CRM row dated at the very instant of the listing subject's own opt-in, written
    with another UTC offset, on a line before the opt-in in the same file: not listed at
    that instant (the lift ends the listing), so the file lands whole and nothing is
    flagged, whichever fact id sorts first."""
    for n, (row_at, lift_at, ids) in enumerate([
            ("2024-04-01T02:00:00+02:00", "2024-04-01T00:00:00Z", ("z", "a")),
            ("2024-03-31T23:00:00-01:00", "2024-04-01T00:00:00Z", ("a", "z")),
            ("2024-04-01T00:00:00Z", "2024-03-31T20:00:00-04:00", ("0", "9"))]):
        alice, address = f"s:alice-{n}", f"offset{n}@example.org"
        assert hqip.ingest(lines(listing_subject(alice, address, [
            ("unsubscribed", "2024-03-01T00:00:00Z")])), NOW).ok
        report = hqip.ingest(lines([
            fact("consent-given", f"crm:{n}", "2023-01-02T00:00:00Z",
                 purpose="direct-marketing", method="crm-import", id=f"{n}-c"),
            collected(f"crm:{n}", row_at, "crm-row", {"email": address},
                      source="third-party", id=f"{n}-{ids[0]}"),
            fact("consent-given", alice, lift_at, purpose="direct-marketing",
                 method="subscribe-form", id=f"{n}-{ids[1]}")]), NOW)
        assert report.ok, report.as_dict()
        assert not collected_flagged(hqip, f"crm:{n}")


def test_two_processes_ingesting_listings_and_rows_at_once(backend: Settings) -> None:
    """Real processes at once: two listing subjects' files (overlapping and disjoint
    intervals, lifts) and two CRM files of rows every three days across them (some at
    the boundaries). Each row is refused only when dated while listed; a kept row is
    flagged exactly when dated while listed; the same after a rebuild."""
    with Ledger(backend) as ledger:
        ledger.adopt_policy(HQIP, ADOPTED)
    work = backend.home.parent
    a = listing_subject("s:a", X, [("unsubscribed", "2024-02-01T00:00:00Z"),
                                   ("consent-given", "2024-04-01T00:00:00Z"),
                                   ("objected", "2024-07-01T00:00:00Z")])
    c = listing_subject("s:c", X, [("unsubscribed", "2024-02-15T00:00:00Z"),
                                   ("consent-given", "2024-05-15T00:00:00Z")])
    start = t("2024-01-20T00:00:00+00:00")
    times = [(start + timedelta(days=3 * i)).isoformat() for i in range(60)]
    times += ["2024-02-01T00:00:00+00:00", "2024-04-01T00:00:00+00:00",
              "2024-05-15T00:00:00+00:00", "2024-07-01T00:00:00+00:00"]
    rows = [crm(f"crm:{i}", at) for i, at in enumerate(times)]
    files = {"a": a, "c": c,
             "crm1": [f for row in rows[::2] for f in row],
             "crm2": [f for row in rows[1::2] for f in row]}
    for name, facts in files.items():
        (work / f"{name}.jsonl").write_text("\n".join(lines(facts)) + "\n")
    done = run_together(backend, [["-m", "lifecycle", "ingest", "--json",
                                   str(work / f"{name}.jsonl")] for name in files], 120)
    refused: set[str] = set()
    for process in done:
        assert process.returncode in (0, 1), process.stderr
        refused |= {r["fact"] for r in json.loads(process.stdout).get("rejections", [])}
    assert not {r for r in refused if not r.endswith("-r")}
    listings = listings_of(a + c)
    with Ledger(backend) as ledger:
        for rebuilt in (False, True):
            if rebuilt:
                ledger.rebuild_projections()
            for i, at in enumerate(times):
                listed = listed_from(listings, datetime.fromisoformat(at)) is not None
                if f"crm:{i}-r" in refused:
                    assert listed, at
                else:
                    assert collected_flagged(ledger, f"crm:{i}") == listed, (at, rebuilt)
