"""The API under /api: everything the pages do, for programs (bearer tokens)."""

from __future__ import annotations

import io
import json
import re
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Header, HTTPException, Query, Request
from fastapi.responses import Response
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field
from starlette.requests import ClientDisconnect

from lifecycle.services.cases import actions
from lifecycle.services.cases.users import User
from lifecycle.services.ingest import IngestReport
from lifecycle.services.ledger import Ledger
from lifecycle.domain.facts import (EARLIEST, Reference, Slug, UnreadableLine,
                                    within_time_bounds)
from lifecycle.services.line_reader import read_lines
from lifecycle.web.auth import (
    AUDIT,
    CASEWORK,
    CASE_DECISION_FACT_TYPES,
    DPO_FACT_TYPES,
    DPO_ONLY,
    FACTS,
    RECORDS,
    Rule,
    desk_of,
)
from lifecycle.web.render import export_response
from lifecycle.web.segments import SegmentRoute

Action = Literal["verify", "extend", "pause", "resume", "refuse", "fulfil"]
# A case action's idempotency key: the same key from the same user for the same action names
# the same fact, so a retried request (after a timeout) records nothing twice.
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", min_length=1,
                                               max_length=200)]

router = APIRouter(prefix="/api", route_class=SegmentRoute)
# The largest body POST /api/facts takes (about 25,000 facts of a typical size): one
# request's facts are parsed in memory, and the ingest holds the desk (below) meanwhile.
FACTS_BODY_LIMIT = 8 * 1024 * 1024



def _within_bounds(at: datetime) -> datetime:
    if not within_time_bounds(at):
        raise ValueError("before 1900-01-01" if at < EARLIEST else "after 2200-01-01")
    return at


# Every time the desk is given: as the command line and facts bound them.
BoundedTime = Annotated[AwareDatetime, AfterValidator(_within_bounds)]

class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FindBody(Strict):
    email: Annotated[str, Field(min_length=1, max_length=320)]


class RequestAction(Strict):
    subject: Reference | None = None
    reason: Slug | None = None
    months: Annotated[int, Field(ge=1, le=2)] | None = None
    at: BoundedTime | None = None


class HoldPlace(Strict):
    subject: Reference
    hold: Reference
    scope: Slug = "all"
    reason: Annotated[str, Field(min_length=1, max_length=2000)]
    until: BoundedTime | None = None
    at: BoundedTime | None = None


class HoldRelease(Strict):
    subject: Reference
    hold: Reference
    at: BoundedTime | None = None


class Acknowledge(Strict):
    erasure: Reference
    recipient: Reference | None = None
    subject: Reference | None = None
    at: BoundedTime | None = None


class SweepBody(Strict):
    at: BoundedTime | None = None


class PolicyBody(Strict):
    toml: Annotated[str, Field(min_length=1, max_length=1_000_000)]
    at: BoundedTime | None = None


def _now(request: Request) -> datetime:
    return desk_of(request).clock()


# -- subjects ---------------------------------------------------------------------------

@router.post("/subjects/find", dependencies=[Depends(Rule(CASEWORK))])
def find_subject(request: Request, body: FindBody) -> dict[str, Any]:
    """The subjects holding an e-mail address (in the body: never in a URL or a log)."""
    desk = desk_of(request)
    return desk.run(lambda ledger: desk.index.find(body.email)).as_dict()


@router.get("/subjects/{reference}", dependencies=[Depends(Rule(CASEWORK))])
def subject_view(request: Request, reference: str) -> dict[str, Any]:
    """Everything held about the subject now: values, or "erased"."""
    view: dict[str, Any] = desk_of(request).run(lambda ledger: ledger.subject_view(reference))
    return view


@router.get("/subjects/{reference}/history", dependencies=[Depends(Rule(RECORDS))])
def subject_history(request: Request, reference: str) -> dict[str, Any]:
    """The event timeline; sealed values are never opened."""
    events = desk_of(request).run(lambda ledger: ledger.history(reference))
    return {"subject": reference, "events": events}


@router.get("/subjects/{reference}/export", dependencies=[Depends(Rule(CASEWORK))],
            response_model=None)
def subject_export(request: Request, reference: str,
                   as_of: Annotated[BoundedTime | None, Query()] = None,
                   format: Annotated[Literal["json", "csv", "html"], Query()] = "json"
                   ) -> Response:
    """The subject access (and portability) export, as it stood at `as_of`."""
    at = as_of or _now(request)
    document = desk_of(request).run(lambda ledger: ledger.dsar_export(reference, at))
    return export_response(document, format, reference)


