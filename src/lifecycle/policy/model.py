"""A retention policy (format: docs/policy.md): purposes, recipients, review windows and rules.

Pure domain: no file or storage access. Durations are ISO 8601 with calendar months
(P13M after 31 January is the last day of the 13th month), computed with relativedelta.
"""

from __future__ import annotations

import re
from calendar import monthrange
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property, lru_cache
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dateutil.relativedelta import relativedelta
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from lifecycle.domain.vocabulary import HOME_COUNTRY, Basis, Category, Role, Source

Slug = Annotated[str, Field(min_length=1, max_length=120, pattern=r"^[a-z0-9][a-z0-9-]*$")]
Country = Annotated[str, Field(pattern=r"^[A-Z]{2}$")]
Trigger = Literal[
    "collected", "activity", "consent-withdrawn", "unsubscribed", "objected",
    "relationship-ended", "excluded", "request-closed", "erasure-requested",
]
Action = Literal["erase", "review"]
# A rule that retains sets a minimum the law or a contract needs; one that disposes sets a
# storage limit (README, "Retention semantics").
RuleKind = Literal["retain", "dispose"]
RETAINING_BASES = ("legal-obligation", "contract", "public-task")
# The rights whose exercise a policy may tie a consequence to (e.g. a suspended membership).
ConsequenceRight = Literal["erasure", "restriction", "objection"]

_DURATION = re.compile(
    r"^P(?!$)(?:(?P<years>\d+)Y)?(?:(?P<months>\d+)M)?(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?"
    r"(?:T(?=\d)(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+)S)?)?$")


@lru_cache(maxsize=256)  # every planned record asks again; a policy has a few durations
def parse_duration(text: str) -> relativedelta:
    """An ISO 8601 duration (PnYnMnWnDTnHnMnS) as a calendar-aware relativedelta."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not an ISO 8601 duration (e.g. P13M, P6Y, P30D)")
    part = {k: int(v or 0) for k, v in match.groupdict().items()}
    return relativedelta(years=part["years"], months=part["months"], weeks=part["weeks"],
                         days=part["days"], hours=part["hours"], minutes=part["minutes"],
                         seconds=part["seconds"])


@dataclass(frozen=True)
class CalendarStep:
    """A duration as calendar months and a fixed rest, added as relativedelta adds it: the
    months first (the day clamped to the month's length), then the rest as elapsed time."""
    months: int
    rest: timedelta

    def after(self, start: datetime) -> datetime:
        moved = start
        if self.months:
            year, month0 = divmod(start.month - 1 + self.months, 12)
            year += start.year
            month = month0 + 1
            day = min(start.day, monthrange(year, month)[1]) if start.day > 28 else start.day
            moved = start.replace(year=year, month=month, day=day)
        return moved + self.rest  # also a zero rest: the sum has fold 0, as relativedelta's


@lru_cache(maxsize=256)
def calendar_step(text: str) -> CalendarStep:
    """`parse_duration(text)` in the form `Rule.due_at` adds (a planned record asks for its
    due time twice or more; relativedelta's own addition cost a third of a plan)."""
    delta = parse_duration(text)
    return CalendarStep(delta.years * 12 + delta.months,
                        timedelta(days=delta.days, hours=delta.hours, minutes=delta.minutes,
                                  seconds=delta.seconds))


def _check_duration(text: str) -> str:
    parse_duration(text)
    return text


def _check_timezone(name: str) -> str:
    # `localtime` (and the like) names whatever zone the host is set to: one adopted
    # file would then place review windows differently on different hosts.
    try:
        if name.lower() in HOST_ZONES or name.startswith(("/", ".")):
            raise ValueError(name)
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name!r} is not an IANA time zone (e.g. Europe/London)") from None
    return name


