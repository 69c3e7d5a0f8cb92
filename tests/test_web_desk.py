"""The desk (what `lifecycle serve` holds) under concurrent requests: catching the views up
with another process's writes does not hold the other requests, and what a read or a write
shows stays as fresh as before."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from lifecycle.projections.runner import ProjectionRunner
from lifecycle.services.ledger import Ledger
from lifecycle.store.settings import Settings
from lifecycle.web import desk as desk_module
from lifecycle.web.desk import Desk
from tests.facts_builder import fact, lines
from tests.processes import lifecycle
from tests.web_service import SEEDED_AT, seed_facts


def open_requests(desk: Desk) -> list[str]:
    return [row["request"] for row in desk.run(lambda ledger: ledger.requests(SEEDED_AT))]


def access_request(subject: str, request: str) -> str:
    return "\n".join(lines([fact("access-requested", subject, "2025-03-01T09:00:00Z",
                                 request=request, identity_check=True)])) + "\n"


@pytest.fixture
def held_catch_up(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[threading.Event,
                                                                      threading.Event]]:
    """The first catch-up of the views made outside the test's main thread waits until the
    test releases it: (started, release)."""
    started, release = threading.Event(), threading.Event()
    real: Callable[..., int] = ProjectionRunner.catch_up

    def held(self: ProjectionRunner, *args: Any, **kwargs: Any) -> int:
        if threading.current_thread() is not threading.main_thread() and not started.is_set():
            started.set()
            release.wait(20)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(ProjectionRunner, "catch_up", held)
    yield started, release
    release.set()


@pytest.fixture
def seeded(backend: Settings) -> Settings:
    with Ledger(backend) as ledger:
        assert ledger.ingest(lines(seed_facts()), SEEDED_AT).ok
    return backend


def test_a_request_catching_up_the_views_does_not_hold_the_others(
        seeded: Settings, held_catch_up: tuple[threading.Event, threading.Event]) -> None:
    """While one request applies what other processes wrote to the views (held half-way
    here), another request is served: the catch-up runs outside the desk's lock, and a
    request arriving meanwhile reads the views as they are instead of waiting for it."""
    started, release = held_catch_up
    desk = Desk(seeded)
    served = threading.Event()
    first = threading.Thread(target=lambda: open_requests(desk))
    second = threading.Thread(target=lambda: (desk.run(lambda ledger: ledger.actor),
                                              served.set()))
    try:
        first.start()
        assert started.wait(20), "the first request did not catch the views up"
        second.start()
        assert served.wait(10), "the second request waited for the first one's catch-up"
    finally:
        release.set()
        first.join()
        if second.is_alive() or served.is_set():
            second.join()
        desk.close()


def test_a_read_shows_what_another_process_wrote(seeded: Settings,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Once the catch-up interval has passed, the next read catches the views up first: a
    request another process ingested is in the queue."""
    monkeypatch.setattr(desk_module, "CATCH_UP_SECONDS", 0.0)
    desk = Desk(seeded)
    try:
        before = open_requests(desk)
        assert "SAR-1" in before and "SAR-9" not in before
        result = lifecycle(seeded, "ingest", "-", stdin=access_request("m:2", "SAR-9"))
        assert result.returncode == 0, result.stderr
        assert sorted(open_requests(desk)) == sorted([*before, "SAR-9"])
    finally:
        desk.close()


def test_what_the_desk_writes_shows_in_the_next_read_during_another_catch_up(
        seeded: Settings, held_catch_up: tuple[threading.Event, threading.Event]) -> None:
    """A write catches the views up before it returns: the next read shows it even while
    another request's catch-up (held here, so the read does not wait for it) is running."""
    started, release = held_catch_up
    desk = Desk(seeded)
    first = threading.Thread(target=lambda: open_requests(desk))
    try:
        first.start()
        assert started.wait(20)
        report = desk.write(lambda ledger: ledger.ingest(
            access_request("m:2", "SAR-7").splitlines(), SEEDED_AT))
        assert report.ok
        assert "SAR-7" in open_requests(desk)
        assert started.is_set() and not release.is_set()  # the other catch-up still held
    finally:
        release.set()
        first.join()
        desk.close()
