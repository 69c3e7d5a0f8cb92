"""Hostile and unlucky input against the guarantees (docs/guarantees.md, docs/facts.md,
docs/policy.md): each test is a way an attacker broke them once, and states the rule."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from lifecycle.domain import facts as f
from lifecycle.services.ledger import Ledger
from tests.facts_builder import collected, fact, lines
from tests.processes import lifecycle

HQIP = Path(__file__).resolve().parents[1] / "config" / "hqip.toml"
ADOPTED = datetime(2023, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 1, 1, tzinfo=UTC)
ALICE = "alice.smith@example.org"


@pytest.fixture
def hqip(ledger: Ledger) -> Ledger:
    ledger.adopt_policy(HQIP, ADOPTED)
    return ledger


# -- input: types are strict -----------------------------------------------------------


@pytest.mark.parametrize("text", ["1704099600", "1704099600.5", "0"])
def test_a_time_written_as_a_string_of_digits_is_rejected(text: str) -> None:
    """A time is an RFC 3339 string with a UTC offset (docs/facts.md, "Field types"); a
    number is never a time, not even a Unix timestamp written as a string."""
    line = json.dumps({"id": "ts", "type": "consent-given", "subject": "m:1", "at": text,
                       "purpose": "membership"})
    with pytest.raises(f.InvalidLine):
        f.parse_line(line, NOW)


def test_a_hold_until_written_as_a_string_of_digits_is_rejected() -> None:
    """`until` is a time field too: RFC 3339 with offset, never a number in a string."""
    line = json.dumps({"id": "h", "type": "legal-hold-placed", "subject": "m:1",
                       "at": "2024-01-01T00:00:00Z", "hold": "H", "scope": "all",
                       "reason": "case", "until": "4102444800"})
    with pytest.raises(f.InvalidLine):
        f.parse_line(line, NOW)


def test_nan_and_infinity_in_data_are_rejected(ledger: Ledger) -> None:
    """`data` is a JSON object (docs/facts.md); NaN and Infinity are not JSON, so a line
    carrying them is rejected (exports stay valid JSON)."""
    line = ('{"id":"n1","type":"collected","subject":"m:nan","at":"2024-01-01T09:00:00Z",'
            '"record":"r","category":"contact","purpose":"membership","basis":"contract",'
            '"source":"data-subject","data":{"x":NaN,"y":-Infinity}}')
    report = ledger.ingest([line], NOW)
    assert report.accepted == 0 and [r.line for r in report.rejected] == [1]


def test_subject_show_json_is_strict_json(sqlite_settings: Any) -> None:
    """Every `--json` output is JSON a strict reader accepts, whatever was ingested."""
    line = ('{"id":"n1","type":"collected","subject":"m:nan","at":"2024-01-01T09:00:00Z",'
            '"record":"r","category":"contact","purpose":"membership","basis":"contract",'
            '"source":"data-subject","data":{"x":NaN}}\n')
    lifecycle(sqlite_settings, "ingest", "-", stdin=line)
    shown = lifecycle(sqlite_settings, "subject", "show", "m:nan", "--json")

    def refuse(constant: str) -> Any:
        raise ValueError(f"not JSON: {constant}")

    if shown.returncode == 0:
        json.loads(shown.stdout, parse_constant=refuse)


# -- fact ids: the same fact is a duplicate ---------------------------------------------


def test_the_same_fact_with_the_same_instant_in_another_offset_is_a_duplicate(
        ledger: Ledger) -> None:
    """The same id with the same content is a duplicate (docs/guarantees.md). `at` is an
    instant: a re-export of the same fact written in local time (+01:00 in summer) is the
    same fact, a duplicate, as "Z" against "+00:00" is."""
    first = fact("consent-given", "m:off", "2024-06-01T09:00:00Z", id="off-1",
                 purpose="membership")
    assert ledger.ingest(lines([first]), NOW).accepted == 1
    again = ledger.ingest(lines([dict(first, at="2024-06-01T10:00:00+01:00")]), NOW)
    assert (again.duplicates, again.rejected) == (1, [])


def test_an_erasure_request_with_its_default_request_id_spelt_out_is_a_duplicate(
        ledger: Ledger) -> None:
    """The default request id of `erasure-requested` is `erasure:<fact id>` (docs/facts.md):
    the same fact with that default written out is the same fact, a duplicate, not a
    different fact rejected with exit 1."""
    first = fact("erasure-requested", "m:er", "2024-06-01T09:00:00Z", id="er-1")
    assert ledger.ingest(lines([first]), NOW).accepted == 1
    again = ledger.ingest(lines([dict(first, request="erasure:er-1")]), NOW)
    assert (again.duplicates, again.rejected) == (1, [])


# -- suppression: order independence ------------------------------------------------------


def _crm_import(ledger: Ledger) -> tuple[int, int]:
    report = ledger.ingest(lines([
        fact("consent-given", "crm:1", "2024-06-01T00:00:00Z", purpose="direct-marketing",
             method="crm-import"),
        collected("crm:1", "2024-06-01T00:00:00Z", "row", {"email": ALICE},
                  source="third-party"),
    ]), NOW)
    return report.accepted, len(report.rejected)


@pytest.mark.parametrize("order", ["fact-time", "reversed"])
def test_the_suppression_list_does_not_depend_on_arrival_order(hqip: Ledger,
                                                               order: str) -> None:
    """State follows fact time, and a suppressed address is never accepted for marketing
    (order independence). Alice unsubscribes on 10 March; a record with her address is
    collected for her on 1 April, while she is suppressed: her address goes on the list
    in either arrival order, so a bulk CRM import (crm-import consent, then her address)
    is refused."""
    unsubscribe = fact("unsubscribed", "s:alice", "2024-03-10T10:00:00Z")
    # Not for marketing (which the unsubscribe stops): an enquiry holding her address.
    record = collected("s:alice", "2024-04-01T09:00:00Z", "enquiry", {"email": ALICE},
                       purpose="enquiries-complaints", basis="legitimate-interests")
    for one in ([unsubscribe, record] if order == "fact-time" else [record, unsubscribe]):
        assert hqip.ingest(lines([one]), NOW).accepted == 1
    assert _crm_import(hqip) == (1, 1)


# -- suppression: spellings the normaliser misses -----------------------------------------


@pytest.mark.parametrize("spelling", [
    "alice.smith@example.org\u3002",         # IDNA full stop as the domain's trailing dot
    "alice.smith\uff20example\uff0eorg\u3002",  # the same, full-width
    '"alice.smith"@example.org',              # RFC 5321 quoted local part, same mailbox
    "alice.smith@example.org (Alice Smith)",  # RFC 5322 comment after the address
    "(Alice) alice.smith@example.org",        # ... and before it
])
def test_a_suppressed_address_is_refused_in_every_spelling(hqip: Ledger,
                                                           spelling: str) -> None:
    """Suppressed means suppressed: "marketing data for an address on the suppression list
    is refused however the address is spelt" (README). Each spelling here delivers to
    alice.smith@example.org (an IDNA full stop, a quoted local part, a comment), so a
    CRM import carrying it is refused."""
    assert hqip.ingest(lines([
        fact("consent-given", "s:alice", "2023-05-02T09:00:00Z", purpose="direct-marketing",
             method="subscribe-form"),
        collected("s:alice", "2023-05-02T09:00:00Z", "newsletter", {"email": ALICE}),
        fact("unsubscribed", "s:alice", "2024-03-10T10:00:00Z"),
    ]), NOW).accepted == 3
    report = hqip.ingest(lines([
        fact("consent-given", "crm:2", "2024-06-01T00:00:00Z", purpose="direct-marketing",
             method="crm-import"),
        collected("crm:2", "2024-06-01T00:00:00Z", "row", {"email": spelling},
                  source="third-party"),
    ]), NOW)
    assert report.accepted == 1 and [r.line for r in report.rejected] == [2]


# -- crash: a fact id bound by a run that stored nothing -------------------------------------


def test_a_fact_id_claimed_by_a_killed_run_does_not_outlive_it(backend: Any,
                                                              tmp_path: Path) -> None:
    """A fact id bound by a run killed before saving binds nothing once the grace is over
    (a run may still be saving within it): the operator's corrected line (same id, the
    wrong `at` fixed) is then accepted, since no fact of that id was ever recorded."""
    from datetime import UTC, datetime, timedelta

    from lifecycle.store.vault import CLAIM_GRACE
    import os
    import signal
    import subprocess
    import sys

    from lifecycle.support.faults import CRASH_ENV
    from tests.processes import env_for

    wrong = collected("m:crash", "2024-01-02T09:00:00Z", "signup", {"name": "C"},
                      purpose="membership", basis="contract", id="crash-1")
    path = tmp_path / "facts.jsonl"
    path.write_text(json.dumps(wrong) + "\n", encoding="utf-8")
    env = {**env_for(backend), CRASH_ENV: "keys-stored"}
    killed = subprocess.run([sys.executable, "-m", "lifecycle", "ingest", str(path)],
                            env=env, capture_output=True, text=True, timeout=60)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    with Ledger(backend) as ledger:
        assert ledger.store.get_subject("m:crash") is None  # nothing was recorded
        corrected = lines([dict(wrong, at="2024-01-01T09:00:00Z")])
        soon = ledger.ingest(corrected, datetime.now(UTC))
        assert [r.line for r in soon.rejected] == [1]  # within the grace: may be saving
        later = datetime.now(UTC) + CLAIM_GRACE + timedelta(minutes=1)
        fixed = ledger.ingest(corrected, later)
    assert (fixed.accepted, fixed.rejected) == (1, []), os.linesep.join(
        r.reason for r in fixed.rejected)
