"""Crypto-shredding: erasure destroys per-subject keys; the history survives, the values don't."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from lifecycle.store.vault import data_keys
from lifecycle.services.ledger import Ledger
from lifecycle.store.settings import Settings
from tests.facts_builder import collected, fact, lines

NOW = datetime(2025, 1, 1, tzinfo=UTC)
EMAIL = "amira.khan.unique42@example.org"
NAME = "Zenobia-Quartermain"


def consent_based_subject() -> list[str]:
    return lines([
        collected("subscriber:9", "2024-01-02T10:00:00Z", "signup",
                  {"email": EMAIL, "first_name": NAME}),
        fact("consent-given", "subscriber:9", "2024-01-02T10:00:00Z",
             purpose="direct-marketing"),
        collected("subscriber:9", "2024-01-03T10:00:00Z", "clicks",
                  {"ip_address": "203.0.113.77"}, purpose="website-analytics",
                  category="technical"),
        fact("rectified", "subscriber:9", "2024-02-01T10:00:00Z", record="signup",
             data={"first_name": NAME + "-Smythe"}),
        fact("legal-hold-placed", "subscriber:9", "2024-02-02T10:00:00Z", hold="LH-1",
             scope="website-analytics", reason=f"dispute raised by {NAME}"),
        fact("legal-hold-released", "subscriber:9", "2024-02-03T10:00:00Z", hold="LH-1"),
    ])


def erase(ledger: Ledger) -> None:
    report = ledger.ingest(lines([
        fact("erasure-requested", "subscriber:9", "2024-03-01T10:00:00Z", request="ER-9"),
    ]), NOW)
    assert report.accepted == 1


def key_material(ledger: Ledger) -> list[bytes]:
    """The wrapped and the unwrapped bytes of every key of the test subject."""
    subject = ledger.subject("subscriber:9")
    with ledger.vault.engine.connect() as conn:
        rows = conn.execute(sa.select(data_keys.c.key_id, data_keys.c.wrapped)
                            .where(data_keys.c.subject_id == str(subject.id))).all()
    material = []
    for key_id, wrapped in rows:
        material += [wrapped, ledger.vault._unwrap(key_id, wrapped)]
    return material


def grep_tree(root: Path, needles: list[bytes]) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file():
            blob = path.read_bytes()
            hits += [f"{path.name}: {needle[:12]!r}" for needle in needles if needle in blob]
    return hits


def test_erasure_makes_every_value_read_as_erased(ledger: Ledger) -> None:
    """After an erasure request for consent-based data, every value reads as erased."""
    ledger.ingest(consent_based_subject(), NOW)
    assert ledger.subject_view("subscriber:9")["records"][0]["data"]["email"] == EMAIL
    erase(ledger)
    view = ledger.subject_view("subscriber:9")
    assert [r["data"] for r in view["records"]] == ["erased", "erased"]
    assert {r["erased_by"] for r in view["records"]} == {"ER-9"}
    assert view["holds"][0]["reason"] == "erased"


def test_the_history_still_replays_after_erasure(ledger: Ledger) -> None:
    """Erasure keeps the structure: categories, purposes, bases and dates still replay."""
    ledger.ingest(consent_based_subject(), NOW)
    erase(ledger)
    events = [e["event"] for e in ledger.history("subscriber:9")]
    # A consent is applied before what it allows at the same instant (ingest order).
    assert events == ["Registered", "ConsentGiven", "Collected", "Collected", "Rectified",
                      "LegalHoldPlaced", "LegalHoldReleased", "ErasureRequested", "Erased"]
    records = ledger.subject_view("subscriber:9")["records"]
    assert [(r["purpose"], r["category"], r["basis"]) for r in records] == [
        ("direct-marketing", "contact", "consent"), ("website-analytics", "technical", "consent")]


def test_no_file_in_the_data_directory_holds_the_values_or_the_keys(
        sqlite_settings: Settings) -> None:
    """A byte search of every file in the data directory finds neither values nor keys."""
    with Ledger(sqlite_settings) as ledger:
        ledger.ingest(consent_based_subject(), NOW)
        material = key_material(ledger)
        assert len(material) == 6  # marketing, analytics and notes keys, wrapped and raw
        assert grep_tree(sqlite_settings.home, material[::2]), "the test must see wrapped keys"
        erase(ledger)
    needles = [EMAIL.encode(), NAME.encode(), b"203.0.113.77", *material]
    assert grep_tree(sqlite_settings.home, needles) == []


def test_erased_keys_are_gone_from_the_vault(ledger: Ledger) -> None:
    """Destroying a key leaves only its id and when and why it was destroyed."""
    ledger.ingest(consent_based_subject(), NOW)
    erase(ledger)
    with ledger.vault.engine.connect() as conn:
        rows = conn.execute(sa.select(data_keys.c.wrapped, data_keys.c.destroyed_by)).all()
    assert rows and all(wrapped is None and by == "ER-9" for wrapped, by in rows)


def test_legal_obligation_data_survives_an_erasure_request(ledger: Ledger) -> None:
    """Legal-obligation data is kept on erasure, and the refusal records its Art 17(3) ground."""
    ledger.ingest(lines([
        collected("member:5", "2024-01-01T00:00:00Z", "newsletter", {"email": "a@b.org"}),
        collected("member:5", "2024-01-01T00:00:00Z", "eligibility",
                  {"registration_number": "RN-1"}, purpose="identity-eligibility",
                  basis="legal-obligation", category="identity"),
        fact("erasure-requested", "member:5", "2024-03-01T00:00:00Z", request="ER-5"),
    ]), NOW)
    view = ledger.subject_view("member:5")
    data = {r["record"]: r["data"] for r in view["records"]}
    assert data == {"newsletter": "erased", "eligibility": {"registration_number": "RN-1"}}
    assert [(x["record"], x["ground"][:12]) for x in view["erasure_refusals"]] == [
        ("eligibility", "Art 17(3)(b)")]


def test_a_legal_hold_beats_an_erasure_request(ledger: Ledger) -> None:
    """Data under a legal hold is not erased; the refusal cites Art 17(3)(e) and the hold."""
    ledger.ingest(lines([
        collected("member:6", "2024-01-01T00:00:00Z", "newsletter", {"email": "a@b.org"}),
        fact("legal-hold-placed", "member:6", "2024-02-01T00:00:00Z", hold="LH-7",
             scope="all", reason="tribunal claim"),
        fact("erasure-requested", "member:6", "2024-03-01T00:00:00Z", request="ER-6"),
    ]), NOW)
    view = ledger.subject_view("member:6")
    assert view["records"][0]["data"] == {"email": "a@b.org"}
    assert "LH-7" in view["erasure_refusals"][0]["ground"]


def test_new_data_after_erasure_gets_a_new_key(ledger: Ledger) -> None:
    """Data collected after an erasure (a re-subscription) is readable: it has a fresh key."""
    ledger.ingest(lines([
        collected("s:1", "2024-01-01T00:00:00Z", "first", {"email": "a@b.org"}),
        fact("erasure-requested", "s:1", "2024-02-01T00:00:00Z", request="ER-1"),
        collected("s:1", "2024-03-01T00:00:00Z", "second", {"email": "a@b.org"}),
    ]), NOW)
    data = {r["record"]: r["data"] for r in ledger.subject_view("s:1")["records"]}
    assert data == {"first": "erased", "second": {"email": "a@b.org"}}


def test_unsubscribing_suppresses_with_a_keyed_hash_not_the_email(ledger: Ledger) -> None:
    """An unsubscribe suppresses at once and keeps only a keyed hash of the e-mail."""
    ledger.ingest(lines([
        collected("s:2", "2024-01-01T00:00:00Z", "signup", {"email": " A@B.org "}),
        fact("consent-given", "s:2", "2024-01-01T00:00:00Z", purpose="direct-marketing"),
        fact("unsubscribed", "s:2", "2024-03-10T10:00:00Z"),
    ]), NOW)
    subject = ledger.subject("s:2")
    assert subject.suppressed_at == datetime(2024, 3, 10, 10, tzinfo=UTC)
    assert subject.suppression_hashes == [ledger.vault.email_hash("a@b.org")]
    assert not subject.consent_in_force("direct-marketing")
