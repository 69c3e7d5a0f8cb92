"""A command given every argument by keyword binds them in one step now: for any call of
an aggregate's command (arguments split between position and keyword in any way, keywords
in any order, some left to their defaults, some missing, repeated or unknown) the binding
is exactly the code before's (kept below, verbatim, as the reference): the same values in
the parameters' order, or the same error.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings as hsettings, strategies as st

from lifecycle.aggregates.data_subject import DataSubject
from lifecycle.aggregates.fast_events import FastCommand, _Signature
from lifecycle.aggregates.request_case import RequestCase

COMMANDS = sorted(((cls.__name__, name, attr) for cls in (DataSubject, RequestCase)
                   for name, attr in vars(cls).items() if isinstance(attr, FastCommand)),
                  key=lambda c: (c[0], c[1]))


# -- the code before (lifecycle/aggregates/fast_events.py), verbatim ----------------------

def old_bind(self: _Signature, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The arguments by name, in the parameters' order."""
    if not kwargs and self.all_positional and len(args) == len(self.names):
        return dict(zip(self.names, args))
    if len(args) > len(self.positional):
        raise TypeError(f"{self.qualname}() takes {len(self.positional)} positional "
                        f"arguments but {len(args)} were given")
    values = dict(zip(self.positional, args))
    for name, value in kwargs.items():
        if name in values:
            raise TypeError(f"{self.qualname}() got multiple values for argument "
                            f"{name!r}")
        values[name] = value
    if len(values) != len(self.names):
        for name in self.names:
            if name not in values:
                if name not in self.defaults:
                    raise TypeError(f"{self.qualname}() missing required argument "
                                    f"{name!r}")
                values[name] = self.defaults[name]
        if len(values) != len(self.names):
            unknown = sorted(set(values) - set(self.names))
            raise TypeError(f"{self.qualname}() got an unexpected keyword argument "
                            f"{unknown[0]!r}")
    return {name: values[name] for name in self.names}



# -- calls -----------------------------------------------------------------------------------

@st.composite
def calls(draw: st.DrawFn) -> tuple[_Signature, tuple[Any, ...], dict[str, Any]]:
    _, _, command = draw(st.sampled_from(COMMANDS))
    signature = command.signature
    names = list(signature.names)
    given_names = [n for n in names
                   if n not in signature.defaults or draw(st.booleans())]
    if draw(st.integers(0, 9)) == 0 and given_names:  # one missing
        given_names.remove(draw(st.sampled_from(given_names)))
    split = draw(st.integers(0, len(signature.positional)))
    positional = names[:split]
    args = tuple(f"v-{n}" for n in positional)
    keywords = [n for n in given_names if n not in positional]
    keywords = draw(st.permutations(keywords))
    kwargs = {n: f"v-{n}" for n in keywords}
    extra = draw(st.integers(0, 12))
    if extra == 0:
        kwargs["colour"] = "red"  # unknown
    elif extra == 1 and positional:
        kwargs[positional[0]] = "again"  # repeated
    elif extra == 2:
        args = (*args, "one too many")
    return signature, args, kwargs


def result(bind: Any, signature: _Signature, args: tuple[Any, ...],
           kwargs: dict[str, Any]) -> Any:
    try:
        bound = bind(signature, args, dict(kwargs))
    except (TypeError, KeyError) as error:
        return type(error).__name__, str(error)
    return list(bound.items())


@hsettings(max_examples=3000, deadline=None)
@given(calls())
def test_binding_is_as_before(call: tuple[_Signature, tuple[Any, ...], dict[str, Any]]
                              ) -> None:
    """The same values in the same order, or the same error, as before."""
    signature, args, kwargs = call
    assert result(_Signature.bind, signature, args, kwargs) == result(
        old_bind, signature, args, kwargs)
