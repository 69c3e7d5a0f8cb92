"""Erasure end to end: Art 19 notification items, acknowledgements, deletion certificates."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from lifecycle.domain.bank_holidays import CACHE_DIR_ENV
from lifecycle.domain.errors import LifecycleError
from lifecycle.services.ledger import Ledger
from lifecycle.store.event_store import chained_recorder
from lifecycle.store.settings import Settings
from tests.facts_builder import collected, fact, lines, t

ROOT = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def shared_then_erased(ledger: Ledger) -> None:
    report = ledger.ingest(lines([
        fact("consent-given", "applicant:4", "2024-01-01T00:00:00Z",
             purpose="direct-marketing", method="subscribe-form"),
        fact("consent-given", "applicant:4", "2024-01-01T00:00:00Z",
             purpose="website-analytics", method="cookie-banner"),
        collected("applicant:4", "2024-01-01T00:00:00Z", "newsletter", {"email": "a4@e.org"}),
        collected("applicant:4", "2024-01-01T00:00:00Z", "pq-file", {"name": "Al"},
                  purpose="parliamentary-records", basis="legal-obligation",
                  category="identity"),
        fact("shared", "applicant:4", "2024-02-01T00:00:00Z", recipient="Clarity Marketing",
             role="processor", purpose="direct-marketing", basis="consent",
             records=["newsletter"], country="GB"),
        fact("shared", "applicant:4", "2024-02-01T00:00:00Z", recipient="Google Analytics",
             role="processor", purpose="website-analytics", basis="consent",
             categories=["contact"], country="US", safeguard="IDTA"),
        fact("shared", "applicant:4", "2024-02-01T00:00:00Z", recipient="NHS England",
             role="controller", purpose="parliamentary-records", basis="legal-obligation",
             records=["pq-file"], country="GB"),
        fact("erasure-requested", "applicant:4", "2024-05-01T00:00:00Z", request="ER-7"),
    ]), NOW)
    assert report.rejected == []


@pytest.fixture
def hqip(ledger: Ledger) -> Ledger:
    ledger.adopt_policy(ROOT / "config" / "hqip.toml", t("2023-01-01T00:00:00+00:00"))
    return ledger


def test_every_recipient_of_erased_data_gets_an_open_item(hqip: Ledger) -> None:
    """Recipients that got an erased record, by name or by category, are to be told; one
    that only got kept data is not."""
    shared_then_erased(hqip)
    items = {(n["recipient"], n["erasure"]): n for n in hqip.notifications()}
    assert set(items) == {("Clarity Marketing", "ER-7"), ("Google Analytics", "ER-7")}
    assert items[("Google Analytics", "ER-7")]["records"] == ["newsletter"]


def test_an_acknowledgement_closes_its_item_and_no_other(hqip: Ledger) -> None:
    """`erasure-acknowledged` closes that recipient's item; an acknowledgement for an
    erasure the recipient was never told of is rejected."""
    shared_then_erased(hqip)
    report = hqip.ingest(lines([
        fact("erasure-acknowledged", "applicant:4", "2024-05-03T00:00:00Z",
             recipient="Clarity Marketing", erasure="ER-7"),
        fact("erasure-acknowledged", "applicant:4", "2024-05-03T00:00:00Z",
             recipient="NHS England", erasure="ER-7"),
    ]), NOW)
    assert [r.line for r in report.rejected] == [2]
    assert [n["recipient"] for n in hqip.notifications()] == ["Google Analytics"]
    closed = [n for n in hqip.notifications(open_only=False) if n["acknowledged_at"]]
    assert [(n["recipient"], n["acknowledged_at"][:10]) for n in closed] == [
        ("Clarity Marketing", "2024-05-03")]


def test_a_retention_erasure_is_notified_too(hqip: Ledger) -> None:
    """Data erased by a sweep under a rule is notified to its recipients as retention:<record>."""
    hqip.ingest(lines([
        collected("subscriber:8", "2023-05-02T09:00:00Z", "signup", {"email": "s8@e.org"}),
        fact("consent-given", "subscriber:8", "2023-05-02T09:00:00Z", purpose="direct-marketing"),
        fact("shared", "subscriber:8", "2023-06-01T00:00:00Z", recipient="Clarity Marketing",
             role="processor", purpose="direct-marketing", basis="consent",
             records=["signup"], country="GB"),
        fact("unsubscribed", "subscriber:8", "2024-03-10T10:00:00Z"),
    ]), NOW)
    hqip.sweep(t("2025-07-01T00:00:00+01:00"), NOW)
    assert [(n["erasure"], n["recipient"]) for n in hqip.notifications()] == [
        ("retention:signup", "Clarity Marketing")]


def test_the_certificate_lists_erased_kept_keys_recipients_and_a_digest(hqip: Ledger) -> None:
    """The deletion certificate names what was erased and when, what was kept and why, the
    destroyed key ids (confirmed by the vault), the recipients and their acknowledgement,
    and the digest of the subject's events, equal to the audit chain's."""
    shared_then_erased(hqip)
    hqip.ingest(lines([fact("erasure-acknowledged", "applicant:4", "2024-05-03T00:00:00Z",
                            recipient="Clarity Marketing", erasure="ER-7")]), NOW)
    document = hqip.certificate("ER-7", None, NOW)
    assert [e["record"] for e in document["erased"]] == ["newsletter"]
    assert document["erased"][0]["erased_at"].startswith("2024-05-01")
    assert [(k["record"], k["ground"][:12]) for k in document["kept"]] == [
        ("pq-file", "Art 17(3)(b)")]
    assert len(document["keys_destroyed"]) == 1 and document["all_keys_destroyed"] is True
    acks = {r["recipient"]: r["acknowledged_at"] for r in document["recipients"]}
    assert acks["Clarity Marketing"] is not None and acks["Google Analytics"] is None
    subject = hqip.subject("applicant:4")
    recorder = chained_recorder(hqip.store)
    last = recorder.subject_links([(str(subject.id), subject.version)])[str(subject.id)]
    assert document["events"]["subject_chain_digest"] == last.hex()


def test_a_certificate_only_exists_for_an_erasure_request(hqip: Ledger) -> None:
    """Asking for the certificate of an access request, or an unknown one, is refused."""
    shared_then_erased(hqip)
    hqip.ingest(lines([fact("access-requested", "applicant:4", "2024-06-01T00:00:00Z",
                            request="SAR-1")]), NOW)
    with pytest.raises(LifecycleError):
        hqip.certificate("SAR-1", None, NOW)
    with pytest.raises(LifecycleError):
        hqip.certificate("nope", None, NOW)


def test_certificate_and_notifications_commands_print_json(sqlite_settings: Settings) -> None:
    """`lifecycle certificate REQUEST --json` and `notifications list --json` print one
    JSON document each; no e-mail address appears in either."""
    with Ledger(sqlite_settings) as ledger:
        ledger.adopt_policy(ROOT / "config" / "hqip.toml", t("2023-01-01T00:00:00+00:00"))
        shared_then_erased(ledger)
    env = {"LIFECYCLE_HOME": str(sqlite_settings.home), "PATH": "",
           CACHE_DIR_ENV: os.environ[CACHE_DIR_ENV]}
    for args in (["certificate", "ER-7", "--json"], ["notifications", "list", "--json"]):
        done = subprocess.run([sys.executable, "-m", "lifecycle", *args], env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        json.loads(done.stdout)
        assert "a4@e.org" not in done.stdout + done.stderr
