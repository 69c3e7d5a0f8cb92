"""Erasures made by other processes while `lifecycle serve` runs (a sweep, an ingest, another
service, the daemon), against real processes on SQLite and PostgreSQL: once the log records
an erasure, no page, export (HTML, JSON, CSV, also as of an earlier date), lookup by e-mail
or history served by the running service shows the value or finds the person by the address,
whatever the service cached before; the certificate states when each key was destroyed."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from lifecycle.services.ledger import Ledger
from lifecycle.store.settings import Settings
from lifecycle.support.faults import CRASH_ENV
from tests.facts_builder import collected, fact, lines
from tests.policies import CONFIG
from tests.processes import destroyed_keys, env_for, lifecycle, wait_for
from tests.web_service import Service, free_port, signed_in, start_service

EMAIL = "Ottoline.Brackenbury-Vane@example.net"
NAME = "Ottoline Brackenbury-Vane"
SUBJECT = "subscriber:ob"
BEFORE_ERASURE = "2023-06-01T00:00:00Z"  # a date the record was live (as_of exports)


def subscriber_facts() -> list[dict[str, Any]]:
    """A subscriber who unsubscribed in 2024: hqip's 13-month rule has her record due."""
    return [
        fact("consent-given", SUBJECT, "2023-05-02T09:00:00+01:00",
             purpose="direct-marketing", method="web-form"),
        collected(SUBJECT, "2023-05-02T09:00:00+01:00", "newsletter-signup",
                  {"email": EMAIL, "name": NAME}),
        fact("unsubscribed", SUBJECT, "2024-03-10T10:00:00+00:00", channel="email-link"),
    ]


@pytest.fixture
def service(backend: Settings, tmp_path: Path) -> Iterator[Service]:
    with Ledger(backend) as ledger:
        ledger.adopt_policy(CONFIG / "hqip.toml", datetime(2023, 1, 1, tzinfo=UTC))
        assert ledger.ingest(lines(subscriber_facts()), datetime(2025, 1, 1, tzinfo=UTC)).ok
    running = start_service(backend, tmp_path, seed=False)
    yield running
    running.stop()


def everything_served(service: Service, browser: httpx.Client, csrf: str) -> dict[str, str]:
    """Every answer the service gives about the subscriber, by name: API view, history and
    lookup, exports in each format now and as of a date before the erasure, the person's
    page, the page export and the find page."""
    served: dict[str, str] = {}
    with service.client("responder") as api:
        served["api view"] = api.get(f"/api/subjects/{SUBJECT}").text
        served["api history"] = api.get(f"/api/subjects/{SUBJECT}/history").text
        served["api find"] = api.post("/api/subjects/find", json={"email": EMAIL}).text
        for fmt in ("json", "csv", "html"):
            served[f"api export {fmt}"] = api.get(f"/api/subjects/{SUBJECT}/export",
                                                  params={"format": fmt}).text
            served[f"api export {fmt} as of before"] = api.get(
                f"/api/subjects/{SUBJECT}/export",
                params={"format": fmt, "as_of": BEFORE_ERASURE}).text
    served["page"] = browser.get(f"/subjects/{SUBJECT}").text
    for fmt in ("json", "csv", "html"):
        served[f"page export {fmt} as of before"] = browser.get(
            f"/subjects/{SUBJECT}/export",
            params={"format": fmt, "as_of": BEFORE_ERASURE[:10]}).text
    served["page find"] = browser.post("/find", data={"email": EMAIL, "csrf": csrf}).text
    return served


def showing_the_value(served: dict[str, str]) -> list[str]:
    return [name for name, text in served.items()
            if NAME in text or "Brackenbury" in text]


def found_by_address(service: Service) -> list[Any]:
    with service.client("responder") as api:
        subjects: list[Any] = api.post("/api/subjects/find",
                                       json={"email": EMAIL.upper()}).json()["subjects"]
    return subjects


def run_killed_at(settings: Settings, step: str, *args: str) -> int:
    env = env_for(settings)
    env[CRASH_ENV] = step
    return subprocess.run([sys.executable, "-m", "lifecycle", *args], env=env,
                          capture_output=True, text=True, timeout=120).returncode


