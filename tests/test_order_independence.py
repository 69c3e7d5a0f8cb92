"""Order independence: the same facts in any order give the same state.

For random valid histories of one to three subjects over config/hqip.toml (collections
under several purposes and bases, legal-obligation included; rectifications; consents given
and withdrawn; unsubscribes; objections; restrictions and their lifts; legal holds and their
releases; erasure requests; shares), ingesting the facts in a random order, cut into
batches (or split across concurrent `lifecycle ingest` processes), gives the same
`subject show --json` (Ledger.subject_view) as one ingest sorted by fact time. Lists are
compared in one canonical order: `subject show` lists records, shares, holds, requests and
refusals in the order they arrived, which is recording time. No other field is stripped:
the view holds no key id, sealed string or recording time (values are opened, times are
fact times, retention is computed from the facts and the policy).

Also, after every run: no value of an erased record can be opened (the view says "erased",
the vault raises KeyDestroyed); each erasure request's certificate lists exactly the keys
the vault destroyed for it, all destroyed; an address suppressed by an unsubscribe or a
marketing objection is refused for direct marketing on another subject.

Documented limits, excluded by construction:
(a) An erasure is final. A legal hold or a legal-claims restriction dated before an erasure
    request but arriving after it cannot bring erased data back. So every hold and
    restriction dated before an erasure request of its subject (and, for the same reason,
    every release or lift dated before it: the request has already decided what it keeps)
    arrives before that request (histories.arrival_order).
(c) The same finality holds between two erasure requests: a record erased under a later
    request that arrived first stays erased by that request, even when an earlier request
    arrives afterwards. So erasure requests of one subject arrive in fact-time order. With
    processes started together, these pinned facts travel in one process's file.
(d) An unsubscribe or objection dated before an erasure but arriving after it cannot list
    the addresses the erasure destroyed (their keys are gone, and no hash of an address is
    kept outside the suppression list), so those arrive before the erasure too.
(b) A fact whose prerequisite (the record, the consent, the restriction, the hold) has not
    arrived yet is rejected with the reason; the run re-submits rejected lines at the end,
    as a responder does, until nothing more is accepted. The property is about the state
    after that re-submission.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from lifecycle.aggregates.data_subject import DataSubject
from lifecycle.store.vault import data_keys
from lifecycle.domain.errors import KeyDestroyed
from lifecycle.services.ledger import Ledger
from lifecycle.store.settings import Settings
from tests.conftest import POSTGRES_URL, _admin_connect, require_postgres
from tests.histories import (arrival_order, by_fact_time, canonical_view, chunks,
                             concurrent_pieces, histories, jsonl)
from tests.processes import env_for

CONFIG = Path(__file__).resolve().parents[1] / "config"
HQIP = CONFIG / "hqip.toml"
ADOPTED = datetime(2020, 1, 1, tzinfo=UTC)
MASTER_KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="  # 32 bytes, base64
HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large,
          HealthCheck.function_scoped_fixture]
# PostgreSQL and process examples take seconds each: a failure is reported as generated,
# not shrunk, so a failing run stays as short as a passing one (the in-process SQLite
# variant shrinks; the smallest cases found so far are the tests at the end).
NO_SHRINK = (Phase.explicit, Phase.reuse, Phase.generate)
# Under CI no variant shrinks (shrinking a failure of the SQLite variant takes minutes).
SQLITE_PHASES = NO_SHRINK if os.environ.get("CI") else tuple(Phase)


def now() -> datetime:
    return datetime.now(UTC)


@contextmanager
def fresh_store(kind: str, root: Path) -> Iterator[Settings]:
    """A clean store with the policy adopted: a new SQLite home, or a new PostgreSQL
    database (dropped afterwards)."""
    home = root / f"home-{uuid.uuid4().hex[:8]}"
    url = None
    name = f"lifecycle_prop_{uuid.uuid4().hex[:12]}"
    if kind == "postgres":
        with _admin_connect() as conn:  # type: ignore[attr-defined]
            conn.execute(f'CREATE DATABASE "{name}"')
        url = f"{POSTGRES_URL.rsplit('/', 1)[0]}/{name}"
    store = Settings(home=home, database_url=url, master_key=MASTER_KEY,
                     master_key_file=home / "master.key")
    try:
        with Ledger(store) as ledger:
            ledger.adopt_policy(HQIP, ADOPTED)
        yield store
    finally:
        if kind == "postgres":
            with _admin_connect() as conn:  # type: ignore[attr-defined]
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def ingest_all(ledger: Ledger, facts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ingests the facts in this order; returns those rejected."""
    report = ledger.ingest(jsonl(facts), now())
    return [facts[r.line - 1] for r in report.rejected]


