"""Builds fact dicts of the ingest format v1 for tests, with explicit times."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from itertools import count
from typing import Any

_ids = count(1)


def fact(type_: str, subject: str, at: str, **fields: Any) -> dict[str, Any]:
    return {"id": fields.pop("id", f"t-{next(_ids)}"), "type": type_, "subject": subject,
            "at": at, **fields}


def collected(subject: str, at: str, record: str, data: dict[str, Any], *,
              purpose: str = "direct-marketing", basis: str = "consent",
              category: str = "contact", source: str = "data-subject",
              **extra: Any) -> dict[str, Any]:
    return fact("collected", subject, at, record=record, category=category, purpose=purpose,
                basis=basis, source=source, data=data, **extra)


def lines(facts: Iterable[dict[str, Any]]) -> list[str]:
    return [json.dumps(f) for f in facts]


def t(text: str) -> datetime:
    """An explicit instant for a test (RFC 3339 with offset)."""
    return datetime.fromisoformat(text)
