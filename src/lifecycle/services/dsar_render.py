"""The DSAR export as CSV (one row per record) or as an HTML pack a person can read."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from lifecycle.services.html_render import render

CSV_COLUMNS = ("record", "category", "purpose", "basis", "source", "collected_at", "data",
               "erased_at", "erased_by", "retention_rule", "retention_due_at",
               "retention_criteria", "retention_notice_quote", "retention_controller_choice",
               "source_name", "retention_why")


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    """A value a spreadsheet would run as a formula is written as text (OWASP's leading
    apostrophe): a record or source name comes from a fact, so from outside."""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def to_csv(document: dict[str, Any]) -> str:
    """The records, one per row; nested values as JSON text; no cell a spreadsheet would
    run as a formula."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for record in document["records"]:
        data = record["data"]
        retention = record["retention"]
        writer.writerow({column: _cell(value) for column, value in {
            **{k: record.get(k) for k in CSV_COLUMNS[:6]},
            "data": data if isinstance(data, str) else json.dumps(data, ensure_ascii=False),
            "erased_at": record.get("erased_at"), "erased_by": record.get("erased_by"),
            "retention_rule": retention.get("rule"), "retention_due_at": retention.get("due_at"),
            "retention_criteria": "; ".join(retention.get("criteria", [])),
            "retention_notice_quote": retention.get("notice_quote"),
            "retention_controller_choice": retention.get("controller_choice"),
            "source_name": record.get("source_name"), "retention_why": retention.get("why"),
        }.items()})
    return out.getvalue()


def to_html(document: dict[str, Any]) -> str:
    """A self-contained page: no scripts, no external resources."""
    return render("dsar.html", document)


def render_export(document: dict[str, Any], fmt: str) -> str:
    """The export in one of its formats: "json" (indented), "csv" or "html"."""
    if fmt == "json":
        return json.dumps(document, indent=2, ensure_ascii=False, default=str) + "\n"
    if fmt == "csv":
        return to_csv(document)
    return to_html(document)
