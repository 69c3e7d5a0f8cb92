"""The daemon: APScheduler 3 as a metronome, nothing more.

One static interval job in the in-memory job store (no pickled job state), in UTC so
daylight-saving changes never skip or double a run. Each tick catches up the projections
and sweeps at the tick's time; a sweep is idempotent and covers everything due up to then,
so downtime is caught up by the first tick (which runs at start). SIGTERM or SIGINT lets
the running tick finish its batch, then the process exits 0.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.interval import IntervalTrigger

from lifecycle.ledger import Ledger
from lifecycle.logs import get_logger

log = get_logger("lifecycle.daemon")


class Daemon:
    def __init__(self, ledger: Ledger, interval_seconds: float,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.ledger = ledger
        self.interval_seconds = interval_seconds
        self.clock = clock
        self.ticks = 0
        self._lock = threading.Lock()
        self.scheduler = BlockingScheduler(timezone=UTC)
        self.scheduler.add_job(
            self.tick, IntervalTrigger(seconds=interval_seconds, timezone=UTC),
            id="tick", next_run_time=clock(), misfire_grace_time=None, coalesce=True,
            max_instances=1,
        )

    def tick(self) -> dict[str, Any]:
        """One beat: catch up projections, sweep everything due now, log the counts."""
        with self._lock:
            now = self.clock()
            caught_up = self.ledger.projections.catch_up()
            report = self.ledger.sweep(now, now)
            lag = max((st.lag for st in self.ledger.projections.status()), default=0)
            self.ticks += 1
            summary = {"at": now.isoformat(), "events_projected": caught_up,
                       "erased": len(report.erased), "reviews": len(report.reviews),
                       "paused": len(report.paused), "projection_lag": lag}
            log.info("daemon.tick", **summary)
            return summary

    def stop(self, signum: int | None = None, _frame: FrameType | None = None) -> None:
        log.info("daemon.stopping", signal=signum)
        # Runs on the main thread inside the blocking loop: don't wait here; the loop
        # returns, and run() then waits for the running tick to finish.
        self.scheduler.shutdown(wait=False)

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        log.info("daemon.started", interval_seconds=self.interval_seconds)
        self.scheduler.start()
        with self._lock:  # a tick still running on a worker thread finishes first
            pass
        log.info("daemon.stopped", ticks=self.ticks)
