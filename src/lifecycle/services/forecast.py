"""Forecast: how many erasures fall due per month and per rule, from the schedule."""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from dateutil.relativedelta import relativedelta

from lifecycle.projections import tables


def monthly_forecast(engine: sa.Engine, start: datetime, months: int,
                     zone: tzinfo | None = None) -> dict[str, Any]:
    """Pending erasures bucketed by calendar month of disposal (already overdue: first month).

    Months are calendar months in `zone` (pass the policy's time zone, so an item disposed of
    at the 1 July Europe/London review, 30 June 23:00 UTC, counts in July); by default the
    zone of `start`. The schedule stores UTC, so each disposal time is converted first.
    """
    zone = zone or start.tzinfo or UTC
    first = start.astimezone(zone).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = first + relativedelta(months=months)
    sched = tables.schedule
    query = (sa.select(sched.c.dispose_at, sched.c.rule)
             .where(sched.c.done.is_(False)).where(sched.c.action == "erase")
             .where(sched.c.dispose_at < end))
    buckets: dict[str, dict[str, int]] = {
        (first + relativedelta(months=n)).strftime("%Y-%m"): {} for n in range(months)}
    rules: set[str] = set()
    with engine.connect() as conn:
        # no month to count in (months < 1): nothing, rather than a KeyError on the overdue
        for dispose_at, rule in (conn.execute(query) if months > 0 else ()):
            month = max(dispose_at.astimezone(zone), first).strftime("%Y-%m")
            by_rule = buckets[month]
            by_rule[rule] = by_rule.get(rule, 0) + 1
            rules.add(rule)
    return {
        "from": first.isoformat(), "months_ahead": months, "rules": sorted(rules),
        "months": [{"month": m, "by_rule": b, "total": sum(b.values())}
                   for m, b in buckets.items()],
    }


def draw_forecast(result: dict[str, Any], path: Path) -> None:
    """A stacked bar chart of the forecast, one colour per rule."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    months = [row["month"] for row in result["months"]]
    fig, ax = plt.subplots(figsize=(max(6, len(months) * 0.6), 4.5))
    bottoms = [0] * len(months)
    for rule in result["rules"]:
        counts = [row["by_rule"].get(rule, 0) for row in result["months"]]
        ax.bar(months, counts, bottom=bottoms, label=rule)
        bottoms = [b + c for b, c in zip(bottoms, counts, strict=True)]
    ax.set_title("Erasures due per month, by retention rule")
    ax.set_ylabel("records")
    ax.tick_params(axis="x", rotation=45)
    if result["rules"]:
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
