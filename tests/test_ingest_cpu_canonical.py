"""A fact's canonical bytes (the content its keyed digest and so its fact-id binding are
made from) stay exactly what they were now that the data's JSON is written by a prebuilt
encoder and data holding only strings skips the number pass: for any data value (nested
objects and arrays, integer-valued and other floats, integers beyond 64 bits, any text)
the same text as `json.dumps(..., sort_keys=True, separators=(",", ":"))` of the value
with integral floats as integers, and for any collected or rectified fact the same bytes
as the code before (kept below, verbatim, as the reference).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hypothesis import assume, given, settings as hsettings, strategies as st

from lifecycle.domain.facts import InvalidLine, parse_line
from lifecycle.services.ingest import (
    _CANONICAL_DATA, _SPELT_APART, _json_numbers, _utc_text, canonical,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
_CANONICAL_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


# -- the code before (lifecycle/services/ingest.py), verbatim ----------------------------

def _old_json_numbers(value: Any) -> Any:
    """JSON has one number type: 1 and 1.0 are the same value."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _old_json_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_old_json_numbers(v) for v in value]
    return value


def old_canonical(fact: Any) -> bytes:
    """A fact's content in one spelling (same fact, same bytes), for its digest: times in
    UTC, whatever offset they were written with; `data` with its keys sorted; defaults
    filled in as ingest fills them."""
    if fact.type == "erasure-requested" and fact.request is None:
        fact = fact.model_copy(update={"request": f"erasure:{fact.id}"})
    elif fact.type == "shared":  # lists without order; empty is the same as absent
        fact = fact.model_copy(update={"categories": sorted(fact.categories or []) or None,
                                       "records": sorted(fact.records or []) or None})
    parts = [fact.model_dump_json(exclude=_SPELT_APART, exclude_none=True),
             _utc_text(fact.at)]
    if fact.type == "legal-hold-placed" and fact.until is not None:
        parts.append(_utc_text(fact.until))
    elif fact.type == "identity-verified" and fact.received_at is not None:
        parts.append(_utc_text(fact.received_at))
    elif fact.type in ("collected", "rectified"):
        parts.append(_CANONICAL_JSON.encode(_old_json_numbers(fact.data)))
    return "\x1f".join(parts).encode()


# -- values and facts ----------------------------------------------------------------------

leaves = (st.none() | st.booleans() | st.integers() | st.integers(-2**70, 2**70)
          | st.floats(allow_nan=False, allow_infinity=False)
          | st.integers(-2**60, 2**60).map(float) | st.text())
values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)
data = st.dictionaries(st.text(max_size=8), values, max_size=5) | st.dictionaries(
    st.text(max_size=8), st.text(), max_size=5)  # strings only: the skipped pass


@hsettings(max_examples=1000, deadline=None)
@given(data)
def test_data_text_is_json_dumps(value: dict[str, Any]) -> None:
    """The data's text is `json.dumps` (sorted keys, no spaces) of it, integral floats as
    integers, as before."""
    expected = json.dumps(_old_json_numbers(value), sort_keys=True, separators=(",", ":"))
    assert "".join(_CANONICAL_DATA(_json_numbers(value), 0)) == expected


@hsettings(max_examples=500, deadline=None)
@given(st.sampled_from(["collected", "rectified"]), data)
def test_canonical_bytes_are_as_before(kind: str, value: dict[str, Any]) -> None:
    """A collected or rectified fact with this data: the same canonical bytes as before."""
    fact = {"id": "f1", "type": kind, "subject": "member:1", "at": "2024-02-03T04:05:06+01:00",
            "record": "contact", "data": value}
    if kind == "collected":
        fact.update(category="contact", purpose="membership", basis="contract",
                    source="data-subject")
    try:
        parsed = parse_line(json.dumps(fact), NOW)
    except InvalidLine:
        assume(False)
    assert canonical(parsed) == old_canonical(parsed)


def test_every_example_fact_is_as_before() -> None:
    """Every fact of the example files (19 types, optional fields present and absent) and
    of the benchmark's file: the same canonical bytes as before."""
    from bench.suite import fact_lines

    root = Path(__file__).resolve().parents[1]
    lines = [line for name in ("hqip-facts.jsonl", "ihpa-facts.jsonl")
             for line in (root / "examples" / name).read_text().splitlines() if line.strip()]
    lines += list(fact_lines(0, 200, 200, 20))
    kinds = set()
    for line in lines:
        fact = parse_line(line, NOW)
        kinds.add(fact.type)
        assert canonical(fact) == old_canonical(fact)
    assert len(kinds) >= 19