# -- requests ---------------------------------------------------------------------------

@router.get("/requests", dependencies=[Depends(Rule(CASEWORK))])
def list_requests(request: Request, overdue: bool = False,
                  due_within: Annotated[int | None, Query(ge=0, le=3650)] = None,
                  kind: Annotated[str | None, Query(max_length=20)] = None) -> dict[str, Any]:
    """Open requests by statutory deadline."""
    now = _now(request)
    rows = desk_of(request).run(lambda ledger: ledger.requests(now, overdue, due_within))
    if kind:
        rows = [r for r in rows if r["kind"] == kind]
    return {"at": now.isoformat(), "requests": rows}


@router.post("/requests/{request_id}/{action}", dependencies=[Depends(Rule(CASEWORK))])
def act_on_request(request: Request, request_id: str, action: Action,
                   user: Annotated[User, Depends(Rule(CASEWORK))],
                   body: Annotated[RequestAction | None, Body()] = None,
                   key: IdempotencyKey = None) -> dict[str, Any]:
    """Records a request step (identity-verified, request-extended, ...) as its fact.
    With an Idempotency-Key, a retry of the same request records nothing twice."""
    given = body or RequestAction()
    now = _now(request)
    result = desk_of(request).write(lambda ledger: actions.act_on_request(
        ledger, action, request_id, subject=given.subject, at=given.at or now, now=now,
        actor=user.name, reason=given.reason, months=given.months, submission=key))
    return result.as_dict()


# -- holds and notifications ------------------------------------------------------------

@router.post("/holds", dependencies=[Depends(Rule(DPO_ONLY))])
def place_hold(request: Request, body: HoldPlace,
               user: Annotated[User, Depends(Rule(DPO_ONLY))],
               key: IdempotencyKey = None) -> dict[str, Any]:
    now = _now(request)
    return desk_of(request).write(lambda ledger: actions.place_hold(
        ledger, body.subject, body.hold, body.scope, body.reason, body.at or now, now,
        user.name, body.until, submission=key)).as_dict()


@router.post("/holds/release", dependencies=[Depends(Rule(DPO_ONLY))])
def release_hold(request: Request, body: HoldRelease,
                 user: Annotated[User, Depends(Rule(DPO_ONLY))],
                 key: IdempotencyKey = None) -> dict[str, Any]:
    now = _now(request)
    return desk_of(request).write(lambda ledger: actions.release_hold(
        ledger, body.subject, body.hold, body.at or now, now, user.name,
        submission=key)).as_dict()


@router.get("/notifications", dependencies=[Depends(Rule(CASEWORK))])
def list_notifications(request: Request, all: bool = False) -> dict[str, Any]:
    """Art 19 items: recipients to tell of erasures."""
    rows = desk_of(request).run(lambda ledger: ledger.notifications(open_only=not all))
    return {"notifications": rows}


@router.post("/notifications/ack", dependencies=[Depends(Rule(CASEWORK))])
def acknowledge(request: Request, body: Acknowledge,
                user: Annotated[User, Depends(Rule(CASEWORK))],
                key: IdempotencyKey = None) -> dict[str, Any]:
    now = _now(request)
    return desk_of(request).write(lambda ledger: actions.acknowledge(
        ledger, body.erasure, body.at or now, now, user.name, recipient=body.recipient,
        subject=body.subject, submission=key)).as_dict()


@router.get("/certificates/{request_id}", dependencies=[Depends(Rule(RECORDS))])
def certificate(request: Request, request_id: str,
                subject: Annotated[str | None, Query(max_length=200)] = None) -> dict[str, Any]:
    """The deletion certificate of an erasure request (no personal value in it)."""
    now = _now(request)
    document: dict[str, Any] = desk_of(request).run(
        lambda ledger: ledger.certificate(request_id, subject, now))
    return document


# -- audit, policy, sweep, forecast, facts ----------------------------------------------

@router.get("/audit/verify", dependencies=[Depends(Rule(AUDIT))])
def audit_verify(request: Request,
                 anchor: Annotated[str | None, Query(max_length=200)] = None) -> dict[str, Any]:
    """Recomputes every digest of the log (and checks it against an anchor if given)."""
    from lifecycle.services.audit import Anchor, verify

    try:
        parsed = Anchor.parse(anchor) if anchor else None
    except ValueError as error:
        raise HTTPException(422, f"anchor: {error}") from None
    report = desk_of(request).run(lambda ledger: verify(ledger.store, ledger.views, parsed))
    return report.as_dict()


