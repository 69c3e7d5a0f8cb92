"""Erased means erased, whatever arrives and in whatever order; a fact id names one fact."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from lifecycle.store.vault import data_keys
from lifecycle.domain.errors import KeyDestroyed
from lifecycle.services.ledger import Ledger
from lifecycle.store.settings import Settings
from tests.facts_builder import collected, fact, lines

NOW = datetime(2026, 1, 1, tzinfo=UTC)
LATE_EMAIL = "quentin.latecomer.7731@example.org"


def test_a_record_collected_before_an_erasure_but_arriving_after_it_is_erased_on_arrival(
        ledger: Ledger) -> None:
    """An erasure covers every record collected at or before it, whenever the record
    arrives: the late value is never readable and the certificate lists it and its key."""
    ledger.ingest(lines([
        collected("member:Q", "2023-01-01T09:00:00Z", "early", {"name": "Q"},
                  purpose="membership", basis="contract", category="identity"),
        fact("erasure-requested", "member:Q", "2023-11-11T09:00:00Z", request="ER-Q"),
    ]), NOW)
    report = ledger.ingest(lines([
        collected("member:Q", "2023-01-14T09:00:00Z", "late", {"email": LATE_EMAIL},
                  purpose="membership", basis="contract"),
        collected("member:Q", "2023-12-01T09:00:00Z", "after", {"email": "kept@example.org"},
                  purpose="membership", basis="contract"),
    ]), NOW)
    assert report.accepted == 2 and report.erased_keys == 1
    view = ledger.subject_view("member:Q")
    data = {r["record"]: r["data"] for r in view["records"]}
    assert data == {"early": "erased", "late": "erased", "after": {"email": "kept@example.org"}}
    certificate = ledger.certificate("ER-Q", "member:Q", NOW)
    assert {(r["record"], r["erased_on_arrival"]) for r in certificate["erased"]} == {
        ("early", False), ("late", True)}
    assert len(certificate["keys_destroyed"]) == 2 and certificate["all_keys_destroyed"]
    late_key = ledger.subject("member:Q").records["late"].key_id
    with pytest.raises(KeyDestroyed):
        ledger.vault.open(ledger.subject("member:Q").records["late"].values[0])
    assert late_key in {k["key_id"] for k in certificate["keys_destroyed"]}


def test_a_hold_release_arriving_after_the_erasure_voids_the_refusal_that_cited_the_hold(
        ledger: Ledger) -> None:
    """A legal hold released before an erasure request, whose release arrives only after
    the request: the refusal that cited the hold was wrong in fact time, so the record it
    kept is erased when the release arrives, and a record kept on another ground names
    that ground, as if the facts had arrived in fact-time order."""
    ledger.ingest(lines([
        collected("member:H", "2023-01-01T09:00:00Z", "profile", {"email": LATE_EMAIL},
                  purpose="membership", basis="contract"),
        collected("member:H", "2023-01-01T09:00:00Z", "register", {"name": "H"},
                  purpose="membership", basis="legal-obligation", category="identity"),
        fact("legal-hold-placed", "member:H", "2023-02-01T09:00:00Z", hold="LIT-1",
             scope="all", reason="claim"),
        fact("erasure-requested", "member:H", "2023-06-01T09:00:00Z", request="ER-H"),
    ]), NOW)
    before = {x["record"]: x["ground"] for x in ledger.subject_view("member:H")[
        "erasure_refusals"]}
    assert set(before) == {"profile", "register"} and "legal hold LIT-1" in before["profile"]

    ledger.ingest(lines([fact("legal-hold-released", "member:H", "2023-03-01T09:00:00Z",
                              hold="LIT-1")]), NOW)

    view = ledger.subject_view("member:H")
    data = {r["record"]: r["data"] for r in view["records"]}
    assert data["profile"] == "erased" and data["register"] == {"name": "H"}
    refusals = {x["record"]: x["ground"] for x in view["erasure_refusals"]}
    assert list(refusals) == ["register"] and refusals["register"].startswith(
        "Art 17(3)(b)")
    certificate = ledger.certificate("ER-H", "member:H", NOW)
    assert {r["record"] for r in certificate["erased"]} == {"profile"}
    assert certificate["all_keys_destroyed"]


def test_an_erasure_arriving_after_a_later_record_keeps_that_record(ledger: Ledger) -> None:
    """An erasure covers what was collected by its time, not what arrived before it: a
    record collected after the request (ingested earlier) is kept."""
    ledger.ingest(lines([
        collected("member:R", "2024-03-01T09:00:00Z", "newer", {"name": "R"},
                  purpose="membership", basis="contract", category="identity"),
        collected("member:R", "2024-01-01T09:00:00Z", "older", {"name": "R0"},
                  purpose="membership", basis="contract", category="identity"),
    ]), NOW)
    ledger.ingest(lines([
        fact("erasure-requested", "member:R", "2024-02-01T09:00:00Z", request="ER-R")]), NOW)
    data = {r["record"]: r["data"] for r in ledger.subject_view("member:R")["records"]}
    assert data == {"newer": {"name": "R"}, "older": "erased"}


def test_a_late_rectification_of_an_erased_record_is_accepted_but_not_kept(
        ledger: Ledger) -> None:
    """A rectification dated before the record's erasure is recorded (it happened) but its
    value is erased on arrival; one dated after the erasure is refused."""
    ledger.ingest(lines([
        collected("member:S", "2024-01-01T09:00:00Z", "file", {"name": "S"},
                  purpose="membership", basis="contract", category="identity"),
        fact("erasure-requested", "member:S", "2024-03-01T09:00:00Z", request="ER-S"),
    ]), NOW)
    report = ledger.ingest(lines([
        fact("rectified", "member:S", "2024-02-01T09:00:00Z", record="file",
             data={"name": "S-late-value-991"}),
        fact("rectified", "member:S", "2024-04-01T09:00:00Z", record="file",
             data={"name": "S-after"}),
    ]), NOW)
    assert report.accepted == 1 and len(report.rejected) == 1
    assert "erased" in report.rejected[0].reason and report.rejected[0].line == 2
    record = ledger.subject("member:S").records["file"]
    assert record.values == [record.values[0]] and len(record.rectified_at) == 1


def test_a_reused_fact_id_with_other_content_is_rejected_naming_the_id(
        ledger: Ledger) -> None:
    """The same id with the same content is a duplicate; with different content, on any
    subject, it is rejected with a reason naming the id, and nothing valid is lost."""
    report = ledger.ingest(lines([
        collected("member:D", "2024-01-01T09:00:00Z", "a", {"name": "D"},
                  purpose="membership", basis="contract", category="identity", id="d1"),
        collected("member:D", "2024-01-02T09:00:00Z", "b", {"name": "D2"},
                  purpose="membership", basis="contract", category="identity", id="d1"),
        fact("consent-given", "member:E", "2024-01-03T09:00:00Z",
             purpose="direct-marketing", id="d1"),
        fact("erasure-requested", "member:D", "2024-01-04T09:00:00Z", request="ER-D",
             id="d1"),
        fact("erasure-requested", "member:D", "2024-01-04T09:00:00Z", request="ER-D",
             id="d2"),
    ]), NOW)
    assert (report.accepted, report.duplicates) == (2, 0)
    assert [r.line for r in report.rejected] == [2, 3, 4]
    assert all("'d1'" in r.reason and "different fact" in r.reason for r in report.rejected)
    assert "ER-D" in ledger.subject("member:D").requests
    again = ledger.ingest(lines([
        collected("member:D", "2024-01-01T09:00:00Z", "a", {"name": "D"},
                  purpose="membership", basis="contract", category="identity", id="d1"),
        fact("consent-given", "member:E", "2024-01-03T09:00:00Z",
             purpose="direct-marketing", id="d1"),
    ]), NOW)
    assert (again.accepted, again.duplicates, len(again.rejected)) == (0, 1, 1)


def test_an_interrupted_erasure_is_finished_by_the_next_run(backend: Settings) -> None:
    """Keys marked for an erasure whose events were saved are destroyed by the next ingest
    (record before destroy: the run died after saving, before destroying)."""
    with Ledger(backend) as ledger:
        ledger.ingest(lines([
            collected("member:K", "2024-01-01T09:00:00Z", "file", {"name": "K"},
                      purpose="membership", basis="contract", category="identity"),
        ]), NOW)
        destroy_all = ledger.vault.destroy_all
        # The run dies after saving, before destroying: nothing gets destroyed.
        ledger.vault.destroy_all = lambda shreds: 0  # type: ignore[method-assign]
        ledger.ingest(lines([
            fact("erasure-requested", "member:K", "2024-02-01T09:00:00Z", request="ER-K")]),
            NOW)
        ledger.vault.destroy_all = destroy_all  # type: ignore[method-assign]
        key_id = ledger.subject("member:K").records["file"].key_id
        assert ledger.vault.live_key_ids([key_id]) == {key_id}
        assert [m.key_ids for m in ledger.vault.doomed()] == [[key_id]]
    with Ledger(backend) as ledger:
        ledger.ingest([], NOW)
        assert ledger.vault.live_key_ids([key_id]) == set()
        assert ledger.vault.doomed() == []
        assert ledger.certificate("ER-K", "member:K", NOW)["all_keys_destroyed"]


def test_marks_of_an_erasure_never_recorded_are_dropped_after_the_grace(
        backend: Settings) -> None:
    """A mark whose erasure never reached the log (the run died before saving) destroys
    nothing; it is dropped once older than the grace, and the key stays live."""
    from lifecycle.store.vault import Shred
    from lifecycle.services.shredding import finish_interrupted

    with Ledger(backend) as ledger:
        ledger.ingest(lines([
            collected("member:M", "2024-01-01T09:00:00Z", "file", {"name": "M"},
                      purpose="membership", basis="contract", category="identity"),
        ]), NOW)
        subject = ledger.subject("member:M")
        key_id = subject.records["file"].key_id
        ledger.vault.mark_doomed([Shred(str(subject.id), [key_id], NOW, "ER-never")], NOW)
        assert finish_interrupted(ledger.store, ledger.vault, NOW) == 0
        assert len(ledger.vault.doomed()) == 1  # within the grace: may still be saving
        later = datetime(2026, 1, 2, tzinfo=UTC)
        assert finish_interrupted(ledger.store, ledger.vault, later) == 0
        assert ledger.vault.doomed() == [] and ledger.vault.live_key_ids([key_id]) == {key_id}


def test_free_text_of_lifts_and_releases_and_safeguards_is_not_stored(
        backend: Settings, tmp_path: Path) -> None:
    """Reasons given when a restriction is lifted or a hold released are not stored, and a
    share's safeguard is a code or the policy's own text, never free text."""
    secret = "Zelda Quuxington 07700900461"
    with Ledger(backend) as ledger:
        report = ledger.ingest(lines([
            collected("member:F", "2024-01-01T09:00:00Z", "file", {"name": "F"},
                      purpose="membership", basis="contract", category="identity"),
            fact("restricted", "member:F", "2024-01-02T09:00:00Z", scope="membership",
                 reason="contested-accuracy"),
            fact("restriction-lifted", "member:F", "2024-01-03T09:00:00Z",
                 scope="membership", reason=secret),
            fact("legal-hold-placed", "member:F", "2024-01-04T09:00:00Z", hold="H1",
                 scope="membership", reason="claim"),
            fact("legal-hold-released", "member:F", "2024-01-05T09:00:00Z", hold="H1",
                 reason=secret),
            fact("shared", "member:F", "2024-01-06T09:00:00Z", recipient="Acme",
                 role="processor", purpose="membership", basis="contract",
                 records=["file"], country="US", safeguard=secret),
        ]), NOW)
        assert report.accepted == 5
        assert [r.line for r in report.rejected] == [6]
        assert "safeguard" in report.rejected[0].reason
        assert secret not in report.rejected[0].reason
        stored = [str(vars(e)) for e in ledger.store.events.get(ledger.subject("member:F").id)]
        assert not any(secret in text for text in stored)
    if backend.database_url is None:
        for path in backend.home.rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), path
    else:
        engine = sa.create_engine(backend.sqlalchemy_url or "")
        with engine.connect() as conn:
            dump = conn.execute(sa.text(
                "SELECT string_agg(t::text, '') FROM lifecycle_events t")).scalar() or ""
        engine.dispose()
        assert secret not in dump


def test_keys_of_one_subject_left_untouched_by_another_subjects_erasure(
        ledger: Ledger) -> None:
    """An erasure destroys only its own subject's keys."""
    ledger.ingest(lines([
        collected("member:A", "2024-01-01T09:00:00Z", "a", {"name": "A"},
                  purpose="membership", basis="contract", category="identity"),
        collected("member:B", "2024-01-01T09:00:00Z", "b", {"name": "B"},
                  purpose="membership", basis="contract", category="identity"),
        fact("erasure-requested", "member:A", "2024-02-01T09:00:00Z", request="ER-A"),
    ]), NOW)
    with ledger.vault.engine.connect() as conn:
        destroyed = conn.execute(sa.select(data_keys.c.subject_id)
                                 .where(data_keys.c.destroyed_at.is_not(None))).scalars().all()
    assert destroyed == [str(ledger.subject("member:A").id)]


