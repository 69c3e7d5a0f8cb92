"""The pages: server-rendered HTML, signed in by token, kept by a session cookie (HttpOnly,
SameSite=Strict, Secure over TLS); every form carries the session's CSRF token."""

from __future__ import annotations

import secrets
from datetime import datetime
from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from lifecycle.services.cases import actions
from lifecycle.services.cases.users import User
from lifecycle.domain.facts import within_time_bounds
from lifecycle.services.ledger import Ledger
from lifecycle.web.auth import (AUDIT, CASEWORK, DPO_ONLY, RECORDS, SESSION_COOKIE,
                                SIGNED_IN, SIGNIN_COOKIE, Rule, check_csrf, desk_of,
                                session_of)
from lifecycle.web.render import export_response, page
from lifecycle.web.segments import SegmentRoute, segment

router = APIRouter(include_in_schema=False, route_class=SegmentRoute)
DUE_SOON = 7
REQUEST_STEPS = [("verify", "Verify identity"), ("extend", "Extend"), ("pause", "Pause"),
                 ("resume", "Resume"), ("refuse", "Refuse"), ("fulfil", "Fulfil")]


def html(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    session = getattr(request.state, "session", None) or session_of(request)
    body = page(template, user=session.user if session else None,
                csrf=session.csrf if session else "", **context)
    return HTMLResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


def signin_page(request: Request, status: int, error: str | None = None,
                next_path: str = "/") -> HTMLResponse:
    """The sign-in form, with a fresh pre-session CSRF token (cookie and field)."""
    token = secrets.token_urlsafe(24)
    response = HTMLResponse(page("signin.html", user=None, csrf="", signin_csrf=token,
                                 error=error, next_path=safe_next(next_path)),
                            status_code=status, headers={"Cache-Control": "no-store"})
    set_cookie(request, response, SIGNIN_COOKIE, token, max_age=3600)
    return response


def set_cookie(request: Request, response: Response, name: str, value: str,
               max_age: int | None = None) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/", httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")


