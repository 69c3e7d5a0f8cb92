"""A fact id names one fact: the same fact spelt differently is one fact, different facts never
share canonical bytes, and odd ids are bound and recognised on both backends."""

from __future__ import annotations

import hmac
import json
from collections.abc import Mapping
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from lifecycle.domain.facts import parse_line
from lifecycle.services.ingest import canonical
from lifecycle.services.ledger import Ledger
from lifecycle.store.master_key import derive_key
from lifecycle.store.settings import Settings
from lifecycle.store.vault import KeyVault, KeyedHash, create_vault_engine
from tests.processes import env_for

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def _canon(fact: Mapping[str, object]) -> bytes:
    return canonical(parse_line(json.dumps(fact), NOW))


COLLECTED = {"id": "f1", "subject": "s1", "at": "2024-01-01T00:00:00Z", "type": "collected",
             "record": "r1", "category": "contact", "purpose": "marketing",
             "basis": "consent", "source": "data-subject", "data": {"a": 1}}
SHARED = {"id": "f2", "subject": "s1", "at": "2024-01-01T00:00:00Z", "type": "shared",
          "recipient": "x", "role": "processor", "purpose": "marketing", "basis": "consent",
          "records": ["r1"], "country": "GB"}


def test_a_json_number_written_1_or_1_0_is_the_same_fact() -> None:
    """Same fact, same bytes: JSON has one number type, so data {"a": 1} and {"a": 1.0}
    spell the same fact and a resend written by another serialiser is a duplicate."""
    assert _canon(COLLECTED) == _canon({**COLLECTED, "data": {"a": 1.0}})


def test_a_share_without_categories_written_empty_or_absent_is_the_same_fact() -> None:
    """Same fact, same bytes: a share naming no categories is the same fact whether
    `categories` is left out or written as an empty list."""
    assert _canon(SHARED) == _canon({**SHARED, "categories": []})


def test_spellings_that_are_one_fact_get_one_canonical_form() -> None:
    """Same fact, same bytes: key order, time offset, \\u escapes and explicit defaults."""
    same = [
        ({**COLLECTED, "data": {"b": 2, "a": {"y": 1, "x": 2}}},
         {**COLLECTED, "data": {"a": {"x": 2, "y": 1}, "b": 2}}),
        (COLLECTED, {**COLLECTED, "at": "2024-01-01T01:00:00+01:00"}),
        ({**COLLECTED, "record": "é"}, {**COLLECTED, "record": "\u00e9"}),
        ({"id": "a1", "subject": "s", "at": "2024-01-01T00:00:00Z", "type": "access-requested",
          "request": "q"},
         {"id": "a1", "subject": "s", "at": "2024-01-01T00:00:00Z", "type": "access-requested",
          "request": "q", "kind": "access", "identity_check": False}),
        ({"id": "e1", "subject": "s", "at": "2024-01-01T00:00:00Z", "type": "erasure-requested"},
         {"id": "e1", "subject": "s", "at": "2024-01-01T00:00:00Z", "type": "erasure-requested",
          "request": "erasure:e1"}),
    ]
    for one, other in same:
        assert _canon(one) == _canon(other)
    assert canonical(parse_line(
        '{"id":"f","subject":"s","at":"2024-01-01T00:00:00Z","type":"activity","record":"\\u00e9"}',
        NOW)) == canonical(parse_line(
        '{"id":"f","subject":"s","at":"2024-01-01T00:00:00Z","type":"activity","record":"é"}', NOW))


def test_different_facts_never_share_canonical_bytes() -> None:
    """A different fact is never a silent duplicate: separators, data vs fields, None vs
    value and hold end times all change the bytes."""
    different = [
        ({**COLLECTED, "data": {"n": "r1\x1fx"}}, {**COLLECTED, "data": {"n": "r1"}}),
        ({**COLLECTED, "data": {"a": "1"}}, COLLECTED),
        ({**COLLECTED, "data": {"record": "r1"}}, {**COLLECTED, "data": {}}),
        ({"id": "h", "subject": "s", "at": "2024-01-01T00:00:00Z", "type": "legal-hold-placed",
          "hold": "h", "scope": "all", "reason": "r"},
         {"id": "h", "subject": "s", "at": "2024-01-01T00:00:00Z", "type": "legal-hold-placed",
          "hold": "h", "scope": "all", "reason": "r", "until": "2030-01-01T00:00:00Z"}),
        ({"id": "c", "subject": "s", "at": "2024-01-01T00:00:00Z", "type": "activity"},
         {"id": "c", "subject": "s", "at": "2024-01-01T00:00:00Z", "type": "activity",
          "record": "null"}),
        ({**COLLECTED, "at": "2024-01-01T00:00:00.000001Z"}, COLLECTED),
    ]
    for one, other in different:
        assert _canon(one) != _canon(other)


