"""Who is asking and what their role may do.

Every route declares a `Rule` (the roles allowed) as a dependency: API routes take a bearer
token, pages a session cookie. No credential: 401; a role without the right: 403. The
authorisation matrix test reads the rules from the routes, so a route without one fails.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from fastapi import HTTPException, Request

from lifecycle.services.cases.users import User
from lifecycle.web.desk import Desk, Session

SESSION_COOKIE = "lc_session"
SIGNIN_COOKIE = "lc_signin"

INGEST, RESPONDER, DPO, AUDITOR = "ingest", "responder", "dpo", "auditor"
CASEWORK = frozenset({RESPONDER, DPO})           # queue, subjects, exports, case actions
DPO_ONLY = frozenset({DPO})                      # policy, sweep, forecast, holds
FACTS = frozenset({INGEST, DPO})
AUDIT = frozenset({AUDITOR, DPO})                # history, audit, ROPA (no personal value)
RECORDS = frozenset({RESPONDER, DPO, AUDITOR})   # certificates, history
SIGNED_IN = frozenset({RESPONDER, DPO, AUDITOR, INGEST})
# Facts that record what only a DPO may do through the desk (holds, the breach register):
# an `ingest` token may not post them as facts either.
DPO_FACT_TYPES = frozenset({"legal-hold-placed", "legal-hold-released", "breach-detected",
                            "breach-assessed", "breach-reported", "breach-subjects-notified"})
# Facts that record a responder's decision on a case (the desk's case actions): an `ingest`
# token may not post them either; a source system records requests, not their outcome.
CASE_DECISION_FACT_TYPES = frozenset({
    "identity-verified", "request-extended", "request-paused", "request-resumed",
    "request-refused", "request-fulfilled", "erasure-acknowledged"})


class NotSignedIn(HTTPException):
    def __init__(self, page: bool) -> None:
        super().__init__(401, "sign in first" if page else "a bearer token is required",
                         headers=None if page else {"WWW-Authenticate": "Bearer"})
        self.page = page


class Forbidden(HTTPException):
    def __init__(self, role: str) -> None:
        super().__init__(403, f"the role {role} may not do this")


def desk_of(request: Request) -> Desk:
    desk: Desk = request.app.state.desk
    return desk


@dataclass(frozen=True)
class Rule:
    """A route's roles; `page` routes sign in by session cookie, API routes by token."""

    roles: frozenset[str]
    page: bool = False

    def __call__(self, request: Request) -> User:
        user = self.page_user(request) if self.page else self.api_user(request)
        if user is None:
            raise NotSignedIn(self.page)
        request.state.actor = user.name
        if user.role not in self.roles:
            raise Forbidden(user.role)
        return user

    @staticmethod
    def api_user(request: Request) -> User | None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return desk_of(request).users.authenticate(token.strip())

    @staticmethod
    def api_user_given(request: Request) -> bool:
        """Whether the request carries a bearer token at all (valid or not)."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and bool(token.strip())

    @staticmethod
    def page_user(request: Request) -> User | None:
        session = session_of(request)
        return session.user if session is not None else None


def session_of(request: Request) -> Session | None:
    """The signed-in session of this browser, while its user is active."""
    sid = request.cookies.get(SESSION_COOKIE)
    if not sid:
        return None
    desk = desk_of(request)
    session = desk.sessions.get(sid)
    if session is None:
        return None
    if not desk.user_still_active(session.user):
        desk.sessions.end(sid)
        return None
    request.state.session = session
    return session


def check_csrf(request: Request, given: str | None) -> None:
    """A form's CSRF token must be its session's; raises 403 naming the field otherwise."""
    session = session_of(request)
    if session is None or not given or not hmac.compare_digest(session.csrf, given):
        raise HTTPException(403, "csrf: the form's token is missing or stale; reload the "
                                 "page and try again")
