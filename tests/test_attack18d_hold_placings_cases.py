"""Attack 18d: single cases against legal holds kept per placing (commit 4a21332), on
SQLite and PostgreSQL (the `ledger` fixture).

Rules: docs/guarantees.md "Restrictions and legal holds" (each placing counts on its own;
a placing ends at the first release of its id dated at or after it, whichever arrived
first), "What cannot be undone", "A fact that only makes sense after another ... is
rejected ... Once the earlier fact has arrived, submitting the rejected line again records
it"; docs/facts.md `legal-hold-released` ("a hold placed before and in force at `at`");
the hold-reason rule of 4a21332 (a placing's reason is kept under an erasure request only
while that placing is in force at the request's time); README `notifications list` (Art 19:
every recipient a share sent an erased record by name, whatever the share's date).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from lifecycle.services.ledger import Ledger
from tests.facts_builder import collected, fact, lines

CONFIG = Path(__file__).resolve().parents[1] / "config"
NOW = datetime(2026, 6, 1, tzinfo=UTC)


def adopt(ledger: Ledger) -> None:
    ledger.adopt_policy(CONFIG / "hqip.toml", datetime(2019, 1, 1, tzinfo=UTC))


def enquiry(who: str, at: str, record: str) -> dict[str, Any]:
    return collected(who, at, record, {"name": f"Zq{record}Qv"},
                     purpose="enquiries-complaints", basis="legitimate-interests")


def ingest(ledger: Ledger, *facts: dict[str, Any]) -> list[tuple[int, str]]:
    report = ledger.ingest(lines(facts), NOW)
    return [(r.line, r.reason) for r in report.rejected]


def holds(ledger: Ledger, who: str) -> list[tuple[str, str, str | None, str | None, str]]:
    return sorted((h["scope"], h["placed_at"], h["until"], h["released_at"], h["reason"])
                  for h in ledger.subject_view(who)["holds"])


def same_instant(who: str) -> list[dict[str, Any]]:
    """Hold H placed twice at one instant: on marketing until 1 Mar (short) and on
    enquiries with no end (long); an erasure request on 1 Apr."""
    return [
        enquiry(who, "2023-01-01T00:00:00Z", "enq"),
        fact("legal-hold-placed", who, "2023-02-01T00:00:00Z", hold="H",
             scope="direct-marketing", reason="ZqShortQv", until="2023-03-01T00:00:00Z"),
        fact("legal-hold-placed", who, "2023-02-01T00:00:00Z", hold="H",
             scope="enquiries-complaints", reason="ZqLongQv"),
        fact("erasure-requested", who, "2023-04-01T00:00:00Z", request=f"ER-{who}"),
    ]


def test_an_expired_placings_reason_goes_though_another_placing_shares_its_instant(
        ledger: Ledger) -> None:
    """Two placings of H at one instant (one until 1 Mar, one open); an erasure request on
    1 Apr finds only the open one in force: the enquiry is kept, the open placing's reason
    kept, the expired placing's reason erased (each placing counts on its own)."""
    adopt(ledger)
    who = "m:a18d-instant"
    assert ingest(ledger, *same_instant(who)) == []
    view = ledger.subject_view(who)
    assert [r["data"] for r in view["records"]] == [{"name": "ZqenqQv"}]
    assert holds(ledger, who) == [
        ("direct-marketing", "2023-02-01T00:00:00+00:00", "2023-03-01T00:00:00+00:00", None,
         "erased"),
        ("enquiries-complaints", "2023-02-01T00:00:00+00:00", None, None, "ZqLongQv")]


