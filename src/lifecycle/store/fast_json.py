"""The store's event transcoder: the library's JSON format, written by orjson when it can.

Stored events keep exactly the library's `JSONTranscoder` format (a datetime as
{"_type_": "datetime_iso", "_data_": ...}, a UUID as "uuid_hex", a Decimal as
"decimal_str"), so stores written before and after read the same, by either code.
Writing goes through orjson, with the same transcodings as `default`, only for a value
made of the types both encoders spell alike (str, int, bool, None, a finite float,
datetime, dict with string keys, list); anything else (a UUID, which orjson
would write as a bare string; NaN, which it would write as null; a tuple, a Decimal, an
enum, a subclass) and anything orjson refuses (an int beyond 64 bits, a lone surrogate)
is written by the library's encoder, as before, errors included.

Reading goes through orjson too, giving what the library's decoder gives: the objects
then pass through the same transcoding hook, innermost first; a value orjson could read
otherwise (anything with a float in it) or refuses is read by the library's decoder.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any

import orjson
from eventsourcing.persistence import DatetimeAsISO, JSONTranscoder

_LEAVES = frozenset({str, int, bool, type(None), datetime})
# A UTC datetime as the library's DatetimeAsISO writes it, its ISO text by orjson: the same
# characters as `datetime.isoformat` for a UTC time (tests/test_fast_events.py), in a
# tenth of the time.
_ISO_OPEN = b'{"_type_":"datetime_iso","_data_":'
_Fragment = orjson.Fragment
_dumps = orjson.dumps
_UTC = timezone.utc
_OPTIONS = (orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_SUBCLASS
            | orjson.OPT_PASSTHROUGH_DATACLASS)


def plain(value: Any) -> bool:
    """Whether `value` (a dict or list) holds only types orjson writes as json does."""
    stack = [value]
    while stack:
        node = stack.pop()
        for item in (node.values() if type(node) is dict else node):
            kind = type(item)
            if kind in _LEAVES:
                continue
            if kind is dict:
                for key in item:
                    if type(key) is not str:
                        return False
                stack.append(item)
            elif kind is list:
                stack.append(item)
            elif kind is not float or not math.isfinite(item):
                return False
    return True


class _NotPlain(Exception):
    """A decoded value orjson may read otherwise than json (a float: see `decode`)."""


class FastJSONTranscoder(JSONTranscoder):
    """`JSONTranscoder` whose `encode` uses orjson for plain values and whose `decode`
    reads with orjson (see the module)."""

    def decode(self, data: bytes) -> Any:
        """The library's decoding: every JSON object through the transcodings' hook,
        innermost first. orjson reads the text; what it refuses (NaN, a lone surrogate,
        a number beyond the double range) and anything holding a float (orjson reads an
        integer beyond 64 bits as one, and parses floats by its own code) is read by the
        library's decoder instead, as before, errors included."""
        try:
            value = orjson.loads(data)
            kind = type(value)
            if kind is dict or kind is list:
                iso = type(self.names.get("datetime_iso")) is DatetimeAsISO
                return self._revive(value, iso)
            if kind is float:
                raise _NotPlain
            return value
        except (orjson.JSONDecodeError, _NotPlain):
            return super().decode(data)

    def _revive(self, node: Any, iso: bool) -> Any:
        """`node` (a dict or list orjson read) as json with the hook as object_hook
        gives it: each object through the hook, after the objects inside it. `iso`: the
        datetime transcoding is the library's DatetimeAsISO (its objects, holding no
        other, are decoded here directly, as its `decode` does)."""
        items = enumerate(node) if type(node) is list else node.items()
        for key, item in items:
            kind = type(item)
            if kind is dict:
                data = item.get("_data_")
                if (iso and type(data) is str and len(item) == 2
                        and item.get("_type_") == "datetime_iso"):
                    node[key] = datetime.fromisoformat(data)
                else:
                    node[key] = self._revive(item, iso)
            elif kind is list:
                node[key] = self._revive(item, iso)
            elif kind is float:
                raise _NotPlain
        if type(node) is dict and len(node) == 2 and "_type_" in node and "_data_" in node:
            return self._decode_obj(node)
        return node  # what the hook gives any other object (a list: untouched by it)

    def _default(self, o: Any) -> Any:
        """orjson's `default`: a datetime (the one type a plain value passes to it) as the
        library's `DatetimeAsISO` writes it, without the library's lookup, when that is
        the registered transcoding; anything else as the library's `_encode_obj`."""
        if type(o) is datetime and type(self.types.get(datetime)) is DatetimeAsISO:
            if o.tzinfo is _UTC:
                return _Fragment(_ISO_OPEN + _dumps(o) + b"}")
            return {"_type_": "datetime_iso", "_data_": o.isoformat()}
        return self._encode_obj(o)

    def encode(self, obj: Any) -> bytes:
        if type(obj) is dict and plain(obj):
            try:
                return orjson.dumps(obj, default=self._default, option=_OPTIONS)
            except orjson.JSONEncodeError:
                pass  # the library's encoder says what is wrong, as it always did
        return super().encode(obj)
