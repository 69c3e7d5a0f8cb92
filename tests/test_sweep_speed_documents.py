"""The subjects view after a sweep's erasures by retention: the catch-up patches the stored
document of a subject whose only new events are erasures by retention (its records part,
and nothing else) instead of building it again, and the text it stores is character for
character the one a rebuild stores. Both backends."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given, settings as hsettings, strategies as st

from lifecycle.aggregates.data_subject import DataSubject
from lifecycle.domain.limits import breaches
from lifecycle.projections import documents, tables, views
from lifecycle.projections.bulk import json_text
from lifecycle.services.ledger import Ledger
from lifecycle.services.sweep import Sweeper
from tests.facts_builder import collected, fact, lines

CONFIG = Path(__file__).resolve().parents[1] / "config"
ADOPTED = datetime(2023, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 1, 1, tzinfo=UTC)
REVIEW = datetime(2025, 7, 1, tzinfo=UTC)
REFS = ("member:plain", "member:shared", "member:late", "member:restricted",
        "member:named", "member:held")


def marketing(ref: str, record: str = "newsletter", **extra: Any) -> list[dict[str, Any]]:
    """A marketing record unsubscribed on 2024-03-10: erased at the 2025-07-01 review."""
    return [fact("consent-given", ref, "2023-05-02T09:00:00Z", purpose="direct-marketing"),
            collected(ref, "2023-05-02T09:01:00Z", record, {"email": f"{ref}@e.org"},
                      **extra),
            fact("unsubscribed", ref, "2024-03-10T10:00:00Z")]


def share(ref: str, at: str, **extra: Any) -> dict[str, Any]:
    return fact("shared", ref, at, recipient="Clarity Marketing", role="processor",
                purpose="direct-marketing", basis="consent", country="GB", **extra)


def first_facts() -> list[dict[str, Any]]:
    """plain: one marketing record; shared: shared it by name and kept an account record;
    late: a withdrawal dated before its collection arrives after it (a limit breach the
    document lists); restricted: under a restriction (its document is built in full);
    named: non-ASCII text in its values and names; held: a legal hold keeps its record."""
    facts = marketing("member:plain")
    facts += marketing("member:shared") + [
        share("member:shared", "2023-06-01T00:00:00Z", records=["newsletter"]),
        collected("member:shared", "2023-05-02T09:00:00Z", "account",
                  {"email": "shared@e.org"}, purpose="service-communications",
                  basis="legal-obligation")]
    facts += marketing("member:late") + [
        share("member:late", "2023-06-01T00:00:00Z", categories=["contact"])]
    facts += marketing("member:restricted") + [fact(
        "restricted", "member:restricted", "2024-06-01T09:00:00Z", scope="direct-marketing",
        reason="contested-accuracy")]
    facts += marketing("member:named", source="third-party", source_name="Zoë Ltd") + [
        collected("member:named", "2023-05-03T09:00:00Z", "profile",
                  {"name": "Renée Ørsted \u2603"}, purpose="service-communications",
                  basis="legal-obligation")]
    facts += marketing("member:held") + [fact(
        "legal-hold-placed", "member:held", "2024-06-01T09:00:00Z", hold="H-1",
        scope="direct-marketing", reason="claim")]
    return facts


def late_withdrawal() -> list[dict[str, Any]]:
    return [fact("consent-withdrawn", "member:late", "2023-05-02T09:00:30Z",
                 purpose="direct-marketing")]


def stored_texts(ledger: Ledger) -> dict[str, str]:
    """Each subject's row as stored: the document's own text, the other columns."""
    table = tables.subjects
    with ledger.views.connect() as conn:
        found = conn.execute(sa.select(
            table.c.reference, sa.cast(table.c.document, sa.Text), table.c.version,
            table.c.records, table.c.erased, table.c.suppressed, table.c.last_activity_at,
            table.c.subject_id)).all()
    return {row[0]: json.dumps([*row[1:6], str(row[6]), row[7]]) for row in found}


def build(ledger: Ledger) -> None:
    ledger.adopt_policy(CONFIG / "hqip.toml", ADOPTED)
    report = ledger.ingest(lines(first_facts()), NOW)
    assert report.ok, report.rejected[:3]
    report = ledger.ingest(lines(late_withdrawal()), NOW)
    assert report.ok, report.rejected[:3]
    ledger.projections.catch_up()


@pytest.mark.parametrize("cached", [True, False], ids=["same-process", "fresh-runner"])
def test_documents_after_erasures_by_retention_are_the_rebuilds_text(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch, cached: bool) -> None:
    """After a sweep, every subject's row in the subjects view (the document's stored
    text, character for character, and every other column) equals what a rebuild stores;
    only the restricted subject's document was built again in full (its limit breaches
    may read an erasure), the others' were patched from the stored text, keeping their
    limit breaches (member:late lists one)."""
    build(ledger)
    built: list[str] = []
    full = views.subject_document

    def counting(subject: DataSubject) -> dict[str, Any]:
        built.append(subject.reference)
        return full(subject)

    monkeypatch.setattr(views, "subject_document", counting)
    if cached:
        report = ledger.sweep(REVIEW, NOW)
    else:
        report = Sweeper(ledger.store, ledger.vault, ledger.views).sweep(REVIEW, NOW)
        ledger.projections.forget()
        ledger.projections.catch_up()
    assert sorted(e["subject"] for e in report.erased) == sorted(
        set(REFS) - {"member:restricted", "member:held"})
    assert sorted(p["subject"] for p in report.paused) == ["member:held", "member:restricted"]
    assert built == [], "a paused subject has no new event; no document was built"
    swept = stored_texts(ledger)
    late = json.loads(json.loads(swept["member:late"])[0])
    assert late["limit_breaches"] and late["records"][0]["erased_at"] is not None
    monkeypatch.undo()
    ledger.projections.rebuild()
    assert stored_texts(ledger) == swept


def test_a_restricted_subjects_document_is_built_in_full(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """A subject under a restriction lifted before the review is erased; its document is
    built again in full (not patched) and equals a rebuild's text; the others are
    patched."""
    build(ledger)
    report = ledger.ingest(lines([fact("restriction-lifted", "member:restricted",
                                       "2024-07-01T09:00:00Z", scope="direct-marketing")]), NOW)
    assert report.ok, report.rejected[:3]
    ledger.projections.catch_up()
    built: list[str] = []
    full = views.subject_document

    def counting(subject: DataSubject) -> dict[str, Any]:
        built.append(subject.reference)
        return full(subject)

    monkeypatch.setattr(views, "subject_document", counting)
    report_ = ledger.sweep(REVIEW, NOW)
    assert "member:restricted" in {e["subject"] for e in report_.erased}
    assert built == ["member:restricted"]
    swept = stored_texts(ledger)
    monkeypatch.undo()
    ledger.projections.rebuild()
    assert stored_texts(ledger) == swept


def test_the_document_keys_are_the_ones_the_patch_expects(ledger: Ledger) -> None:
    """`DOCUMENT_KEYS` names subject_document's keys in its order (a document whose keys
    differ is built again, never patched)."""
    build(ledger)
    for ref in REFS:
        subject = ledger.store.get_subject(ref)
        assert subject is not None
        assert tuple(documents.subject_document(subject)) == documents.DOCUMENT_KEYS


def test_the_patch_refuses_what_it_cannot_show_equal(ledger: Ledger) -> None:
    """`document_after_erasures` gives json_text's text of the new document from the old
    one, and None for: a text json.dumps wrote (a document orjson could not write), a
    document of another shape or another subject, records that differ by name, and a
    subject under a restriction."""
    build(ledger)
    before = ledger.store.get_subject("member:shared")
    restricted = ledger.store.get_subject("member:restricted")
    assert before is not None and restricted is not None
    after = copy.deepcopy(before)
    assert after.expire(REVIEW, "newsletter", "r", "p", "unsubscribed", REVIEW) is not None
    old = documents.subject_document(before)
    text = json_text(old)
    assert documents.document_after_erasures(text, after) == json_text(
        documents.subject_document(after))
    assert documents.document_after_erasures(json.dumps(old), after) is None
    assert documents.document_after_erasures(json_text({**old, "extra": 1}), after) is None
    assert documents.document_after_erasures(
        json_text({**old, "subject": "member:other"}), after) is None
    renamed = {**old, "records": [{**r, "record": r["record"] + "x"} for r in old["records"]]}
    assert documents.document_after_erasures(json_text(renamed), after) is None
    assert documents.document_after_erasures(
        json_text(documents.subject_document(restricted)), restricted) is None


def test_an_erasure_by_retention_changes_only_the_records_of_an_unrestricted_document(
        ledger: Ledger) -> None:
    """The rule the patch relies on: for a subject without restrictions, erasing any of
    its records by retention, at any time (before, between and after its collection,
    shares and breaches), changes its document's records and nothing else: the limit
    breaches stay as they were."""
    build(ledger)
    for ref in REFS:
        subject = ledger.store.get_subject(ref)
        assert subject is not None
        if subject.restrictions:
            continue
        before = documents.subject_document(subject)
        times = sorted({r.collected_at for r in subject.records.values()}
                       | {s.at for s in subject.shares} | {ADOPTED, REVIEW, NOW})
        moments = sorted({t + d for t in times for d in (-timedelta(seconds=1),
                                                          timedelta(0),
                                                          timedelta(seconds=1))})
        for name in subject.records:
            for at in moments:
                after = copy.deepcopy(subject)
                assert after.expire(at, name, "r", "p", "unsubscribed", at) is not None
                document = documents.subject_document(after)
                assert breaches(after) == breaches(subject)
                assert {k: v for k, v in document.items() if k != "records"} == {
                    k: v for k, v in before.items() if k != "records"}, (ref, name, at)


def test_notification_rows_of_a_second_erasure_by_retention_are_added_to_the_first(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """A subject that shared two records has the first erased by retention (and its
    notification acknowledged), then the second: the second sweep's catch-up adds the new
    erasure's row and deletes none (the acknowledged row stays as it was); the
    notifications view, and every other, equals a rebuild."""
    from tests.read_models import snapshot_views

    ledger.adopt_policy(CONFIG / "hqip.toml", ADOPTED)
    ref = "member:two"
    facts = marketing(ref) + [
        share(ref, "2023-06-01T00:00:00Z", records=["newsletter"]),
        collected(ref, "2024-08-01T09:00:00Z", "ev", {"seat": "zq"}, purpose="events",
                  basis="contract"),
        fact("shared", ref, "2024-08-02T00:00:00Z", recipient="Clarity Marketing",
             role="processor", purpose="events", basis="contract", country="GB",
             records=["ev"])]
    report = ledger.ingest(lines(facts), NOW)
    assert report.ok, report.rejected
    assert [e["record"] for e in ledger.sweep(REVIEW, NOW).erased] == ["newsletter"]
    assert ledger.ingest(lines([fact(
        "erasure-acknowledged", ref, "2025-07-02T09:00:00Z", recipient="Clarity Marketing",
        erasure="retention:newsletter")]), NOW).ok
    ledger.projections.catch_up()
    deleted: list[list[str]] = []
    replace = views._replace

    def recording(conn: sa.Connection, table: sa.Table, stale_ids: list[str],
                  *args: Any, **kwargs: Any) -> None:
        if table is tables.notifications:
            deleted.append(stale_ids)
        replace(conn, table, stale_ids, *args, **kwargs)

    monkeypatch.setattr(views, "_replace", recording)
    assert [e["record"] for e in ledger.sweep(NOW, NOW).erased] == ["ev"]
    assert deleted == [[]]
    monkeypatch.undo()
    swept = snapshot_views(ledger)
    rows = swept["lifecycle_erasure_notifications"]
    assert len(rows) == 2 and sum(1 for row in rows if row[-1] != "null") == 1, rows
    ledger.projections.rebuild()
    assert snapshot_views(ledger) == swept


_leaves = (st.text() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
           | st.booleans() | st.none() | st.uuids() | st.tuples(st.text())
           | st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5))]))
           | st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
                     min_size=1, max_size=2))
_values = st.recursive(_leaves, lambda inner: st.lists(inner, max_size=4)
                       | st.dictionaries(st.text(max_size=6), inner, max_size=4)
                       | st.dictionaries(st.integers(), inner, min_size=1, max_size=2),
                       max_leaves=12)


def test_the_patched_text_is_json_texts_for_any_stored_values(sqlite_settings: Any) -> None:
    """For any values the rest of a stored document holds (text of any kind, lone
    surrogates, integers beyond 64 bits, NaN, floats, datetimes, UUIDs, tuples, keys that
    are not strings), the patch gives exactly json_text's text of the document with the
    new records, or None (then the document is built in full): never another text."""
    with Ledger(sqlite_settings) as ledger:
        build(ledger)
        before = ledger.store.get_subject("member:shared")
    assert before is not None
    after = copy.deepcopy(before)
    assert after.expire(REVIEW, "newsletter", "r", "p", "unsubscribed", REVIEW) is not None
    base = documents.subject_document(before)
    records = documents.record_entries(after)

    @given(st.sampled_from([k for k in documents.DOCUMENT_KEYS
                            if k not in ("subject", "records")]), _values)
    @hsettings(max_examples=300, deadline=None)
    def check(key: str, value: Any) -> None:
        old = {**base, key: value}
        try:
            stored = json_text(old)
        except TypeError:
            return  # nothing stores it (json.dumps refuses a UUID)
        patched = documents.document_after_erasures(stored, after)
        if patched is not None:
            assert patched == json_text({**old, "records": records})

    check()