def test_same_instant_placings_leave_one_state_in_either_arrival_order(
        ledger: Ledger) -> None:
    """The facts of `same_instant` for two subjects: all at once (fact-time order), and
    with the open placing recorded after the request (a late placing, which keeps its
    own reason). The expired placing's reason must read alike in both (erased: it was not
    in force at the request's time)."""
    adopt(ledger)
    first, second = "m:a18d-inst-1", "m:a18d-inst-2"
    assert ingest(ledger, *same_instant(first)) == []
    late = same_instant(second)
    assert ingest(ledger, late[0], late[1], late[3]) == []
    assert ingest(ledger, late[2]) == []
    expired = [h for h in holds(ledger, second) if h[0] == "direct-marketing"]
    assert expired[0][4] == "erased"  # in this order it is erased
    assert [h for h in holds(ledger, first) if h[0] == "direct-marketing"] == expired


def test_a_release_after_the_placings_until_is_rejected(ledger: Ledger) -> None:
    """Hold H placed 1 Feb until 1 Mar; a release dated 1 Apr finds no placing of H in
    force at its time (docs/facts.md: "a hold placed before and in force at `at`"): it is
    rejected with the reason, and the placing shows no release."""
    adopt(ledger)
    who = "m:a18d-until"
    assert ingest(ledger, enquiry(who, "2023-01-01T00:00:00Z", "enq"),
                  fact("legal-hold-placed", who, "2023-02-01T00:00:00Z", hold="H",
                       scope="all", reason="claim", until="2023-03-01T00:00:00Z")) == []
    rejected = ingest(ledger, fact("legal-hold-released", who, "2023-04-01T00:00:00Z",
                                   hold="H"))
    assert [line for line, _ in rejected] == [1]
    assert "no legal hold 'H' in force" in rejected[0][1]
    assert [h[3] for h in holds(ledger, who)] == [None]


def test_a_release_rejected_before_its_placing_lands_on_resubmission(ledger: Ledger) -> None:
    """H placed 1 Feb (enquiries), released 1 Mar, placed again 1 Apr (all), released
    1 May. The second release arriving first (only the first placing and its release
    known) is rejected; once the second placing arrives it lands, ends only the second
    placing, and an erasure request of 15 Apr (second placing in force) keeps the enquiry
    and the second reason, erasing the first's."""
    adopt(ledger)
    who = "m:a18d-resubmit"
    second_release = fact("legal-hold-released", who, "2023-05-01T00:00:00Z", hold="H")
    assert ingest(ledger, enquiry(who, "2023-01-01T00:00:00Z", "enq"),
                  fact("legal-hold-placed", who, "2023-02-01T00:00:00Z", hold="H",
                       scope="enquiries-complaints", reason="ZqFirstQv"),
                  fact("legal-hold-released", who, "2023-03-01T00:00:00Z", hold="H")) == []
    rejected = ingest(ledger, second_release)
    assert len(rejected) == 1 and "no legal hold 'H' in force" in rejected[0][1]
    assert ingest(ledger, fact("legal-hold-placed", who, "2023-04-01T00:00:00Z", hold="H",
                               scope="all", reason="ZqSecondQv"),
                  fact("erasure-requested", who, "2023-04-15T00:00:00Z",
                       request="ER-resub")) == []
    assert ingest(ledger, second_release) == []
    assert holds(ledger, who) == [
        ("all", "2023-04-01T00:00:00+00:00", None, "2023-05-01T00:00:00+00:00",
         "ZqSecondQv"),
        ("enquiries-complaints", "2023-02-01T00:00:00+00:00", None,
         "2023-03-01T00:00:00+00:00", "erased")]
    assert [r["data"] for r in ledger.subject_view(who)["records"]] == [{"name": "ZqenqQv"}]


