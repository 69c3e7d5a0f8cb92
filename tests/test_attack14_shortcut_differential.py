"""attack14: the "nothing listed" shortcut never changes a decision (docs/guarantees.md
"Suppression", docs/performance.md).

Rule: a direct-marketing value (collected or rectified) holding an address, in any
spelling, that is on the suppression list at the value's time is refused unless the
person's own opt-in is in force then; arriving before the listing it is kept and flagged
in `limit_breaches`. Listings come from an unsubscribe, a direct-marketing objection or an
exclusion, survive the listing subject's erasure, and a lift by the person's own opt-in
ends them. Ingest skips hashing while neither the subject, nor the run, nor the store
lists an address: with and without that shortcut, the same facts split into the same runs
give the same refusals and the same flags.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lifecycle.domain.errors import SubjectNotFound
from lifecycle.services.ingest import FactApplier
from lifecycle.services.ledger import Ledger
from lifecycle.store.settings import Settings
from tests.facts_builder import collected, fact, lines
from tests.suppression_setup import ADOPTED, HQIP, NOW

A = "s:alice"
SPELLINGS = ["Alice.Smith@Example.org", "alice.smith+crm@example.org",
             "mailto:alice.smith@example.org", "Alice <ALICE.SMITH@example.org>",
             "\uff41lice.smith@example.org", "ali\u200bce.smith@example.org",
             "bob@example.org"]
DAYS = ["2024-01-10T09:00:00Z", "2024-03-10T09:00:00Z", "2024-05-10T09:00:00Z",
        "2024-07-10T09:00:00Z", "2024-09-10T09:00:00Z"]


def alice(how: str, listed_at: str, after: str | None) -> list[dict[str, Any]]:
    """Alice holds the address, then lists it by `how`; `after` is "erased" (her record
    erased afterwards), "lifted" (her own opt-in afterwards) or None."""
    listing = {"unsubscribed": fact("unsubscribed", A, listed_at, id="a-list"),
               "objected": fact("objected", A, listed_at, purpose="direct-marketing",
                                id="a-list"),
               "excluded": fact("excluded", A, listed_at, reason="asked us", id="a-list")}
    facts = [collected(A, "2023-05-02T09:00:00Z", "newsletter",
                       {"email": "alice.smith@example.org"}, id="a-1"),
             fact("consent-given", A, "2023-05-02T09:00:00Z", purpose="direct-marketing",
                  method="subscribe-form", id="a-2"),
             listing[how]]
    if after == "erased":
        facts.append(fact("erasure-requested", A, "2024-08-01T09:00:00Z", id="a-erase"))
    elif after == "lifted":
        facts.append(fact("consent-given", A, "2024-08-01T09:00:00Z",
                          purpose="direct-marketing", method="subscribe-form", id="a-lift"))
    return facts


def crm(n: int, at: str, address: str, method: str, rectify: str | None,
        rectify_at: str) -> list[dict[str, Any]]:
    subject = f"crm:{n}"
    facts = [fact("consent-given", subject, "2023-01-02T00:00:00Z",
                  purpose="direct-marketing", method=method, id=f"c{n}-1"),
             collected(subject, at, "crm-row", {"contact": {"Email": address}},
                       source="third-party", id=f"c{n}-2")]
    if rectify is not None:
        facts.append(fact("rectified", subject, max(at, rectify_at), record="crm-row",
                          data={"contact": {"Email": rectify}}, id=f"c{n}-3"))
    return facts


def outcome(home: Any, runs: list[list[dict[str, Any]]], shortcut: bool,
            monkeypatch: pytest.MonkeyPatch, refs: list[str]) -> list[Any]:
    settings_ = Settings(home=home, database_url=None, master_key=None,
                         master_key_file=home / "master.key")
    with monkeypatch.context() as patch:
        if not shortcut:
            patch.setattr(FactApplier, "_nothing_listed", lambda self, s: False)
        with Ledger(settings_) as ledger:
            ledger.adopt_policy(HQIP, ADOPTED)
            reports = [sorted((r.fact_id or "", r.reason)
                              for r in ledger.ingest(lines(run), NOW).rejected)
                       for run in runs]
            views: list[Any] = []
            for ref in refs:
                try:
                    views.append(ledger.subject_view(ref)["limit_breaches"])
                except SubjectNotFound:
                    views.append(None)
    return [reports, views]


row = st.tuples(st.sampled_from(DAYS), st.sampled_from(SPELLINGS),
                st.sampled_from(["crm-import", "crm-import", "subscribe-form"]),
                st.one_of(st.none(), st.sampled_from(SPELLINGS)), st.sampled_from(DAYS))


@settings(max_examples=10, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(how=st.sampled_from(["unsubscribed", "objected", "excluded"]),
       listed_at=st.sampled_from(DAYS), after=st.sampled_from([None, "erased", "lifted"]),
       rows=st.lists(row, min_size=1, max_size=3), split=st.integers(0, 9),
       alice_where=st.sampled_from(["first", "last", "own-run"]))
def test_the_shortcut_decides_as_hashing_every_address_would(
        tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch,
        how: str, listed_at: str, after: str | None, rows: list[Any], split: int,
        alice_where: str) -> None:
    """Listings by unsubscribe, objection or exclusion, then erased or lifted; CRM rows in
    any spelling, rectified or not, with a consent by others or the person's own; all in
    one order, cut into two runs anywhere (or Alice alone in a later run): the shortcut
    and always hashing refuse and flag the same (SQLite)."""
    crm_facts = [item for n, (at, address, method, rectify, rectify_at) in enumerate(rows)
                 for item in crm(n, at, address, method, rectify, rectify_at)]
    alice_facts = alice(how, listed_at, after)
    if alice_where == "own-run":
        runs = [crm_facts, alice_facts]
    else:
        facts = ([*alice_facts, *crm_facts] if alice_where == "first"
                 else [*crm_facts, *alice_facts])
        cut = min(split, len(facts))
        runs = [facts[:cut], facts[cut:]]
    refs = [A, *(f"crm:{n}" for n in range(len(rows)))]
    results = [outcome(tmp_path_factory.mktemp("store"), runs, shortcut, monkeypatch, refs)
               for shortcut in (True, False)]
    assert results[0] == results[1]


def test_a_store_holding_only_an_erased_subjects_listing_still_bars(
        tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Alice listed her address and was then erased: the store's list is not empty
    (suppression survives erasure), so a later run's CRM row of her address dated after
    the listing is refused, with the shortcut as without it."""
    runs = [alice("unsubscribed", DAYS[1], "erased"),
            crm(0, DAYS[2], "ALICE.SMITH+x@example.org", "crm-import", None, DAYS[2])]
    for shortcut in (True, False):
        reports, _ = outcome(tmp_path_factory.mktemp("store"), runs, shortcut, monkeypatch,
                             [A, "crm:0"])
        assert [fid for fid, _ in reports[1]] == ["c0-2"], reports
