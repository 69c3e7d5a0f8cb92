"""The authorisation matrix, generated from the application's routes: every route × every
role and no credential gives the expected 401, 403 or an answer. A route without a rule
(and not public on purpose) fails the test, so a new route cannot forget one."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from lifecycle.store.settings import Settings
from lifecycle.web.app import PUBLIC, create_app
from lifecycle.web.auth import Rule
from tests.web_service import ROLES, Service, signed_in, start_service

PATH_VALUES = {"reference": "m:1", "request_id": "SAR-1", "action": "pause", "hold": "LIT-1"}


def flattened(candidates: list[Any]) -> Iterator[APIRoute]:
    """The API routes, also inside included routers (FastAPI may keep those lazily; their
    routers hold the full paths, as none is included under an extra prefix)."""
    for route in candidates:
        if isinstance(route, APIRoute):
            yield route
        elif hasattr(route, "original_router"):
            yield from flattened(route.original_router.routes)
        elif hasattr(route, "routes") and not hasattr(route, "endpoint"):
            yield from flattened(route.routes)


def routes() -> list[tuple[str, str, Rule | None]]:
    """(method, path, rule) of every route the service serves."""
    app = create_app(None)  # type: ignore[arg-type]  # routes only: no store needed
    found = []
    for route in flattened(app.routes):
        rules = [d.call for d in route.dependant.dependencies if isinstance(d.call, Rule)]
        for method in sorted(route.methods):
            found.append((method, route.path, rules[0] if rules else None))
    return found


def test_every_route_has_a_rule_or_is_public_on_purpose() -> None:
    """Each route declares the roles allowed, except the few public ones (probes, the
    schema, signing in)."""
    missing = [(m, p) for m, p, rule in routes() if rule is None and (m, p) not in PUBLIC]
    assert missing == []
    assert len(routes()) > 30


@pytest.fixture
def service(sqlite_settings: Settings, tmp_path: Path) -> Iterator[Service]:
    running = start_service(sqlite_settings, tmp_path)
    yield running
    running.stop()


def call(client: httpx.Client, method: str, path: str, page: bool, csrf: str) -> int:
    url = re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES[m.group(1)], path)
    kwargs: dict[str, Any] = {}
    if method == "POST":
        kwargs = {"data": {"csrf": csrf}} if page else {"json": {}}
    return client.request(method, url, **kwargs).status_code


def test_the_matrix_of_routes_roles_and_no_credential(service: Service) -> None:
    """No credential: 401. A role the rule does not list: 403. A listed role: neither 401
    nor 403, and never a server error (a 404 or 422 for the made-up ids and empty bodies
    is fine)."""
    checked = 0
    failures = []
    # Signing out ends the session the other checks use: last.
    ordered = sorted((r for r in routes() if r[2] is not None), key=lambda r: r[1] == "/signout")
    anonymous = httpx.Client(base_url=service.url, timeout=30)
    sessions = {role: signed_in(service, role) for role in ROLES}
    for method, path, rule in ordered:
        assert rule is not None
        status = call(anonymous, method, path, rule.page, "")
        if status != 401:
            failures.append((method, path, None, status))
        for role in ROLES:
            if rule.page:
                client, csrf = sessions[role]
            else:
                client, csrf = service.client(role), ""
            status = call(client, method, path, rule.page, csrf)
            allowed = role in rule.roles
            if (allowed and (status in (401, 403) or status >= 500)) or (
                    not allowed and status != 403):
                failures.append((method, path, role, status))
            checked += 1
    assert failures == []
    assert checked == len(ordered) * len(ROLES)


def test_a_revoked_users_token_and_session_stop_at_once(service: Service) -> None:
    """After `users revoke`, the user's bearer token is 401 and its page session is back at
    the sign-in form (401)."""
    from tests.processes import lifecycle

    browser, _ = signed_in(service, "responder")
    assert browser.get("/queue").status_code == 200
    assert lifecycle(service.settings, "users", "revoke", "responder-user").returncode == 0
    with service.client("responder") as api:
        assert api.get("/api/requests").status_code == 401
    assert browser.get("/queue").status_code == 401
