"""attack18c: the responders' desk against references the fact format allows (docs/facts.md,
"reference: a string of 1 to 200 characters", none a control character: so `/`, `?`, `#`,
`%`, spaces and any Unicode are allowed) and against query times at the calendar's edges.

The README promises: "an unknown subject or request: 404", "bad input: 422 with `detail`
listing each `field` and `reason`". So a subject or request that exists must be reachable
by its percent-encoded reference, and a time the service cannot work with is a 422, not a
500 "unexpected error".
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import pytest

from lifecycle.services.ledger import Ledger
from lifecycle.store.settings import Settings
from tests.facts_builder import collected, fact, lines
from tests.web_service import Service, signed_in, start_service

SLASHED = "org/unit-7/member:42"          # a controller's hierarchical key
ODD = "unit 7?#%2F é:42"                  # every other character a URL treats specially
SAR = "SAR/2025/7"
ERASURE = "ER/2025/7"
ODD_ERASURE = "ER 7?#%"
SEEDED = datetime(2025, 3, 3, 12, 0, tzinfo=UTC)


def _seed() -> list[str]:
    return lines([
        collected(SLASHED, "2025-01-02T10:00:00Z", "signup",
                  {"email": "thaddeus.okonkwo-byrne@example.org"}),
        fact("access-requested", SLASHED, "2025-02-01T09:00:00Z", request=SAR),
        fact("erasure-requested", SLASHED, "2025-02-02T09:00:00Z", request=ERASURE),
        collected(ODD, "2025-01-02T10:00:00Z", "signup",
                  {"email": "wilhelmina.azikiwe@example.org"}),
        fact("erasure-requested", ODD, "2025-02-02T09:00:00Z", request=ODD_ERASURE),
    ])


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    folder: Path = tmp_path_factory.mktemp("web18c")
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


def test_a_reference_with_url_characters_but_no_slash_round_trips(service: Service) -> None:
    """Held: a subject reference holding `?`, `#`, `%`, a space and a non-ASCII letter is
    reached by its percent-encoding: the person, the history, the export and the
    certificate of its request all answer 200 and name it exactly."""
    with service.client("dpo") as client:
        for path in (f"/api/subjects/{enc(ODD)}", f"/api/subjects/{enc(ODD)}/history",
                     f"/api/subjects/{enc(ODD)}/export"):
            answer = client.get(path)
            assert answer.status_code == 200, (path, answer.text)
            assert answer.json()["subject"] == ODD
        answer = client.get(f"/api/certificates/{enc(ODD_ERASURE)}")
        assert answer.status_code == 200, answer.text
        assert answer.json()["subject"] == ODD and answer.json()["request"] == ODD_ERASURE


def test_a_subject_and_requests_whose_references_hold_a_slash_are_reachable(
        service: Service) -> None:
    """A reference may hold `/` (docs/facts.md: any 1 to 200 characters but control
    characters). The API answers 404 only for an unknown subject or request (README), so
    the person, its history, its export, its request's certificate and a step on its
    request, each addressed by the percent-encoded reference, are found."""
    with service.client("dpo") as client:
        for path in (f"/api/subjects/{enc(SLASHED)}", f"/api/subjects/{enc(SLASHED)}/history",
                     f"/api/subjects/{enc(SLASHED)}/export",
                     f"/api/certificates/{enc(ERASURE)}"):
            answer = client.get(path)
            assert answer.status_code == 200, (path, answer.text)
            assert answer.json()["subject"] == SLASHED
        # Found: the step is judged on the request's own clock (its deadline has passed
        # by now, so the pause is refused for that reason, not as unknown).
        paused = client.post(f"/api/requests/{enc(SAR)}/pause", json={})
        assert paused.status_code == 422 and "deadline" in paused.text, paused.text
        unknown = client.post(f"/api/requests/{enc(SAR + '/x')}/pause", json={})
        assert unknown.status_code == 404, unknown.text


def test_the_queue_links_every_person_it_lists_to_a_page_that_opens(service: Service) -> None:
    """The desk's request queue lists the open request of the subject with a `/` in its
    reference; the link it gives to that person opens the person's page (200), not a 404."""
    import re

    browser, _csrf = signed_in(service, "responder")
    queue = browser.get("/queue")
    assert queue.status_code == 200
    links = sorted(set(re.findall(r'href="(/subjects/[^"]+)"', queue.text)))
    assert any("unit-7" in link for link in links), links
    for link in links:
        page = browser.get(link)
        assert page.status_code == 200, (link, page.status_code)
    browser.close()


def test_an_export_as_of_a_time_beyond_the_calendar_is_a_422(service: Service) -> None:
    """`as_of` is a query field: a time the export cannot work with (after 9999-12-31 once
    read in UTC or London) is a 422 naming `as_of`, never a 500; and the service goes on
    answering on the same connection."""
    with service.client("responder") as client:
        answer = client.get(f"/api/subjects/{enc(ODD)}/export",  # it has a request
                            params={"as_of": "9999-12-31T23:59:59-12:00"})
        assert "unexpected error" not in answer.text, answer.text
        assert answer.status_code == 422 and "as_of" in answer.text, answer.text
        assert client.get("/api/status").status_code == 200


def test_a_replay_until_a_time_before_the_calendar_is_a_422(service: Service) -> None:
    """`until` is a query field: a time the replay cannot store (before year 1 once read in
    UTC) is a 422 naming `until`, never a 500."""
    with service.client("auditor") as client:
        answer = client.get("/api/replay", params={"until": "0001-01-01T00:00:00+14:00"})
        assert "unexpected error" not in answer.text, answer.text
        assert answer.status_code == 422 and "until" in answer.text, answer.text


def test_access_logs_keep_references_with_odd_characters_out(service: Service) -> None:
    """Held: the access log names the route template, never the path, so neither a
    reference nor the percent-encoded form of one nor a queried time appears in it."""
    with service.client("dpo") as client:
        client.get(f"/api/subjects/{enc(ODD)}")
        client.get(f"/api/subjects/{enc(ODD)}/export", params={"as_of": "2025-02-01T00:00:00Z"})
    log = service.log_text()
    for needle in (ODD, enc(ODD), "unit 7", "2025-02-01T00:00:00Z", "wilhelmina"):
        assert needle not in log, needle


def test_the_desk_export_page_as_of_a_time_beyond_the_calendar_is_a_4xx(
        service: Service) -> None:
    """The person page's DSAR pack, asked for as of a time after 9999-12-31 once read in
    London, is refused as bad input (4xx naming `as_of`), never a server error."""
    browser, _csrf = signed_in(service, "responder")
    page = browser.get(f"/subjects/{enc(ODD)}/export",
                       params={"as_of": "9999-12-31T23:59:59-12:00", "format": "html"})
    browser.close()
    assert page.status_code in (400, 422), page.status_code
    assert "as_of" in page.text