def safe_next(path: str | None) -> str:
    """Only a path on this site (never //host or a scheme) to go back to after sign-in."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    return path[:500]


def parse_at(text: str | None, field: str) -> datetime | None:
    """An optional form time: RFC 3339 with an offset, or a date (00:00 UTC)."""
    if not text:
        return None
    from datetime import UTC

    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise HTTPException(422, f"{field}: not an RFC 3339 time (e.g. 2025-03-01T09:00:00Z)"
                            ) from None
    if parsed.tzinfo is None:
        if len(text.strip()) == 10:
            return parsed.replace(tzinfo=UTC)
        raise HTTPException(422, f"{field}: the time needs a UTC offset, e.g. +00:00")
    if not within_time_bounds(parsed):
        raise HTTPException(422, f"{field}: outside 1900-01-01 to 2200-01-01")
    return parsed


def submit(request: Request,
           action: Callable[[Ledger, datetime], actions.ActionResult]) -> actions.ActionResult:
    """Runs a case action as the desk's write, at the desk clock's now. Each form carries
    a fresh `submission` token (`new_submission`): a browser that sends the same form
    again (a retry, a double click, a reload) records nothing twice."""
    desk = desk_of(request)
    now = desk.clock()
    return desk.write(lambda ledger: action(ledger, now))


def back_to(reference: str, done: str) -> RedirectResponse:
    return RedirectResponse(f"/subjects/{segment(reference)}?done={quote(done)}",
                            status_code=303)


# -- signing in --------------------------------------------------------------------------

@router.get("/signin")
def signin_form(request: Request, next: Annotated[str, Query(max_length=500)] = "/"
                ) -> HTMLResponse:
    return signin_page(request, 200, next_path=next)


@router.post("/signin")
def signin(request: Request, token: Annotated[str, Form(max_length=300)] = "",
           csrf: Annotated[str, Form(max_length=100)] = "",
           next: Annotated[str, Form(max_length=500)] = "/") -> Response:
    expected = request.cookies.get(SIGNIN_COOKIE)
    if not expected or not secrets.compare_digest(expected, csrf):
        return signin_page(request, 403, "csrf: the form's token is missing or stale; "
                                         "try again", next)
    user = desk_of(request).users.authenticate(token.strip())
    if user is None:
        return signin_page(request, 401, "token: not a valid token of an active user", next)
    sid, _ = desk_of(request).sessions.start(user)
    request.state.actor = user.name
    response = RedirectResponse(safe_next(next), status_code=303)
    set_cookie(request, response, SESSION_COOKIE, sid)
    response.delete_cookie(SIGNIN_COOKIE, path="/")
    return response


@router.post("/signout", dependencies=[Depends(Rule(SIGNED_IN, page=True))])
def signout(request: Request, csrf: Annotated[str, Form(max_length=100)] = "") -> Response:
    check_csrf(request, csrf)
    sid = request.cookies.get(SESSION_COOKIE)
    if sid:
        desk_of(request).sessions.end(sid)
    response = RedirectResponse("/signin", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# -- pages -------------------------------------------------------------------------------

@router.get("/", dependencies=[Depends(Rule(SIGNED_IN, page=True))])
def home(request: Request) -> HTMLResponse:
    return html(request, "home.html")


@router.get("/queue", dependencies=[Depends(Rule(CASEWORK, page=True))])
def queue(request: Request, kind: Annotated[str, Query(max_length=20)] = "") -> HTMLResponse:
    now = desk_of(request).clock()
    rows = desk_of(request).run(lambda ledger: ledger.requests(now))
    kinds = sorted({r["kind"] for r in rows})
    if kind:
        rows = [r for r in rows if r["kind"] == kind]
    for row in rows:
        days = row["days_left"]
        row["state"] = ("overdue" if row["overdue"] else "paused" if row["paused"] else
                        "due-soon" if days is not None and days <= DUE_SOON else "open")
    return html(request, "queue.html", rows=rows, kinds=kinds, kind=kind, now=now,
                due_soon=DUE_SOON)


@router.get("/find", dependencies=[Depends(Rule(CASEWORK, page=True))])
def find_form(request: Request) -> HTMLResponse:
    return html(request, "find.html", result=None)


@router.post("/find", dependencies=[Depends(Rule(CASEWORK, page=True))])
def find(request: Request, email: Annotated[str, Form(max_length=320)] = "",
         csrf: Annotated[str, Form(max_length=100)] = "") -> HTMLResponse:
    check_csrf(request, csrf)
    if not email.strip():
        raise HTTPException(422, "email: give an e-mail address")
    desk = desk_of(request)
    result = desk.run(lambda ledger: desk.index.find(email))
    # The address is not echoed back: the page names the subjects found only.
    return html(request, "find.html", result=result)


@router.get("/subjects/{reference}", dependencies=[Depends(Rule(CASEWORK, page=True))])
def person(request: Request, reference: str,
           done: Annotated[str, Query(max_length=60)] = "") -> HTMLResponse:
    def gather(ledger: Any) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
        view = ledger.subject_view(reference)
        timeline = ledger.history(reference)
        open_requests = [r for r in ledger.requests(desk_of(request).clock())
                         if r["subject"] == reference]
        return view, timeline, open_requests

    view, timeline, open_requests = desk_of(request).run(gather)
    return html(request, "person.html", view=view, timeline=timeline, reference=reference,
                open_requests=open_requests, steps=REQUEST_STEPS, done=done)


@router.post("/subjects/{reference}/requests/{request_id}/{action}",
             dependencies=[Depends(Rule(CASEWORK, page=True))])
def request_action(request: Request, reference: str, request_id: str, action: str,
                   user: Annotated[User, Depends(Rule(CASEWORK, page=True))],
                   csrf: Annotated[str, Form(max_length=100)] = "",
                   reason: Annotated[str, Form(max_length=120)] = "",
                   months: Annotated[str, Form(max_length=2)] = "",
                   at: Annotated[str, Form(max_length=40)] = "",
                   submission: Annotated[str, Form(max_length=100)] = "") -> Response:
    check_csrf(request, csrf)
    if action not in actions.REQUEST_ACTIONS:
        raise HTTPException(404, f"action: {action!r} is not a request action")
    if months and months not in ("1", "2"):
        raise HTTPException(422, "months: 1 or 2")
    when = parse_at(at, "at")
    result = submit(request, lambda ledger, now: actions.act_on_request(
        ledger, action, request_id, subject=reference, at=when or now, now=now,
        actor=user.name, reason=reason or None, months=int(months) if months else None,
        submission=submission or None))
    return back_to(reference, result.fact["type"])


@router.post("/subjects/{reference}/holds", dependencies=[Depends(Rule(DPO_ONLY, page=True))])
def hold_place(request: Request, reference: str,
               user: Annotated[User, Depends(Rule(DPO_ONLY, page=True))],
               csrf: Annotated[str, Form(max_length=100)] = "",
               hold: Annotated[str, Form(max_length=200)] = "",
               scope: Annotated[str, Form(max_length=120)] = "all",
               reason: Annotated[str, Form(max_length=2000)] = "",
               until: Annotated[str, Form(max_length=40)] = "",
               submission: Annotated[str, Form(max_length=100)] = "") -> Response:
    check_csrf(request, csrf)
    if not hold.strip():
        raise HTTPException(422, "hold: give the hold a name")
    if not reason.strip():
        raise HTTPException(422, "reason: say why the hold is placed")
    ends = parse_at(until, "until")
    submit(request, lambda ledger, now: actions.place_hold(
        ledger, reference, hold.strip(), scope or "all", reason, now, now, user.name, ends,
        submission=submission or None))
    return back_to(reference, "legal-hold-placed")


@router.post("/subjects/{reference}/holds/{hold}/release",
             dependencies=[Depends(Rule(DPO_ONLY, page=True))])
def hold_release(request: Request, reference: str, hold: str,
                 user: Annotated[User, Depends(Rule(DPO_ONLY, page=True))],
                 csrf: Annotated[str, Form(max_length=100)] = "",
                 submission: Annotated[str, Form(max_length=100)] = "") -> Response:
    check_csrf(request, csrf)
    submit(request, lambda ledger, now: actions.release_hold(
        ledger, reference, hold, now, now, user.name, submission=submission or None))
    return back_to(reference, "legal-hold-released")


@router.get("/subjects/{reference}/export", dependencies=[Depends(Rule(CASEWORK, page=True))])
def export(request: Request, reference: str,
           format: Annotated[str, Query(max_length=4)] = "html",
           as_of: Annotated[str, Query(max_length=40)] = "") -> Response:
    if format not in ("html", "json", "csv"):
        raise HTTPException(422, "format: one of html, json, csv")
    at = parse_at(as_of, "as_of") or desk_of(request).clock()
    document = desk_of(request).run(lambda ledger: ledger.dsar_export(reference, at))
    return export_response(document, format, reference)


@router.get("/certificates", dependencies=[Depends(Rule(RECORDS, page=True))])
def certificate_lookup(request: Request,
                       request_id: Annotated[str, Query(alias="request", max_length=200)] = "",
                       subject: Annotated[str, Query(max_length=200)] = "") -> Response:
    """A form asking for an erasure request id; with one, its certificate's page."""
    if not request_id.strip():
        return html(request, "certificate_lookup.html")
    target = f"/certificates/{segment(request_id.strip())}"
    if subject.strip():
        target += f"?subject={quote(subject.strip(), safe=':')}"
    return RedirectResponse(target, status_code=303)