@pytest.mark.parametrize("order", [(0, 1, 2, 3), (0, 2, 1, 3), (2, 0, 3, 1)])
def test_a_placing_at_its_releases_instant_is_ended_by_it_in_any_order(
        ledger: Ledger, order: tuple[int, ...]) -> None:
    """H placed 1 Feb, released 1 Mar; placed again (all) at the release's own instant:
    the release is the first at or after it, so it ends it at once, whatever the line or
    arrival order; an erasure request on 1 Apr erases the enquiry and both reasons."""
    adopt(ledger)
    who = f"m:a18d-tie-{''.join(map(str, order))}"
    facts = [enquiry(who, "2023-01-01T00:00:00Z", "enq"),
             fact("legal-hold-placed", who, "2023-02-01T00:00:00Z", hold="H",
                  scope="enquiries-complaints", reason="ZqOneQv"),
             fact("legal-hold-released", who, "2023-03-01T00:00:00Z", hold="H"),
             fact("legal-hold-placed", who, "2023-03-01T00:00:00Z", hold="H",
                  scope="all", reason="ZqTwoQv")]
    for index in order:
        rejected = ingest(ledger, facts[index])
        if rejected:  # the release before its placing: re-submitted after
            assert index == 2
            facts.append(facts[index])
    for item in facts[4:]:
        assert ingest(ledger, item) == []
    assert ingest(ledger, fact("erasure-requested", who, "2023-04-01T00:00:00Z",
                               request=f"ER-{who}")) == []
    assert holds(ledger, who) == [
        ("all", "2023-03-01T00:00:00+00:00", None, "2023-03-01T00:00:00+00:00", "erased"),
        ("enquiries-complaints", "2023-02-01T00:00:00+00:00", None,
         "2023-03-01T00:00:00+00:00", "erased")]
    assert [r["data"] for r in ledger.subject_view(who)["records"]] == ["erased"]


def test_an_erasure_request_at_a_placings_until_erases_what_it_held(ledger: Ledger) -> None:
    """A placing is in force up to (not at) its `until`: a request dated exactly at it
    erases the enquiry and the reason; a request one second earlier (another subject)
    keeps both."""
    adopt(ledger)
    for who, at, kept in (("m:a18d-at-until", "2023-03-01T00:00:00Z", False),
                          ("m:a18d-before-until", "2023-02-28T23:59:59Z", True)):
        assert ingest(ledger, enquiry(who, "2023-01-01T00:00:00Z", "enq"),
                      fact("legal-hold-placed", who, "2023-02-01T00:00:00Z", hold="H",
                           scope="all", reason="ZqUntilQv", until="2023-03-01T00:00:00Z"),
                      fact("erasure-requested", who, at, request=f"ER-{who}")) == []
        data = [r["data"] for r in ledger.subject_view(who)["records"]]
        reasons = [h[4] for h in holds(ledger, who)]
        assert (data, reasons) == (([{"name": "ZqenqQv"}], ["ZqUntilQv"]) if kept
                                   else (["erased"], ["erased"]))


def test_art19_names_a_recipient_of_a_share_by_name_dated_after_a_late_request(
        ledger: Ledger) -> None:
    """An enquiry shared by name on 1 Mar (recorded first), then an erasure request dated
    1 Feb arrives and erases it: the recipient has an open Art 19 item (by name, whatever
    the share's date). The same by category: no item (a category share counts only if
    dated at or before the erasure)."""
    adopt(ledger)
    share = dict(recipient="IT service provider", role="processor", country="GB",
                 purpose="enquiries-complaints", basis="legitimate-interests")
    for who, what in (("m:a18d-by-name", {"records": ["enq"]}),
                      ("m:a18d-by-cat", {"categories": ["contact"]})):
        assert ingest(ledger, enquiry(who, "2023-01-01T00:00:00Z", "enq"),
                      fact("shared", who, "2023-03-01T00:00:00Z", **share, **what)) == []
        assert ingest(ledger, fact("erasure-requested", who, "2023-02-01T00:00:00Z",
                                   request=f"ER-{who}")) == []
        assert [r["data"] for r in ledger.subject_view(who)["records"]] == ["erased"]
    items = {(n["subject"], n["recipient"], tuple(n["records"]))
             for n in ledger.notifications(open_only=True)}
    assert items == {("m:a18d-by-name", "IT service provider", ("enq",))}


