"""The ingest format v1 (docs/facts.md): one JSON fact per line, validated whole.

Errors name the line and the field and say what is wrong, never the value itself.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, Union, get_args

from pydantic import (
    BeforeValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from lifecycle.domain.errors import ArgumentRefused
from lifecycle.domain.vocabulary import (
    HOME_COUNTRY, Basis, Category, Channel, ErasureGround, RestrictionException,
    RestrictionReason, Role, Source,
)

# Bounds of the format (docs/facts.md): nothing outside them is stored, so no later
# date arithmetic on a stored time can overflow.
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)  # for `at` and `until`
CLOCK_SKEW = timedelta(minutes=5)  # `at` may be this far past the ingest's now
LATEST_UNTIL = datetime(2200, 1, 1, tzinfo=UTC)
_RFC3339_START = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")
# The fraction of the seconds, and the offset (whatever follows the time).
_TIME_PARTS = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(?::\d{2}(?:[.,](\d+))?)?(.*)",
                         re.DOTALL)
_OFFSET = re.compile(r"[+-]\d{2}(?::?\d{2})?")


def _rfc3339_text(value: Any) -> Any:
    """A time is an RFC 3339 string; pydantic would also take "1704099600" as a Unix time."""
    if not isinstance(value, str) or _RFC3339_START.match(value) is None:
        raise ValueError("must be an RFC 3339 date-time with a UTC offset, as a string")
    parts = _TIME_PARTS.match(value)
    if parts is not None:
        fraction, offset = parts.group(1) or "", parts.group(2)
        if fraction[6:].strip("0"):
            # Read as it stands, it would be rounded down into the past (a record collected
            # 900 ns after an erasure request would fall under it).
            raise ValueError("is finer than a microsecond, the precision lifecycle keeps: "
                             "give at most 6 fractional digits")
        if offset not in ("", "Z", "z") and _OFFSET.fullmatch(offset) is None:
            # Python would take an offset with seconds and drop their fraction.
            raise ValueError("must have a UTC offset of hours and minutes (Z or ±HH:MM)")
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("must be an RFC 3339 date-time with a UTC offset") from None


Time = Annotated[AwareDatetime, BeforeValidator(_rfc3339_text)]
MAX_DEPTH = 32  # JSON nesting levels of a line; the fact object itself is level 1
MAX_LINE_BYTES = 1024 * 1024  # bytes of one line, without its newline

_SLUG = r"^[a-z0-9][a-z0-9-]*$"
Slug = Annotated[str, Field(min_length=1, max_length=120, pattern=_SLUG)]
# References are identifiers: no control characters (PostgreSQL text refuses NUL, and
# they are never needed in one).
NOT_IN_REFERENCES = r"\x00-\x1f\x7f"  # a regex character range
_REFERENCE = rf"^[^{NOT_IN_REFERENCES}]+$"
Reference = Annotated[str, Field(min_length=1, max_length=200, pattern=_REFERENCE)]
Country = Annotated[str, Field(pattern=r"^[A-Z]{2}$")]


class _Fact(BaseModel):
    # Strict: no number for a time, no "yes" or 1 for a boolean, no "2" for an integer
    # (times still come as RFC 3339 strings, which strict JSON validation accepts).
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    id: Reference
    subject: Reference
    at: Time


class Collected(_Fact):
    type: Literal["collected"]
    record: Reference
    category: Category
    purpose: Slug
    basis: Basis
    source: Source
    source_name: Reference | None = None  # the organisation a third-party source is
    restriction_exception: RestrictionException | None = None  # Art 18(2), during one
    data: dict[str, JsonValue]


class Rectified(_Fact):
    type: Literal["rectified"]
    record: Reference
    data: dict[str, JsonValue]


class Activity(_Fact):
    type: Literal["activity"]
    record: Reference | None = None


class ConsentGiven(_Fact):
    type: Literal["consent-given"]
    purpose: Slug
    method: Slug | None = None


class ConsentWithdrawn(_Fact):
    type: Literal["consent-withdrawn"]
    purpose: Slug
    method: Slug | None = None


class Unsubscribed(_Fact):
    type: Literal["unsubscribed"]
    channel: Channel | None = None


class Shared(_Fact):
    type: Literal["shared"]
    recipient: Reference
    role: Role
    purpose: Slug
    basis: Basis
    categories: list[Category] | None = None
    records: list[Reference] | None = None
    country: Country
    safeguard: str | None = None
    restriction_exception: RestrictionException | None = None  # Art 18(2), during one

    @model_validator(mode="after")
    def _what_and_where(self) -> Shared:
        if not self.categories and not self.records:
            raise ValueError("a share names its 'categories' or its 'records'")
        if self.country != HOME_COUNTRY and not self.safeguard:
            raise ValueError("'safeguard' is required for a share outside the UK")
        return self


class Restricted(_Fact):
    type: Literal["restricted"]
    scope: Slug
    reason: RestrictionReason


class RestrictionLifted(_Fact):
    type: Literal["restriction-lifted"]
    scope: Slug
    reason: str | None = None


class Objected(_Fact):
    type: Literal["objected"]
    purpose: Slug


class ErasureRequested(_Fact):
    type: Literal["erasure-requested"]
    request: Reference | None = None
    ground: ErasureGround | None = None  # the Art 17(1) letter the person relies on


RequestKind = Literal["access", "rectification", "restriction", "objection", "portability"]


class AccessRequested(_Fact):
    """A rights request received (access by default; erasure has its own fact)."""

    type: Literal["access-requested"]
    request: Reference
    kind: RequestKind = "access"
    identity_check: bool = False  # identity was asked for: no clock until it is verified


class IdentityVerified(_Fact):
    type: Literal["identity-verified"]
    request: Reference
    # When the identity information arrived (the clock starts then); default `at`.
    received_at: Time | None = None


class RequestExtended(_Fact):
    type: Literal["request-extended"]
    request: Reference
    months: Annotated[int, Field(ge=1, le=2)] = 2
    reason: Slug = "complex-or-numerous"  # Art 12(3)


class RequestPaused(_Fact):
    """The clock stops while the controller waits for clarification."""

    type: Literal["request-paused"]
    request: Reference
    reason: Slug = "clarification-requested"


class RequestResumed(_Fact):
    type: Literal["request-resumed"]
    request: Reference


class RequestRefused(_Fact):
    type: Literal["request-refused"]
    request: Reference
    reason: Slug  # e.g. manifestly-unfounded, excessive (Art 12(5))


class RequestFulfilled(_Fact):
    type: Literal["request-fulfilled"]
    request: Reference


class ErasureAcknowledged(_Fact):
    """A recipient confirms it erased the data an erasure covered (Art 19)."""

    type: Literal["erasure-acknowledged"]
    recipient: Reference
    erasure: Reference  # the erasure request id, or retention:<record> for a rule


class LegalHoldPlaced(_Fact):
    type: Literal["legal-hold-placed"]
    hold: Reference
    scope: Slug
    reason: str
    until: Time | None = None


class LegalHoldReleased(_Fact):
    type: Literal["legal-hold-released"]
    hold: Reference
    scope: Slug | None = None
    reason: str | None = None


class Excluded(_Fact):
    type: Literal["excluded"]
    reason: str


class RelationshipEnded(_Fact):
    type: Literal["relationship-ended"]
    reason: str | None = None


# -- the breach register (Art 33/34): facts about the controller's records, no subject ----

Risk = Literal["no-risk", "risk", "high-risk"]


class _BreachFact(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    id: Reference
    at: Time
    breach: Reference


class BreachDetected(_BreachFact):
    """`at`: when the controller became aware (the Art 33 72-hour clock starts)."""

    type: Literal["breach-detected"]
    categories: list[Category] | None = None
    purposes: list[Slug] | None = None
    records: list[Reference] | None = None
    exposed_from: Time
    exposed_until: Time
    description: str

    @model_validator(mode="after")
    def _what_and_when(self) -> BreachDetected:
        if not self.categories and not self.purposes and not self.records:
            raise ValueError("a breach names the 'categories', 'purposes' or 'records' "
                             "it affected")
        if self.exposed_until < self.exposed_from:
            raise ValueError("'exposed_until' is before 'exposed_from'")
        return self


class BreachAssessed(_BreachFact):
    type: Literal["breach-assessed"]
    risk: Risk


class BreachReported(_BreachFact):
    """Reported to the supervisory authority (the ICO), with its reference."""

    type: Literal["breach-reported"]
    reference: Reference


class BreachSubjectsNotified(_BreachFact):
    """The people affected were told (Art 34)."""

    type: Literal["breach-subjects-notified"]
    method: Slug | None = None


BREACH_FACTS = (BreachDetected, BreachAssessed, BreachReported, BreachSubjectsNotified)

Fact = Annotated[
    Union[
        Collected, Rectified, Activity, ConsentGiven, ConsentWithdrawn, Unsubscribed, Shared,
        Restricted, RestrictionLifted, Objected, ErasureRequested, AccessRequested,
        IdentityVerified, RequestExtended, RequestPaused, RequestResumed, RequestRefused,
        RequestFulfilled, ErasureAcknowledged, LegalHoldPlaced,
        LegalHoldReleased, Excluded, RelationshipEnded,
        BreachDetected, BreachAssessed, BreachReported, BreachSubjectsNotified,
    ],
    Field(discriminator="type"),
]
FACT_TYPES = tuple(get_args(cls.model_fields["type"].annotation)[0]
                   for cls in get_args(get_args(Fact)[0]))  # "collected", "rectified", ...
_adapter: TypeAdapter[Any] = TypeAdapter(Fact)


class InvalidLine(ValueError):
    """A line that breaks the format or its bounds; the message holds no input value."""


class UnreadableLine(str):
    """Stands in for an input line that could not be read as text (not UTF-8, over the
    size cap); its text is the reason. A str, so it travels through `Iterable[str]`."""


@dataclass(frozen=True)
class Rejection:
    """A line that was not stored, and why (no personal value in the reason)."""

    line: int
    reason: str
    fact_id: str | None = None


@dataclass(frozen=True)
class ParsedLine:
    line: int
    fact: Any
    text: str = field(default="", repr=False, compare=False)  # the line, as validated


_SLUG_FORM = "a slug: lower-case letters, digits and hyphens (e.g. subscribe-form)"
_TOO_DEEP = f"nested deeper than {MAX_DEPTH} levels"
_AHEAD = f"after now (more than {int(CLOCK_SKEW.total_seconds()) // 60} minutes ahead)"


_FIELD_NAME = re.compile(r"[a-z][a-z0-9_-]{0,39}|[0-9]{1,9}")


def shown_field_name(name: str) -> str:
    """A field name as a reason may repeat it: the product's own names (and list indexes)
    as they are; any other (an unknown key is the sender's text, and may be an address
    or a name) is not repeated."""
    return name if _FIELD_NAME.fullmatch(name) else "(a field whose name is not shown)"


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors(include_url=False, include_input=False):
        loc = [str(p) for p in item["loc"]]
        # The union tag is noise for the reader: "collected.purpose" -> "purpose".
        if loc and loc[0] in FACT_TYPES:
            loc = loc[1:]
        where = ".".join(shown_field_name(part) for part in loc)
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "union_tag_invalid":
            message = f"unknown fact type (expected one of: {', '.join(FACT_TYPES)})"
            where = "type"
        elif item["type"] == "union_tag_not_found":
            message = "missing fact type"
            where = "type"
        elif item["type"] == "timezone_aware":
            message = "timestamp has no UTC offset (naive times are rejected)"
        elif (item["type"] == "string_pattern_mismatch"
              and item.get("ctx", {}).get("pattern") == _SLUG):
            message = f"must be {_SLUG_FORM}"
        elif (item["type"] == "string_pattern_mismatch"
              and item.get("ctx", {}).get("pattern") == _REFERENCE):
            message = "an identifier may not hold control characters"
        elif item["type"] == "json_invalid":
            return _TOO_DEEP if "recursion limit" in item["msg"] else "not valid JSON"
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def _data_problem(value: Any, levels: int) -> str | None:
    """What is wrong with a parsed `data` value: nesting more than `levels` levels (itself
    is level 1), or NaN/Infinity, which JSON does not have (exports could not carry them)."""
    if type(value) is dict and levels >= 1:
        for child in value.values():
            if type(child) is not str:
                break
        else:
            return None  # strings only (most data): nothing nested, no number
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


def within_time_bounds(at: datetime) -> bool:
    """Between 1900-01-01 and 2200-01-01: every time lifecycle stores or reads as of
    (a fact's `until`, a command's `--at`, an export's `as_of`) lies there, so nothing
    computed from it leaves the calendar (aware comparisons never overflow)."""
    return EARLIEST <= at <= LATEST_UNTIL


def refuse_adoption_time(at: datetime, now: datetime | None = None) -> None:
    """A policy is adopted from a time within the bounds and, given `now`, not ahead of
    it by more than CLOCK_SKEW: an adoption cannot be undone, and one dated in the future
    (2205 for 2025) would stand before every adoption meant for now."""
    if not within_time_bounds(at):
        raise ArgumentRefused(f"adoption time {at.isoformat()}: outside 1900-01-01 to "
                              "2200-01-01; nothing was adopted")
    if now is not None and at > now + CLOCK_SKEW:
        minutes = int(CLOCK_SKEW.total_seconds()) // 60
        raise ArgumentRefused(
            f"adoption time {at.isoformat()}: later than now "
            f"({now.isoformat(timespec='seconds')}) by more than {minutes} minutes; a policy "
            "is adopted when it takes effect and an adoption cannot be undone, so nothing "
            "was adopted (for a what-if use --dry-run)")


def _check_bounds(fact: Any, now: datetime) -> None:
    # Compared as aware datetimes, which never overflow (converting to UTC could).
    if fact.at < EARLIEST:
        raise InvalidLine("at: before 1900-01-01")
    if fact.at > now + CLOCK_SKEW:
        raise InvalidLine(f"at: {_AHEAD}")
    # isinstance, not getattr with a default: a missing attribute is slow on a model.
    if isinstance(fact, LegalHoldPlaced) and fact.until is not None:
        if fact.until < EARLIEST:
            raise InvalidLine("until: before 1900-01-01")
        if fact.until > LATEST_UNTIL:
            raise InvalidLine("until: after 2200-01-01")
    if isinstance(fact, BreachDetected):
        for name in ("exposed_from", "exposed_until"):
            if not EARLIEST <= getattr(fact, name) <= LATEST_UNTIL:
                raise InvalidLine(f"{name}: outside 1900-01-01 to 2200-01-01")
        if fact.exposed_from > fact.at:
            raise InvalidLine("exposed_from: after 'at' (a breach is exposed before the "
                              "controller becomes aware of it)")
        if fact.exposed_until > now + CLOCK_SKEW:
            raise InvalidLine(f"exposed_until: {_AHEAD}; give the end known so far")
    if isinstance(fact, IdentityVerified) and fact.received_at is not None:
        if fact.received_at < EARLIEST:
            raise InvalidLine("received_at: before 1900-01-01")
        if fact.received_at > fact.at:
            raise InvalidLine("received_at: after the fact's at (identity information "
                              "is received before it is verified)")
    if isinstance(fact, (Collected, Rectified)):
        problem = _data_problem(fact.data, MAX_DEPTH - 1)
        if problem is not None:
            raise InvalidLine(problem)


def parse_line(text: str, now: datetime | None = None) -> Any:
    """Parses and validates one line against the format and its bounds (`now` defaults to
    the clock); raises InvalidLine (a ValueError) with a value-free reason."""
    try:
        fact = _adapter.validate_json(text)
    except ValidationError as error:
        raise InvalidLine(_describe(error)) from None
    _check_bounds(fact, datetime.now(UTC) if now is None else now)
    return fact


def parse_lines(lines: Iterable[str], now: datetime) -> Iterator[ParsedLine | Rejection]:
    """Numbers the lines from 1, skips blank ones, yields parsed facts or rejections.

    `now` is the ingest's time: a fact may not be dated more than CLOCK_SKEW after it."""
    for number, text in enumerate(lines, start=1):
        if type(text) is UnreadableLine:
            yield Rejection(number, str(text))
            continue
        if number == 1:
            text = text.removeprefix("\ufeff")
        if not text or text.isspace():  # (`not text.strip()`, without a copy)
            continue
        # Text handed over directly (not through line_reader) obeys the same size cap;
        # a character is at most 4 bytes, so only long lines are measured.
        if len(text) * 4 > MAX_LINE_BYTES and len(text.rstrip("\r\n").encode(
                "utf-8", "surrogatepass")) > MAX_LINE_BYTES:
            yield Rejection(number, f"line longer than {MAX_LINE_BYTES} bytes")
            continue
        try:
            yield ParsedLine(number, parse_line(text, now), text)
        except InvalidLine as error:
            yield Rejection(number, str(error))
        except Exception as error:  # noqa: BLE001 - one line, never a traceback
            yield Rejection(number, f"could not be validated ({type(error).__name__})")
