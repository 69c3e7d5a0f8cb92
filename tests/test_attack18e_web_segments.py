"""attack18e: the desk's `Segments` rewriting (references holding `/` sent as `%2F`) against
odd spellings, route confusion, role rules, the sign-in `next` and the access log.

README: "an unknown subject or request: 404"; "a role without the right: 403"; access logs
"carry the method, the route template (`/api/subjects/{reference}`), the status, the latency
and the actor". docs/facts.md: a reference is any 1..200 characters but control characters.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from lifecycle.services.ledger import Ledger
from lifecycle.store.settings import Settings
from tests.facts_builder import collected, fact, lines
from tests.web_service import Service, signed_in, start_service

SLASHED = "org/unit-7/member:42"
HISTORY_LIKE = "x/history"               # the history route's shape, as one reference
PERCENT_A = "a%41"                        # decodes to "aA" if decoded twice
DOUBLE_A = "aA"
HOLD = "LIT/2025/9"
SAR = "SAR/2025/8"
SEEDED = datetime(2025, 3, 3, 12, 0, tzinfo=UTC)


def _seed() -> list[str]:
    return lines([
        collected(SLASHED, "2025-01-02T10:00:00Z", "signup",
                  {"email": "ottoline.fairweather-ng@example.org"}),
        fact("access-requested", SLASHED, "2025-03-01T09:00:00Z", request=SAR),
        fact("legal-hold-placed", SLASHED, "2025-01-05T09:00:00Z", hold=HOLD, scope="all",
             reason="litigation"),
        collected(HISTORY_LIKE, "2025-01-02T10:00:00Z", "signup",
                  {"email": "bartholomew.quince@example.org"}),
        collected("x", "2025-01-02T10:00:00Z", "signup",
                  {"email": "x.person@example.org"}),
        collected(PERCENT_A, "2025-01-02T10:00:00Z", "signup",
                  {"email": "percy.centum@example.org"}),
        collected(DOUBLE_A, "2025-01-02T10:00:00Z", "signup",
                  {"email": "ada.double@example.org"}),
    ])


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    folder: Path = tmp_path_factory.mktemp("web18e")
    home = folder / "home"
    settings = Settings(home=home, database_url=None, master_key=None,
                        master_key_file=home / "master.key")
    with Ledger(settings) as ledger:
        report = ledger.ingest(_seed(), SEEDED)
        assert report.ok, report.as_dict()
    started = start_service(settings, folder)
    yield started
    started.stop()


def enc(reference: str) -> str:
    return quote(reference, safe="")


def test_a_reference_shaped_like_a_route_stays_a_reference(service: Service) -> None:
    """Held: `x%2Fhistory` is the subject `x/history` (its page), never subject x's history;
    `x/history` (a real slash) is x's history; both answer for their own subject."""
    with service.client("dpo") as client:
        person = client.get(f"/api/subjects/{enc(HISTORY_LIKE)}")
        assert person.status_code == 200, person.text
        assert person.json()["subject"] == HISTORY_LIKE
        history = client.get("/api/subjects/x/history")
        assert history.status_code == 200, history.text
        assert history.json()["subject"] == "x"
        twice = client.get(f"/api/subjects/{enc(HISTORY_LIKE)}/history")
        assert twice.status_code == 200 and twice.json()["subject"] == HISTORY_LIKE


def test_lower_case_and_double_encodings_name_what_they_spell(service: Service) -> None:
    """Held: `%2f` (lower case) is a slash like `%2F`; `%252F` is the three characters
    `%2F`, a different (unknown) reference: 404, never the slashed subject; `%2541` is the
    reference `a%41`, never `aA`."""
    with service.client("dpo") as client:
        lower = client.get("/api/subjects/org%2funit-7%2fmember:42")
        assert lower.status_code == 200 and lower.json()["subject"] == SLASHED, lower.text
        double = client.get("/api/subjects/org%252Funit-7%252Fmember:42")
        assert double.status_code == 404, double.text
        for path in ("/api/subjects/a%2541", "/api/subjects/a%2541?x=%2F",
                     "/api/subjects/a%2541/history"):
            answer = client.get(path)
            assert answer.status_code == 200 and answer.json()["subject"] == PERCENT_A, path
        mixed = client.get("/api/subjects/a%2541%2F")   # "a%41/" is nobody
        assert mixed.status_code == 404, mixed.text


def test_roles_are_judged_the_same_with_or_without_an_encoded_slash(service: Service) -> None:
    """Held: each role gets the same status on a route whether the reference holds `%2F` or
    not (ingest may read no subject, the auditor no person, only history)."""
    for role in ("ingest", "auditor", "responder", "dpo"):
        with service.client(role) as client:
            for tail in ("", "/history", "/export"):
                plain = client.get(f"/api/subjects/x{tail}").status_code
                slashed = client.get(f"/api/subjects/{enc(SLASHED)}{tail}").status_code
                assert plain == slashed, (role, tail, plain, slashed)
        if role == "ingest":
            assert plain == 403