def test_an_unexpected_error_on_one_line_rejects_only_that_line(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """A line whose processing fails unexpectedly is rejected alone, with the error's type
    and no value; the batch is redone without it, so every valid line lands once."""
    from lifecycle.services.ingest import FactApplier

    original = FactApplier._activity

    def failing(self: FactApplier, s: object, fact: object) -> None:
        if getattr(fact, "id") == "boom":
            raise RuntimeError("secret-value-4471 in a driver message")
        original(self, s, fact)  # type: ignore[arg-type]

    monkeypatch.setattr(FactApplier, "_activity", failing)
    report = ledger.ingest(lines([
        collected("member:U", "2024-01-01T09:00:00Z", "a", {"name": "U"},
                  purpose="membership", basis="contract", category="identity"),
        fact("activity", "member:U", "2024-01-02T09:00:00Z", id="boom"),
        fact("activity", "member:U", "2024-01-03T09:00:00Z", id="fine"),
        collected("member:V", "2024-01-01T09:00:00Z", "b", {"name": "V"},
                  purpose="membership", basis="contract", category="identity"),
    ]), NOW)
    assert (report.accepted, [r.line for r in report.rejected]) == (3, [2])
    assert "RuntimeError" in report.rejected[0].reason
    assert "secret-value" not in report.rejected[0].reason
    subject = ledger.subject("member:U")
    assert subject.has_seen("fine") and not subject.has_seen("boom")
    assert [type(e).__name__ for e in ledger.store.events.get(subject.id)].count(
        "ActivityRecorded") == 1