def resubmit(ledger: Ledger, rejected: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Re-submits rejected facts until nothing more is accepted; returns what is left."""
    while rejected:
        again = ingest_all(ledger, rejected)
        if len(again) == len(rejected):
            return again
        rejected = again
    return rejected


def subjects_of(facts: list[dict[str, Any]]) -> list[str]:
    return sorted({f["subject"] for f in facts})


def views(ledger: Ledger, facts: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {ref: canonical_view(ledger.subject_view(ref)) for ref in subjects_of(facts)}


def reference_views(store: Settings, facts: list[dict[str, Any]]
                    ) -> dict[str, dict[str, Any]]:
    """One ingest sorted by fact time: every fact of a valid history lands."""
    with Ledger(store) as ledger:
        rejected = ingest_all(ledger, by_fact_time(facts))
        assert rejected == [], f"the generator made an invalid history: {rejected}"
        return views(ledger, facts)


def check_erasures(store: Settings, facts: list[dict[str, Any]]) -> None:
    """No erased value opens; each erasure request's certificate lists exactly the keys
    the vault destroyed for it, all destroyed."""
    with Ledger(store) as ledger:
        for ref in subjects_of(facts):
            subject = ledger.subject(ref)
            view = {r["record"]: r for r in ledger.subject_view(ref)["records"]}
            for name, record in subject.records.items():
                if record.erased_at is None:
                    continue
                assert view[name]["data"] == "erased", f"{ref} {name}: erased value shown"
                for sealed in record.values:
                    with pytest.raises(KeyDestroyed):
                        ledger.vault.open(sealed)
            with ledger.vault.engine.connect() as conn:
                destroyed = conn.execute(
                    sa.select(data_keys.c.key_id, data_keys.c.destroyed_by)
                    .where(data_keys.c.subject_id == str(DataSubject.create_id(ref)))
                    .where(data_keys.c.destroyed_at.is_not(None))).all()
            for request in (q for q in subject.requests.values() if q.kind == "erasure"):
                certificate = ledger.certificate(request.request, ref, now())
                listed = {k["key_id"] for k in certificate["keys_destroyed"]}
                by_vault = {key for key, by in destroyed if by == request.request}
                assert listed == by_vault, (
                    f"certificate of {request.request} lists {sorted(listed)}, the vault "
                    f"destroyed {sorted(by_vault)} for it")
                assert certificate["all_keys_destroyed"]


def check_suppression(store: Settings, facts: list[dict[str, Any]], where: str) -> None:
    """Every e-mail a subject held (in a record not erased) when it unsubscribed or
    objected to marketing, and not re-subscribed since, is refused for direct marketing
    under another subject that gave no consent."""
    with Ledger(store) as ledger:
        probes = []
        for ref in subjects_of(facts):
            view = ledger.subject_view(ref)
            if not view["suppressed"]:
                continue
            since = datetime.fromisoformat(view["suppressed_at"])
            subject = ledger.subject(ref)
            for fact in facts:
                if fact["subject"] != ref or fact["type"] != "collected":
                    continue
                record = subject.records[fact["record"]]
                if record.collected_at < since and (record.erased_at is None
                                                    or record.erased_at > since):
                    probes.append(fact["data"]["email"])
        lines = [json.dumps({
            "id": f"probe-{uuid.uuid4().hex}", "type": "collected",
            "subject": f"probe:{uuid.uuid4().hex}", "at": "2024-12-01T00:00:00+00:00",
            "record": "newsletter", "category": "contact", "purpose": "direct-marketing",
            "basis": "consent", "source": "third-party", "data": {"email": email}})
            for email in probes]
        report = ledger.ingest(lines, now())
        refused = {lines[r.line - 1] for r in report.rejected if "suppress" in r.reason}
        accepted = [email for email, line in zip(probes, lines) if line not in refused]
        assert accepted == [], f"{where}: suppressed addresses accepted for marketing"



def permuted_run(store: Settings, facts: list[dict[str, Any]], seed: int, parts: int
                 ) -> None:
    rng = random.Random(seed)
    order = arrival_order(facts, rng)
    with Ledger(store) as ledger:
        rejected: list[dict[str, Any]] = []
        for piece in chunks(order, rng, parts):
            if piece:
                rejected += ingest_all(ledger, piece)
        left = resubmit(ledger, rejected)
        assert left == [], f"rejected after re-submission: {left}"


def assert_order_independent(kind: str, root: Path, facts: list[dict[str, Any]], seed: int,
                             parts: int) -> None:
    with fresh_store(kind, root) as reference:
        expected = reference_views(reference, facts)
        check_suppression(reference, facts, "sorted by fact time")
    with fresh_store(kind, root) as store:
        permuted_run(store, facts, seed, parts)
        with Ledger(store) as ledger:
            assert views(ledger, facts) == expected, "views differ from the fact-time order"
        check_erasures(store, facts)
        check_suppression(store, facts, "in arrival order")


@settings(max_examples=15, deadline=None, suppress_health_check=HEALTH,
          database=None, phases=SQLITE_PHASES)
@given(facts=histories(), seed=st.integers(0, 2**32), parts=st.integers(1, 4))
def test_any_arrival_order_gives_the_state_of_the_fact_time_order_sqlite(
        tmp_path: Path, facts: list[dict[str, Any]], seed: int, parts: int) -> None:
    """SQLite: a valid history ingested in a random order, in batches, with rejected lines
    re-submitted at the end, gives the subject views of one ingest sorted by fact time;
    erased values stay unreadable, certificates match the vault, suppression holds."""
    assert_order_independent("sqlite", tmp_path, facts, seed, parts)


@settings(max_examples=5, deadline=None, suppress_health_check=HEALTH,
          database=None, phases=NO_SHRINK)
@given(facts=histories(), seed=st.integers(0, 2**32), parts=st.integers(1, 4))
def test_any_arrival_order_gives_the_state_of_the_fact_time_order_postgres(
        tmp_path: Path, facts: list[dict[str, Any]], seed: int, parts: int) -> None:
    """PostgreSQL: the same property as on SQLite, on a fresh database per example."""
    require_postgres()
    assert_order_independent("postgres", tmp_path, facts, seed, parts)


# -- concurrent processes ---------------------------------------------------------------------

def run_ingests(store: Settings, files: list[Path]) -> list[dict[str, Any]]:
    """`lifecycle ingest FILE --json` for every file at once; their JSON reports."""
    procs = [subprocess.Popen([sys.executable, "-m", "lifecycle", "ingest", str(path),
                               "--json"], env=env_for(store), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for path in files]
    reports = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode in (0, 1), err
        reports.append(json.loads(out))
    return reports


def concurrent_run(store: Settings, root: Path, facts: list[dict[str, Any]], seed: int,
                   parts: int) -> None:
    rng = random.Random(seed)
    order = arrival_order(facts, rng)
    pieces = [p for p in concurrent_pieces(order, rng, parts) if p] or [order]
    files = []
    for n, piece in enumerate(pieces):
        path = root / f"part-{uuid.uuid4().hex[:8]}-{n}.jsonl"
        path.write_text("\n".join(jsonl(piece)) + "\n", encoding="utf-8")
        files.append(path)
    rejected: list[dict[str, Any]] = []
    for piece, report in zip(pieces, run_ingests(store, files)):
        rejected += [piece[r["line"] - 1] for r in report["rejections"]]
    while rejected:  # the responder re-submits what was rejected, until nothing lands
        path = root / f"again-{uuid.uuid4().hex[:8]}.jsonl"
        path.write_text("\n".join(jsonl(rejected)) + "\n", encoding="utf-8")
        report = run_ingests(store, [path])[0]
        again = [rejected[r["line"] - 1] for r in report["rejections"]]
        if len(again) == len(rejected):
            break
        rejected = again
    assert rejected == [], f"rejected after re-submission: {rejected}"


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
@settings(max_examples=2, deadline=None, suppress_health_check=HEALTH,
          database=None, phases=NO_SHRINK)
@given(facts=histories(max_facts=10), seed=st.integers(0, 2**32), parts=st.integers(2, 3))
def test_concurrent_processes_give_the_state_of_the_fact_time_order(
        kind: str, tmp_path: Path, facts: list[dict[str, Any]], seed: int,
        parts: int) -> None:
    """Real `lifecycle ingest` processes, started together on two or three pieces of a
    random permutation of a valid history (rejected lines re-submitted after), leave the
    subject views of one ingest sorted by fact time; erased values stay unreadable,
    certificates match the vault, suppression holds."""
    if kind == "postgres":
        require_postgres()
    with fresh_store(kind, tmp_path) as reference:
        expected = reference_views(reference, facts)
    with fresh_store(kind, tmp_path) as store:
        concurrent_run(store, tmp_path, facts, seed, parts)
        with Ledger(store) as ledger:
            assert views(ledger, facts) == expected, "views differ from the fact-time order"
        check_erasures(store, facts)
        check_suppression(store, facts, "in arrival order")


# -- the smallest cases the property found -------------------------------------------------------
# Each is one arrival order the property above must allow; the sorted order is the reference.

def _member_facts() -> dict[str, dict[str, Any]]:
    ref = "member:order-1"
    return {
        "collect-a": {"id": "oi-1", "type": "collected", "subject": ref,
                      "at": "2024-01-01T09:00:00+00:00", "record": "rec-a",
                      "category": "contact", "purpose": "surveys-feedback",
                      "basis": "legitimate-interests", "source": "data-subject",
                      "data": {"email": "zq.order.a@example.org"}},
        "collect-b": {"id": "oi-2", "type": "collected", "subject": ref,
                      "at": "2024-01-02T09:00:00+00:00", "record": "rec-b",
                      "category": "contact", "purpose": "events", "basis": "contract",
                      "source": "data-subject", "data": {"name": "ZqOrderBQv"}},
        "unsubscribe": {"id": "oi-3", "type": "unsubscribed", "subject": ref,
                        "at": "2024-01-03T09:00:00+00:00"},
        "erase-1": {"id": "oi-4", "type": "erasure-requested", "subject": ref,
                    "at": "2024-02-01T09:00:00+00:00", "request": "ER-order-1"},
        "hold": {"id": "oi-5", "type": "legal-hold-placed", "subject": ref,
                 "at": "2024-02-15T09:00:00+00:00", "hold": "H-order", "scope": "all",
                 "reason": "ZqOrderClaimQv"},
        "erase-2": {"id": "oi-6", "type": "erasure-requested", "subject": ref,
                    "at": "2024-03-01T09:00:00+00:00", "request": "ER-order-2"},
    }


def _ingest_in_turn(ledger: Ledger, *facts: dict[str, Any]) -> None:
    for item in facts:
        report = ledger.ingest(jsonl([item]), now())
        assert report.rejected == [], report.as_dict()


def test_the_certificate_lists_a_record_erased_on_arrival_under_its_request(
        ledger: Ledger) -> None:
    """The certificate of an erasure request lists every record it erased and every key
    destroyed for it, the records that arrived after the request (collected before it)
    included."""
    facts = _member_facts()
    ledger.adopt_policy(HQIP, ADOPTED)
    _ingest_in_turn(ledger, facts["collect-a"], facts["erase-1"], facts["collect-b"])
    subject = ledger.subject("member:order-1")
    certificate = ledger.certificate("ER-order-1", "member:order-1", now())
    assert {e["record"] for e in certificate["erased"]} == {"rec-a", "rec-b"}
    assert {k["key_id"] for k in certificate["keys_destroyed"]} == {
        subject.records["rec-a"].key_id, subject.records["rec-b"].key_id}


def test_a_note_dated_after_an_erasure_request_survives_the_request_arriving_later(
        ledger: Ledger) -> None:
    """A legal hold placed after an erasure request (in fact time) keeps its reason
    readable when the request arrives after the hold: the request covers what was held at
    or before it, not a note written later."""
    facts = _member_facts()
    ledger.adopt_policy(HQIP, ADOPTED)
    _ingest_in_turn(ledger, facts["collect-a"], facts["hold"], facts["erase-1"])
    holds = ledger.subject_view("member:order-1")["holds"]
    assert [h["reason"] for h in holds] == ["ZqOrderClaimQv"]


def test_an_unsubscribe_suppresses_an_address_collected_before_it_that_arrives_after_it(
        ledger: Ledger) -> None:
    """An unsubscribe suppresses the e-mails the subject held at its time, also those of a
    record that arrives after the unsubscribe: that address is then refused for direct
    marketing under another subject without consent."""
    facts = _member_facts()
    ledger.adopt_policy(HQIP, ADOPTED)
    _ingest_in_turn(ledger, facts["unsubscribe"], facts["collect-a"])
    probe = {"id": "oi-probe", "type": "collected", "subject": "member:order-probe",
             "at": "2024-06-01T09:00:00+00:00", "record": "newsletter",
             "category": "contact", "purpose": "direct-marketing", "basis": "consent",
             "source": "third-party", "data": {"email": "zq.order.a@example.org"}}
    report = ledger.ingest(jsonl([probe]), now())
    assert [r.line for r in report.rejected] == [1]
    assert "suppression" in report.rejected[0].reason


def test_marketing_collected_while_consent_was_in_force_lands_whenever_it_arrives(
        ledger: Ledger) -> None:
    """A direct-marketing collection dated while the person's consent was in force is
    accepted also when it arrives after a later unsubscribe has suppressed the address:
    the check is made at the fact's time, as when the facts arrive in fact-time order."""
    ref = "member:order-2"
    ledger.adopt_policy(HQIP, ADOPTED)
    base = {"subject": ref, "category": "contact", "source": "data-subject"}
    first = {**base, "id": "oi2-1", "type": "collected", "at": "2024-01-01T09:00:00+00:00",
             "record": "rec-survey", "purpose": "surveys-feedback",
             "basis": "legitimate-interests", "data": {"email": "zq.order.two@example.org"}}
    consent = {"id": "oi2-2", "type": "consent-given", "subject": ref,
               "at": "2024-01-02T09:00:00+00:00", "purpose": "direct-marketing",
               "method": "web-form"}
    marketing = {**base, "id": "oi2-3", "type": "collected", "at": "2024-01-03T09:00:00+00:00",
                 "record": "rec-news", "purpose": "direct-marketing", "basis": "consent",
                 "data": {"email": "zq.order.two@example.org"}}
    unsubscribe = {"id": "oi2-4", "type": "unsubscribed", "subject": ref,
                   "at": "2024-01-04T09:00:00+00:00"}
    _ingest_in_turn(ledger, first, consent, unsubscribe, marketing)
    assert "rec-news" in ledger.subject(ref).records


def test_a_refusal_voided_by_a_late_release_leaves_the_state_of_the_fact_time_order(
        tmp_path: Path) -> None:
    """Rule (found by the property above): a later erasure request that refused a record
    under a legal hold whose release had not yet arrived keeps no refusal once the
    release arrives and an earlier request erases the record; the subject reads as the
    facts in time order make it (no refusal at all)."""
    subject = "member:refusal-1"
    data = {"email": "zq.refusal@example.org"}
    facts = [
        {"type": "collected", "subject": subject, "record": "r1", "category": "contact",
         "purpose": "surveys-feedback", "basis": "legitimate-interests",
         "source": "data-subject", "data": data, "id": "rf-1",
         "at": "2023-03-01T00:21:39+00:00"},
        {"type": "legal-hold-placed", "subject": subject, "hold": "h1", "scope": "all",
         "reason": "claims", "id": "rf-2", "at": "2023-03-01T00:28:52+00:00"},
        {"type": "legal-hold-released", "subject": subject, "hold": "h1", "id": "rf-3",
         "at": "2023-03-01T00:36:05+00:00"},
        {"type": "erasure-requested", "subject": subject, "request": "ER-a", "id": "rf-4",
         "at": "2023-03-01T01:33:49+00:00"},
        {"type": "erasure-requested", "subject": subject, "request": "ER-b", "id": "rf-5",
         "at": "2023-03-01T02:09:54+00:00"},
    ]
    with fresh_store("sqlite", tmp_path) as reference:
        expected = reference_views(reference, facts)
    with fresh_store("sqlite", tmp_path) as store:
        with Ledger(store) as ledger:
            # The later request first (the hold still in force as far as is known), then
            # the earlier one, then the release.
            for index in (0, 1, 4, 3, 2):
                assert ingest_all(ledger, [facts[index]]) == []
            got = views(ledger, facts)
    assert got == expected
    assert got[subject]["erasure_refusals"] == []


def test_an_earlier_requests_refusal_under_a_hold_stands_after_a_later_erasure(
        tmp_path: Path) -> None:
    """Rule: a request that refused a record while a hold was in force keeps that refusal
    after the hold is released and a later request erases the record (it was right when
    made), in fact-time order and in any arrival order tried."""
    subject = "member:refusal-2"
    facts = [
        {"type": "collected", "subject": subject, "record": "r1", "category": "contact",
         "purpose": "surveys-feedback", "basis": "legitimate-interests",
         "source": "data-subject", "data": {"email": "zq.refusal2@example.org"},
         "id": "rs-1", "at": "2023-03-01T01:00:00+00:00"},
        {"type": "legal-hold-placed", "subject": subject, "hold": "h1", "scope": "all",
         "reason": "claims", "id": "rs-2", "at": "2023-03-01T02:00:00+00:00"},
        {"type": "erasure-requested", "subject": subject, "request": "ER-a", "id": "rs-3",
         "at": "2023-03-01T03:00:00+00:00"},
        {"type": "legal-hold-released", "subject": subject, "hold": "h1", "id": "rs-4",
         "at": "2023-03-01T04:00:00+00:00"},
        {"type": "erasure-requested", "subject": subject, "request": "ER-b", "id": "rs-5",
         "at": "2023-03-01T05:00:00+00:00"},
    ]
    with fresh_store("sqlite", tmp_path) as reference:
        expected = reference_views(reference, facts)
    assert [x["request"] for x in expected[subject]["erasure_refusals"]] == ["ER-a"]
    for order in ((4, 3, 0, 1, 2), (0, 1, 4, 2, 3), (2, 4, 0, 3, 1)):
        with fresh_store("sqlite", tmp_path) as store:
            with Ledger(store) as ledger:
                rejected = ingest_all(ledger, [facts[i] for i in order])
                assert resubmit(ledger, rejected) == []
                assert views(ledger, facts) == expected, order