def test_the_hold_release_form_on_a_slashed_subject_releases_the_slashed_hold(
        service: Service) -> None:
    """Held: the person page of a subject with `/` offers the release form of a hold whose
    id holds `/`; posting it releases that hold and goes back to the same person."""
    browser, csrf = signed_in(service, "dpo")
    try:
        page = browser.get(f"/subjects/{enc(SLASHED)}")
        assert page.status_code == 200, page.text
        forms = re.findall(r'action="(/subjects/[^"]+/release)"', page.text)
        assert forms, page.text
        submission = re.findall(r'name="submission" value="([^"]+)"', page.text)[0]
        done = browser.post(forms[0].replace("&amp;", "&"),
                            data={"csrf": csrf, "submission": submission},
                            follow_redirects=False)
        assert done.status_code == 303, done.text
        back = done.headers["location"]
        assert back.startswith(f"/subjects/{quote(SLASHED, safe=':')}?"), back
        again = browser.get(back)
        assert again.status_code == 200
        assert "legal-hold-released" in again.text
    finally:
        browser.close()


def _sign_in_from(service: Service, path: str) -> str:
    """Asks for `path` signed out, signs in on the page given, and returns where the
    sign-in redirects."""
    client = httpx.Client(base_url=service.url, timeout=30, verify=False)
    try:
        asked = client.get(path)
        assert asked.status_code == 401, asked.text
        csrf = re.search(r'name="csrf" value="([^"]+)"', asked.text)
        nxt = re.search(r'name="next" value="([^"]*)"', asked.text)
        assert csrf is not None and nxt is not None, asked.text
        import html as html_lib
        answer = client.post("/signin", data={"token": service.tokens["dpo"],
                                              "csrf": csrf.group(1),
                                              "next": html_lib.unescape(nxt.group(1))},
                             follow_redirects=False)
        assert answer.status_code == 303, answer.text
        location: str = answer.headers["location"]
        landed = client.get(location)
        assert landed.status_code == 200, (location, landed.status_code)
        return landed.text
    finally:
        client.close()


def test_signing_in_from_a_slashed_person_page_returns_to_it(service: Service) -> None:
    """Held: signed out, asking for the person page of `org/unit-7/member:42` shows the
    sign-in; signing in lands on that person's page."""
    landed = _sign_in_from(service, f"/subjects/{enc(SLASHED)}")
    assert f"<h1>{SLASHED}</h1>" in landed, re.findall(r"<h1>.*?</h1>", landed)


def test_signing_in_from_a_person_page_returns_to_that_person(service: Service) -> None:
    """Signed out, asking for the person page of `a%41` (a reference docs/facts.md allows)
    shows the sign-in; signing in must land on `a%41`'s page, never on another person's
    (`aA`)."""
    landed = _sign_in_from(service, f"/subjects/{enc(PERCENT_A)}")
    assert "<h1>a%41</h1>" in landed, re.findall(r"<h1>.*?</h1>", landed)


def test_the_access_log_names_the_route_of_a_slashed_reference(service: Service) -> None:
    """README: access logs carry the route template and the actor. A request for a
    reference holding `/` is logged with `/api/subjects/{reference}/history` and the
    signed-in actor, like any other."""
    with service.client("auditor") as client:
        answer = client.get(f"/api/subjects/{enc(SLASHED)}/history")
        assert answer.status_code == 200
    entries = []
    for line in service.log_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == "http.access" and entry.get("status") == 200:
            entries.append(entry)
    last = entries[-1]
    assert last["route"] == "/api/subjects/{reference}/history", last
    assert last["actor"] == "auditor-user", last


def test_the_request_step_form_on_slashed_references_and_its_time_bounds(
        service: Service) -> None:
    """Held: the person page's step forms for request `SAR/2025/8` of the slashed subject
    post to that request (a verify is judged on it, not a 404); a step `at` beyond 2200-01-01 once read in UTC
    (`2199-12-31T23:00:00-05:00`) or before 1900 is a 422 naming `at`; a hold `until` past
    the bound a 422 naming `until`; nothing is recorded for the refused ones."""
    browser, csrf = signed_in(service, "dpo")
    try:
        page = browser.get(f"/subjects/{enc(SLASHED)}")
        actions = re.findall(r'action="(/subjects/[^"]+/requests/[^"]+/verify)"', page.text)
        assert actions == [f"/subjects/{quote(SLASHED, safe=':')}/requests/"
                           f"{quote(SAR, safe=':')}/verify"], actions
        for at in ("2199-12-31T23:00:00-05:00", "1899-12-31T23:59:59Z",
                   "1900-01-01T00:30:00+01:00"):
            refused = browser.post(actions[0], data={"csrf": csrf, "at": at,
                                                    "submission": f"s-{at}"},
                                   follow_redirects=False)
            assert refused.status_code == 422 and "at" in refused.text, (at, refused.text)
        until = browser.post(f"/subjects/{enc(SLASHED)}/holds",
                             data={"csrf": csrf, "hold": "H-late", "scope": "all",
                                   "reason": "r", "until": "2200-01-01T00:00:01Z",
                                   "submission": "s-until"}, follow_redirects=False)
        assert until.status_code == 422 and "until" in until.text, until.text
        done = browser.post(actions[0], data={"csrf": csrf, "submission": "s-ok"},
                            follow_redirects=False)
        # Reached: refused for what the request is (no identity check asked), not unknown.
        assert done.status_code == 422 and "not awaiting identity" in done.text
    finally:
        browser.close()
    with service.client("dpo") as client:
        history = client.get(f"/api/subjects/{enc(SLASHED)}/history").text
        assert "H-late" not in history
