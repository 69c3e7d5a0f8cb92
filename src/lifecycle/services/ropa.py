"""The record of processing activities (UK GDPR Art 30(1)), from the policy and the events.

`ropa_document(policy, adoption, views, as_of, generated_at)` reads the declared side from
the adopted policy (controller, DPO, purposes and lawful bases, recipients with their
country and transfer safeguard, retention rules) and the observed side from read models
(categories of personal data actually held per purpose with record counts, categories of
data subjects from the subject references' prefixes, recipients actually shared with,
transfers outside the UK and their safeguards). `build_ropa(ledger, at)` picks the read
models: the live ones (caught up) for the latest adoption, or a replay as of `--at T`
(:mod:`lifecycle.services.replay`) with the adoption in force then. Nothing here opens the key vault:
the record holds counts and categories, never a personal value.

Complete against the ICO's controller documentation template: per purpose the Art 9 and
Art 10 conditions, the legitimate interest relied on, the rights each basis leaves, the
sources of the data; automated decision-making, the organisation's own security measures
(from the policy) beside this system's, joint controller and representative ("none" where
none), and the breach register as it stood. The notice's words are kept apart from the
controller's choices (`told`: `notice`, `controller_choice`; each rule's `rationale`; a
declared safeguard's rationale as `safeguard_rationale`, on each purpose's recipients as in
the transfers table). A
recipient declared without `purposes` receives for every purpose, and every check and
view says so.

`to_html` renders the same document with `templates/ropa.html` (autoescaped).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from lifecycle.aggregates.breach_register import BreachRegister, breach_summary
from lifecycle.services.breaches import get_register
from lifecycle.aggregates.policy_register import Adoption, PolicyNotAdopted
from lifecycle.services.html_render import render
from lifecycle.services.ledger import Ledger
from lifecycle.policy.loader import policy_from_document
from lifecycle.policy.model import Policy, Rule
from lifecycle.projections import tables
from lifecycle.services.replay import replayed
from lifecycle.domain.vocabulary import DIRECT_MARKETING, HOME_COUNTRY

# 2: the ICO template columns, security measures split (organisation, system), breaches
FORMAT_VERSION = "lifecycle-ropa/2"
NO_PREFIX = "unspecified"

# What each lawful basis leaves the person (the ICO's guide to individual rights): the
# right to be informed, of access, to rectification and to restriction always apply.
RIGHTS_BY_BASIS: dict[str, tuple[str, ...]] = {
    "consent": ("informed", "access", "rectification", "erasure", "restriction",
                "portability", "withdraw-consent"),
    "contract": ("informed", "access", "rectification", "erasure", "restriction",
                 "portability"),
    "legal-obligation": ("informed", "access", "rectification", "restriction"),
    "vital-interests": ("informed", "access", "rectification", "erasure", "restriction"),
    "public-task": ("informed", "access", "rectification", "restriction", "objection"),
    "legitimate-interests": ("informed", "access", "rectification", "erasure", "restriction",
                             "objection"),
}
DIRECT_MARKETING_OBJECTION = "objection"  # Art 21(2)-(3): absolute, whatever the basis
NONE = "none"

# The measures of this system (the tool), beside the organisation's own from the policy.
SECURITY_MEASURES: tuple[str, ...] = (
    "Crypto-shredding: personal values are encrypted (AES-256-GCM) before they are stored; "
    "erasure destroys the key, so the values become unreadable in every copy of the event "
    "log, snapshots, read models and exports, while the history stays replayable.",
    "Per-subject keys: each data subject has its own data keys, one per record (so per "
    "purpose), held in a key vault outside the event store and wrapped by a master key kept "
    "apart from the data; a retention rule or an erasure request shreds only what it covers.",
    "Hash-chained audit log: every stored event is linked into SHA-256 hash chains, per "
    "subject and over the whole log; `lifecycle audit verify` reports any altered, removed, "
    "inserted or reordered event, and can be checked against an anchor kept elsewhere.",
    "Append-only event log: events are never deleted or rewritten; every retention decision "
    "cites the policy adoption (content-hashed) and the rule applied.",
    "Suppression without plaintext: an unsubscribed or objecting person's e-mail is kept only "
    "as a keyed hash (HMAC-SHA-256) of the normalised address.",
    "Data minimisation in operation: read models, reports and logs hold sealed values, "
    "categories and counts only, never a personal value in plaintext.",
)


def subject_category(reference: str) -> str:
    """The category of data subject a reference names: its prefix (`member:1042` -> member)."""
    prefix, sep, _ = reference.partition(":")
    return prefix if sep and prefix else NO_PREFIX


@dataclass
class _PurposeFigures:
    held: dict[str, int] = field(default_factory=dict)
    erased: dict[str, int] = field(default_factory=dict)
    bases: dict[str, int] = field(default_factory=dict)
    sources: dict[str, int] = field(default_factory=dict)
    subjects: dict[str, set[str]] = field(default_factory=dict)


@dataclass
class _Observed:
    """What the read models show, per purpose and per recipient (counts only)."""

    purposes: dict[str, _PurposeFigures] = field(default_factory=dict)
    subjects: int = 0
    subject_categories: dict[str, int] = field(default_factory=dict)
    records_held: int = 0
    records_erased: int = 0
    shares: list[dict[str, Any]] = field(default_factory=list)
    consents: dict[str, int] = field(default_factory=dict)
    scheduled: dict[str, int] = field(default_factory=dict)


def _observe(views: sa.Engine) -> _Observed:
    observed = _Observed()
    s, d, c, sched = tables.subjects, tables.disclosures, tables.consents, tables.schedule
    with views.connect() as conn:
        rows = conn.execution_options(yield_per=1000).execute(
            sa.select(s.c.subject_id, s.c.reference, s.c.document))
        for row in rows:
            kind = subject_category(row.reference)
            observed.subjects += 1
            observed.subject_categories[kind] = observed.subject_categories.get(kind, 0) + 1
            for record in row.document["records"]:
                figures = observed.purposes.setdefault(record["purpose"], _PurposeFigures())
                category = record["category"]
                if record["erased_at"] is None:
                    observed.records_held += 1
                    figures.held[category] = figures.held.get(category, 0) + 1
                    figures.bases[record["basis"]] = figures.bases.get(record["basis"], 0) + 1
                    source = record["source"]
                    figures.sources[source] = figures.sources.get(source, 0) + 1
                    figures.subjects.setdefault(kind, set()).add(row.subject_id)
                else:
                    observed.records_erased += 1
                    figures.erased[category] = figures.erased.get(category, 0) + 1
        observed.shares = [{
            "recipient": r.recipient, "role": r.role, "country": r.country,
            "safeguard": r.safeguard, "purpose": r.purpose, "disclosures": int(r.n),
            "subjects": int(r.subjects), "first_at": r.first_at.isoformat(),
            "last_at": r.last_at.isoformat(),
        } for r in conn.execute(
            sa.select(d.c.recipient, d.c.role, d.c.country, d.c.safeguard, d.c.purpose,
                      sa.func.count().label("n"),
                      sa.func.count(sa.distinct(d.c.subject_id)).label("subjects"),
                      sa.func.min(d.c.at).label("first_at"), sa.func.max(d.c.at).label("last_at"))
            .group_by(d.c.recipient, d.c.role, d.c.country, d.c.safeguard, d.c.purpose)
            .order_by(d.c.recipient, d.c.purpose, d.c.country))]
        observed.consents = {purpose: int(n) for purpose, n in conn.execute(
            sa.select(c.c.purpose, sa.func.count()).where(c.c.in_force.is_(True))
            .group_by(c.c.purpose))}
        observed.scheduled = {rule: int(n) for rule, n in conn.execute(
            sa.select(sched.c.rule, sa.func.count()).where(sched.c.done.is_(False))
            .group_by(sched.c.rule))}
    return observed


def _rule_entry(policy: Policy, rule: Rule, scheduled: dict[str, int]) -> dict[str, Any]:
    window = policy.file.windows.get(rule.window) if rule.window else None
    return {
        "rule": rule.id,
        "applies_to": {"purpose": rule.purpose, "category": rule.category,
                       "basis": rule.basis},
        "trigger": rule.trigger, "keep_for": rule.keep_for, "action": rule.action,
        "window": None if window is None else {
            "id": rule.window, "months": list(window.months), "day": window.day,
            "description": window.description},
        "quote": rule.quote,
        "rationale": rule.rationale or None,
        # Where the period comes from: the notice's words, or the controller's choice.
        "period_from": "controller's choice" if rule.rationale else "notice",
        "pending_items": scheduled.get(rule.id, 0),
    }


def _counted(values: dict[str, int]) -> list[dict[str, Any]]:
    return [{"name": k, "count": values[k]} for k in sorted(values)]


def _purpose_recipients(policy: Policy, purpose: str,
                        shares: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Recipients declared for the purpose and those actually shared with for it."""
    entries: dict[tuple[str, str, str, str | None], dict[str, Any]] = {}
    declared_names = {name for name, r in policy.recipients.items() if r.receives(purpose)}
    for name in sorted(declared_names):
        r = policy.recipients[name]
        entries[(name, r.role, r.country, r.safeguard)] = {
            "recipient": name, "role": r.role, "country": r.country, "safeguard": r.safeguard,
            "transfer_outside_uk": r.country != HOME_COUNTRY, "declared": True,
            "every_purpose": not r.purposes, "disclosures": 0, "subjects": 0,
            "safeguard_rationale": (r.rationale or None) if r.safeguard else None}
    for share in shares:
        if share["purpose"] != purpose:
            continue
        key = (share["recipient"], share["role"], share["country"], share["safeguard"])
        entry = entries.setdefault(key, {
            "recipient": share["recipient"], "role": share["role"],
            "country": share["country"], "safeguard": share["safeguard"],
            "transfer_outside_uk": share["country"] != HOME_COUNTRY,
            "declared": share["recipient"] in declared_names,
            "every_purpose": False, "disclosures": 0, "subjects": 0,
            "safeguard_rationale": None})
        entry["disclosures"] += share["disclosures"]
        entry["subjects"] += share["subjects"]
    return sorted(entries.values(), key=lambda e: (e["recipient"], e["country"]))


