"""Attack 9b: the suppression list as it stood at a fact's time, however the facts are
split into runs.

Rules (docs/guarantees.md "Suppression": "Marketing data is checked against consent and
the list as they stood at its own time"; "Processing limits and arrival order": for a
history that breaks a limit the outcome depends on order in one way only: arriving after
the limit, the forbidden fact is rejected; arriving before it, it is kept and listed in
`limit_breaches`).
"""

from __future__ import annotations

from typing import Any


from lifecycle.services.ledger import Ledger
from tests.facts_builder import collected, fact, lines

from tests.suppression_setup import NOW, hqip  # noqa: F401 - hqip is a fixture


def alice_listed(tag: str) -> list[dict[str, Any]]:
    alice = f"s:alice-{tag}"
    return [
        collected(alice, "2023-05-02T09:00:00Z", "newsletter",
                  {"email": f"alice.{tag}@example.org"}, id=f"{tag}-1"),
        fact("consent-given", alice, "2023-05-02T09:00:00Z", purpose="direct-marketing",
             method="subscribe-form", id=f"{tag}-2"),
        fact("unsubscribed", alice, "2024-03-10T10:00:00Z", id=f"{tag}-3"),
    ]


def alice_opts_in_again(tag: str) -> dict[str, Any]:
    return fact("consent-given", f"s:alice-{tag}", "2024-08-01T10:00:00Z",
                purpose="direct-marketing", method="subscribe-form", id=f"{tag}-4")


def crm_row_while_listed(tag: str) -> list[dict[str, Any]]:
    """Another subject's CRM marketing row with Alice's address dated 1 May 2024: after
    her unsubscribe (10 March), before her own opt-in (1 August): forbidden at its time."""
    crm = f"crm:{tag}"
    return [
        fact("consent-given", crm, "2024-05-01T00:00:00Z", purpose="direct-marketing",
             method="crm-import", id=f"{tag}-5"),
        collected(crm, "2024-05-01T09:00:00Z", "crm-row",
                  {"email": f"alice.{tag}@example.org"}, source="third-party", id=f"{tag}-6"),
    ]


def test_a_row_dated_while_listed_is_refused_or_flagged_however_the_runs_are_split(
        hqip: Ledger) -> None:
    """The same facts in one run and split into runs: a CRM row dated while Alice's
    address was listed (before her own opt-in lifted it) is refused in one run (fact-time
    order). Ingested in a run after the opt-in, it arrives after the limit it breaks, so
    it is refused too ("the list as it stood at its own time"), or at the very least kept
    and listed in the CRM subject's `limit_breaches`; never accepted silently."""
    assert hqip.ingest(lines(alice_listed("one")), NOW).ok
    one = hqip.ingest(lines([alice_opts_in_again("one"), *crm_row_while_listed("one")]), NOW)
    assert [r.line for r in one.rejected] == [3], one.as_dict()  # holds today

    assert hqip.ingest(lines(alice_listed("two")), NOW).ok
    assert hqip.ingest(lines([alice_opts_in_again("two")]), NOW).ok
    split = hqip.ingest(lines(crm_row_while_listed("two")), NOW)
    flagged = [b for b in hqip.subject_view("crm:two")["limit_breaches"]
               if b["fact"] == "collected"]
    assert [r.line for r in split.rejected] == [2] or flagged, split.as_dict()
