"""A JSON array of facts posted to the desk is split into its elements without parsing
them whole, when parsing it whole fails (one element too deep or holding a number too
long): each element is then read as a line is. The split must give exactly the elements
a JSON parser gives, for any array it can parse."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings, strategies as st

from lifecycle.web.api import _array_elements

TEXT = st.text(alphabet=st.sampled_from(list('ab,[]{}":\\/ \n\tü€\x00')),
               max_size=12)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False,
                                                          allow_infinity=False) | TEXT,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(st.lists(JSON_VALUES, max_size=6), st.sampled_from([None, 0, 2]))
def test_the_split_gives_the_elements_a_parser_gives(items: list[Any], indent: int | None
                                                      ) -> None:
    """For any array (compact or indented, strings with brackets, commas, quotes and
    escapes inside), the split elements, each parsed, are the array's elements."""
    text = json.dumps(items, indent=indent, ensure_ascii=False)
    elements = _array_elements(text.encode())
    assert elements is not None
    assert [json.loads(element) for element in elements] == items


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list('[]{},"\\ 1a')), max_size=16))
def test_what_is_not_one_array_is_not_split_into_one(text: str) -> None:
    """Text that is not one JSON array (unbalanced, trailing text, empty elements) is
    never split into elements a parser would refuse as a whole: whenever the split
    answers for text that starts with `[`, a parser reads the same number of elements
    (or the text is an array a parser refuses only for an element)."""
    body = ("[" + text).encode()
    elements = _array_elements(body)
    if elements is None:
        return
    try:
        parsed = json.loads(body)
    except ValueError:
        # Then some element is not JSON on its own: the ingest rejects that line alone.
        assert any(_not_json(element) for element in elements) or not elements
        return
    assert isinstance(parsed, list) and len(parsed) == len(elements)


def _not_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return True
    return False


def test_a_deep_element_and_a_long_number_are_split_apart() -> None:
    """The two elements a whole parse refuses come out as their own texts."""
    deep = "[" * 5000 + "]" * 5000
    big = "9" * 5000
    assert _array_elements(f'[{{"a": 1}}, {deep}, {big}]'.encode()) == ['{"a": 1}', deep, big]