HOST_ZONES = frozenset({"localtime", "posixrules", "factory"})
Duration = Annotated[str, AfterValidator(_check_duration)]
TimeZone = Annotated[str, AfterValidator(_check_timezone)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Header(_Strict):
    id: Slug
    version: Annotated[str, Field(min_length=1, max_length=60)]
    timezone: TimeZone = "Europe/London"
    notice: str = ""


Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class Notice(_Strict):
    """The privacy notice a policy encodes: `policy check --notice` holds the file to it."""

    title: Annotated[str, Field(min_length=1)]
    updated: Annotated[str, Field(min_length=1)]  # the date the notice gives, as written
    sha256: Sha256  # of the notice text file's bytes
    url: str = ""


class Controller(_Strict):
    name: str
    contact: str
    dpo: str = ""
    registration: str = ""
    # ICO controller documentation: "none" is shown where none is named.
    joint_controllers: list[str] = []
    representative: str = ""


class Disclosures(_Strict):
    """What Art 13/15 ask a controller to tell: complaint route, ADM, transfers.

    Each is the notice's own words (checked verbatim by `policy check --notice`) and/or a
    `*_rationale`: the controller's statement where the notice says nothing."""

    complaint: str = ""
    complaint_rationale: str = ""
    automated_decision_making: str = ""
    automated_decision_making_rationale: str = ""
    transfers: str = ""
    transfers_rationale: str = ""

    def statement(self, name: str) -> str:
        """What people are told: the notice's words, then the controller's choice marked
        as such (an empty string when neither is given)."""
        quote, rationale = getattr(self, name), getattr(self, f"{name}_rationale")
        choice = f"Controller's choice, not stated in the notice: {rationale}" if rationale else ""
        return " ".join(part for part in (quote, choice) if part)

    @model_validator(mode="after")
    def _told(self) -> Disclosures:
        for name in ("complaint", "automated_decision_making"):
            if not getattr(self, name) and not getattr(self, f"{name}_rationale"):
                raise ValueError(f"'{name}' (the notice's words) or '{name}_rationale' "
                                 "(the controller's statement) is required")
        return self


class Security(_Strict):
    """The controller's own technical and organisational measures (Art 32)."""

    measures: list[str] = []  # the notice's words, each checked verbatim
    rationale: str = ""  # measures the notice does not describe, as the controller states them


Art9Condition = Annotated[str, Field(pattern=r"^Art 9\(2\)\([a-j]\)")]
Art10Condition = Annotated[str, Field(pattern=r"^(Art 10|DPA 2018 )")]


class Purpose(_Strict):
    description: str = ""
    bases: Annotated[list[Basis], Field(min_length=1)]
    categories: list[Category] = []  # of personal data processed; `special`: Art 9 applies
    sources: list[Source] = []  # where the data comes from
    legitimate_interest: str = ""  # the interest relied on, where a basis is legitimate-interests
    special_category_condition: Art9Condition | None = None  # e.g. "Art 9(2)(a): ..."
    criminal_offence_data: Annotated[bool, Field(strict=True)] = False
    criminal_offence_condition: Art10Condition | None = None
    quote: str = ""  # the notice's words for this purpose (verbatim)
    rationale: str = ""  # what the controller decided where the notice is silent


class Recipient(_Strict):
    role: Role
    country: Country
    safeguard: str | None = None
    purposes: list[Slug] = []  # empty: every purpose
    description: str = ""
    quote: str = ""  # the notice's words naming the recipient or its safeguard (verbatim)
    rationale: str = ""  # the controller's choice where the notice names no safeguard

    def receives(self, purpose: str) -> bool:
        """Declared for `purpose`: a recipient without `purposes` receives for every one."""
        return not self.purposes or purpose in self.purposes

    @model_validator(mode="after")
    def _safeguard_abroad(self) -> Recipient:
        if self.country != HOME_COUNTRY and not self.safeguard:
            raise ValueError("a recipient outside the UK needs a 'safeguard'")
        return self


class Window(_Strict):
    """A review window: disposal waits for the next of these dates (local midnight)."""

    months: Annotated[list[Annotated[int, Field(ge=1, le=12)]], Field(min_length=1)]
    day: Annotated[int, Field(ge=1, le=28)] = 1
    description: str = ""


class Rule(_Strict):
    """Which data (purpose / category / basis), from which trigger, kept how long, then what."""

    id: Slug
    purpose: Slug | None = None
    category: Category | None = None
    basis: Basis | None = None
    trigger: Trigger
    keep_for: Duration
    action: Action
    window: Slug | None = None
    quote: str = ""  # the notice's words the rule enforces, verbatim
    rationale: str = ""  # the controller's choice where the notice names no period
    # None: retains for records on a basis in RETAINING_BASES, disposes for the others.
    kind: RuleKind | None = None

    def kind_for(self, basis: str) -> str:
        if self.kind is not None:
            return self.kind
        return "retain" if basis in RETAINING_BASES else "dispose"

    def matches(self, purpose: str, category: str, basis: str) -> bool:
        return ((self.purpose is None or self.purpose == purpose)
                and (self.category is None or self.category == category)
                and (self.basis is None or self.basis == basis))

    def due_at(self, trigger_at: datetime) -> datetime:
        return calendar_step(self.keep_for).after(trigger_at)


class Consequence(_Strict):
    """What exercising a right does to the person's relationship (e.g. IHPA: erasure,
    restriction or objection may suspend the membership account): recorded on the subject."""

    rights: Annotated[list[ConsequenceRight], Field(min_length=1)]
    description: str = ""
    quote: str = ""


class Suppression(_Strict):
    """How the suppression list treats addresses and who may lift it."""

    # "local+tag@domain" is a different address from "local@domain" (off by default:
    # the tag is dropped before hashing).
    keep_subaddress: Annotated[bool, Field(strict=True)] = False
    # The consent-given methods that are the person's own opt-in: only a direct-marketing
    # consent given by one of these lifts suppression. None by default.
    resubscribe_methods: list[Slug] = []


class PolicyFile(_Strict):
    """The schema of a policy file, section by section."""

    policy: Header
    notice: Notice
    controller: Controller
    disclosures: Disclosures
    security: Security = Security()
    rights: dict[str, str] = {}
    purposes: Annotated[dict[Slug, Purpose], Field(min_length=1)]
    recipients: dict[str, Recipient] = {}
    windows: dict[Slug, Window] = {}
    rules: list[Rule] = []
    suppression: Suppression = Suppression()
    consequences: dict[Slug, Consequence] = {}


@dataclass(frozen=True)
class Policy:
    """A checked policy file and the SHA-256 of its bytes (cited by every decision)."""

    file: PolicyFile
    content_hash: str
    # Matching rules per (purpose, category, basis): every projected record asks.
    _rules_for: dict[tuple[str, str, str], tuple[Rule, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False)

    @property
    def id(self) -> str:
        return self.file.policy.id

    @property
    def version(self) -> str:
        return self.file.policy.version

    @property
    def purposes(self) -> dict[str, Purpose]:
        return self.file.purposes

    @property
    def recipients(self) -> dict[str, Recipient]:
        return self.file.recipients

    @property
    def rules(self) -> list[Rule]:
        return self.file.rules

    @property
    def suppression(self) -> Suppression:
        return self.file.suppression

    @property
    def consequences(self) -> dict[str, Consequence]:
        return self.file.consequences

    def consequences_of(self, right: str) -> list[str]:
        """The consequences the policy ties to exercising `right`, by name."""
        return [name for name, c in self.file.consequences.items() if right in c.rights]

    def may_receive(self, recipient: str, purpose: str) -> bool:
        """A recipient is declared for the purpose; one without `purposes`, for every one."""
        found = self.file.recipients.get(recipient)
        return found is not None and (not found.purposes or purpose in found.purposes)

    @cached_property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.file.policy.timezone)

    def rules_for(self, purpose: str, category: str, basis: str) -> tuple[Rule, ...]:
        key = (purpose, category, basis)
        found = self._rules_for.get(key)
        if found is None:
            found = self._rules_for[key] = tuple(
                rule for rule in self.file.rules if rule.matches(purpose, category, basis))
        return found

    def rule(self, rule_id: str) -> Rule | None:
        return next((r for r in self.file.rules if r.id == rule_id), None)

    def rule_words(self, rule_id: str) -> dict[str, str | None]:
        """A rule's notice words apart from the controller's choice, as exports show them."""
        rule = self.rule(rule_id)
        return {"notice_quote": rule.quote or None if rule else None,
                "controller_choice": rule.rationale or None if rule else None}

    def disposal_at(self, rule: Rule, due_at: datetime) -> datetime:
        """When a due item goes: at once, or at the next review window on or after it."""
        if rule.window is None:
            return due_at
        window = self.file.windows[rule.window]
        local = due_at.astimezone(self.zone)
        for offset in range(0, 13 * 12):
            year, month0 = divmod(local.month - 1 + offset, 12)
            month = month0 + 1
            if month not in window.months:
                continue
            candidate = datetime(local.year + year, month, window.day, tzinfo=self.zone)
            if candidate >= local:
                return candidate
        raise AssertionError("a window with months always recurs within a year")

    def to_document(self) -> dict[str, Any]:
        """The JSON form stored in the adoption event (replay needs no file)."""
        return {"content_hash": self.content_hash,
                **self.file.model_dump(mode="json", exclude_defaults=False)}