@router.get("/certificates/{request_id}", dependencies=[Depends(Rule(RECORDS, page=True))])
def certificate(request: Request, request_id: str,
                subject: Annotated[str, Query(max_length=200)] = "") -> HTMLResponse:
    now = desk_of(request).clock()
    document = desk_of(request).run(
        lambda ledger: ledger.certificate(request_id, subject or None, now))
    return html(request, "certificate.html", cert=document)


@router.get("/notifications", dependencies=[Depends(Rule(CASEWORK, page=True))])
def notifications(request: Request, done: Annotated[str, Query(max_length=60)] = "",
                  all: bool = False) -> HTMLResponse:
    rows = desk_of(request).run(lambda ledger: ledger.notifications(open_only=not all))
    return html(request, "notifications.html", rows=rows, done=done, show_all=all)


@router.post("/notifications/ack", dependencies=[Depends(Rule(CASEWORK, page=True))])
def notification_ack(request: Request,
                     user: Annotated[User, Depends(Rule(CASEWORK, page=True))],
                     csrf: Annotated[str, Form(max_length=100)] = "",
                     erasure: Annotated[str, Form(max_length=200)] = "",
                     recipient: Annotated[str, Form(max_length=200)] = "",
                     subject: Annotated[str, Form(max_length=200)] = "",
                     at: Annotated[str, Form(max_length=40)] = "",
                     submission: Annotated[str, Form(max_length=100)] = "") -> Response:
    check_csrf(request, csrf)
    if not erasure:
        raise HTTPException(422, "erasure: which erasure is acknowledged")
    when = parse_at(at, "at")
    submit(request, lambda ledger, now: actions.acknowledge(
        ledger, erasure, when or now, now, user.name, recipient=recipient or None,
        subject=subject or None, submission=submission or None))
    return RedirectResponse("/notifications?done=erasure-acknowledged", status_code=303)


@router.get("/audit", dependencies=[Depends(Rule(AUDIT, page=True))])
def audit(request: Request) -> HTMLResponse:
    from lifecycle.services.audit import verify

    def gather(ledger: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        return verify(ledger.store, ledger.views).as_dict(), ledger.status()

    report, status = desk_of(request).run(gather)
    return html(request, "audit.html", report=report, store_status=status)

