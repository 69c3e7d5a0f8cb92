"""Suppression across subjects, whatever the arrival order (docs/guarantees.md,
"Processing limits and arrival order").

Subject A unsubscribes an address at t1, so it goes on the suppression list; subject B's
direct-marketing record holding that address is dated t2 after t1. Arriving after A's
unsubscribe, B's record is refused; arriving before it, it is kept and listed in B's
`limit_breaches` (the fact, its time, the record, the limit: no address, no other
subject), computed from the facts known in fact time, so the same whatever order they
arrived in, across runs and after a rebuild; B's own opt-in dated by t2 clears it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from lifecycle.services.ledger import Ledger
from lifecycle.store.settings import Settings
from tests.conftest import POSTGRES_URL, _admin_connect, require_postgres
from tests.facts_builder import collected, fact, lines
from tests.web_service import signed_in, start_service

HQIP = Path(__file__).resolve().parents[1] / "config" / "hqip.toml"
ADOPTED = datetime(2023, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 1, 1, tzinfo=UTC)
ADDRESS = "alice.smith@example.org"
A = "subscriber:alice"
B = "crm:alice"
UNSUBSCRIBED = "2024-03-10T10:00:00Z"
MARKETING_AT = "2024-06-01T09:00:00Z"
MASTER_KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="  # 32 bytes, base64
HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large,
          HealthCheck.function_scoped_fixture]


def a_holds_the_address() -> list[dict[str, Any]]:
    return [collected(A, "2023-05-02T09:00:00Z", "newsletter", {"email": ADDRESS}),
            fact("consent-given", A, "2023-05-02T09:00:00Z", purpose="direct-marketing",
                 method="subscribe-form")]


def b_consents_by_list_import() -> dict[str, Any]:
    """A consent that lets B's marketing in, but is not the person's own opt-in."""
    return fact("consent-given", B, "2024-01-01T09:00:00Z", purpose="direct-marketing",
                method="list-import")


def a_unsubscribes(at: str = UNSUBSCRIBED) -> dict[str, Any]:
    return fact("unsubscribed", A, at)


def b_marketing(at: str = MARKETING_AT, data: Any = None) -> dict[str, Any]:
    return collected(B, at, "crm-row", data or {"contact": {"Email": "Alice.Smith@Example.org"}},
                     source="third-party")


def b_opts_in(at: str) -> dict[str, Any]:
    return fact("consent-given", B, at, purpose="direct-marketing", method="subscribe-form")


def ingest(ledger: Ledger, *facts: dict[str, Any]) -> Any:
    return ledger.ingest(lines(facts), NOW)


def flagged(ledger: Ledger, reference: str = B) -> list[tuple[str, str | None, str]]:
    return [(b["fact"], b.get("record"), b["at"])
            for b in ledger.subject_view(reference)["limit_breaches"]]


def assert_no_personal_value(breaches: list[dict[str, Any]]) -> None:
    text = json.dumps(breaches).lower()
    assert "alice" not in text and "example" not in text and A not in text


def b_first_then_a(ledger: Ledger) -> None:
    """B's marketing (dated after A's unsubscribe) arrives first, then A's history."""
    ledger.adopt_policy(HQIP, ADOPTED)
    assert ingest(ledger, b_consents_by_list_import(), b_marketing()).accepted == 2
    assert ledger.subject_view(B)["limit_breaches"] == []
    report = ingest(ledger, *a_holds_the_address(), a_unsubscribes())
    assert report.ok and report.accepted == 3, report.as_dict()


def test_marketing_kept_before_another_subjects_unsubscribe_is_flagged(
        ledger: Ledger) -> None:
    """B's marketing record dated after A's unsubscribe of the address it holds, arriving
    before that unsubscribe, is kept and listed in B's limit_breaches: the fact, its time,
    the record and the limit direct-marketing-stopped naming the suppression list, with no
    address and no word of A."""
    b_first_then_a(ledger)
    breaches = ledger.subject_view(B)["limit_breaches"]
    assert [(b["fact"], b["record"], b["at"]) for b in breaches] == [
        ("collected", "crm-row", "2024-06-01T09:00:00+00:00")]
    assert breaches[0]["limit"].startswith("limit direct-marketing-stopped: ")
    assert "suppression list" in breaches[0]["limit"]
    assert "since 2024-03-10 " in breaches[0]["limit"]  # the day, not the other person's time
    assert_no_personal_value(breaches)
    assert ledger.subject_view(A)["limit_breaches"] == []