@router.get("/replay", dependencies=[Depends(Rule(AUDIT))])
def replay(request: Request, until: Annotated[BoundedTime | None, Query()] = None,
           subject: Annotated[str | None, Query(max_length=200)] = None) -> dict[str, Any]:
    """The state as of `until` (default now), rebuilt from the log into fresh read models:
    never writes an event, never opens a key (values read "sealed" or "erased")."""
    from lifecycle.services.replay import replay as run_replay

    at = until or _now(request)
    report = desk_of(request).run(lambda ledger: run_replay(ledger.store, at, None, subject))
    result: dict[str, Any] = report.as_dict()
    return result


@router.get("/status", dependencies=[Depends(Rule(AUDIT | CASEWORK))])
def status(request: Request) -> dict[str, Any]:
    """The last sweep, the next items due, projection lag, the policy in force."""
    document: dict[str, Any] = desk_of(request).run(lambda ledger: ledger.status())
    return document


@router.get("/ropa", dependencies=[Depends(Rule(AUDIT))])
def ropa(request: Request) -> dict[str, Any]:
    """The Art 30(1) record of processing activities."""
    from lifecycle.services.ropa import build_ropa

    now = _now(request)
    document: dict[str, Any] = desk_of(request).run(lambda ledger: build_ropa(ledger, None, now))
    return document


@router.post("/policy/check", dependencies=[Depends(Rule(DPO_ONLY))])
def policy_check(body: PolicyBody) -> dict[str, Any]:
    """Every problem of a policy (TOML text), by key and reason."""
    from lifecycle.policy.loader import check_policy

    with _policy_file(body.toml) as path:
        problems = check_policy(path)
    return {"ok": not problems, "problems": [p.as_dict() for p in problems]}


@router.post("/policy/adopt", dependencies=[Depends(Rule(DPO_ONLY))])
def policy_adopt(request: Request, body: PolicyBody,
                 user: Annotated[User, Depends(Rule(DPO_ONLY))]) -> dict[str, Any]:
    """Adopts a policy (TOML text) from `at` (default now), after checking it."""
    from lifecycle.policy.loader import check_policy

    at = body.at or _now(request)
    with _policy_file(body.toml) as path:
        problems = check_policy(path)
        if problems:
            raise HTTPException(422, "; ".join(f"{p.key}: {p.reason}"
                                               for p in problems)[:2000])
        with actions.acting(user.name):
            adoption, new = desk_of(request).write(
                lambda ledger: ledger.adopt_policy(path, at, _now(request)))
    return {"policy": adoption.policy_id, "version": adoption.version,
            "content_hash": adoption.content_hash, "adopted_at": adoption.adopted_at.isoformat(),
            "new": new}


@router.post("/sweep/dry-run", dependencies=[Depends(Rule(DPO_ONLY))])
def sweep_dry_run(request: Request,
                  body: Annotated[SweepBody | None, Body()] = None) -> dict[str, Any]:
    """What a sweep at `at` (default now) would erase or flag; changes nothing."""
    now = _now(request)
    at = (body.at if body else None) or now
    report = desk_of(request).run(lambda ledger: ledger.sweep(at, now, dry_run=True))
    result: dict[str, Any] = report.as_dict()
    return result


@router.get("/forecast", dependencies=[Depends(Rule(DPO_ONLY))])
def forecast(request: Request,
             months: Annotated[int, Query(ge=1, le=120)] = 12) -> dict[str, Any]:
    """Erasures due per month and per rule."""
    from lifecycle.services.forecast import monthly_forecast

    start = _now(request)

    def run(ledger: Any) -> dict[str, Any]:
        ledger.projections.catch_up()
        result: dict[str, Any] = monthly_forecast(ledger.views, start, months,
                                                  ledger.policy_zone())
        return result

    return desk_of(request).run(run)


@router.post("/facts", dependencies=[Depends(Rule(FACTS))],
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/x-ndjson": {"schema": {"type": "string"}},
                 "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
             }}})
