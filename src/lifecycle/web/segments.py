"""References that hold a slash (`org/unit-7/member:42`, `SAR/2025/7`) in a path.

A client sends such a reference as one segment with the slash percent-encoded (`%2F`); the
server decodes the path before routing, so the route would see three segments. `Segments`
(outermost, ASGI) routes on the path as sent instead: each segment decoded on its own, with
a `%` or `/` inside it escaped again; `SegmentRoute` then decodes each path parameter once,
so a handler gets the reference exactly as written.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote

from fastapi.routing import APIRoute
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

ESCAPED = "lifecycle.segments_escaped"


class Segments:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get("raw_path") if scope["type"] == "http" else None
        if raw and b"%2f" in raw.lower():
            sent = raw.split(b"?", 1)[0].decode("latin-1")
            path = "/".join(unquote(segment).replace("%", "%25").replace("/", "%2F")
                            for segment in sent.split("/"))
            # In place: the middlewares around the router (the access log) read the
            # route it sets on this scope.
            scope["path"] = path
            scope[ESCAPED] = True
        await self.app(scope, receive, send)


class SegmentRoute(APIRoute):
    """Path parameters as sent, where `Segments` escaped them."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if scope.get(ESCAPED) and "path_params" in child:
            params: dict[str, Any] = child["path_params"]
            child["path_params"] = {name: unquote(value) if isinstance(value, str) else value
                                    for name, value in params.items()}
        return match, child


def sent_path(request: Any) -> str:
    """The request's path as the client sent it (still percent-encoded): a path to go back
    to, which decoding once more would turn into another one (`a%2541` into `aA`)."""
    raw = request.scope.get("raw_path")
    if raw:
        return str(raw.split(b"?", 1)[0].decode("latin-1"))
    return quote(str(request.url.path), safe="/:")


def segment(value: Any) -> str:
    """A reference as one path segment (the templates' `segment` filter)."""
    return quote(str(value), safe=":")