def test_in_arrival_order_the_same_marketing_is_refused_and_nothing_is_flagged(
        ledger: Ledger) -> None:
    """The counterpart: A's unsubscribe first, B's later-dated marketing is refused, and
    B has nothing flagged."""
    ledger.adopt_policy(HQIP, ADOPTED)
    assert ingest(ledger, *a_holds_the_address(), a_unsubscribes()).ok
    report = ingest(ledger, b_consents_by_list_import(), b_marketing())
    assert report.accepted == 1 and len(report.rejected) == 1
    assert "suppression list" in report.rejected[0].reason
    assert ledger.subject_view(B)["limit_breaches"] == []


def test_marketing_dated_before_the_unsubscribe_is_not_flagged(ledger: Ledger) -> None:
    """A suppression covers only what is dated from it on: B's marketing dated before A's
    unsubscribe is lawful whenever it arrived."""
    ledger.adopt_policy(HQIP, ADOPTED)
    assert ingest(ledger, b_consents_by_list_import(),
                  b_marketing(at="2024-03-01T09:00:00Z")).accepted == 2
    assert ingest(ledger, *a_holds_the_address(), a_unsubscribes()).ok
    assert flagged(ledger) == []


def test_bs_own_opt_in_dated_before_its_marketing_clears_the_flag(ledger: Ledger) -> None:
    """B's own opt-in (a method in resubscribe_methods) in force at the record's time makes
    it lawful: the flag goes. An opt-in dated after the record does not."""
    b_first_then_a(ledger)
    assert ingest(ledger, b_opts_in("2024-07-01T09:00:00Z")).ok
    assert [f for f, _, _ in flagged(ledger)] == ["collected"]
    assert ingest(ledger, b_opts_in("2024-05-01T09:00:00Z")).ok
    assert flagged(ledger) == []


def test_the_flag_holds_across_runs_and_after_a_rebuild(backend: Settings) -> None:
    """Each fact ingested by its own ledger (as separate processes would), the flag shows
    from a fresh one, and the same after `projections rebuild`."""
    with Ledger(backend) as first:
        first.adopt_policy(HQIP, ADOPTED)
        assert ingest(first, b_consents_by_list_import(), b_marketing()).accepted == 2
    with Ledger(backend) as second:
        assert ingest(second, *a_holds_the_address(), a_unsubscribes()).ok
    with Ledger(backend) as third:
        before = third.subject_view(B)["limit_breaches"]
        assert [b["record"] for b in before] == ["crm-row"]
        third.projections.rebuild()
        assert third.subject_view(B)["limit_breaches"] == before


def test_the_dsar_export_lists_the_flag(ledger: Ledger) -> None:
    """The DSAR export of B lists the same flag as `subject show`, with no address in it;
    an export as of before A's unsubscribe was known in fact time lists it too (the record
    is dated after it), one as of before the record does not hold the record at all."""
    b_first_then_a(ledger)
    export = ledger.dsar_export(B, NOW)
    assert [b["record"] for b in export["limit_breaches"]] == ["crm-row"]
    assert export["limit_breaches"] == ledger.subject_view(B)["limit_breaches"]
    assert_no_personal_value(export["limit_breaches"])
    assert ledger.dsar_export(B, datetime(2024, 5, 1, tzinfo=UTC))["limit_breaches"] == []


# -- any arrival order ------------------------------------------------------------------


