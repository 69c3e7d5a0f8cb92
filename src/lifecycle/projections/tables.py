"""The read-model tables, beside the event store (views.sqlite, or the PostgreSQL database).

Every projection owns its tables and a row in `lifecycle_projection_positions`, written in
the same transaction as its rows. No table holds a personal value in plaintext.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Aware datetimes stored as UTC on every backend, read back aware (UTC)."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


metadata = sa.MetaData()
TZ = UTCDateTime()

# Projections this version no longer has, with their tables (dropped when views open):
# "suppression" kept one subject per hash and became "suppression-list", which kept only
# the listings in force and became "suppression-listings".
RETIRED = {"suppression": "lifecycle_suppression",
           "suppression-list": "lifecycle_suppression_list"}

positions = sa.Table(
    "lifecycle_projection_positions", metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("position", sa.BigInteger, nullable=False),
)

subjects = sa.Table(
    "lifecycle_subjects", metadata,
    sa.Column("subject_id", sa.String(36), primary_key=True),
    sa.Column("reference", sa.String(200), nullable=False, unique=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("records", sa.Integer, nullable=False),
    sa.Column("erased", sa.Integer, nullable=False),
    sa.Column("suppressed", sa.Boolean, nullable=False),
    sa.Column("last_activity_at", TZ),
    sa.Column("document", sa.JSON, nullable=False),
)

schedule = sa.Table(
    "lifecycle_retention_schedule", metadata,
    sa.Column("subject_id", sa.String(36), primary_key=True),
    sa.Column("record", sa.String(200), primary_key=True),
    sa.Column("reference", sa.String(200), nullable=False),
    sa.Column("purpose", sa.String(120), nullable=False),
    sa.Column("rule", sa.String(200), nullable=False),
    sa.Column("policy", sa.String(200), nullable=False),
    sa.Column("trigger", sa.String(40), nullable=False),
    sa.Column("trigger_at", TZ, nullable=False),
    sa.Column("due_at", TZ, nullable=False),
    sa.Column("dispose_at", TZ, nullable=False),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("done", sa.Boolean, nullable=False),
    sa.Index("ix_retention_schedule_due", "done", "dispose_at"),
)

# One row per subject holding each hash and each time it listed it, so rows never depend
# on the order subjects are applied in; an e-mail is suppressed at a time when a row of it
# covers that time (`until` None: listed now). A listing lifted by the person's own opt-in
# keeps its row, so a fact is checked against the list as it stood at its own time.
suppression = sa.Table(
    "lifecycle_suppression_listings", metadata,
    sa.Column("email_hash", sa.String(64), primary_key=True),
    sa.Column("subject_id", sa.String(36), primary_key=True, index=True),
    sa.Column("since", TZ, primary_key=True),
    sa.Column("until", TZ),
)

consents = sa.Table(
    "lifecycle_consents", metadata,
    sa.Column("subject_id", sa.String(36), primary_key=True),
    sa.Column("purpose", sa.String(120), primary_key=True),
    sa.Column("given_at", TZ),
    sa.Column("withdrawn_at", TZ),
    sa.Column("in_force", sa.Boolean, nullable=False),
)

disclosures = sa.Table(
    "lifecycle_disclosures", metadata,
    sa.Column("subject_id", sa.String(36), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("recipient", sa.String(200), nullable=False, index=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("purpose", sa.String(120), nullable=False),
    sa.Column("basis", sa.String(40), nullable=False),
    sa.Column("country", sa.String(2), nullable=False),
    sa.Column("safeguard", sa.String(200)),
    sa.Column("at", TZ, nullable=False),
    sa.Column("records", sa.JSON, nullable=False),
    sa.Column("categories", sa.JSON, nullable=False),
)

notifications = sa.Table(
    "lifecycle_erasure_notifications", metadata,
    sa.Column("subject_id", sa.String(36), primary_key=True),
    sa.Column("erasure", sa.String(200), primary_key=True),
    sa.Column("recipient", sa.String(200), primary_key=True),
    sa.Column("reference", sa.String(200), nullable=False),
    sa.Column("records", sa.JSON, nullable=False),
    sa.Column("erased_at", TZ, nullable=False),
    sa.Column("acknowledged_at", TZ),
    sa.Index("ix_erasure_notifications_open", "acknowledged_at", "erased_at"),
)

requests = sa.Table(
    "lifecycle_requests", metadata,
    sa.Column("case_id", sa.String(36), primary_key=True),
    sa.Column("request", sa.String(200), nullable=False),
    sa.Column("reference", sa.String(200), nullable=False, index=True),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("status", sa.String(12), nullable=False),
    sa.Column("received_at", TZ, nullable=False),
    sa.Column("deadline", sa.Date),
    sa.Column("paused", sa.Boolean, nullable=False),
    sa.Column("extended_months", sa.Integer, nullable=False),
    sa.Column("closed_at", TZ),
    sa.Index("ix_requests_open_deadline", "status", "deadline"),
)

sweep_runs = sa.Table(
    "lifecycle_sweep_runs", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("swept_at", TZ, nullable=False),
    sa.Column("started_at", TZ, nullable=False),
    sa.Column("erased", sa.Integer, nullable=False),
    sa.Column("reviews", sa.Integer, nullable=False),
    sa.Column("paused", sa.Integer, nullable=False),
    sa.Column("dry_run", sa.Boolean, nullable=False),
)

# The audit chain is not a read model: it lives beside the events (`lifecycle.store.event_chain`).
