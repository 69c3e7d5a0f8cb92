"""A broken log is reported, not crashed on: `projections rebuild`, `replay`, `history` and
`dsar export` on a store with an altered or undecodable stored event name it (position and
subject) in one line and exit 1; `audit verify` lists it among its problems. A rebuild or
replay checks each page of the log it reads against the chain (also in the processes of a
shared rebuild); history and export check the subject's events before decoding them.

Commands run as real processes against a store tampered with behind the application's back.
"""

from __future__ import annotations

import pytest

from lifecycle.store.settings import Settings
from tests.processes import lifecycle
from tests.test_audit_verify import RawStore, events_of, ingested

COMMANDS = [("projections", "rebuild"), ("projections", "rebuild", "--workers", "2"),
            ("replay",), ("history", "member:2"), ("dsar", "export", "member:2")]


def assert_named_refusal(settings: Settings, nid: int, version: int) -> None:
    for command in COMMANDS:
        result = lifecycle(settings, *command)
        assert result.returncode == 1, (command, result.stderr)
        assert "Traceback" not in result.stderr
        lines = [line for line in result.stderr.splitlines() if line.startswith("lifecycle:")]
        assert len(lines) == 1, (command, result.stderr)
        assert f"position {nid}" in lines[0] and f"member:2 v{version}" in lines[0], (
            command, lines[0])


def test_an_altered_event_that_still_decodes_is_named_and_refused(backend: Settings) -> None:
    """One flipped bit inside a value (the event still decodes, so only the chain can tell)
    stops each command with exit 1 naming the event; `audit verify` lists it."""
    ingested(backend, subjects=3)
    nid, version, _ = events_of(backend, "member:2")[1]
    RawStore(backend).flip_one_byte(nid)
    assert_named_refusal(backend, nid, version)
    result = lifecycle(backend, "audit", "verify")
    assert result.returncode == 1 and f"altered at position {nid}: member:2" in result.stdout


def test_an_undecodable_event_is_named_and_refused(backend: Settings) -> None:
    """A stored event cut in half (it no longer decodes) stops each command with exit 1
    naming it; `audit verify` says it no longer decodes."""
    ingested(backend, subjects=3)
    nid, version, _ = events_of(backend, "member:2")[1]
    raw = RawStore(backend)
    state = raw.row(nid)[3]
    raw.set_state(nid, state[: len(state) // 2])
    assert_named_refusal(backend, nid, version)
    result = lifecycle(backend, "audit", "verify")
    assert result.returncode == 1 and "no longer decodes" in result.stdout


@pytest.mark.parametrize("command", [("history", "member:2"), ("dsar", "export", "member:2")])
def test_an_undecodable_event_behind_a_rewritten_chain_is_still_named(
        sqlite_settings: Settings, command: tuple[str, ...]) -> None:
    """Even when an intruder recomputed the chain over a broken event (so its digest
    matches), decoding it fails with one line naming the event, exit 1, no traceback."""
    ingested(sqlite_settings, subjects=3)
    nid, version, _ = events_of(sqlite_settings, "member:2")[1]
    raw = RawStore(sqlite_settings)
    raw.set_state(nid, b"{not json")
    raw.rechain(None)
    result = lifecycle(sqlite_settings, *command)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"position {nid}" in result.stderr and f"v{version}" in result.stderr