@contextmanager
def fresh_store(kind: str, root: Path) -> Iterator[Settings]:
    home = root / f"home-{uuid.uuid4().hex[:8]}"
    url = None
    name = f"lifecycle_xsup_{uuid.uuid4().hex[:12]}"
    if kind == "postgres":
        require_postgres()
        with _admin_connect() as conn:  # type: ignore[attr-defined]
            conn.execute(f'CREATE DATABASE "{name}"')
        url = f"{POSTGRES_URL.rsplit('/', 1)[0]}/{name}"
    try:
        yield Settings(home=home, database_url=url, master_key=MASTER_KEY,
                       master_key_file=home / "master.key")
    finally:
        if kind == "postgres":
            with _admin_connect() as conn:  # type: ignore[attr-defined]
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
BASE = datetime(2024, 3, 1, 9, tzinfo=UTC)
days = st.integers(0, 6)


def iso(day: int) -> str:
    return (BASE + day * DAY).isoformat()


def a_opts_in_again(day: int) -> dict[str, Any]:
    """A's own opt-in, in the evening (never at the same time as another fact): it lifts
    A's listing from then on, not before."""
    return fact("consent-given", A, (BASE + day * DAY + 12 * HOUR).isoformat(),
                purpose="direct-marketing", method="subscribe-form")


def expected_flag(unsubscribed: int, marketing: int, opt_in: int | None,
                  a_lift: int | None = None) -> bool:
    """In fact time: B's record is barred when the address was listed at its time (A's
    unsubscribe by then, A's own opt-in after it not yet) and B's own opt-in was not in
    force then."""
    lifted = a_lift is not None and unsubscribed <= a_lift and a_lift < marketing
    return (unsubscribed <= marketing and not lifted
            and not (opt_in is not None and opt_in <= marketing))


def arrival_run(kind: str, root: Path, unsubscribed: int, marketing: int,
                opt_in: int | None, order: list[int],
                a_lift: int | None = None) -> tuple[bool, list[Any]]:
    """A's and B's history, the facts that matter arriving in `order`, each in its own
    run, rejected ones re-submitted until nothing more lands; whether B's record was kept,
    and B's limit_breaches (the same after a rebuild)."""
    late = [a_unsubscribes(iso(unsubscribed)), b_marketing(iso(marketing)),
            b_opts_in(iso(opt_in)) if opt_in is not None else None,
            a_opts_in_again(a_lift) if a_lift is not None else None]
    arriving = [one for one in (late[i] for i in order) if one is not None]
    with fresh_store(kind, root) as store, Ledger(store) as ledger:
        ledger.adopt_policy(HQIP, ADOPTED)
        assert ingest(ledger, *a_holds_the_address(), b_consents_by_list_import()).ok
        rejected = []
        for one in arriving:
            rejected += [one] if ingest(ledger, one).rejected else []
        while rejected:
            again = [one for one in rejected if ingest(ledger, one).rejected]
            if len(again) == len(rejected):
                break
            rejected = again
        view = ledger.subject_view(B)
        kept = [r["record"] for r in view["records"]] == ["crm-row"]
        breaches = view["limit_breaches"]
        ledger.projections.rebuild()
        assert ledger.subject_view(B)["limit_breaches"] == breaches
        assert ledger.dsar_export(B, NOW)["limit_breaches"] == breaches
        return kept, breaches


def check_any_order(kind: str, root: Path, unsubscribed: int, marketing: int,
                    opt_in: int | None, order: list[int], a_lift: int | None = None) -> None:
    kept, breaches = arrival_run(kind, root, unsubscribed, marketing, opt_in, order, a_lift)
    barred = expected_flag(unsubscribed, marketing, opt_in, a_lift)
    if not barred:
        assert kept and breaches == []
        return
    if not kept:  # arrived after A's unsubscribe: refused, nothing to flag
        assert order.index(0) < order.index(1) and breaches == []
        return
    assert [(b["fact"], b["record"], b["at"]) for b in breaches] == [
        ("collected", "crm-row", iso(marketing))]
    assert breaches[0]["limit"].startswith("limit direct-marketing-stopped: ")
    assert f"since {iso(unsubscribed)[:10]} " in breaches[0]["limit"]
    assert_no_personal_value(breaches)