def _recipients(policy: Policy, shares: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every recipient: as declared in the policy, and as actually shared with."""
    names = sorted(set(policy.recipients) | {s["recipient"] for s in shares})
    result: list[dict[str, Any]] = []
    for name in names:
        declared = policy.recipients.get(name)
        shared = [{k: v for k, v in s.items() if k != "recipient"}
                  | {"transfer_outside_uk": s["country"] != HOME_COUNTRY}
                  for s in shares if s["recipient"] == name]
        findings: list[str] = []
        if declared is None:
            findings.append("shared with but not declared in the policy")
        else:
            for s in shared:
                if not declared.receives(s["purpose"]):
                    findings.append(f"shared for purpose {s['purpose']}, not declared for it")
                if (s["country"], s["role"]) != (declared.country, declared.role):
                    findings.append(f"shared as {s['role']} in {s['country']}, declared as "
                                    f"{declared.role} in {declared.country}")
        countries = ({declared.country} if declared else set()) | {s["country"] for s in shared}
        result.append({
            "recipient": name, "declared": declared is not None,
            "role": declared.role if declared else None,
            "country": declared.country if declared else None,
            "safeguard": declared.safeguard if declared else None,
            "description": declared.description if declared else "",
            "purposes": list(declared.purposes) if declared else [],
            "every_purpose": declared is not None and not declared.purposes,
            "quote": declared.quote if declared else "",
            "rationale": declared.rationale if declared else "",
            "transfer_outside_uk": any(c != HOME_COUNTRY for c in countries),
            "shared": shared,
            "disclosures": sum(s["disclosures"] for s in shared),
            "findings": sorted(set(findings)),
        })
    return result


def _transfers(policy: Policy, shares: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Transfers outside the UK, declared or actually made, each with its safeguard."""
    found: dict[tuple[str, str, str | None], dict[str, Any]] = {}
    for name, r in policy.recipients.items():
        if r.country != HOME_COUNTRY:
            found[(name, r.country, r.safeguard)] = {
                "recipient": name, "role": r.role, "country": r.country,
                "safeguard": r.safeguard, "declared": True, "purposes": sorted(r.purposes),
                "every_purpose": not r.purposes, "safeguard_rationale": r.rationale or None,
                "disclosures": 0, "subjects": 0}
    for s in shares:
        if s["country"] == HOME_COUNTRY:
            continue
        declared = policy.recipients.get(s["recipient"])
        entry = found.setdefault((s["recipient"], s["country"], s["safeguard"]), {
            "recipient": s["recipient"], "role": s["role"], "country": s["country"],
            "safeguard": s["safeguard"],
            "declared": declared is not None and declared.country == s["country"],
            "purposes": [], "every_purpose": False, "safeguard_rationale": None,
            "disclosures": 0, "subjects": 0})
        if s["purpose"] not in entry["purposes"]:
            entry["purposes"] = sorted([*entry["purposes"], s["purpose"]])
        entry["disclosures"] += s["disclosures"]
        entry["subjects"] += s["subjects"]
    for entry in found.values():
        entry["safeguard_missing"] = not entry["safeguard"]
    return sorted(found.values(), key=lambda e: (e["recipient"], e["country"]))


def _rights_available(name: str, bases: list[str]) -> dict[str, list[str]]:
    """Per lawful basis, the rights a person has over this purpose's data."""
    result: dict[str, list[str]] = {}
    for basis in bases:
        rights = list(RIGHTS_BY_BASIS.get(basis, ()))
        if name == DIRECT_MARKETING and DIRECT_MARKETING_OBJECTION not in rights:
            rights.append(DIRECT_MARKETING_OBJECTION)
        result[basis] = rights
    return result


def _told(quote: str, rationale: str) -> dict[str, str | None]:
    """A statement as the notice words it and as the controller chose it, kept apart."""
    return {"notice": quote or None, "controller_choice": rationale or None}


def _purpose_entry(policy: Policy, name: str, figures: _PurposeFigures,
                   observed: _Observed) -> dict[str, Any]:
    purpose = policy.purposes[name]
    categories = sorted(set(figures.held) | set(figures.erased))
    findings: list[str] = []
    if "special" in figures.held and not purpose.special_category_condition:
        findings.append("special-category data held with no Art 9 condition declared")
    undeclared_sources = sorted(set(figures.sources) - set(purpose.sources))
    if purpose.sources and undeclared_sources:
        findings.append("data from a source not declared: " + ", ".join(undeclared_sources))
    return {
        "purpose": name, "description": purpose.description,
        "told": _told(purpose.quote, purpose.rationale),
        "lawful_bases": list(purpose.bases),
        "bases_in_use": _counted(figures.bases),
        "legitimate_interest": (purpose.legitimate_interest or None
                                if "legitimate-interests" in purpose.bases else None),
        "special_category_condition": purpose.special_category_condition,
        "criminal_offence": {"data": purpose.criminal_offence_data,
                             "condition": purpose.criminal_offence_condition},
        "data_categories_declared": list(purpose.categories),
        "data_categories": [{"category": c, "records_held": figures.held.get(c, 0),
                             "records_erased": figures.erased.get(c, 0)}
                            for c in categories],
        "sources_declared": list(purpose.sources),
        "sources_in_use": _counted(figures.sources),
        "rights_available": _rights_available(name, list(purpose.bases)),
        "data_subject_categories": [{"category": k, "subjects": len(v)}
                                    for k, v in sorted(figures.subjects.items())],
        "records_held": sum(figures.held.values()),
        "consents_in_force": observed.consents.get(name, 0),
        "recipients": _purpose_recipients(policy, name, observed.shares),
        "retention": [_rule_entry(policy, rule, observed.scheduled)
                      for rule in policy.rules
                      if rule.purpose is None or rule.purpose == name],
        "findings": findings,
    }


def _breaches(register: BreachRegister | None, at: datetime) -> dict[str, Any]:
    """Art 33(5): every breach the controller was aware of by `at`, with its handling."""
    listed = [breach_summary(b, at) for b in (register.as_of(at) if register else [])]
    return {"total": len(listed),
            "reported": sum(1 for b in listed if b["reported_at"]),
            "overdue": sum(1 for b in listed if b["overdue"]),
            "subjects_to_notify": sum(1 for b in listed if b["subjects_to_notify"]),
            "breaches": listed}


def ropa_document(policy: Policy, adoption: Adoption, views: sa.Engine, as_of: datetime | None,
                  generated_at: datetime, source: str,
                  breaches: BreachRegister | None = None) -> dict[str, Any]:
    """The Art 30(1) record, complete against the ICO's controller documentation template:
    declared processing (with the notice's words apart from the controller's choices),
    with what the read models show of it, and the breach register."""
    observed = _observe(views)
    header = policy.file
    purposes = [_purpose_entry(policy, name, observed.purposes.get(name, _PurposeFigures()),
                               observed) for name in header.purposes]
    undeclared = [{"purpose": name, "records_held": sum(f.held.values()),
                   "records_erased": sum(f.erased.values())}
                  for name, f in sorted(observed.purposes.items())
                  if name not in header.purposes]
    disclosures = header.disclosures
    controller = header.controller
    return {
        "format": FORMAT_VERSION,
        "article": "UK GDPR Article 30(1): record of processing activities",
        "as_of": as_of.isoformat() if as_of else None,
        "generated_at": generated_at.isoformat(),
        "source": source,
        "policy": {"label": adoption.label, "policy": adoption.policy_id,
                   "version": adoption.version, "adoption": adoption.number,
                   "adopted_at": adoption.adopted_at.isoformat(),
                   "content_hash": adoption.content_hash, "notice": header.policy.notice},
        "notice": header.notice.model_dump(),
        "controller": controller.model_dump(),
        "dpo": controller.dpo or None,
        "joint_controllers": list(controller.joint_controllers) or NONE,
        "representative": controller.representative or NONE,
        "purposes": purposes,
        "undeclared_purposes": undeclared,
        "data_subject_categories": [{"category": k, "subjects": v} for k, v in
                                    sorted(observed.subject_categories.items())],
        "recipients": _recipients(policy, observed.shares),
        "transfers": {"statement": disclosures.statement("transfers"),
                      "told": _told(disclosures.transfers, disclosures.transfers_rationale),
                      "outside_uk": _transfers(policy, observed.shares)},
        "retention": {
            "windows": {k: {"months": list(w.months), "day": w.day,
                            "description": w.description}
                        for k, w in header.windows.items()},
            "rules": [_rule_entry(policy, r, observed.scheduled) for r in header.rules],
        },
        "rights": dict(header.rights),
        "complaint": _told(disclosures.complaint, disclosures.complaint_rationale),
        "automated_decision_making": _told(disclosures.automated_decision_making,
                                           disclosures.automated_decision_making_rationale),
        "security_measures": {
            "organisation": list(header.security.measures),
            "organisation_rationale": header.security.rationale or None,
            "system": list(SECURITY_MEASURES)},
        "breaches": _breaches(breaches, as_of or generated_at),
        "totals": {"subjects": observed.subjects, "records_held": observed.records_held,
                   "records_erased": observed.records_erased},
    }


def build_ropa(ledger: Ledger, at: datetime | None, now: datetime) -> dict[str, Any]:
    """The record from the latest adoption and the live read models, or, with `at`, from
    the adoption in force then and a replay of the log as of `at` (the store is only read)."""
    if at is None:
        adoption = ledger.store.latest_adoption()
        if adoption is None:
            raise PolicyNotAdopted("no policy has been adopted")
        ledger.projections.catch_up()
        return ropa_document(policy_from_document(adoption.document), adoption, ledger.views,
                             None, now, "live read models", get_register(ledger.store))
    with replayed(ledger.store, at) as result:
        if result.adoption is None:
            raise PolicyNotAdopted(f"no policy was in force at {at.isoformat()}")
        return ropa_document(policy_from_document(result.adoption.document), result.adoption,
                             result.engine, at, now, f"replay of the event log as of "
                                                     f"{at.isoformat()}",
                             get_register(ledger.store))


def to_html(document: dict[str, Any]) -> str:
    """A self-contained page (no scripts, no external resources), autoescaped."""
    return render("ropa.html", document)
