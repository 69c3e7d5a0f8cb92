"""Rendering: the pages' Jinja2 environment and the DSAR pack downloads."""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from typing import Any

from fastapi.responses import Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from lifecycle.web.segments import segment

TEMPLATES = Path(__file__).parent / "templates"
pages = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]),
                    trim_blocks=True, lstrip_blocks=True)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def new_submission() -> str:
    """A fresh token for one rendered case-action form (its idempotency key)."""
    return secrets.token_urlsafe(18)


pages.globals["new_submission"] = new_submission
pages.filters["segment"] = segment

MEDIA = {"json": "application/json", "csv": "text/csv; charset=utf-8",
         "html": "text/html; charset=utf-8"}


def page(name: str, **context: Any) -> str:
    return pages.get_template(name).render(**context)


def export_filename(reference: str, fmt: str) -> str:
    """A download name from the subject reference (an identifier, never a personal value)."""
    return f"dsar-{_UNSAFE.sub('_', reference)[:80]}.{fmt}"


def export_response(document: dict[str, Any], fmt: str, reference: str) -> Response:
    from lifecycle.services.dsar_render import render_export

    return Response(render_export(document, fmt), media_type=MEDIA[fmt], headers={
        "Content-Disposition": f'attachment; filename="{export_filename(reference, fmt)}"',
        "Cache-Control": "no-store"})
