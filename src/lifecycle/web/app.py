"""The FastAPI application: API and pages, error handling, access logs, security headers."""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from lifecycle.services.cases.actions import ActionRefused, AmbiguousReference
from lifecycle.domain.errors import ArgumentRefused, InvalidFact, LifecycleError, SubjectNotFound
from lifecycle.domain.facts import NOT_IN_REFERENCES, shown_field_name
from lifecycle.store.event_chain import BrokenEvent
from lifecycle.support.logs import get_logger
from lifecycle.web import api, pages
from lifecycle.web.auth import NotSignedIn, Rule
from lifecycle.web.desk import Desk
from lifecycle.web.render import page
from lifecycle.web.segments import Segments, sent_path

log = get_logger("lifecycle.web")
access_log = get_logger("lifecycle.web.access")

# Routes anyone may call (probes, the schema, signing in).
PUBLIC = {("GET", "/healthz"), ("GET", "/openapi.json"), ("GET", "/signin"),
          ("POST", "/signin")}

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
                               "frame-ancestors 'none'; form-action 'self'",
}


PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem", "type": "object", "required": ["detail"],
    "properties": {"detail": {"anyOf": [
        {"type": "string"},
        {"type": "array", "items": {"type": "object", "required": ["field", "reason"],
                                    "properties": {"field": {"type": "string"},
                                                   "reason": {"type": "string"}}}}]}},
}



# In a path as decoded (%00 gives NUL): what no reference may hold.
CONTROL_CHARACTER = re.compile(f"[{NOT_IN_REFERENCES}]")

def status_of(error: LifecycleError) -> int:
    if isinstance(error, SubjectNotFound):
        return 404
    if isinstance(error, AmbiguousReference):
        return 409
    if isinstance(error, (ActionRefused, InvalidFact, ArgumentRefused)):
        return 422
    if isinstance(error, BrokenEvent):  # the stored log, not the request, is at fault
        return 500
    return 400


def create_app(desk: Desk) -> FastAPI:
    app = FastAPI(title="lifecycle responders' desk", version="1",
                  docs_url=None, redoc_url=None,
                  description="Rights requests, subjects, exports and case actions. "
                              "API clients send `Authorization: Bearer TOKEN` (from "
                              "`lifecycle users add`).")
    app.state.desk = desk

    @app.get("/healthz", tags=["probes"])
    def healthz() -> dict[str, str]:
        """Liveness: the process answers (no store access)."""
        return {"status": "ok"}

    app.include_router(api.router)
    app.include_router(pages.router)
    app.add_middleware(Segments)

    def openapi() -> dict[str, Any]:
        """The schema, with the error body this service really sends: `detail` is one line,
        or a list of {field, reason} for a body or query that does not validate."""
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(title=app.title, version=app.version,
                                 description=app.description, routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.pop("ValidationError", None)
            components["HTTPValidationError"] = PROBLEM_SCHEMA
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    def wants_page(request: Request) -> bool:
        return not request.url.path.startswith("/api/") and request.url.path != "/healthz"

    def error(request: Request, status: int, detail: Any,
              headers: Mapping[str, str] | None = None) -> Response:
        if wants_page(request):
            session = getattr(request.state, "session", None)
            body = page("error.html", status=status, detail=detail,
                        user=session.user if session else None,
                        csrf=session.csrf if session else "")
            return HTMLResponse(body, status_code=status, headers=dict(headers or {}))
        return JSONResponse({"detail": detail}, status_code=status, headers=dict(headers or {}))

    @app.exception_handler(NotSignedIn)
    async def not_signed_in(request: Request, exc: NotSignedIn) -> Response:
        if exc.page:
            return pages.signin_page(request, 401, None, sent_path(request))
        return error(request, 401, exc.detail, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return error(request, exc.status_code, exc.detail, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        # The field and the reason, never the value given (it may be personal).
        problems = [{"field": ".".join(shown_field_name(str(p)) for p in e.get("loc", ())),
                     "reason": e.get("msg", "invalid")} for e in exc.errors()]
        if wants_page(request):
            return error(request, 422, "; ".join(f"{p['field']}: {p['reason']}"
                                                 for p in problems))
        return JSONResponse({"detail": problems}, status_code=422)

    @app.exception_handler(LifecycleError)
    async def refused(request: Request, exc: LifecycleError) -> Response:
        return error(request, status_of(exc), str(exc))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.error("http.unexpected", error=type(exc).__name__)
        return error(request, 500, f"unexpected error ({type(exc).__name__}); what was "
                                   "stored before it stays stored")

    @app.middleware("http")
    async def access(request: Request,
                     call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        status = 500
        try:
            if CONTROL_CHARACTER.search(request.scope.get("path", "")):
                # No reference holds one (facts refuse them); PostgreSQL could not even
                # compare with it.
                response: Response = error(
                    request, 404, "no such page: a path with a control character names nothing")
            elif request.url.path.startswith("/api/") and not Rule.api_user_given(request):
                # Before the body is read: no credential is 401 whatever the body holds.
                response = JSONResponse({"detail": "a bearer token is required"},
                                        status_code=401,
                                        headers={"WWW-Authenticate": "Bearer"})
            else:
                response = await call_next(request)
            status = response.status_code
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
            return response
        finally:
            route = request.scope.get("route")
            # The route template (/api/subjects/{reference}), never the path or query.
            access_log.info("http.access", method=request.method,
                            route=getattr(route, "path", "(unmatched)"), status=status,
                            ms=round((time.perf_counter() - started) * 1000, 1),
                            actor=getattr(request.state, "actor", None))

    return app
