"""The read-model tables as comparable values, for tests that compare two builds."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from lifecycle.services.ledger import Ledger


def table_rows(engine: sa.Engine, table: sa.Table) -> list[tuple[str, ...]]:
    """The table's rows in primary-key order, each value as JSON text."""
    with engine.connect() as conn:
        found = conn.execute(sa.select(table).order_by(*table.primary_key.columns)).all()
    return [tuple(json.dumps(v, sort_keys=True, default=str) for v in row) for row in found]


def snapshot_views(ledger: Ledger) -> dict[str, list[tuple[Any, ...]]]:
    """Every projection table of the ledger, by name."""
    return {table.name: table_rows(ledger.views, table)
            for projection in ledger.projections.projections for table in projection.tables}
