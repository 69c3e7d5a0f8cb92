"""Parsing's two shortcuts decide as before: a line is blank exactly when it was (`not
text.strip()`), for any text, Unicode whitespace included; and a fact's data is refused
for the same reason or accepted exactly as the code before (kept below, verbatim) did, for
any value (strings only, nested objects and arrays at any depth, NaN and infinities) and
any depth limit.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings as hsettings, strategies as st

from lifecycle.domain.facts import _TOO_DEEP, _data_problem, parse_lines

NOW = datetime(2026, 1, 1, tzinfo=UTC)


# -- the code before (lifecycle/domain/facts.py), verbatim --------------------------------

def old_data_problem(value: Any, levels: int) -> str | None:
    """What is wrong with a parsed `data` value: nesting more than `levels` levels (itself
    is level 1), or NaN/Infinity, which JSON does not have (exports could not carry them)."""
    stack = [(value, 1)]
    while stack:
        node, level = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        if level > levels:
            return _TOO_DEEP
        for child in children:
            if isinstance(child, (dict, list)):
                stack.append((child, level + 1))
            elif isinstance(child, float) and not math.isfinite(child):
                return "data: NaN and Infinity are not JSON numbers"
    return None



leaves = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5))
values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=3), inner, max_size=3), max_leaves=30)
data = (st.dictionaries(st.text(max_size=5), values, max_size=4)
        | st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=4))


@hsettings(max_examples=2000, deadline=None)
@given(data, st.integers(0, 6))
def test_data_problems_are_as_before(value: dict[str, Any], levels: int) -> None:
    """The same problem (too deep, NaN/Infinity) or none, at any depth limit."""
    assert _data_problem(value, levels) == old_data_problem(value, levels)


@hsettings(max_examples=2000, deadline=None)
@given(st.text(st.characters(exclude_categories=["Cs"]), max_size=8)
       | st.text(" \t\r\n\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u2028\u3000{", max_size=6))
def test_blank_lines_are_as_before(text: str) -> None:
    """A line is skipped (nothing reported for it) exactly when `not text.strip()`."""
    reported = list(parse_lines(["{}", text], NOW))  # the first: always a rejection
    assert (len(reported) == 1) == (not text.strip())