def _activity(fid: str, subject: str) -> str:
    return json.dumps({"id": fid, "subject": subject, "at": "2024-01-01T00:00:00Z",
                       "type": "activity"})


ODD_IDS = ['q"uo\'te', "back\\slash\\\\", "ünï©ødé-😀", "x" * 200, "a,b}{[]", " space ",
           "erasure:x", "$[0]", "NULL"]


def test_odd_fact_ids_are_claimed_and_recognised(ledger: Ledger) -> None:
    """A fact id names one fact whatever its characters: each odd id lands once, a resend
    is a duplicate, and other content under it (another subject) is refused naming it."""
    first = ledger.ingest([_activity(fid, "s1") for fid in ODD_IDS], NOW)
    assert (first.accepted, first.rejected) == (len(ODD_IDS), [])
    again = ledger.ingest([_activity(fid, "s1") for fid in ODD_IDS], NOW)
    assert (again.accepted, again.duplicates, again.rejected) == (0, len(ODD_IDS), [])
    other = ledger.ingest([_activity(fid, "s2") for fid in ODD_IDS], NOW)
    assert other.accepted == 0
    assert sorted(r.fact_id or "" for r in other.rejected) == sorted(ODD_IDS)


def test_a_fact_id_with_a_nul_character_is_one_rejected_line(ledger: Ledger) -> None:
    """A NUL in a fact id (valid JSON, accepted by SQLite) never sinks the batch: the
    lines around it land on every backend and the line itself is stored or rejected alone."""
    bad = json.dumps({"id": "a\u0000b", "subject": "s1", "at": "2024-01-01T00:00:00Z",
                      "type": "activity"})
    try:
        report = ledger.ingest([_activity("ok1", "s1"), bad, _activity("ok2", "s2")], NOW)
    except Exception as error:  # noqa: BLE001 - the break is that it raises at all
        pytest.fail(f"ingest raised {type(error).__name__}: {str(error)[:200]}")
    assert report.accepted + len(report.rejected) == 3
    assert [r.line for r in report.rejected] in ([], [2])


def test_two_processes_offering_one_id_with_different_content_bind_it_once(
        backend: Settings, tmp_path: Path) -> None:
    """Two ingests started together, each offering the id `shared-id` for a different fact:
    exactly one fact lands under it, the other is rejected naming the id (exit 1), and
    every other line of both files lands."""
    files = []
    for n in (1, 2):
        path = tmp_path / f"part-{n}.jsonl"
        path.write_text("\n".join([_activity("shared-id", f"race:{n}"),
                                   *(_activity(f"own-{n}-{k}", f"race:{n}") for k in range(50))])
                        + "\n", encoding="utf-8")
        files.append(path)
    procs = [subprocess.Popen([sys.executable, "-m", "lifecycle", "ingest", str(path), "--json"],
                              env=env_for(backend), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for path in files]
    reports = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        reports.append((proc.returncode, json.loads(out), err))
    assert sorted(r["accepted"] for _, r, _ in reports) == [50, 51]
    loser = next((code, r) for code, r, _ in reports if r["accepted"] == 50)
    assert loser[0] == 1 and [x["fact"] for x in loser[1]["rejections"]] == ["shared-id"]
    assert "'shared-id'" in loser[1]["rejections"][0]["reason"]
    with Ledger(backend) as ledger:
        holders = [n for n in (1, 2) if ledger.subject(f"race:{n}").has_seen("shared-id")]
        assert len(holders) == 1


@given(st.binary(max_size=200), st.binary(max_size=600))
@hsettings(max_examples=300, deadline=None)
def test_the_keyed_hash_is_hmac_sha256(key: bytes, message: bytes) -> None:
    """Stored fact digests and suppression-list hashes are HMAC-SHA256 (`hmac.digest`):
    the vault's faster spelling of it gives the same digest for any key and message."""
    assert KeyedHash(key).hexdigest(message) == hmac.digest(key, message, "sha256").hex()


def test_fact_digests_and_address_hashes_are_hmacs_under_the_vault_keys(
        tmp_path: Path) -> None:
    """A fact's digest and an address's hash are HMAC-SHA256 under the keys derived from
    the master key, and follow a key the vault loads (as after a rotation)."""
    master = bytes(range(32))
    vault = KeyVault(create_vault_engine(f"sqlite:///{tmp_path / 'vault.db'}"), master)
    try:
        fact = _canon(COLLECTED)
        assert vault.fact_digest(fact) == hmac.digest(
            derive_key(master, "fact-digest"), fact, "sha256").hex()
        assert vault.email_hash("A@B.org", legacy=True) == hmac.digest(
            derive_key(master, "suppression-hash"), b"a@b.org", "sha256").hex()
        vault._digest_key = b"another key"
        assert vault.fact_digest(fact) == hmac.digest(b"another key", fact, "sha256").hex()
    finally:
        vault.engine.dispose()
