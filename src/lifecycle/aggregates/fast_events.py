"""Events built directly, without the library's per-command machinery.

eventsourcing's `@event` decorator makes each decorated method a command: a call binds the
arguments to the method's signature (twice), filters them again for the event class,
builds the frozen dataclass event (one `object.__setattr__` per field and a check of the
id) and applies it through `mutate`, which filters the event's attributes once more and
binds the method again. Ingest triggers one such event per fact, and that machinery cost
about as much as the aggregates' own work.

`fast_commands(cls)`, applied to an aggregate class after the library has made its event
classes, replaces each decorated method with a `FastCommand` that does the same in one
step: the arguments bound once, the event's attributes set directly in the event class's
own field order (the order the library's dataclass `__init__` sets them, so the stored
state is the same bytes), the original method body applied, the aggregate's version and
modified time moved on, the event appended to the pending events. The event classes, their
topics, the stored format and replay (the library's `mutate`, unchanged) stay as they
were. `fast_create` does the same for a "created" event. `library_commands` puts the
library's methods back for a while (tests compare both ways).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any, TypeVar

from eventsourcing.domain import (
    BaseAggregate,
    CommandMethodDecorator,
    _annotations_mention_id,
    _created_event_classes,
    _init_mentions_id,
    decorated_func_callers,
)
from eventsourcing.utils import get_topic

A = TypeVar("A", bound=BaseAggregate[Any])

_BASE_FIELDS = ("originator_id", "originator_version", "timestamp")
_EMPTY = inspect.Parameter.empty


class _Signature:
    """A method's parameters (without self), bound the way the library binds them: by
    position or keyword, defaults filled in."""

    def __init__(self, func: Callable[..., Any]) -> None:
        params = list(inspect.signature(func).parameters.values())[1:]
        for param in params:
            if param.kind not in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
                raise TypeError(f"{func.__qualname__}: only named parameters are supported")
        self.qualname = func.__qualname__
        self.names = tuple(p.name for p in params)
        self.positional = tuple(p.name for p in params
                                if p.kind is p.POSITIONAL_OR_KEYWORD)
        self.defaults = {p.name: p.default for p in params if p.default is not _EMPTY}
        # Every parameter can be given by position: a call that gives them all so binds
        # them by zipping (most calls).
        self.all_positional = self.positional == self.names

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The arguments by name, in the parameters' order."""
        if not kwargs and self.all_positional and len(args) == len(self.names):
            return dict(zip(self.names, args))
        if not args and len(kwargs) == len(self.names):
            # Every parameter by keyword (most calls of an aggregate's own event methods):
            # as many names as parameters, so all of them exactly, or one unknown.
            try:
                return {name: kwargs[name] for name in self.names}
            except KeyError:
                pass  # an unknown keyword: the error below names it
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


def _check_fields(event_cls: type, names: tuple[str, ...], base: tuple[str, ...]) -> None:
    """The event class's fields are the base fields then the method's parameters, in the
    method's order: the order its attributes are set (and stored) in."""
    fields = tuple(f.name for f in dataclasses.fields(event_cls))
    if fields != (*base, *names):
        raise TypeError(f"{event_cls.__qualname__}: fields {fields} are not "
                        f"{(*base, *names)}; cannot build it directly")


class FastCommand:
    """A decorated command method, triggering its event directly (see the module)."""

    def __init__(self, decorator: CommandMethodDecorator, event_cls: type[Any]) -> None:
        self.decorator = decorator  # the library's, put back by `library_commands`
        self.func: Callable[..., None] = decorator.decorated_func
        self.event_cls = event_cls
        self.signature = _Signature(self.func)
        _check_fields(event_cls, self.signature.names, _BASE_FIELDS)
        self.__doc__ = self.func.__doc__

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        return partial(self.trigger, obj)

    def trigger(self, aggregate: Any, *args: Any, **kwargs: Any) -> None:
        values = self.signature.bind(args, kwargs)
        event_cls = self.event_cls
        version = aggregate._version + 1
        timestamp = event_cls.create_timestamp()
        new_event = object.__new__(event_cls)
        state = new_event.__dict__
        state["originator_id"] = aggregate._id
        state["originator_version"] = version
        state["timestamp"] = timestamp
        state.update(values)  # in the parameters' order: the event's field order
        self.func(aggregate, **values)  # as `mutate` applies it (the library's apply)
        aggregate._version = version
        aggregate._modified_on = timestamp
        aggregate._pending_events.append(new_event)


def fast_commands(cls: type[A]) -> type[A]:
    """Replaces the class's decorated command methods by FastCommands (see the module)."""
    if getattr(cls, "TOPIC", None):
        raise TypeError("aggregates with explicit topics are not supported")
    for name, attr in list(vars(cls).items()):
        if isinstance(attr, CommandMethodDecorator) and name != "__init__":
            setattr(cls, name, FastCommand(attr, decorated_func_callers[attr]))
    return cls


class FastCreate:
    """Builds an aggregate and its "created" event directly: `create(*args, **kwargs)`
    is `cls(*args, **kwargs)` for a class whose `__init__` is `@event`-decorated and whose
    `create_id` takes the same arguments."""

    def __init__(self, cls: type[Any]) -> None:
        if cls in _init_mentions_id or cls in _annotations_mention_id or getattr(
                cls, "TOPIC", None):
            raise TypeError(f"{cls.__qualname__}: ids given to __init__ or explicit topics "
                            "are not supported")
        (event_cls,) = _created_event_classes[cls]
        self.cls = cls
        self.event_cls = event_cls
        self.topic = get_topic(cls)
        self.signature = _Signature(cls.__init__)
        self.id_names = tuple(inspect.signature(cls.create_id).parameters)
        _check_fields(event_cls, self.signature.names, (*_BASE_FIELDS, "originator_topic"))
        self.library = False  # set by `library_commands`: the class itself is called
        _creators.setdefault(cls, []).append(self)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        cls: Any = self.cls
        if self.library:
            return cls(*args, **kwargs)
        values = self.signature.bind(args, kwargs)
        originator_id = cls.create_id(**{n: values[n] for n in self.id_names})
        timestamp = self.event_cls.create_timestamp()
        created = object.__new__(self.event_cls)
        state = created.__dict__
        state["originator_id"] = originator_id
        state["originator_version"] = cls.INITIAL_VERSION
        state["timestamp"] = timestamp
        state["originator_topic"] = self.topic
        state.update(values)  # in the parameters' order: the event's field order
        aggregate = cls.__new__(cls)
        aggregate.__base_init__(originator_id, cls.INITIAL_VERSION, timestamp)
        aggregate.__init__(**values)  # the library's mutate calls it so (its original body)
        aggregate._pending_events.append(created)
        return aggregate


_creators: dict[type, list[FastCreate]] = {}


@contextmanager
def library_commands(*classes: type[Any]) -> Iterator[None]:
    """For a while, these classes' commands and creators go through the library's
    machinery again (tests compare what both ways build)."""
    fast = [(cls, name, attr) for cls in classes for name, attr in vars(cls).items()
            if isinstance(attr, FastCommand)]
    creators = [creator for cls in classes for creator in _creators.get(cls, [])]
    try:
        for cls, name, attr in fast:
            setattr(cls, name, attr.decorator)
        for creator in creators:
            creator.library = True
        yield
    finally:
        for cls, name, attr in fast:
            setattr(cls, name, attr)
        for creator in creators:
            creator.library = False
