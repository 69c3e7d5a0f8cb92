"""Replay without the library's per-event dispatch.

Replaying an aggregate applies each stored event through eventsourcing's `mutate`: for an
event of an `@event`-decorated method, the id and version checks, then `apply`, which
looks the decorated method up, filters the event's attributes for it, binds and calls it,
and calls the base classes' (empty) `apply`; then the version and modified time move on.
`mutate` does exactly that with the method and the checks looked up once per event class.
An event class whose `mutate` or `apply` is not the library's plain one for a decorated
method (a created event, a custom `apply`) goes through its own `mutate`, unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from eventsourcing.domain import (
    CanMutateAggregate,
    DecoratedFuncCaller,
    OriginatorIDError,
    OriginatorVersionError,
    decorated_funcs,
    filter_kwargs_for_method_params,
)

Applier = Callable[[Any, Any], Any]

_appliers: dict[type, Applier] = {}


def _plain_decorated(cls: type) -> Callable[..., None] | None:
    """The decorated method an event class applies, if it does so only through the
    library's own `mutate` and `apply` (nothing of its own, or of a base, in between)."""
    if (getattr(cls, "mutate", None) is not CanMutateAggregate.mutate
            or getattr(cls, "apply", None) is not DecoratedFuncCaller.apply):
        return None
    mro = cls.__mro__
    after = mro[mro.index(DecoratedFuncCaller) + 1:]
    # `DecoratedFuncCaller.apply` ends with `super().apply(aggregate)`: the next `apply`
    # in line must be the library's empty one.
    following = next((base for base in after if "apply" in vars(base)), None)
    if following is not CanMutateAggregate:
        return None
    return decorated_funcs.get(cls)


def _applier(cls: type) -> Applier:
    func = _plain_decorated(cls)
    if func is None:
        def library(event: Any, aggregate: Any) -> Any:
            return event.mutate(aggregate)
        return library
    method = func

    def direct(event: Any, aggregate: Any) -> Any:
        # CanMutateAggregate.mutate with DecoratedFuncCaller.apply, step for step.
        assert aggregate is not None
        if event.originator_id != aggregate.id:
            raise OriginatorIDError(event.originator_id, aggregate.id)
        next_version = aggregate.version + 1
        if event.originator_version != next_version:
            raise OriginatorVersionError(event.originator_version, next_version)
        method(aggregate, **filter_kwargs_for_method_params(vars(event), method))
        aggregate.version = event.originator_version
        aggregate.modified_on = event.timestamp
        return aggregate
    return direct


def mutate(event: Any, aggregate: Any) -> Any:
    """`event.mutate(aggregate)`, the decorated method applied directly (see the module)."""
    cls = type(event)
    applier = _appliers.get(cls)
    if applier is None:
        applier = _appliers[cls] = _applier(cls)
    return applier(event, aggregate)
