"""attack18c: what a rejection says about the input it rejects.

docs/facts.md: "A reason never contains a personal value"; README (desk API): "bad input:
422 with `detail` listing each `field` and `reason` (never the value given)". A careless
client that puts a personal value where a field name goes (a flattened CRM row keyed by
address, `{"alice@...": true}` instead of `{"email": "alice@..."}`) gives that value as a
field name, and the rejection must not repeat it: the report and the 422 are logged,
mailed and pasted into tickets.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime


from lifecycle.domain import facts as f
from lifecycle.store.settings import Settings
from tests.processes import lifecycle

NOW = datetime(2026, 1, 1, tzinfo=UTC)
ADDRESS = "ottoline.marchbanks-yeo@example.org"
GOOD = {"id": "g-1", "type": "collected", "subject": "m:1", "at": "2024-01-02T10:00:00Z",
        "record": "signup", "category": "contact", "purpose": "enquiries",
        "basis": "legitimate-interests", "source": "data-subject", "data": {"email": ADDRESS}}


def _probes() -> list[str]:
    """Lines that are wrong in every other way the validator names: a value of the wrong
    type, out of a vocabulary, too long, not a time, with control characters."""
    wrong: list[dict[str, object]] = []
    for field, value in (("record", ADDRESS + "\u0000"), ("category", ADDRESS),
                         ("purpose", ADDRESS), ("basis", [ADDRESS]), ("at", ADDRESS),
                         ("source_name", ADDRESS * 10), ("data", ADDRESS),
                         ("subject", {"email": ADDRESS})):
        wrong.append({**GOOD, "id": f"w-{field}", field: value})
    wrong.append({"id": "w-hold", "type": "legal-hold-placed", "subject": "m:1",
                  "at": "2024-01-02T10:00:00Z", "hold": "h", "scope": "all",
                  "reason": [ADDRESS]})
    wrong.append({"id": "w-type", "type": ADDRESS, "subject": "m:1",
                  "at": "2024-01-02T10:00:00Z"})
    return [json.dumps(line) for line in wrong]


def test_reasons_for_wrong_values_never_repeat_them() -> None:
    """Held: a value of the wrong type, outside a vocabulary, too long, not a time or with
    a control character is rejected naming the field, never repeating the value."""
    probes = _probes()
    rejected = [item for item in f.parse_lines(probes, NOW) if isinstance(item, f.Rejection)]
    assert len(rejected) == len(probes)
    for item in rejected:
        assert "ottoline" not in item.reason.lower(), item.reason


def test_an_unknown_field_named_by_a_personal_value_is_not_repeated(
        sqlite_settings: Settings) -> None:
    """An ingest line with an unknown field whose name is an e-mail address is rejected
    (unknown fields are errors), with a reason that does not repeat the address; the good
    line beside it lands."""
    flattened = {**GOOD, "id": "g-2", ADDRESS: True}
    result = lifecycle(sqlite_settings, "ingest", "-", "--json",
                       stdin=json.dumps(GOOD) + "\n" + json.dumps(flattened) + "\n")
    report = json.loads(result.stdout)
    assert result.returncode == 1 and report["accepted"] == 1
    [rejection] = report["rejections"]
    assert rejection["line"] == 2
    assert "ottoline" not in result.stdout.lower() + result.stderr.lower(), rejection


def test_a_desk_422_never_names_a_personal_value_given_as_a_key(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The desk's 422 names each field and reason, never the value given: a body keyed by
    the address itself (`{"email": ..., "<address>": 1}`) is refused without repeating
    the address, and the access log holds no trace of it either."""
    from tests.web_service import start_service

    home = tmp_path / "home"
    settings = Settings(home=home, database_url=None, master_key=None,
                        master_key_file=home / "master.key")
    service = start_service(settings, tmp_path, seed=False)
    try:
        with service.client("responder") as client:
            answer = client.post("/api/subjects/find", json={"email": "x@example.org",
                                                             ADDRESS: 1})
        assert answer.status_code == 422
        assert "ottoline" not in service.log_text().lower()
        assert "ottoline" not in answer.text.lower(), answer.text
    finally:
        service.stop()
