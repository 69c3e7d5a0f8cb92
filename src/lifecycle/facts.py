"""The ingest format v1 (DESIGN.md §3): one JSON fact per line, validated whole.

Errors name the line and the field and say what is wrong, never the value itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from lifecycle.vocabulary import HOME_COUNTRY, Basis, Category, RestrictionReason, Role, Source

Slug = Annotated[str, Field(min_length=1, max_length=120, pattern=r"^[a-z0-9][a-z0-9-]*$")]
Reference = Annotated[str, Field(min_length=1, max_length=200)]
Country = Annotated[str, Field(pattern=r"^[A-Z]{2}$")]


class _Fact(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Reference
    subject: Reference
    at: AwareDatetime


class Collected(_Fact):
    type: Literal["collected"]
    record: Reference
    category: Category
    purpose: Slug
    basis: Basis
    source: Source
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
    method: str | None = None


class ConsentWithdrawn(_Fact):
    type: Literal["consent-withdrawn"]
    purpose: Slug
    method: str | None = None


class Unsubscribed(_Fact):
    type: Literal["unsubscribed"]
    channel: str | None = None


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
    until: AwareDatetime | None = None


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


Fact = Annotated[
    Union[
        Collected, Rectified, Activity, ConsentGiven, ConsentWithdrawn, Unsubscribed, Shared,
        Restricted, RestrictionLifted, Objected, ErasureRequested, AccessRequested,
        IdentityVerified, RequestExtended, RequestPaused, RequestResumed, RequestRefused,
        RequestFulfilled, ErasureAcknowledged, LegalHoldPlaced,
        LegalHoldReleased, Excluded, RelationshipEnded,
    ],
    Field(discriminator="type"),
]
FACT_TYPES = tuple(get_args(cls.model_fields["type"].annotation)[0]
                   for cls in get_args(get_args(Fact)[0]))  # "collected", "rectified", ...
_adapter: TypeAdapter[Any] = TypeAdapter(Fact)


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


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors(include_url=False, include_input=False):
        loc = [str(p) for p in item["loc"]]
        # The union tag is noise for the reader: "collected.purpose" -> "purpose".
        if loc and loc[0] in FACT_TYPES:
            loc = loc[1:]
        where = ".".join(loc)
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "union_tag_invalid":
            message = f"unknown fact type (expected one of: {', '.join(FACT_TYPES)})"
            where = "type"
        elif item["type"] == "union_tag_not_found":
            message = "missing fact type"
            where = "type"
        elif item["type"] == "timezone_aware":
            message = "timestamp has no UTC offset (naive times are rejected)"
        elif item["type"] == "json_invalid":
            return "not valid JSON"
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def parse_line(text: str) -> Any:
    """Parses and validates one line; raises ValueError with a value-free reason."""
    try:
        return _adapter.validate_json(text)
    except ValidationError as error:
        raise ValueError(_describe(error)) from None


def parse_lines(lines: Iterable[str]) -> Iterator[ParsedLine | Rejection]:
    """Numbers the lines from 1, skips blank ones, yields parsed facts or rejections."""
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            yield ParsedLine(number, parse_line(text))
        except ValueError as error:
            yield Rejection(number, str(error))