@settings(max_examples=30, deadline=None, suppress_health_check=HEALTH)
@given(unsubscribed=days, marketing=days, opt_in=st.none() | days,
       a_lift=st.none() | days, order=st.permutations([0, 1, 2, 3]))
def test_bs_flag_is_the_fact_time_answer_for_any_arrival_order_sqlite(
        tmp_path: Path, unsubscribed: int, marketing: int, opt_in: int | None,
        a_lift: int | None, order: list[int]) -> None:
    """Whatever order A's unsubscribe, B's marketing, B's own opt-in and A's own opt-in
    (lifting A's listing) arrive in (each in its own run): a kept record of B is flagged
    exactly when, in fact time, the address was listed at its time (a listing lifted
    later still counts before its lift) and B's opt-in was not in force then; the same
    list after a rebuild and in the DSAR export. A refused one arrived after the
    unsubscribe."""
    check_any_order("sqlite", tmp_path, unsubscribed, marketing, opt_in, order, a_lift)


@settings(max_examples=8, deadline=None, suppress_health_check=HEALTH,
          phases=(Phase.explicit, Phase.reuse, Phase.generate))
@given(unsubscribed=days, marketing=days, opt_in=st.none() | days,
       a_lift=st.none() | days, order=st.permutations([0, 1, 2, 3]))
def test_bs_flag_is_the_fact_time_answer_for_any_arrival_order_postgres(
        tmp_path: Path, unsubscribed: int, marketing: int, opt_in: int | None,
        a_lift: int | None, order: list[int]) -> None:
    """PostgreSQL: the same property as on SQLite, on a fresh database per example."""
    check_any_order("postgres", tmp_path, unsubscribed, marketing, opt_in, order, a_lift)


def test_another_subjects_objection_or_exclusion_flags_it_too(ledger: Ledger) -> None:
    """Whatever put the address on the list (A's direct-marketing objection, A's
    exclusion), B's marketing dated after it and kept because it arrived first is
    flagged."""
    ledger.adopt_policy(HQIP, ADOPTED)
    assert ingest(ledger, b_consents_by_list_import(), b_marketing()).accepted == 2
    assert ingest(ledger, *a_holds_the_address(),
                  fact("objected", A, UNSUBSCRIBED, purpose="direct-marketing")).ok
    assert [f for f, _, _ in flagged(ledger)] == ["collected"]


def test_the_subjects_own_late_exclusion_flags_its_marketing(ledger: Ledger) -> None:
    """B's own exclusion (which suppresses B's addresses but is no marketing objection)
    dated before B's marketing and arriving after it: the record is flagged once."""
    ledger.adopt_policy(HQIP, ADOPTED)
    assert ingest(ledger, b_consents_by_list_import(),
                  collected(B, "2024-02-01T09:00:00Z", "account", {"email": ADDRESS},
                            purpose="enquiries-complaints", basis="legitimate-interests"),
                  b_marketing()).accepted == 3
    assert ingest(ledger, fact("excluded", B, UNSUBSCRIBED, reason="code of conduct")).ok
    assert [(f, r) for f, r, _ in flagged(ledger)] == [("collected", "crm-row")]


def test_the_desk_shows_the_flag_on_the_person_page_and_api(backend: Settings,
                                                             tmp_path: Path) -> None:
    """The desk's GET /api/subjects/{reference} lists the flag as `subject show` does, and
    the person page shows it under its processing-limit breaches."""
    with Ledger(backend) as ledger:
        b_first_then_a(ledger)
        expected = ledger.subject_view(B)["limit_breaches"]
    service = start_service(backend, tmp_path, seed=False)
    try:
        with service.client("responder") as api:
            assert api.get(f"/api/subjects/{B}").json()["limit_breaches"] == expected
        browser, _ = signed_in(service, "responder")
        try:
            page = browser.get(f"/subjects/{B}").text
        finally:
            browser.close()
        section = page.split("Processing-limit breaches", 1)[1]
        assert "crm-row" in section and "direct-marketing-stopped" in section
    finally:
        service.stop()
