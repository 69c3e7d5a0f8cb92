"""The pages over HTTP (a real `lifecycle serve`): the session cookie's attributes, CSRF on
every form, and bad form input answered with a 4xx naming the field, nothing stored."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lifecycle.store.settings import Settings
from tests.web_service import EMAIL, Service, self_signed, signed_in, start_service


@pytest.fixture
def service(sqlite_settings: Settings, tmp_path: Path) -> Iterator[Service]:
    running = start_service(sqlite_settings, tmp_path)
    yield running
    running.stop()


def history_length(service: Service) -> int:
    with service.client("dpo") as api:
        return len(api.get("/api/subjects/m:1/history").json()["events"])


def test_the_session_cookie_is_httponly_and_strict_and_sign_in_needs_its_csrf(
        service: Service) -> None:
    """Signing in sets an HttpOnly, SameSite=Strict session cookie (no Secure flag over
    plain HTTP); a sign-in without the form's CSRF token is 403, a wrong token 401."""
    client = httpx.Client(base_url=service.url, timeout=30)
    form = client.get("/signin").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', form)
    assert csrf is not None
    refused = client.post("/signin", data={"token": service.tokens["dpo"], "csrf": "x"})
    assert refused.status_code == 403 and "csrf" in refused.text
    form = client.get("/signin").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', form)
    assert csrf is not None
    wrong = client.post("/signin", data={"token": "lc_nope", "csrf": csrf.group(1)})
    assert wrong.status_code == 401 and "token: not a valid token" in wrong.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', wrong.text)
    assert csrf is not None
    answer = client.post("/signin", data={"token": service.tokens["dpo"],
                                          "csrf": csrf.group(1), "next": "//evil.example"})
    assert answer.status_code == 303 and answer.headers["location"] == "/"
    cookie = answer.headers["set-cookie"].lower()
    assert "lc_session=" in cookie and "httponly" in cookie and "samesite=strict" in cookie
    assert "secure" not in cookie


def test_every_form_needs_the_sessions_csrf_token(service: Service) -> None:
    """A case action, a hold, an acknowledgement, a lookup or signing out without the
    session's CSRF token is 403 naming csrf, and nothing is stored."""
    client, _ = signed_in(service, "dpo")
    before = history_length(service)
    for path, data in (("/subjects/m:1/requests/SAR-1/verify", {}),
                       ("/subjects/m:1/holds", {"hold": "H", "reason": "r"}),
                       ("/notifications/ack", {"erasure": "ER-2"}),
                       ("/find", {"email": EMAIL}),
                       ("/signout", {})):
        answer = client.post(path, data={**data, "csrf": "forged"})
        assert answer.status_code == 403 and "csrf" in answer.text, path
    assert history_length(service) == before
    with service.client("dpo") as api:
        assert len(api.get("/api/notifications").json()["notifications"]) == 1


def test_bad_form_input_is_a_4xx_naming_the_field_and_nothing_is_stored(
        service: Service) -> None:
    """Months other than 1 or 2, a time without an offset or not a time, a hold without a
    reason, an unknown action, an empty lookup: each a 4xx page naming the field."""
    client, csrf = signed_in(service, "dpo")
    before = history_length(service)
    cases = [("/subjects/m:1/requests/SAR-1/extend", {"months": "5"}, 422, "months: 1 or 2"),
             ("/subjects/m:1/requests/SAR-1/verify", {"at": "yesterday"}, 422,
              "at: not an RFC 3339 time"),
             ("/subjects/m:1/requests/SAR-1/verify", {"at": "2025-02-03T09:00:00"}, 422,
              "at: the time needs a UTC offset"),
             ("/subjects/m:1/requests/SAR-1/refuse", {"reason": "Because I Said"}, 422,
              "reason"),
             ("/subjects/m:1/requests/SAR-1/shred", {}, 404, "action"),
             ("/subjects/m:1/holds", {"hold": "H"}, 422, "reason: say why"),
             ("/subjects/m:1/holds", {"hold": "H", "reason": "r", "until": "soon"}, 422,
              "until: not an RFC 3339 time"),
             ("/find", {"email": " "}, 422, "email: give an e-mail address")]
    for path, data, status, text in cases:
        answer = client.post(path, data={**data, "csrf": csrf})
        assert (answer.status_code, text in answer.text) == (status, True), (path, data)
    assert history_length(service) == before


def test_over_tls_the_session_cookie_is_also_secure(sqlite_settings: Settings,
                                                    tmp_path: Path) -> None:
    """`serve --tls-cert --tls-key`: the service answers over HTTPS and its session cookie
    carries Secure besides HttpOnly and SameSite=Strict."""
    running = start_service(sqlite_settings, tmp_path, tls=self_signed(tmp_path))
    try:
        assert running.url.startswith("https://")
        client = httpx.Client(base_url=running.url, timeout=30, verify=False)
        form = client.get("/signin")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert csrf is not None and "secure" in form.headers["set-cookie"].lower()
        answer = client.post("/signin", data={"token": running.tokens["dpo"],
                                              "csrf": csrf.group(1)})
        cookie = answer.headers["set-cookie"].lower()
        assert answer.status_code == 303
        assert all(flag in cookie for flag in ("secure", "httponly", "samesite=strict"))
        client.close()
    finally:
        running.stop()


def test_serve_on_a_port_in_use_is_one_line_and_exit_2(sqlite_settings: Settings) -> None:
    """`lifecycle serve --port P` with P taken: one line naming the address, exit 2."""
    import socket

    from tests.processes import lifecycle

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = lifecycle(sqlite_settings, "serve", "--port", str(port))
    assert result.returncode == 2
    assert result.stderr.strip() == (f"lifecycle: serve: cannot listen on 127.0.0.1:{port}: "
                                     "Address already in use")


def test_a_form_sent_twice_records_its_case_action_once(service: Service) -> None:
    """Each rendered case-action form carries its own submission token; the same form
    posted again (a browser retry, a double click) records nothing the second time, while
    a form rendered afresh records a new action."""
    client, csrf = signed_in(service, "dpo")
    page = client.get("/subjects/m:1").text
    tokens = re.findall(r'name="submission" value="([^"]+)"', page)
    assert len(tokens) == len(set(tokens)) > 1  # one per form, each its own
    before = history_length(service)
    form = {"hold": "H-twice", "reason": "litigation", "csrf": csrf,
            "submission": tokens[-1]}
    for _ in range(2):
        answer = client.post("/subjects/m:1/holds", data=form)
        assert answer.status_code == 303, answer.text
    assert history_length(service) == before + 1
    release = re.findall(r'action="(/subjects/m(?:%3A|:)1/holds/H-twice/release)"[^>]*>\s*'
                         r'<input type="hidden" name="csrf" value="[^"]+">'
                         r'<input type="hidden" name="submission" value="([^"]+)"',
                         client.get("/subjects/m:1").text)
    assert len(release) == 1
    for _ in range(2):
        assert client.post(release[0][0].replace("%3A", ":"), data={
            "csrf": csrf, "submission": release[0][1]}).status_code == 303
    assert history_length(service) == before + 2
