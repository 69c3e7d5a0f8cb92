"""The answer to a subject access request (UK GDPR Art 15(1)(a)-(h)).

`subject_as_of` replays one subject's events up to a moment, whatever snapshot or cache
settings the store has; `access_document` turns that state, the policy in force then and
the surviving keys into the export. The JSON is also the portability format; its schema is
docs/dsar-export.schema.json.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from lifecycle.aggregates.data_subject import DataSubject
from lifecycle.aggregates.policy_register import Adoption
from lifecycle.policy.model import Policy
from lifecycle.projections.documents import open_document, subject_document
from lifecycle.domain.retention import explain, plan

FORMAT_VERSION = "lifecycle-dsar/1"


def applies_at(domain_event: Any, as_of: datetime) -> bool:
    """Whether a subject event counts as of `as_of`: its fact time (`at`) is not later."""
    at = getattr(domain_event, "at", None)
    return not (isinstance(at, datetime) and at > as_of)


def subject_as_of(events: Iterable[Any], as_of: datetime,
                  broken: Callable[[Any], Exception] | None = None) -> DataSubject | None:
    """The subject as it stood at `as_of`: every event whose fact time is not later.

    Fact time (`at`) decides, not recording time, so a fact ingested late still counts from
    when it happened. Events are applied in stored order. `broken` gives the error naming
    an event its method cannot take (`SubjectStore.broken`), raised in its place.
    """
    subject: DataSubject | None = None
    for domain_event in events:
        try:
            if subject is None:
                created = domain_event.mutate(None)
                assert isinstance(created, DataSubject)
                subject = created
                continue
            if not applies_at(domain_event, as_of):
                continue
            domain_event.apply(subject)
        except (TypeError, KeyError) as error:
            if broken is None:
                raise
            raise broken(domain_event) from error
        subject.version = domain_event.originator_version
    return subject


def erased_key_ids(events: Iterable[Any],
                   broken: Callable[[Any], Exception] | None = None) -> set[str]:
    """The keys of every erasure the subject's events record, whatever its fact time: what
    they sealed reads as erased in an export as of any date, even while a run killed after
    recording the erasure has left the keys undestroyed (the next run destroys them)."""
    subject = subject_as_of(events, datetime.max.replace(tzinfo=UTC), broken)
    return {key_id for erasure in (subject.erasures if subject else ())
            for key_id in erasure.key_ids}


def _retention(subject: DataSubject, policy: Policy | None,
               adoption: Adoption | None) -> dict[str, dict[str, Any]]:
    """Per record: the one rule that decides (with why), or, before any has fired, the
    criteria that may decide; never two rules that contradict each other."""
    if policy is None or adoption is None:
        return {}
    result: dict[str, dict[str, Any]] = {}
    for record in subject.records.values():
        disposal = plan(subject, record, policy, adoption)
        entry: dict[str, Any] = {"rule": None, "due_at": None, "criteria": []}
        if disposal is not None:
            entry.update(policy.rule_words(disposal.rule))  # notice words, controller's choice
            entry.update({"rule": disposal.rule, "policy": disposal.policy,
                          "trigger": disposal.trigger, "due_at": disposal.due_at.isoformat(),
                          "dispose_at": disposal.dispose_at.isoformat(),
                          "action": disposal.action,
                          "why": explain(disposal, record, policy)})
        elif record.erased_at is None:
            rules = policy.rules_for(record.purpose, record.category, record.basis)
            entry["criteria"] = [f"{r.keep_for} after {r.trigger}, then {r.action}"
                                 + (f" at the next {r.window} review" if r.window else "")
                                 for r in rules]
        result[record.record] = entry
    return result


def possible_recipients(subject: DataSubject, policy: Policy | None) -> list[dict[str, Any]]:
    """Art 15(1)(c): the recipients the data held may be disclosed to: those the policy
    declares for a purpose held (a recipient declared without purposes: every purpose)."""
    if policy is None:
        return []
    held = {r.purpose for r in subject.records.values() if r.erased_at is None}
    found = []
    for name, recipient in policy.recipients.items():
        purposes = held if not recipient.purposes else held & set(recipient.purposes)
        if purposes:
            found.append({"recipient": name, "role": recipient.role,
                          "country": recipient.country, "safeguard": recipient.safeguard,
                          "description": recipient.description,
                          "declared_for": list(recipient.purposes) or "every purpose",
                          "purposes": sorted(purposes)})
    return found


def access_document(subject: DataSubject, as_of: datetime, policy: Policy | None,
                    adoption: Adoption | None,
                    open_values: Callable[[list[str]], dict[str, Any] | str],
                    open_note: Callable[[str | None], str | None],
                    deadlines: dict[str, str | None],
                    timelines: dict[str, list[dict[str, Any]]] | None = None) -> dict[str, Any]:
    """Everything Art 15 asks for, about one subject, as it stood at `as_of`;
    `deadlines`: each request's statutory deadline as it was known then; `timelines`: each
    request's steps by then, with who recorded them."""
    document = subject_document(subject)
    retention = _retention(subject, policy, adoption)
    purposes = policy.purposes if policy else {}
    open_document(document, open_values, open_note)
    for record in document["records"]:
        record["purpose_description"] = (purposes[record["purpose"]].description
                                         if record["purpose"] in purposes else None)
        record["retention"] = retention.get(record["record"], {"rule": None, "due_at": None,
                                                                "criteria": []})
    for entry, placing in zip(document["holds"], subject.holds):
        entry["in_force"] = placing.in_force(as_of)  # `until` may have ended it
    for request in document["requests"]:
        request["deadline"] = deadlines.get(request["request"])
        request["timeline"] = (timelines or {}).get(request["request"], [])
    header = policy.file if policy else None
    return {
        "format": FORMAT_VERSION,
        "subject": document.pop("subject"),
        "as_of": as_of.isoformat(),
        "controller": header.controller.model_dump() if header else None,
        "policy": adoption.label if adoption else None,
        **document,
        "possible_recipients": possible_recipients(subject, policy),
        "consequence_descriptions": {
            name: c.description for name, c in (policy.consequences.items() if policy else [])},
        "rights": dict(header.rights) if header else {},
        # The notice's words, then any controller's choice marked as such.
        "complaint": header.disclosures.statement("complaint") if header else None,
        "automated_decision_making": (header.disclosures.statement("automated_decision_making")
                                      if header else None),
        "transfers": header.disclosures.statement("transfers") if header else None,
    }
