"""The pages in a real browser (Playwright driving Debian's Chromium): sign in, find a
person by e-mail, verify identity on a request, download a DSAR pack, acknowledge an Art 19
notification. Screenshots go to $LIFECYCLE_SCREENSHOTS (default: the test's folder)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lifecycle.store.settings import Settings
from tests.web_service import EMAIL, NAME, Service, start_service

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def service(sqlite_settings: Settings, tmp_path: Path) -> Iterator[Service]:
    running = start_service(sqlite_settings, tmp_path)
    yield running
    running.stop()


@pytest.fixture
def browser_page(tmp_path: Path) -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} is missing (apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = browser.new_context(accept_downloads=True, viewport={"width": 1280,
                                                                       "height": 900})
        page = context.new_page()
        page.set_default_timeout(30_000)
        yield page
        context.close()
        browser.close()


def test_a_responder_works_a_case_in_the_browser(service: Service, browser_page: Any,
                                                 tmp_path: Path) -> None:
    """Sign in with the token; find the person by e-mail; verify identity on SAR-1 (the
    page says so and the queue shows a deadline); download the HTML pack holding the
    person's values; acknowledge the open Art 19 item, which leaves the list."""
    shots = Path(os.environ.get("LIFECYCLE_SCREENSHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    page = browser_page
    page.goto(f"{service.url}/queue")
    assert page.get_by_role("heading", name="Sign in").is_visible()
    page.get_by_label("Token").fill(service.tokens["responder"])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{service.url}/queue")
    page.screenshot(path=str(shots / "1-queue.png"), full_page=True)
    assert page.get_by_role("cell", name="SAR-1").is_visible()

    page.get_by_role("link", name="Find a person").click()
    page.get_by_label("E-mail address").fill(EMAIL.upper())
    page.get_by_role("button", name="Find").click()
    page.screenshot(path=str(shots / "2-found.png"), full_page=True)
    page.get_by_role("link", name="m:1").click()
    assert page.get_by_role("heading", name="m:1").is_visible()
    assert page.get_by_text(NAME).first.is_visible()

    page.get_by_role("button", name="Verify identity").click()
    assert page.get_by_role("status").inner_text() == "Recorded: identity-verified."
    page.screenshot(path=str(shots / "3-verified.png"), full_page=True)

    with page.expect_download() as download_info:
        page.get_by_role("link", name="HTML").click()
    pack = tmp_path / "pack.html"
    download_info.value.save_as(pack)
    assert NAME in pack.read_text(encoding="utf-8")

    page.get_by_role("link", name="Art 19 notifications").click()
    page.get_by_role("button", name="Acknowledge ER-2 by mailhouse").click()
    assert "erasure-acknowledged" in page.get_by_role("status").inner_text()
    assert page.get_by_role("cell", name="Nothing open.").is_visible()
    page.screenshot(path=str(shots / "4-acknowledged.png"), full_page=True)

    page.goto(f"{service.url}/queue")
    row = page.get_by_role("row").filter(has_text="SAR-1")
    assert "waiting for identity" not in row.inner_text()  # the clock runs: a deadline
    if os.environ.get("LIFECYCLE_SCREENSHOTS") is None:
        shutil.rmtree(shots, ignore_errors=True)
