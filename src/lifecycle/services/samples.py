"""Deterministic sample facts (ingest format v1) for the two controllers in `config/`.

`generate_facts(org, subjects, seed)` builds an entirely fictional population that follows
the organisation's privacy notice: newsletter subscribers, website visitors, survey
respondents, enquirers, event attendees and DARG applicants for HQIP; members, subscribers,
complainants and visitors for IHPA; with rectifications, access and erasure requests,
restrictions, legal holds and objections mixed in. Every fact respects the domain rules the
ingest enforces, so a file of them ingests without a single rejection.

Only `random.Random(seed)` drives the choices (no global random state, no clock): the same
arguments always give the same facts. E-mail addresses use the reserved `example.*` and
`.example` domains, IP addresses the documentation ranges (RFC 5737, RFC 3849) and phone
numbers Ofcom's drama range, so nothing here belongs to a real person.

`python -m lifecycle.services.samples` (re)writes `examples/hqip-facts.jsonl` and
`examples/ihpa-facts.jsonl` (600 subjects each, default seed).
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from lifecycle.policy.loader import bundled_policy, load_policy
from lifecycle.domain.statutory_clock import LONDON
from lifecycle.domain.vocabulary import ALL_SCOPE

ORGANISATIONS = ("hqip", "ihpa")
DEFAULT_SEED = 2023
EXAMPLE_SUBJECTS = 600
EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"

FIRST_AT = datetime(2022, 1, 1, 0, 0, tzinfo=UTC)
LAST_AT = datetime(2024, 12, 31, 23, 59, 59, tzinfo=UTC)
DM = "direct-marketing"

Fact = dict[str, Any]


RESTRICTION_REASONS = ("contested-accuracy", "unlawful-processing", "legal-claims",
                       "objection-pending")


# -- fictional values -------------------------------------------------------------------

FIRST_NAMES = (
    "Amelia", "Oliver", "Isla", "George", "Ava", "Noah", "Mia", "Arthur", "Ivy", "Leo",
    "Freya", "Oscar", "Lily", "Harry", "Florence", "Jack", "Rosie", "Theo", "Evie", "Archie",
    "Sophia", "Henry", "Grace", "Charlie", "Willow", "Alfie", "Poppy", "Thomas", "Elsie",
    "Finley", "Isabella", "Jacob", "Ella", "Samuel", "Emily", "Joshua", "Matilda", "Reuben",
    "Priya", "Arjun", "Aisha", "Omar", "Mei", "Kwame", "Zara", "Tariq", "Niamh", "Callum",
    "Siobhan", "Rhys", "Cerys", "Dylan", "Eilidh", "Fraser", "Anika", "Ravi", "Fatima",
    "Yusuf", "Hannah", "Daniel",
)
LAST_NAMES = (
    "Hughes", "Patel", "Thornbury", "Okafor", "Whitfield", "Ashdown", "Kaur", "Lindqvist",
    "Morrow", "Pemberton", "Castellan", "Nakamura", "Brennan", "Fairweather", "Oduya",
    "Harcourt", "Mirza", "Tennant", "Quayle", "Blackwood", "Rahman", "Sutherland", "Varga",
    "Holloway", "Ellery", "McBride", "Adeyemi", "Penrose", "Goldsworthy", "Chaudhry",
    "Wren", "Dunmore", "Iqbal", "Sandoval", "Kettering", "Marsh", "Fenwick", "Obi",
    "Llewellyn", "Carrow", "Bishop", "Yates", "Rowntree", "Demir", "Haldane", "Ingram",
    "Ferrante", "Lockhart", "Ng", "Baptiste",
)
MAIL_DOMAINS = ("example.org", "example.com", "example.net", "mail.example",
                "nhs.example", "trust.example", "uni.example")
HEALTH_ORGANISATIONS = (
    "Ashby Vale NHS Foundation Trust", "Kestrel Health Analytics Ltd",
    "University of Westmarch", "Northmoor Integrated Care Board",
    "Fenchurch Community Health Partnership", "St Aldric's Hospital",
    "Harrowgate Clinical Audit Unit", "Greyfield Primary Care Network",
    "Lowther Royal Infirmary", "Marwick Institute of Population Health",
    "Thamesbrook Mental Health Trust", "Coldharbour Surgical Outcomes Group",
)
JOB_TITLES = (
    "Clinical Audit Lead", "Consultant Cardiologist", "Data Analyst", "Ward Sister",
    "Quality Improvement Manager", "Research Fellow", "Patient Safety Officer",
    "Head of Information Governance", "Consultant Anaesthetist", "Practice Manager",
    "Senior Statistician", "Nurse Consultant", "Medical Director", "Healthcare Scientist",
    "Programme Manager", "Physiotherapist", "Registrar", "Lay Representative",
)
PROFESSIONS = (
    ("Physiotherapist", "HCPC", "PH"), ("Paramedic", "HCPC", "PA"),
    ("Occupational Therapist", "HCPC", "OT"), ("Radiographer", "HCPC", "RA"),
    ("Registered Nurse", "NMC", ""), ("Midwife", "NMC", ""),
    ("General Practitioner", "GMC", ""), ("Consultant Psychiatrist", "GMC", ""),
    ("Dentist", "GDC", ""), ("Pharmacist", "GPhC", ""), ("Osteopath", "GOsC", ""),
    ("Speech and Language Therapist", "HCPC", "SL"),
)
TOWNS = ("Westmarch", "Ashby Vale", "Northmoor", "Fenchurch", "Greyfield", "Lowther",
         "Marwick", "Thamesbrook", "Coldharbour", "Harrowgate", "Kestrel Bay", "Elmstead")
USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 13_5) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/16.6 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/119.0 Safari/537.36 Edg/119.0",
)
HQIP_PAGES = ("/", "/national-programmes/", "/resource/ncapop-library/", "/news/",
              "/events/", "/about-us/", "/data-access-requests/", "/resource/guides/",
              "/national-joint-registry/", "/contact-us/", "/privacy-notice/")
IHPA_PAGES = ("/", "/membership/", "/join/", "/news/", "/events/", "/member-benefits/",
              "/forum/", "/insurance/", "/contact/", "/privacy-policy/")
INTERESTS = ("clinical audit", "patient outcomes", "mental health", "maternity",
             "cancer care", "cardiac care", "data access", "quality improvement",
             "medical devices", "events and webinars")
EVENT_KINDS = (("qi-conference", "Quality Improvement Conference"),
               ("audit-webinar", "Clinical Audit Webinar"),
               ("ncapop-forum", "NCAPOP Stakeholder Forum"),
               ("patient-panel", "Patient and Public Panel"),
               ("data-access-workshop", "Data Access Workshop"))
SURVEY_KINDS = (("stakeholder", "Stakeholder survey"), ("ncapop-user", "NCAPOP user survey"),
                ("patient-voice", "Patient voice survey"),
                ("website-feedback", "Website feedback survey"))
SURVEY_COMMENTS = (
    "The audit reports are useful but could be published sooner.",
    "More plain-English summaries for patients, please.",
    "The data access process was clear and well supported.",
    "Webinars at lunchtime suit clinical staff best.",
    "Regional breakdowns would help our trust compare itself.",
    "The new website is easier to navigate.",
    "I would like more notice of upcoming consultations.",
    "Recommendations should include implementation examples.",
)
SPECIAL_SURVEY_VALUES = (
    "Lives with a long-term respiratory condition",
    "Carer for a family member after a stroke",
    "Patient of a cardiac rehabilitation programme",
    "Experience of maternity services in the past two years",
)
ENQUIRY_TOPICS = ("publication request", "audit methodology question",
                  "complaint about a report", "data access timelines", "media enquiry",
                  "event booking", "website accessibility", "freedom of information")
DARG_AUDITS = ("National Hip Fracture Database", "National Diabetes Audit",
               "Myocardial Ischaemia National Audit Project", "National Lung Cancer Audit",
               "National Maternity and Perinatal Audit", "National Joint Registry",
               "Sentinel Stroke National Audit Programme")
DARG_PROJECTS = ("Variation in length of stay after surgery", "Outcomes by deprivation",
                 "Seasonal patterns in admissions", "Readmission risk modelling",
                 "Waiting times and outcomes", "Regional service evaluation")
FORUM_GROUPS = ("General chat", "Private practice", "Insurance and indemnity",
                "CPD and training", "Locum work", "Regulation news")
FORUM_POSTS = (
    "Does anyone have a recommended template for patient consent forms?",
    "Sharing the slides from last week's CPD session.",
    "Has anyone renewed indemnity cover through the member scheme this year?",
    "Looking for a locum to cover two weeks in August.",
    "Useful summary of the new regulator guidance, thanks for posting.",
    "Any tips for setting up as a sole trader?",
    "Reminder: the member webinar starts at 7pm tonight.",
)
GRADES = ("Full member", "Associate member", "Student member", "Retired member")
FEES = {"Full member": "120.00", "Associate member": "90.00", "Student member": "25.00",
        "Retired member": "40.00"}
COMPLAINT_SUMMARIES = (
    "Concern about a member's conduct in a forum discussion",
    "Complaint about an invoice dispute with a member",
    "Report of a member advertising outside the association's code",
    "Concern raised about professional boundaries",
    "Allegation of misuse of the association's logo",
)
HOLD_REASONS = (
    "Litigation reasonably anticipated; preserve correspondence",
    "Regulator's information notice received",
    "Employment tribunal claim in progress",
    "Insurer's request pending a claim decision",
    "Court order to preserve records",
)
END_REASONS_DARG = ("data sharing agreement expired", "project completed",
                    "application withdrawn by the applicant")
END_REASONS_MEMBER = ("membership not renewed", "resigned", "retired from practice",
                      "moved abroad")


# -- time ------------------------------------------------------------------------------

def rfc3339(instant: datetime) -> str:
    """An instant as RFC 3339 in UK local time, with its offset (+00:00 or +01:00)."""
    return instant.astimezone(LONDON).isoformat(timespec="seconds")


def _uk(year: int, month: int, day: int, hour: int = 12, minute: int = 0) -> datetime:
    """A UK wall-clock time as a UTC instant (the demo subjects' fixed dates)."""
    return datetime(year, month, day, hour, minute, tzinfo=LONDON).astimezone(UTC)


# -- one subject's life ----------------------------------------------------------------

@dataclass
class _Person:
    first_name: str
    last_name: str
    email: str
    organisation: str
    job_title: str

    @property
    def name(self) -> str:
        return f"{self.first_name} {self.last_name}"


@dataclass
class _Life:
    """One subject's facts in time order, and the state the ingest guards look at."""

    pop: _Population
    subject: str
    now: datetime
    facts: list[tuple[datetime, Fact]] = field(default_factory=list)
    live: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # purpose, basis, cat
    consents: set[str] = field(default_factory=set)
    restrictions: set[str] = field(default_factory=set)
    holds: list[str] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    closed: bool = False

    @property
    def rng(self) -> random.Random:
        return self.pop.rng

    # time
    def wait(self, low_days: float, high_days: float) -> None:
        """Moves the clock on by a random span (at least a minute)."""
        seconds = self.rng.uniform(low_days, high_days) * 86_400
        self.now += timedelta(seconds=max(60, int(seconds)))
        if high_days >= 1 and self.now.hour < 7:
            # People act in the daytime: a span of days ends after the early hours.
            self.now += timedelta(hours=self.rng.uniform(7, 10))

    def soon(self, low_minutes: float = 1, high_minutes: float = 30) -> None:
        self.wait(low_minutes / 1440, high_minutes / 1440)

    def at(self, instant: datetime) -> None:
        """Sets the clock (demo subjects); time never runs backwards."""
        assert instant > self.now or not self.facts, "facts of a subject are in time order"
        self.now = instant

    # emitting
    def emit(self, type_: str, **fields: Any) -> bool:
        """Appends a fact at the current time; after the sample window nothing more lands."""
        if self.closed or self.now > LAST_AT:
            self.closed = True
            return False
        fact: Fact = {"type": type_, "subject": self.subject, "at": rfc3339(self.now)}
        fact.update({k: v for k, v in fields.items() if v is not None})
        self.facts.append((self.now, fact))
        return True

    def record_id(self, prefix: str) -> str:
        n = self.counters.get(prefix, 0) + 1
        self.counters[prefix] = n
        return prefix if n == 1 else f"{prefix}-{n}"

    def allowed(self, purpose: str, basis: str) -> bool:
        """The processing limits (lifecycle.domain.limits): consent-based data needs a consent in
        force (an unsubscribe or a marketing objection withdraws it); nothing new inside a
        restriction of its scope."""
        if basis == "consent" and purpose not in self.consents:
            return False
        return not ({ALL_SCOPE, purpose} & self.restrictions)

    def collect(self, prefix: str, purpose: str, basis: str, category: str,
                data: dict[str, Any], source: str = "data-subject") -> str | None:
        """Collects a new record; returns its id, or None if the window has closed or a
        processing limit forbids it."""
        assert basis in self.pop.policy.purposes[purpose].bases, (purpose, basis)
        if not self.allowed(purpose, basis):
            return None
        record = self.record_id(prefix)
        if not self.emit("collected", record=record, category=category, purpose=purpose,
                         basis=basis, source=source, data=data):
            return None
        self.live[record] = (purpose, basis, category)
        return record

    def rectify(self, record: str | None, data: dict[str, Any]) -> None:
        if record is not None and record in self.live:
            self.emit("rectified", record=record, data=data)

    def activity(self, record: str | None) -> None:
        """An interaction with a live record (none when the record was never collected)."""
        if record is not None and record in self.live and self.allowed(*self.live[record][:2]):
            self.emit("activity", record=record)

    def consent(self, purpose: str, method: str) -> None:
        if self.emit("consent-given", purpose=purpose, method=method):
            self.consents.add(purpose)

    def withdraw(self, purpose: str, method: str) -> None:
        if purpose in self.consents and self.emit("consent-withdrawn", purpose=purpose,
                                                  method=method):
            self.consents.discard(purpose)

    def unsubscribe(self, channel: str) -> None:
        if self.emit("unsubscribed", channel=channel):
            self.consents.discard(DM)

    def object_to(self, purpose: str) -> None:
        if self.emit("objected", purpose=purpose) and purpose == DM:
            self.consents.discard(DM)

    def share(self, recipient: str, purpose: str, basis: str, *,
              records: Sequence[str | None] = (), categories: Sequence[str] = ()) -> None:
        """Shares with a declared recipient, using its declared role, country and safeguard."""
        declared = self.pop.policy.recipients[recipient]
        assert not declared.purposes or purpose in declared.purposes, (recipient, purpose)
        assert basis in self.pop.policy.purposes[purpose].bases, (purpose, basis)
        live = [r for r in records if r is not None and r in self.live]
        if not live and not categories:
            return
        if not self.allowed(purpose, basis) or not all(
                self.allowed(self.live[r][0], "") for r in live):
            return
        self.emit("shared", recipient=recipient, role=declared.role, purpose=purpose,
                  basis=basis, categories=list(categories) or None, records=live or None,
                  country=declared.country, safeguard=declared.safeguard)

    def restrict(self, scope: str, reason: str) -> None:
        if self.emit("restricted", scope=scope, reason=reason):
            self.restrictions.add(scope)

    def lift(self, scope: str, reason: str) -> None:
        if scope in self.restrictions and self.emit("restriction-lifted", scope=scope,
                                                    reason=reason):
            self.restrictions.discard(scope)

    def place_hold(self, scope: str, reason: str, until: datetime | None) -> str | None:
        hold = self.pop.next_ref("hold")
        if self.emit("legal-hold-placed", hold=hold, scope=scope, reason=reason,
                     until=None if until is None else rfc3339(until)):
            self.holds.append(hold)
            return hold
        return None

    def release_hold(self, hold: str, reason: str) -> None:
        if hold in self.holds and self.emit("legal-hold-released", hold=hold, reason=reason):
            self.holds.remove(hold)

    def access_request(self) -> None:
        """A subject access request: received, often verified, sometimes extended, answered."""
        request = self.pop.next_ref("dsar")
        check_identity = self.rng.random() < 0.8
        if not self.emit("access-requested", request=request,
                         identity_check=check_identity or None):
            return
        if check_identity:
            self.wait(0.2, 6)
            if not self.emit("identity-verified", request=request):
                return
        extended = self.rng.random() < 0.15
        if extended:
            self.wait(5, 20)
            self.emit("request-extended", request=request)
        if self.rng.random() < 0.92:
            self.wait(3, 55 if extended else 26)
            self.emit("request-fulfilled", request=request)

    def request_erasure(self) -> None:
        """The subject's last word: erasure, then only the request's own steps."""
        request = self.pop.next_ref("erasure") if self.rng.random() < 0.75 else None
        if not self.emit("erasure-requested", request=request):
            return
        self.live.clear()
        if request is not None:
            if self.rng.random() < 0.6:
                self.wait(0.5, 5)  # an identity check outside the erasure's own clock
            self.wait(1, 25)
            self.emit("request-fulfilled", request=request)
        self.closed = True

    # rights that can happen to anyone
    def rights(self, erase_chance: float = 0.06) -> None:
        """Access, rectification, restriction and hold episodes; maybe erasure at the end."""
        self.episodes()
        if self.rng.random() < erase_chance:
            self.wait(2, 200)
            self.request_erasure()

    def episodes(self) -> None:
        """Rights exercised along the way: rectification, access, restriction, legal hold."""
        rng = self.rng
        if rng.random() < 0.18:
            candidates = [r for r, (_, _, cat) in self.live.items()
                          if cat in ("contact", "account", "identity")]
            if candidates:
                self.wait(5, 120)
                record = rng.choice(sorted(candidates))
                self.rectify(record, self.pop.correction(self.live[record][2]))
        if rng.random() < 0.12:
            self.wait(5, 150)
            self.access_request()
        if rng.random() < 0.045 and self.live:
            self.wait(3, 90)
            purposes = sorted({p for p, _, _ in self.live.values()})
            scope = rng.choice(purposes) if rng.random() < 0.7 else "all"
            self.restrict(scope, rng.choice(RESTRICTION_REASONS))
            if rng.random() < 0.6:
                self.wait(7, 90)
                self.lift(scope, rng.choice(("accuracy confirmed", "objection decided",
                                             "claim settled", "processing reviewed")))
        if rng.random() < 0.03 and self.live:
            self.wait(3, 120)
            purposes = sorted({p for p, _, _ in self.live.values()})
            scope = rng.choice(purposes) if rng.random() < 0.6 else "all"
            until = None
            if rng.random() < 0.3:
                until = self.now + timedelta(days=rng.randint(180, 1100))
            hold = self.place_hold(scope, rng.choice(HOLD_REASONS), until)
            if hold is not None and rng.random() < 0.5:
                self.wait(30, 300)
                self.release_hold(hold, "matter closed")


# -- a population ---------------------------------------------------------------------

class _Population:
    """Builds one organisation's subjects from a single seeded random generator."""

    def __init__(self, org: str, seed: int) -> None:
        self.org = org
        self.policy = load_policy(bundled_policy(org))  # facts use what it declares
        self.rng = random.Random(seed)
        self.emails: set[str] = set()
        self.refs: dict[str, int] = {}

    # values
    def next_ref(self, kind: str) -> str:
        n = self.refs.get(kind, 0) + 1
        self.refs[kind] = n
        return f"{kind}-{n:05d}"

    def email(self, first: str, last: str) -> str:
        """A unique address: suppressed e-mails are never reused by another subject."""
        rng = self.rng
        local = rng.choice((f"{first}.{last}", f"{first[0]}.{last}", f"{first}{last}",
                            f"{last}.{first}", f"{first}.{last}{rng.randint(1, 99)}"))
        local = local.lower().replace("'", "")
        address = f"{local}@{rng.choice(MAIL_DOMAINS)}"
        n = 2
        while address in self.emails:
            address = f"{local}{n}@{address.split('@')[1]}"
            n += 1
        self.emails.add(address)
        return address

    def person(self) -> _Person:
        rng = self.rng
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        return _Person(first, last, self.email(first, last), rng.choice(HEALTH_ORGANISATIONS),
                       rng.choice(JOB_TITLES))

    def ip_address(self) -> str:
        rng = self.rng
        if rng.random() < 0.15:
            return f"2001:db8:{rng.randint(0, 0xffff):x}::{rng.randint(1, 0xffff):x}"
        net = rng.choice(("192.0.2", "198.51.100", "203.0.113"))
        return f"{net}.{rng.randint(1, 254)}"

    def phone(self) -> str:
        return f"07700 900{self.rng.randint(0, 999):03d}"

    def cookie_id(self) -> str:
        client = self.rng.randint(10**8, 10**9 - 1)
        first_seen = self.rng.randint(1_640_995_200, 1_735_603_200)  # Unix time, 2022-2024
        return f"GA1.2.{client}.{first_seen}"

    def correction(self, category: str) -> dict[str, Any]:
        """New values for a rectification of a record of this category."""
        rng = self.rng
        if category == "contact":
            first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
            return rng.choice(({"email": self.email(first, last)}, {"phone": self.phone()},
                               {"last_name": last}))
        if category == "identity":
            return {"registration_number": f"{rng.randint(1000000, 9999999)}",
                    "note": "typo in registration number corrected"}
        return rng.choice(({"job_title": rng.choice(JOB_TITLES)},
                           {"organisation": rng.choice(HEALTH_ORGANISATIONS)},
                           {"town": rng.choice(TOWNS)}))

    def start(self) -> datetime:
        span = (LAST_AT - timedelta(days=45) - FIRST_AT).total_seconds()
        # Earlier starts are likelier: people collected in 2022 have a longer history.
        start = FIRST_AT + timedelta(seconds=int(span * self.rng.random() ** 1.5))
        return start + timedelta(hours=8) if start.hour < 7 else start

    # shared persona: a newsletter subscriber
    def newsletter(self, life: _Life, person: _Person, processors: Sequence[str],
                   pages: Sequence[str]) -> None:
        """Signs up, consents, reads, and maybe unsubscribes, withdraws, objects or returns."""
        rng = self.rng
        data: dict[str, Any] = {"email": person.email, "first_name": person.first_name,
                                "interests": sorted(rng.sample(INTERESTS, rng.randint(1, 3))),
                                "signup_page": rng.choice(pages)}
        if rng.random() < 0.5:
            data["last_name"] = person.last_name
        life.consent(DM, rng.choice(("double-opt-in-link", "subscribe-form")))
        life.soon(1, 20)
        record = life.collect("newsletter", DM, "consent", "contact", data)
        if processors and rng.random() < 0.85:
            life.wait(0.01, 2)
            life.share(rng.choice(processors), DM, "consent", records=[record])
        for _ in range(rng.randint(4, 14)):
            life.wait(10, 50)
            life.activity(record)
        ending = rng.random()
        if ending < 0.55:
            return
        life.wait(10, 200)
        if ending < 0.80:
            life.unsubscribe(rng.choice(("email-link", "preference-centre", "email-reply")))
        elif ending < 0.93:
            life.withdraw(DM, rng.choice(("email-to-dpo", "contact-form", "phone")))
        else:
            life.object_to(DM)
            return
        if rng.random() < 0.25:
            # Re-subscribing: the person's own fresh consent comes before any new data.
            life.wait(30, 300)
            life.consent(DM, "subscribe-form")
            life.soon(1, 5)
            again = life.collect("newsletter", DM, "consent", "contact",
                                 {"email": person.email, "first_name": person.first_name,
                                  "signup_page": rng.choice(pages)})
            for _ in range(rng.randint(0, 3)):
                life.wait(15, 90)
                life.activity(again)

    def survey_data(self, person: _Person, special: bool, year: int) -> dict[str, Any]:
        rng = self.rng
        _, title = rng.choice(SURVEY_KINDS)
        data: dict[str, Any] = {
            "survey": f"{title} {year}", "respondent_role": person.job_title,
            "organisation": person.organisation,
            "answers": {"overall_satisfaction": rng.randint(1, 5),
                        "would_recommend": rng.choice(("yes", "no", "not sure")),
                        "comment": rng.choice(SURVEY_COMMENTS)},
        }
        if special:
            data["lived_experience"] = rng.choice(SPECIAL_SURVEY_VALUES)
            data["respondent_role"] = "Patient or carer"
        return data

    # generation
    def generate(self, subjects: int) -> list[Fact]:
        lives: list[_Life] = []
        for index in range(subjects):
            if index == 0:
                life = self.demo()
            else:
                life = self.someone(1000 + index)
            lives.append(life)
        ordered = sorted(((when, i, j, fact) for i, life in enumerate(lives)
                          for j, (when, fact) in enumerate(life.facts)),
                         key=lambda item: (item[0], item[1], item[2]))
        return [{"id": f"{self.org}-{n:06d}", **fact}
                for n, (_, _, _, fact) in enumerate(ordered, start=1)]

    def someone(self, number: int) -> _Life:
        raise NotImplementedError

    def demo(self) -> _Life:
        raise NotImplementedError


Persona = Callable[[int], _Life]


def _pick(rng: random.Random, weighted: Iterable[tuple[float, Persona]]) -> Persona:
    options = list(weighted)
    return rng.choices([p for _, p in options], weights=[w for w, _ in options])[0]


class _Hqip(_Population):
    """HQIP: subscribers, visitors, respondents, enquirers, attendees, DARG applicants."""

    def someone(self, number: int) -> _Life:
        persona = _pick(self.rng, (
            (34, self.subscriber), (20, self.visitor), (12, self.respondent),
            (11, self.enquirer), (11, self.attendee), (9, self.applicant),
            (3, self.correspondent),
        ))
        return persona(number)

    def demo(self) -> _Life:
        """subscriber:demo-1 signs up, consents, reads, is shared, unsubscribes 2024-03-10."""
        life = _Life(self, "subscriber:demo-1", FIRST_AT)
        life.at(_uk(2023, 1, 16, 9, 14))
        life.consent(DM, "double-opt-in-link")
        life.at(_uk(2023, 1, 16, 9, 16))
        record = life.collect("newsletter", DM, "consent", "contact",
                              {"email": "alex.demo@example.org", "first_name": "Alex"})
        life.at(_uk(2023, 1, 20, 11, 0))
        life.share("Clarity Marketing", DM, "consent", records=[record])
        for month, day in ((2, 2), (4, 5), (7, 12), (10, 3)):
            life.at(_uk(2023, month, day, 8, 30))
            life.activity(record)
        life.at(_uk(2024, 1, 17, 12, 5))
        life.activity(record)
        life.at(_uk(2024, 3, 10, 10, 42))
        life.unsubscribe("email-link")
        return life

    def subscriber(self, number: int) -> _Life:
        life = _Life(self, f"subscriber:{number}", self.start())
        person = self.person()
        self.newsletter(life, person, ("Clarity Marketing",), HQIP_PAGES)
        if self.rng.random() < 0.25:
            life.wait(20, 200)
            self.event(life, person)
        life.rights(erase_chance=0.08)
        return life

    def visitor(self, number: int) -> _Life:
        rng = self.rng
        life = _Life(self, f"visitor:{number}", self.start())
        life.consent("website-analytics", rng.choice(("cookie-banner-accept-all",
                                                      "cookie-settings-analytics-on")))
        life.soon(0.1, 1)
        technical = life.collect("web-analytics", "website-analytics", "consent", "technical",
                                 {"ip_address": self.ip_address(),
                                  "user_agent": rng.choice(USER_AGENTS),
                                  "cookie_id": self.cookie_id()},
                                 source="data-subject")
        life.soon(1, 20)
        usage = life.collect("web-usage", "website-analytics", "consent", "usage",
                             {"pages_viewed": rng.sample(HQIP_PAGES, rng.randint(1, 5)),
                              "sessions": 1,
                              "referrer": rng.choice(("search", "direct", "newsletter",
                                                      "social", "nhs.example"))})
        life.soon(1, 60)
        life.share("Google Analytics", "website-analytics", "consent",
                   categories=["technical", "usage"])
        if rng.random() < 0.2:
            life.wait(0.1, 3)
            life.share("Clarity Marketing", "website-analytics", "consent",
                       records=[technical, usage])
        for _ in range(rng.randint(4, 14)):
            life.wait(3, 40)
            life.activity(usage)
        if rng.random() < 0.15:
            life.wait(5, 120)
            life.withdraw("website-analytics", "cookie-settings")
        elif rng.random() < 0.15:
            life.wait(5, 120)
            self.newsletter(life, self.person(), ("Clarity Marketing",), HQIP_PAGES)
        life.rights(erase_chance=0.03)
        return life

    def respondent(self, number: int) -> _Life:
        rng = self.rng
        life = _Life(self, f"respondent:{number}", self.start())
        person = self.person()
        for round_ in range(1 if rng.random() < 0.55 else 2):
            if round_:
                life.wait(90, 400)
            basis = "consent" if rng.random() < 0.7 else "legitimate-interests"
            if basis == "consent":
                life.consent("surveys-feedback", "survey-opt-in-checkbox")
                life.soon(2, 30)
            special = rng.random() < 0.1
            record = life.collect("survey", "surveys-feedback", basis,
                                  "special" if special else "feedback",
                                  self.survey_data(person, special, life.now.year))
            if rng.random() < 0.5:
                life.soon(1, 10)
                life.collect("survey-contact", "surveys-feedback", basis, "contact",
                             {"email": person.email, "first_name": person.first_name,
                              "happy_to_be_contacted": True})
            for _ in range(rng.randint(1, 4)):
                life.wait(7, 60)
                life.activity(record)
            if basis == "legitimate-interests" and rng.random() < 0.12:
                life.wait(10, 90)
                life.object_to("surveys-feedback")
                life.soon(60, 600)
                life.restrict("surveys-feedback", "objection-pending")
                if rng.random() < 0.6:
                    life.wait(10, 40)
                    life.lift("surveys-feedback", "objection decided")
            elif basis == "consent" and rng.random() < 0.1:
                life.wait(10, 200)
                life.withdraw("surveys-feedback", "email-to-dpo")
                break
        if rng.random() < 0.2:
            life.wait(10, 100)
            self.newsletter(life, person, ("Clarity Marketing",), HQIP_PAGES)
        life.rights()
        return life

    def enquirer(self, number: int) -> _Life:
        rng = self.rng
        life = _Life(self, f"enquirer:{number}", self.start())
        person = self.person()
        for round_ in range(1 if rng.random() < 0.6 else 2):
            if round_:
                life.wait(60, 300)
            data: dict[str, Any] = {"name": person.name, "email": person.email,
                                    "organisation": person.organisation,
                                    "topic": rng.choice(ENQUIRY_TOPICS)}
            if rng.random() < 0.4:
                data["phone"] = self.phone()
            record = life.collect("enquiry", "enquiries-complaints", "legitimate-interests",
                                  "contact", data)
            for _ in range(rng.randint(2, 6)):
                life.wait(1, 20)
                life.activity(record)
        if rng.random() < 0.08:
            # A court order: the data is disclosed under a legal obligation and preserved.
            life.wait(20, 200)
            order = life.collect("court-order", "law-enforcement", "legal-obligation",
                                 "identity", {"name": person.name,
                                              "order_reference": f"CO-{rng.randint(1000, 9999)}",
                                              "court": rng.choice(("County Court",
                                                                   "Crown Court",
                                                                   "High Court"))},
                                 source="third-party")
            life.wait(1, 10)
            life.share(rng.choice(("Police", "The Courts")), "law-enforcement",
                       "legal-obligation", records=[order], categories=["identity", "contact"])
            if rng.random() < 0.6:
                life.soon(10, 600)
                hold = life.place_hold("enquiries-complaints", "Court order to preserve records",
                                       None)
                if hold is not None and rng.random() < 0.4:
                    life.wait(60, 300)
                    life.release_hold(hold, "proceedings concluded")
        if rng.random() < 0.15:
            life.wait(10, 60)
            life.collect("service-notice", "service-communications", "legitimate-interests",
                         "contact", {"email": person.email,
                                     "notice": "Privacy notice update, November 2023"})
        life.rights(erase_chance=0.08)
        return life

    def event(self, life: _Life, person: _Person) -> None:
        """Books an HQIP event, is maybe shared with the events processor, attends."""
        rng = self.rng
        # An event a few weeks to months ahead, of a kind this person has not booked yet.
        year = (life.now + timedelta(days=rng.randint(14, 120))).year
        kinds = [k for k in EVENT_KINDS if f"event-{k[0]}-{year}" not in life.counters]
        if not kinds:
            return
        slug, title = rng.choice(kinds)
        basis = "consent" if rng.random() < 0.6 else "contract"
        if basis == "consent":
            life.consent("events", "event-registration-form")
            life.soon(1, 5)
        record = life.collect(f"event-{slug}-{year}", "events", basis, "contact",
                              {"name": person.name, "email": person.email,
                               "organisation": person.organisation,
                               "job_title": person.job_title, "event": f"{title} {year}",
                               "ticket": rng.choice(("in person", "online", "speaker"))})
        if rng.random() < 0.5:
            life.wait(0.1, 5)
            life.share("Clarity Marketing", "events", basis, records=[record])
        if rng.random() < 0.85:
            life.wait(7, 60)
            life.activity(record)

    def attendee(self, number: int) -> _Life:
        rng = self.rng
        life = _Life(self, f"attendee:{number}", self.start())
        person = self.person()
        self.event(life, person)
        for _ in range(rng.choice((0, 1, 1, 2, 3))):
            life.wait(60, 250)
            self.event(life, person)
        if rng.random() < 0.3:
            life.wait(1, 30)
            self.newsletter(life, person, ("Clarity Marketing",), HQIP_PAGES)
        if "events" in life.consents and rng.random() < 0.1:
            life.wait(10, 100)
            life.withdraw("events", "email-to-events-team")
        life.rights()
        return life

    def applicant(self, number: int) -> _Life:
        rng = self.rng
        life = _Life(self, f"applicant:{number}", self.start())
        person = self.person()
        record = life.collect("darg-application", "darg-application", "contract", "account",
                              {"name": person.name, "email": person.email,
                               "organisation": person.organisation,
                               "job_title": person.job_title,
                               "project_title": rng.choice(DARG_PROJECTS),
                               "audit_requested": rng.choice(DARG_AUDITS),
                               "application_ref": f"DARG-{rng.randint(100, 999)}"})
        for _ in range(rng.randint(3, 7)):
            life.wait(7, 45)
            life.activity(record)
        life.wait(5, 60)
        life.share("NHS England", "darg-application", "contract", records=[record],
                   categories=["account"])
        if rng.random() < 0.25:
            life.wait(20, 200)
            life.rectify(record, rng.choice(({"job_title": rng.choice(JOB_TITLES)},
                                             {"organisation": rng.choice(HEALTH_ORGANISATIONS)})))
        if rng.random() < 0.3:
            life.wait(10, 200)
            life.collect("service-notice", "service-communications",
                         rng.choice(("legitimate-interests", "legal-obligation")), "contact",
                         {"email": person.email,
                          "notice": "Changes to the data access request service"})
        for _ in range(rng.randint(1, 4)):
            life.wait(30, 120)
            life.activity(record)
        if rng.random() < 0.4:
            life.wait(30, 300)
            life.emit("relationship-ended", reason=rng.choice(END_REASONS_DARG))
        life.rights(erase_chance=0.04)
        return life

    def correspondent(self, number: int) -> _Life:
        rng = self.rng
        life = _Life(self, f"correspondent:{number}", self.start())
        person = self.person()
        record = life.collect("pq-file", "parliamentary-records", "legal-obligation", "identity",
                              {"name": person.name, "organisation": person.organisation,
                               "question_reference": f"PQ {rng.randint(10000, 99999)}",
                               "topic": rng.choice(DARG_AUDITS)},
                              source="third-party")
        for _ in range(rng.randint(1, 3)):
            life.wait(3, 40)
            life.rectify(record, {"briefing_note": rng.choice(SURVEY_COMMENTS)})
        # Erasure is refused for this legal-obligation data: the ledger says why.
        life.rights(erase_chance=0.3)
        return life


class _Ihpa(_Population):
    """IHPA: members, newsletter subscribers, complainants and website visitors."""

    def someone(self, number: int) -> _Life:
        persona = _pick(self.rng, (
            (56, self.member), (22, self.subscriber), (8, self.complainant),
            (14, self.visitor),
        ))
        return persona(number)

    def demo(self) -> _Life:
        """member:demo-1 joins, is verified, pays twice, posts, leaves, asks for a copy."""
        life = _Life(self, "member:demo-1", FIRST_AT)
        life.at(_uk(2022, 3, 7, 19, 12))
        membership = life.collect("membership", "membership", "contract", "account",
                                  {"first_name": "Sam", "last_name": "Demo",
                                   "email": "sam.demo@example.org",
                                   "profession": "Physiotherapist",
                                   "membership_grade": "Full member",
                                   "member_number": "IHPA-D0001", "town": "Westmarch"})
        life.at(_uk(2022, 3, 8, 10, 3))
        life.collect("registration", "identity-verification", "legal-obligation", "identity",
                     {"regulator": "HCPC", "registration_number": "PH000001",
                      "checked_on_register": "2022-03-08"}, source="public")
        life.at(_uk(2022, 3, 8, 10, 30))
        life.share("IPSE", "membership", "contract", records=[membership])
        life.at(_uk(2022, 3, 8, 10, 45))
        comms = life.collect("member-comms", "member-communications", "contract", "contact",
                             {"email": "sam.demo@example.org", "preferred_channel": "e-mail"})
        life.at(_uk(2022, 3, 8, 11, 0))
        life.share("Mailchimp", "member-communications", "contract", records=[comms])
        for year in (2022, 2023):
            life.at(_uk(year, 3, 9, 9, 0))
            payment = life.collect("payment", "payments", "contract", "account",
                                   {"amount": "120.00", "currency": "GBP",
                                    "transaction_id": f"PAYID-DEMO{year}",
                                    "invoice": f"INV-{year}-D0001"})
            life.at(_uk(year, 3, 9, 9, 1))
            life.share("PayPal", "payments", "contract", records=[payment])
            if year == 2022:
                life.at(_uk(2022, 4, 2, 20, 15))
                life.consent("forum", "forum-sign-up-form")
                life.at(_uk(2022, 4, 2, 20, 20))
                life.collect("forum-profile", "forum", "consent", "content",
                             {"display_name": "SamD", "bio": "Physio in private practice"})
                life.at(_uk(2022, 6, 14, 21, 5))
                life.collect("forum-post", "forum", "consent", "content",
                             {"group": "Private practice", "text": FORUM_POSTS[5]})
                life.at(_uk(2022, 11, 1, 8, 0))
                life.activity(membership)
        life.at(_uk(2023, 5, 20, 18, 0))
        life.rectify(membership, {"membership_grade": "Full member", "town": "Ashby Vale"})
        life.at(_uk(2023, 9, 12, 9, 30))
        life.withdraw("forum", "forum-settings")
        life.at(_uk(2024, 3, 31, 23, 0))
        life.emit("relationship-ended", reason="membership not renewed")
        life.at(_uk(2024, 5, 2, 14, 10))
        life.emit("access-requested", request="dsar-demo-1", identity_check=True)
        life.at(_uk(2024, 5, 3, 9, 0))
        life.emit("identity-verified", request="dsar-demo-1")
        life.at(_uk(2024, 5, 28, 16, 0))
        life.emit("request-fulfilled", request="dsar-demo-1")
        return life

    def member(self, number: int) -> _Life:
        rng = self.rng
        life = _Life(self, f"member:{number}", self.start())
        person = self.person()
        profession, regulator, prefix = rng.choice(PROFESSIONS)
        grade = rng.choices(GRADES, weights=(60, 20, 12, 8))[0]
        membership = life.collect("membership", "membership", "contract", "account",
                                  {"first_name": person.first_name,
                                   "last_name": person.last_name, "email": person.email,
                                   "phone": self.phone(), "profession": profession,
                                   "membership_grade": grade,
                                   "member_number": f"IHPA-{rng.randint(10000, 99999)}",
                                   "town": rng.choice(TOWNS)})
        life.wait(0.05, 3)
        life.collect("registration", "identity-verification", "legal-obligation", "identity",
                     {"regulator": regulator,
                      "registration_number": f"{prefix}{rng.randint(10000, 999999)}",
                      "checked_on_register": life.now.date().isoformat()}, source="public")
        life.soon(5, 120)
        life.share("IPSE", "membership", "contract", records=[membership])
        life.soon(5, 60)
        comms = life.collect("member-comms", "member-communications", "contract", "contact",
                             {"email": person.email,
                              "preferred_channel": rng.choice(("e-mail", "post", "e-mail"))})
        life.soon(5, 60)
        life.share(rng.choice(("Mailchimp", "Mailgun")), "member-communications", "contract",
                   records=[comms])
        life.soon(1, 10)
        renewal = life.now
        self.payment(life, grade)
        forum_profile: str | None = None
        if rng.random() < 0.4:
            life.wait(1, 60)
            life.consent("forum", "forum-sign-up-form")
            life.soon(1, 10)
            forum_profile = life.collect(
                "forum-profile", "forum", "consent", "content",
                {"display_name": f"{person.first_name}{person.last_name[0]}",
                 "bio": f"{profession} in {rng.choice(TOWNS)}"})
        if rng.random() < 0.45:
            life.wait(0.01, 30)
            life.consent("online-analytics", "cookie-banner-accept-all")
            life.soon(0.1, 2)
            life.collect("analytics", "online-analytics", "consent", "online",
                         {"ip_address": self.ip_address(), "user_agent": rng.choice(USER_AGENTS),
                          "cookie_id": self.cookie_id()})
            life.soon(1, 60)
            life.share(rng.choice(("Google", "Google", "PayPal", "IPSE")), "online-analytics",
                       "consent", categories=["online"])
        if rng.random() < 0.3:
            life.wait(1, 90)
            self.newsletter(life, person, ("Mailchimp", "Mailgun"), IHPA_PAGES)
        years = 1
        while rng.random() < 0.75:
            years += 1
        episodes_in = rng.randrange(years)
        excluded = False
        for year in range(years):
            if year:
                # The annual renewal: paid on the anniversary, or the membership ends.
                if renewal + timedelta(days=365) > LAST_AT:
                    break  # still a member when the sample ends
                renewal += timedelta(days=365)
                life.now = max(life.now, renewal) + timedelta(minutes=rng.randint(1, 600))
                self.payment(life, grade)
            if rng.random() < 0.02:
                life.wait(30, 200)
                life.share("HMRC", "payments", "legal-obligation", categories=["account"])
            for _ in range(rng.randint(1, 4)):
                life.wait(20, 80)
                life.activity(membership)
            if "forum" in life.consents:
                for _ in range(rng.randint(0, 2)):
                    life.wait(10, 80)
                    life.collect("forum-post", "forum", "consent", "content",
                                 {"group": rng.choice(FORUM_GROUPS),
                                  "text": rng.choice(FORUM_POSTS)})
                if rng.random() < 0.06:
                    life.wait(5, 60)
                    life.withdraw("forum", "forum-settings")
            if year == episodes_in:
                life.episodes()
            if forum_profile is not None and rng.random() < 0.04:
                excluded = True
                break
        if excluded:
            self.exclusion(life, person)
        elif renewal + timedelta(days=365) <= LAST_AT:
            # Did not renew: the membership ends at the next renewal date.
            life.now = max(life.now, renewal + timedelta(days=365)) + timedelta(minutes=1)
            life.emit("relationship-ended", reason=rng.choice(END_REASONS_MEMBER))
        if rng.random() < 0.05:
            life.wait(2, 200)
            life.request_erasure()
        return life

    def payment(self, life: _Life, grade: str) -> None:
        """A membership fee paid through PayPal (the processor gets the payment record)."""
        rng = self.rng
        payment = life.collect("payment", "payments", "contract", "account",
                               {"amount": FEES[grade], "currency": "GBP",
                                "transaction_id": f"PAYID-{rng.randint(10**9, 10**10 - 1)}",
                                "invoice": f"INV-{life.now.year}-{rng.randint(1000, 9999)}"})
        life.soon(1, 5)
        life.share("PayPal", "payments", "contract", records=[payment])

    def exclusion(self, life: _Life, person: _Person) -> None:
        """A conduct investigation ends in exclusion; the e-mail goes on the blocklist."""
        rng = self.rng
        life.wait(1, 30)
        life.collect("investigation", "complaints-investigations", "legal-obligation", "content",
                     {"case_reference": f"CI-{rng.randint(100, 999)}",
                      "summary": "Breach of the forum code of conduct",
                      "outcome": "exclusion"}, source="third-party")
        life.wait(10, 60)
        life.emit("excluded", reason="Repeated breaches of the forum code of conduct")
        life.soon(5, 120)
        life.collect("blocklist", "member-blocklist", "legitimate-interests", "contact",
                     {"email": person.email})
        life.soon(5, 120)
        life.emit("relationship-ended", reason="excluded by the membership committee")

    def subscriber(self, number: int) -> _Life:
        life = _Life(self, f"subscriber:{number}", self.start())
        self.newsletter(life, self.person(), ("Mailchimp", "Mailgun"), IHPA_PAGES)
        life.rights(erase_chance=0.08)
        return life

    def complainant(self, number: int) -> _Life:
        rng = self.rng
        life = _Life(self, f"complainant:{number}", self.start())
        person = self.person()
        record = life.collect("complaint", "complaints-investigations", "legal-obligation",
                              "content", {"name": person.name, "email": person.email,
                                          "case_reference": f"CI-{rng.randint(100, 999)}",
                                          "summary": rng.choice(COMPLAINT_SUMMARIES)})
        for _ in range(rng.randint(1, 5)):
            life.wait(3, 40)
            life.activity(record)
        if rng.random() < 0.2:
            life.wait(5, 60)
            hold = life.place_hold("complaints-investigations", rng.choice(HOLD_REASONS), None)
            if hold is not None and rng.random() < 0.5:
                life.wait(60, 400)
                life.release_hold(hold, "matter closed")
        if rng.random() < 0.1:
            life.wait(5, 60)
            life.share("Police", "law-enforcement", "legal-obligation",
                       records=[record], categories=["identity", "content"])
        life.rights(erase_chance=0.15)
        return life

    def visitor(self, number: int) -> _Life:
        rng = self.rng
        life = _Life(self, f"visitor:{number}", self.start())
        life.consent("online-analytics", rng.choice(("cookie-banner-accept-all",
                                                     "cookie-settings-analytics-on")))
        life.soon(0.1, 1)
        record = life.collect("analytics", "online-analytics", "consent", "online",
                              {"ip_address": self.ip_address(),
                               "user_agent": rng.choice(USER_AGENTS),
                               "cookie_id": self.cookie_id(),
                               "pages_viewed": rng.sample(IHPA_PAGES, rng.randint(1, 4))})
        life.soon(1, 60)
        life.share("Google", "online-analytics", "consent", categories=["online"])
        if rng.random() < 0.3:
            life.soon(1, 60)
            life.share(rng.choice(("Mailchimp", "Mailgun", "IPSE")), "online-analytics",
                       "consent", records=[record])
        for _ in range(rng.randint(2, 8)):
            life.wait(3, 60)
            life.activity(record)
        if rng.random() < 0.15:
            life.wait(5, 100)
            life.withdraw("online-analytics", "cookie-settings")
        elif rng.random() < 0.2:
            life.wait(1, 60)
            self.newsletter(life, self.person(), ("Mailchimp", "Mailgun"), IHPA_PAGES)
        life.rights(erase_chance=0.03)
        return life


_POPULATIONS: dict[str, type[_Population]] = {"hqip": _Hqip, "ihpa": _Ihpa}


def generate_facts(org: str, subjects: int, seed: int = DEFAULT_SEED) -> list[dict[str, Any]]:
    """Facts of ingest format v1 for `subjects` fictional people of `org`, in time order.

    Deterministic: only `random.Random(seed)` is used. The first subject is the demo one
    (`subscriber:demo-1` for HQIP, `member:demo-1` for IHPA). Fact ids are `<org>-NNNNNN`.
    """
    if org not in _POPULATIONS:
        raise ValueError(f"unknown organisation {org!r} (expected one of "
                         f"{', '.join(ORGANISATIONS)})")
    if subjects < 0:
        raise ValueError("subjects must be >= 0")
    return _POPULATIONS[org](org, seed).generate(subjects)


def to_jsonl(facts: Iterable[dict[str, Any]]) -> str:
    """One JSON fact per line, newline-terminated."""
    return "".join(json.dumps(fact, ensure_ascii=False) + "\n" for fact in facts)


def write_examples(directory: Path = EXAMPLES_DIR, subjects: int = EXAMPLE_SUBJECTS,
                   seed: int = DEFAULT_SEED) -> list[Path]:
    """(Re)writes `<directory>/<org>-facts.jsonl` for every organisation."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for org in ORGANISATIONS:
        path = directory / f"{org}-facts.jsonl"
        path.write_text(to_jsonl(generate_facts(org, subjects, seed)), encoding="utf-8")
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m lifecycle.services.samples [--out DIR] [--subjects N] [--seed S]`."""
    parser = argparse.ArgumentParser(prog="python -m lifecycle.services.samples",
                                     description="Write the deterministic example facts.")
    parser.add_argument("--out", type=Path, default=EXAMPLES_DIR)
    parser.add_argument("--subjects", type=int, default=EXAMPLE_SUBJECTS)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)
    for path in write_examples(args.out, args.subjects, args.seed):
        lines = path.read_text(encoding="utf-8").count("\n")
        print(f"{path}: {lines} facts")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