def test_a_sweep_in_another_process_leaves_nothing_served(service: Service) -> None:
    """The service has shown the subscriber everywhere (her key unwrapped and cached, her
    address in the lookup index); `lifecycle sweep` in another process erases her record
    under the retention rule. From then on no page, API view, history, export (any format,
    also as of a date before the erasure) or lookup shows her values or finds her by the
    address."""
    browser, csrf = signed_in(service, "responder")
    assert len(showing_the_value(everything_served(service, browser, csrf))) >= 8
    assert found_by_address(service) != []
    result = lifecycle(service.settings, "sweep", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["erased"] == 1
    after = everything_served(service, browser, csrf)
    assert showing_the_value(after) == [], showing_the_value(after)
    assert json.loads(after["api export json as of before"])["records"][0]["data"] == "erased"
    assert found_by_address(service) == []
    browser.close()


def another_service(first: Service, log_dir: Path) -> Service:
    """A second `lifecycle serve` process on the first one's store (its users too)."""
    port = free_port()
    log_path = log_dir / "serve-2.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "lifecycle", "serve", "--port", str(port)],
        env=env_for(first.settings), stdout=log, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL)
    second = Service(first.settings, f"http://127.0.0.1:{port}", first.tokens, log_path,
                     process, log)

    def up() -> bool:
        assert process.poll() is None, second.log_text()
        try:
            return httpx.get(f"{second.url}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(up, 30, "the second service to answer /healthz")
    return second


def test_an_erasure_through_one_service_is_served_by_none_on_the_same_store(
        service: Service, tmp_path: Path) -> None:
    """Two services on one store. The second has shown the subscriber everywhere (key
    cached, address indexed); an erasure request posted to the first erases her. The
    second then serves her values nowhere, finds nobody by her address, and issues the
    certificate with her key destroyed."""
    second = another_service(service, tmp_path)
    try:
        browser, csrf = signed_in(second, "responder")
        assert len(showing_the_value(everything_served(second, browser, csrf))) >= 8
        assert found_by_address(second) != []
        erasure = lines([fact("erasure-requested", SUBJECT, "2025-03-01T00:00:00Z",
                              request="ER-2")])
        with service.client("dpo") as api:
            posted = api.post("/api/facts", content="\n".join(erasure) + "\n",
                              headers={"content-type": "application/x-ndjson"})
            assert posted.status_code == 200 and posted.json()["accepted"] == 1, posted.text
        after = everything_served(second, browser, csrf)
        assert showing_the_value(after) == [], showing_the_value(after)
        assert found_by_address(second) == []
        with second.client("auditor") as api:
            certificate = api.get("/api/certificates/ER-2").json()
        assert certificate["all_keys_destroyed"] and certificate["keys_destroyed"]
        browser.close()
    finally:
        second.stop()


def test_a_daemon_beside_the_service_erases_and_nothing_is_served_after(
        service: Service) -> None:
    """`lifecycle daemon` runs beside the service and sweeps the subscriber's record on its
    first tick. From the moment her key is destroyed, whatever the service had cached, no
    answer it gives shows her values or finds her by the address."""
    browser, csrf = signed_in(service, "responder")
    assert len(showing_the_value(everything_served(service, browser, csrf))) >= 8
    daemon = subprocess.Popen([sys.executable, "-m", "lifecycle", "daemon", "--interval", "1"],
                              env=env_for(service.settings), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: destroyed_keys(service.settings) == 1, 30, "the daemon's sweep")
        after = everything_served(service, browser, csrf)
        assert showing_the_value(after) == [], showing_the_value(after)
        assert found_by_address(service) == []
    finally:
        daemon.terminate()
        daemon.wait(20)
        browser.close()


def test_a_sweep_killed_before_destroying_the_key_leaves_nothing_served(
        service: Service) -> None:
    """A `lifecycle sweep` in another process records the erasure and is killed before it
    destroys the key (the next sweep, ingest or daemon tick finishes it; the service is
    none of those). From then on the running service serves the value nowhere: the erasure
    the log records counts, not whether its key is destroyed yet, so the export as of a
    date before the erasure (which replays the record as live) reads "erased" in JSON, CSV
    and HTML, as the page and the view do, and the lookup finds nobody."""
    browser, csrf = signed_in(service, "responder")
    before = everything_served(service, browser, csrf)
    assert {"api view", "api export json as of before", "page export csv as of before",
            "page"} <= set(showing_the_value(before))
    assert found_by_address(service) == [{"subject": SUBJECT,
                                          "records": ["newsletter-signup"]}]

    assert run_killed_at(service.settings, "events-saved", "sweep") == -9
    assert destroyed_keys(service.settings) == 0  # recorded, not yet destroyed

    def views_caught_up() -> bool:  # the views follow the log within about a second
        with service.client("responder") as api:
            view = api.get(f"/api/subjects/{SUBJECT}").json()
        return view["records"][0]["erased_at"] is not None
    wait_for(views_caught_up, 10, "the service to see the erasure")
    after = everything_served(service, browser, csrf)
    assert showing_the_value(after) == [], showing_the_value(after)
    early = json.loads(after["api export json as of before"])
    assert early["records"][0]["data"] == "erased"
    assert found_by_address(service) == []

    result = lifecycle(service.settings, "sweep", "--json")  # finishes the erasure
    assert result.returncode == 0, result.stderr
    assert destroyed_keys(service.settings) == 1
    assert showing_the_value(everything_served(service, browser, csrf)) == []
    browser.close()


def test_the_certificate_states_when_each_key_was_destroyed_as_an_instant(
        service: Service) -> None:
    """An erasure request ingested by another process while the service runs, its time
    given with a UTC offset other than zero: the certificate the service issues names each
    destroyed key with the instant of its destruction (the erasure's time, with an offset),
    the same instant on SQLite and PostgreSQL, never a wall-clock time without a zone."""
    erasure = lines([fact("erasure-requested", SUBJECT, "2025-06-01T10:00:00+01:00",
                          request="ER-7")])
    result = lifecycle(service.settings, "ingest", "-", stdin="\n".join(erasure) + "\n")
    assert result.returncode == 0, result.stderr
    with service.client("auditor") as api:
        certificate = api.get("/api/certificates/ER-7").json()
    assert certificate["all_keys_destroyed"], certificate
    erased_at = datetime.fromisoformat(certificate["erased"][0]["erased_at"])
    for key in certificate["keys_destroyed"]:
        destroyed_at = datetime.fromisoformat(key["destroyed_at"])
        assert destroyed_at.tzinfo is not None, key
        assert destroyed_at == erased_at == datetime(2025, 6, 1, 9, 0, tzinfo=UTC), key


def test_while_the_desks_views_lag_an_erasure_its_value_still_reads_erased(
        backend: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The desk (what `lifecycle serve` holds) catches its views up with other processes at
    most once a CATCH_UP_SECONDS: in between, a subject's projected document can still list
    a record another process's ingest has just erased. Its value reads "erased" all the same (every
    open asks the vault whether the key still lives), and the lookup, which follows the
    log itself, finds nobody."""
    from lifecycle.web import desk as desk_module
    from lifecycle.web.desk import Desk

    with Ledger(backend) as ledger:
        ledger.adopt_policy(CONFIG / "hqip.toml", datetime(2023, 1, 1, tzinfo=UTC))
        assert ledger.ingest(lines(subscriber_facts()), datetime(2025, 1, 1, tzinfo=UTC)).ok
    desk = Desk(backend)
    try:
        view = desk.run(lambda ledger: ledger.subject_view(SUBJECT))
        assert view["records"][0]["data"]["name"] == NAME  # the key unwrapped and cached
        assert desk.run(lambda ledger: desk.index.find(EMAIL)).subjects != []
        monkeypatch.setattr(desk_module, "CATCH_UP_SECONDS", 3600.0)  # the views lag now
        erasure = lines([fact("erasure-requested", SUBJECT, "2025-03-01T00:00:00Z",
                              request="ER-3")])  # an ingest leaves the views behind
        result = lifecycle(backend, "ingest", "-", stdin="\n".join(erasure) + "\n")
        assert result.returncode == 0, result.stderr
        view = desk.run(lambda ledger: ledger.subject_view(SUBJECT))
        assert view["records"][0]["erased_at"] is None  # the lagging document
        assert view["records"][0]["data"] == "erased"
        assert desk.run(lambda ledger: desk.index.find(EMAIL)).subjects == []
    finally:
        desk.close()


def test_a_certificate_issued_while_an_erasure_is_unfinished_says_so(service: Service) -> None:
    """An ingest of an erasure request is killed after recording the erasure and before
    destroying the key. The certificate the running service issues meanwhile lists the key
    as not destroyed (`all_keys_destroyed` false), while the values read erased everywhere;
    once the next run finishes the erasure, the certificate names the key's destruction."""
    browser, csrf = signed_in(service, "responder")
    erasure = lines([fact("erasure-requested", SUBJECT, "2025-03-01T00:00:00Z",
                          request="ER-5")])
    env = env_for(service.settings)
    env[CRASH_ENV] = "events-saved"
    killed = subprocess.run([sys.executable, "-m", "lifecycle", "ingest", "-"], env=env,
                            input="\n".join(erasure) + "\n", capture_output=True, text=True,
                            timeout=120)
    assert killed.returncode == -9 and destroyed_keys(service.settings) == 0
    with service.client("auditor") as api:
        certificate = api.get("/api/certificates/ER-5", params={"subject": SUBJECT}).json()
    assert certificate["erased"] and not certificate["all_keys_destroyed"], certificate
    assert [k["destroyed_at"] for k in certificate["keys_destroyed"]] == [None]
    wait_for(lambda: not showing_the_value(everything_served(service, browser, csrf)), 10,
             "the service's views to follow the log")

    result = lifecycle(service.settings, "sweep")  # the next run finishes the erasure
    assert result.returncode == 0, result.stderr
    with service.client("auditor") as api:
        certificate = api.get("/api/certificates/ER-5", params={"subject": SUBJECT}).json()
    assert certificate["all_keys_destroyed"], certificate
    assert showing_the_value(everything_served(service, browser, csrf)) == []
    browser.close()