async def post_facts(request: Request,
                     user: Annotated[User, Depends(Rule(FACTS))]) -> dict[str, Any]:
    """Ingests facts: JSON Lines, or one JSON array of facts; the same validation, dedupe
    and report as `lifecycle ingest`. A body over FACTS_BODY_LIMIT bytes is 413, nothing
    stored (split the facts over several requests, or use `lifecycle ingest`)."""
    raw = await _capped_body(request, FACTS_BODY_LIMIT)
    lines = _fact_lines(raw)
    if user.role not in DPO_ONLY:
        _refuse_dpo_facts(lines, user.role)
    now = _now(request)
    desk = desk_of(request)
    def ingest(ledger: Ledger) -> IngestReport:
        with actions.acting(user.name):
            return ledger.ingest(lines, now)

    report: IngestReport = await _in_thread(lambda: desk.write(ingest))
    return report.as_dict()


async def _capped_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 naming the limit once it is over `limit` bytes
    (by its Content-Length before reading, else while reading: never held whole)."""
    too_large = HTTPException(413, f"body: larger than the limit of {limit:,} bytes for "
                                   "POST /api/facts; send the facts in several requests "
                                   "(or use `lifecycle ingest`); nothing was stored")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
    except ClientDisconnect:  # the client went away (or sent more than its Content-Length)
        raise HTTPException(400, "body: the client disconnected before the body ended; "
                                 "nothing was stored") from None
    return b"".join(chunks)


async def _in_thread(action: Any) -> Any:
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(action)


def _refuse_dpo_facts(lines: list[str], role: str) -> None:
    """403 naming the first line whose fact only a DPO (holds, breaches) or a responder's
    case action (a decision on a request) may record; nothing is stored."""
    for number, line in enumerate(lines, start=1):
        try:
            kind = json.loads(line).get("type")
        except (ValueError, AttributeError, RecursionError):
            continue  # not a fact: the ingest reports it
        if isinstance(kind, str) and kind in DPO_FACT_TYPES:
            raise HTTPException(403, f"line {number}: {kind}: the role {role} may not "
                                     "record legal holds or breaches (a dpo does); nothing "
                                     "was stored")
        if isinstance(kind, str) and kind in CASE_DECISION_FACT_TYPES:
            raise HTTPException(403, f"line {number}: {kind}: the role {role} may not "
                                     "decide a case (a responder's case action does); "
                                     "nothing was stored")


def _fact_lines(raw: bytes) -> list[str]:
    stripped = raw.lstrip(b"\xef\xbb\xbf \t\r\n")
    if stripped.startswith(b"["):
        try:
            items = json.loads(stripped)
        except (ValueError, RecursionError):  # incl. bytes that are not UTF-8
            # One element may be what a line may not be (too deep, a number too long):
            # each element is then read as a line is, and only it is rejected.
            elements = _array_elements(stripped)
            if elements is None:
                raise HTTPException(422, "body: not a JSON array (or JSON Lines)") from None
            return elements
        if not isinstance(items, list):
            raise HTTPException(422, "body: not a JSON array")
        return [json.dumps(item) for item in items]
    # Each line as the ingest reads a file (`read_lines`: ended by a newline only, a line
    # that is not UTF-8 rejected by number, a byte-order mark starts a line, never a fact),
    # so the role check sees the same fact the ingest stores.
    return [line if isinstance(line, UnreadableLine) else line.lstrip("\ufeff")
            for line in read_lines(io.BytesIO(raw))]


_ARRAY_MARK = re.compile(r'["\\\[\]{},]')


def _array_elements(body: bytes) -> list[str] | None:
    """The texts of a JSON array's elements, split at its top-level commas without
    parsing them (strings and nesting followed, nothing else); None if the body is not
    one array (bytes that are not UTF-8, unbalanced brackets, an empty element)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    elements: list[str] = []
    depth, start, in_string, escaped_at = 0, 1, False, -1
    for mark in _ARRAY_MARK.finditer(text, 1):
        char, at = mark.group(), mark.start()
        if in_string:
            if at == escaped_at:
                continue  # the character after a backslash
            if char == "\\":
                escaped_at = at + 1
            elif char == '"':
                in_string = False
            continue
        if char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
        elif char in "]}" and depth:
            depth -= 1
        elif char == "]" or (char == "," and not depth):
            element = text[start:at].strip()
            if not element and (char == "," or elements):
                return None
            if element:
                elements.append(element)
            if char == "]":
                return elements if not text[at + 1:].strip() else None
            start = at + 1
        elif char == "}":
            return None
    return None


class _policy_file:
    """The policy text in a private temporary file, for the loader (which reads files)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> Path:
        self._dir = tempfile.TemporaryDirectory()
        path = Path(self._dir.name) / "policy.toml"
        path.write_text(self.text, encoding="utf-8")
        return path

    def __exit__(self, *_: object) -> None:
        assert self._dir is not None
        self._dir.cleanup()

