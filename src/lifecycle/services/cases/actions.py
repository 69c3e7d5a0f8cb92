"""Case actions as facts: each action writes exactly the fact an ingest of it would.

An action is built as a fact document and passed through `Ledger.ingest`, so it meets the
same validation (format, policy, statutory guards), dedupe and report as a file of facts.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from lifecycle.store.actor import acting_as
from lifecycle.domain.errors import InvalidFact, LifecycleError, SubjectNotFound
from lifecycle.services.ledger import Ledger
from lifecycle.support.logs import get_logger
from lifecycle.projections import tables

log = get_logger("lifecycle.cases")

# Request steps: the action's name -> the fact type it records.
REQUEST_ACTIONS = {
    "verify": "identity-verified",
    "extend": "request-extended",
    "pause": "request-paused",
    "resume": "request-resumed",
    "refuse": "request-refused",
    "fulfil": "request-fulfilled",
}


class ActionRefused(LifecycleError):
    """The fact an action would write was rejected; nothing was stored."""


class AmbiguousReference(LifecycleError):
    """A request or notification id names more than one case: the caller must say which."""


@dataclass(frozen=True)
class ActionResult:
    fact: dict[str, Any]
    duplicate: bool
    actor: str

    def as_dict(self) -> dict[str, Any]:
        return {"fact": self.fact, "duplicate": self.duplicate, "actor": self.actor}


def new_fact_id(kind: str, submission: str | None = None, actor: str = "",
                content: dict[str, Any] | None = None,
                digest: Callable[[bytes], str] | None = None) -> str:
    """A fresh fact id, or with `submission` (the idempotency key of one submission: the
    form's token, the API's Idempotency-Key, the command line's --idempotency-key) the
    same id for every retry of it by the same actor with the same `content` (the fact but
    its id and its time, which defaults to when it is sent), so a retry records nothing
    twice and a key reused for another action is not taken for a retry of the first.
    `digest`: the vault's keyed digest (`KeyVault.fact_digest`), so the id, which outlives
    an erasure, cannot confirm a guessed reason; plain SHA-256 only without a vault."""
    if submission is None:
        return f"desk:{kind}:{uuid.uuid4().hex}"
    body = json.dumps({k: v for k, v in (content or {}).items() if k not in ("id", "at")},
                      sort_keys=True, default=str)
    canonical = "\x00".join((actor, kind, submission, body)).encode()
    key = digest(canonical) if digest is not None else hashlib.sha256(canonical).hexdigest()
    return f"desk:{kind}:{key[:32]}"


def _keyed(ledger: Ledger, kind: str, fact: dict[str, Any], submission: str | None,
           actor: str) -> dict[str, Any]:
    """`fact` with its id first (see `new_fact_id`)."""
    return {"id": new_fact_id(kind, submission, actor, fact, ledger.vault.fact_digest), **fact}


def already_recorded(ledger: Ledger, fact: dict[str, Any]) -> bool:
    """Whether the fact's subject has already recorded a fact under its id."""
    subject = ledger.store.get_subject(str(fact["subject"]))
    return subject is not None and fact["id"] in subject.fact_ids


def acting(actor: str) -> AbstractContextManager[Any]:
    """Events stored in this context name `actor`."""
    return acting_as(actor)


def record_fact(ledger: Ledger, fact: dict[str, Any], actor: str, now: datetime) -> ActionResult:
    """Ingests one fact document as `actor`; raises ActionRefused with the ingest's reason.

    `actor` is the signed-in user or the command line's user: logged with the fact id, and
    recorded on the event where the store records actors. A retried submission (its fact
    id already recorded: see `new_fact_id`) records nothing and reports a duplicate, even
    when its time differs (an action's time defaults to when it is submitted)."""
    if already_recorded(ledger, fact):
        log.info("case.retried", type=fact["type"], fact=fact["id"], actor=actor)
        return ActionResult(fact, True, actor)
    with acting(actor):
        report = ledger.ingest([json.dumps(fact, default=str)], now)
    if report.rejected and already_recorded(ledger, fact):  # a retry racing the first
        return ActionResult(fact, True, actor)
    if report.rejected:
        reason = report.rejected[0].reason
        raise ActionRefused(f"{fact['type']}: {reason}; nothing was stored")
    log.info("case.recorded", type=fact["type"], fact=fact["id"], actor=actor)
    return ActionResult(fact, report.duplicates > 0, actor)


def subject_of_request(ledger: Ledger, request: str, subject: str | None) -> str:
    """The subject whose request this is: `subject` when given, else found by the id."""
    if subject is not None:
        return subject
    ledger.projections.catch_up()
    req = tables.requests
    with ledger.views.connect() as conn:
        found = conn.execute(sa.select(req.c.reference).where(req.c.request == request)
                             ).scalars().all()
    if not found:
        raise SubjectNotFound(f"request {request!r} is not known")
    if len(set(found)) > 1:
        raise AmbiguousReference(f"request {request!r} is used by several subjects: "
                                 "name one with --subject")
    return str(found[0])


def request_fact(ledger: Ledger, action: str, request: str, subject: str, at: datetime, *,
                 reason: str | None = None, months: int | None = None,
                 submission: str | None = None, actor: str = "") -> dict[str, Any]:
    """The fact of one request step; only the options that step takes are kept."""
    if action not in REQUEST_ACTIONS:
        raise InvalidFact(f"action: {action!r} is not one of {', '.join(REQUEST_ACTIONS)}")
    fact: dict[str, Any] = {"type": REQUEST_ACTIONS[action],
                            "subject": subject, "at": at.isoformat(), "request": request}
    takes_reason = action in ("extend", "pause", "refuse")
    if reason is not None:
        if not takes_reason:
            raise InvalidFact(f"reason: {action} takes no reason")
        fact["reason"] = reason
    elif action == "refuse":
        raise InvalidFact("reason: a refusal needs a reason (a slug, e.g. manifestly-unfounded)")
    if months is not None:
        if action != "extend":
            raise InvalidFact(f"months: only extend takes months, not {action}")
        fact["months"] = months
    return _keyed(ledger, action, fact, submission, actor)


def act_on_request(ledger: Ledger, action: str, request: str, *, subject: str | None,
                   at: datetime, now: datetime, actor: str, reason: str | None = None,
                   months: int | None = None, submission: str | None = None) -> ActionResult:
    reference = subject_of_request(ledger, request, subject)
    fact = request_fact(ledger, action, request, reference, at, reason=reason, months=months,
                        submission=submission, actor=actor)
    return record_fact(ledger, fact, actor, now)


def place_hold(ledger: Ledger, subject: str, hold: str, scope: str, reason: str,
               at: datetime, now: datetime, actor: str,
               until: datetime | None = None, submission: str | None = None) -> ActionResult:
    fact: dict[str, Any] = {"type": "legal-hold-placed", "subject": subject, "at": at.isoformat(), "hold": hold,
                            "scope": scope, "reason": reason}
    if until is not None:
        fact["until"] = until.isoformat()
    return record_fact(ledger, _keyed(ledger, "hold", fact, submission, actor), actor, now)


def release_hold(ledger: Ledger, subject: str, hold: str, at: datetime, now: datetime,
                 actor: str, submission: str | None = None) -> ActionResult:
    fact = {"type": "legal-hold-released", "subject": subject, "at": at.isoformat(),
            "hold": hold}
    return record_fact(ledger, _keyed(ledger, "release", fact, submission, actor), actor, now)


def open_notification(ledger: Ledger, erasure: str, recipient: str | None,
                      subject: str | None) -> tuple[str, str]:
    """The one open Art 19 item of `erasure` (narrowed by recipient and subject):
    (subject, recipient)."""
    rows = [r for r in ledger.notifications(open_only=True) if r["erasure"] == erasure
            and (recipient is None or r["recipient"] == recipient)
            and (subject is None or r["subject"] == subject)]
    if not rows:
        raise SubjectNotFound(f"no open notification for erasure {erasure!r}"
                              + (f" to {recipient!r}" if recipient else ""))
    if len(rows) > 1:
        which = "--subject" if len({r["subject"] for r in rows}) > 1 else "--recipient"
        raise AmbiguousReference(f"erasure {erasure!r} has {len(rows)} open notifications: "
                                 f"name one with {which}")
    return rows[0]["subject"], rows[0]["recipient"]


def acknowledge(ledger: Ledger, erasure: str, at: datetime, now: datetime, actor: str, *,
                recipient: str | None = None, subject: str | None = None,
                submission: str | None = None) -> ActionResult:
    if submission is not None:  # a retry: the item is acknowledged (no longer open)
        retried = _retried_ack(ledger, erasure, actor, submission, recipient, subject)
        if retried is not None:
            return retried
    reference, told = open_notification(ledger, erasure, recipient, subject)
    fact = {"type": "erasure-acknowledged", "subject": reference, "at": at.isoformat(),
            "recipient": told, "erasure": erasure}
    return record_fact(ledger, _keyed(ledger, "ack", fact, submission, actor), actor, now)


def _retried_ack(ledger: Ledger, erasure: str, actor: str, submission: str,
                 recipient: str | None, subject: str | None) -> ActionResult | None:
    """The acknowledgement this submission already recorded, if it did."""
    for row in ledger.notifications(open_only=False):
        if row["erasure"] != erasure or (recipient is not None and row["recipient"] != recipient) \
                or (subject is not None and row["subject"] != subject):
            continue
        fact = _keyed(ledger, "ack", {"type": "erasure-acknowledged", "subject": row["subject"],
                              "recipient": row["recipient"], "erasure": erasure},
                      submission, actor)
        if already_recorded(ledger, fact):
            log.info("case.retried", type=fact["type"], fact=fact["id"], actor=actor)
            return ActionResult(fact, True, actor)
    return None