def test_the_dsar_export_lists_each_placing_as_of_its_date(ledger: Ledger) -> None:
    """H placed on surveys (1 Feb), released 1 Mar, placed again on all (1 Apr); erasure
    request 1 May keeps the enquiry under the second placing. The DSAR export as of 15 Feb
    lists the first placing only, not yet released; as of now both, with the first's
    reason erased (the request found it out of force) and the second's readable."""
    adopt(ledger)
    who = "m:a18d-dsar"
    assert ingest(ledger, enquiry(who, "2023-01-01T00:00:00Z", "enq"),
                  fact("legal-hold-placed", who, "2023-02-01T00:00:00Z", hold="H",
                       scope="surveys-feedback", reason="ZqOneQv"),
                  fact("legal-hold-released", who, "2023-03-01T00:00:00Z", hold="H"),
                  fact("legal-hold-placed", who, "2023-04-01T00:00:00Z", hold="H",
                       scope="all", reason="ZqTwoQv"),
                  fact("erasure-requested", who, "2023-05-01T00:00:00Z",
                       request="ER-dsar")) == []
    early = ledger.dsar_export(who, datetime(2023, 2, 15, tzinfo=UTC))["holds"]
    assert [(h["scope"], h["released_at"]) for h in early] == [("surveys-feedback", None)]
    late = ledger.dsar_export(who, NOW)["holds"]
    assert sorted((h["scope"], h["released_at"], h["reason"]) for h in late) == [
        ("all", None, "ZqTwoQv"),
        ("surveys-feedback", "2023-03-01T00:00:00+00:00", "erased")]
    assert [r["data"] for r in ledger.subject_view(who)["records"]] == [{"name": "ZqenqQv"}]


def test_the_refusal_cites_the_same_hold_whichever_of_two_same_instant_holds_came_first(
        ledger: Ledger) -> None:
    """Holds H and K, both on all purposes, placed at the same instant (1 Feb), arriving
    in either order in separate runs; an erasure request on 1 Apr refuses the enquiry.
    State is decided by fact time, not arrival (ties broken by something fixed, as
    consents' are by fact id): the refusal's ground names the same hold in both orders."""
    adopt(ledger)
    grounds = []
    for who, order in (("m:a18d-hk", ("H", "K")), ("m:a18d-kh", ("K", "H"))):
        assert ingest(ledger, enquiry(who, "2023-01-01T00:00:00Z", "enq")) == []
        for hold in order:
            assert ingest(ledger, fact("legal-hold-placed", who, "2023-02-01T00:00:00Z",
                                       hold=hold, scope="all", reason=f"Zq{hold}Qv",
                                       id=f"{who}-{hold}")) == []
        assert ingest(ledger, fact("erasure-requested", who, "2023-04-01T00:00:00Z",
                                   request=f"ER-{who}")) == []
        refusals = ledger.subject_view(who)["erasure_refusals"]
        assert [r["record"] for r in refusals] == ["enq"]
        grounds.append(refusals[0]["ground"])
    assert grounds[0] == grounds[1]


def test_the_dsar_html_does_not_call_an_expired_placing_in_force(ledger: Ledger) -> None:
    """H placed 1 Feb 2023 until 1 Mar 2023, never released: as of 2026 it is not in
    force (docs/guarantees.md: in force between placing and release, `until` ending it),
    so the person's export must not tell them it is 'Still in force'."""
    from lifecycle.services.dsar_render import render_export

    adopt(ledger)
    who = "m:a18d-dsar-until"
    assert ingest(ledger, enquiry(who, "2023-01-01T00:00:00Z", "enq"),
                  fact("legal-hold-placed", who, "2023-02-01T00:00:00Z", hold="H",
                       scope="all", reason="ZqUntilQv", until="2023-03-01T00:00:00Z")) == []
    html = render_export(ledger.dsar_export(who, NOW), "html")
    section = html[html.index("Legal holds</h2>"):]
    section = section[:section.index("</table>")]
    assert "1 March 2023" in section
    assert "Still in force" not in section
