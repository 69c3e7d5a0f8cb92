"""Attack on the fast read path (ea7827e, 97bf339): stored events damaged behind a
rewritten chain (so only decoding or applying them can tell) in ways the library's
decoder takes differently from plain JSON damage: a state that is JSON but not an
object, an object missing the event's attributes, an unknown transcoding, a string class
version, a float. Each command that reads the subject either reads it as the library
would or refuses with one line naming the event (position, subject, version), exit 1,
no traceback."""

from __future__ import annotations

import json

import pytest

from lifecycle.store.settings import Settings
from tests.processes import lifecycle
from tests.test_audit_verify import RawStore, events_of, ingested

COMMANDS = [("projections", "rebuild"), ("replay",), ("history", "member:2"),
            ("dsar", "export", "member:2")]


def damaged(state: bytes, how: str) -> bytes:
    value = json.loads(state)
    if how == "list":
        return b"[]"
    if how == "string":
        return b'"x"'
    if how == "attributes-missing":
        return json.dumps({"timestamp": value["timestamp"]}).encode()
    if how == "unknown-transcoding":
        return json.dumps({**value, "at": {"_type_": "nope", "_data_": 1}}).encode()
    if how == "class-version-text":
        return json.dumps({**value, "class_version": "2"}).encode()
    assert how == "time-not-text"
    return json.dumps({**value, "timestamp": {"_type_": "datetime_iso",
                                              "_data_": 1.5}}).encode()


HOWS = ["list", "string", "attributes-missing", "unknown-transcoding", "class-version-text",
        "time-not-text"]


@pytest.mark.parametrize("how,command", [(how, command) for how in HOWS
                                         for command in COMMANDS])
def test_a_damaged_event_behind_a_rewritten_chain_is_named(
        sqlite_settings: Settings, how: str, command: tuple[str, ...]) -> None:
    """See the module: exit 1, one `lifecycle:` line naming position and `member:2 vN`."""
    ingested(sqlite_settings, subjects=3)
    nid, version, topic = events_of(sqlite_settings, "member:2")[1]
    raw = RawStore(sqlite_settings)
    raw.set_state(nid, damaged(raw.row(nid)[3], how))
    raw.rechain(None)
    result = lifecycle(sqlite_settings, *command)
    assert "Traceback" not in result.stderr, (topic, result.stderr[-1500:])
    assert result.returncode == 1, result.stdout[-500:]
    named = [line for line in result.stderr.splitlines() if line.startswith("lifecycle:")]
    assert len(named) == 1, result.stderr
    assert f"position {nid}" in named[0] and f"v{version}" in named[0], named
