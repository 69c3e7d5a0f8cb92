"""The daemon: APScheduler 3 as a metronome, nothing more.

One static interval job in the in-memory job store (no pickled job state), in UTC so
daylight-saving changes never skip or double a run. Each tick catches up the projections
and sweeps at the tick's time; a sweep is idempotent and covers everything due up to then,
so downtime is caught up by the first tick (which runs at start). SIGTERM or SIGINT lets
the running tick finish its batch, then the process exits 0.

A BlockingScheduler owns the main thread; ticks run on its worker thread. The signal
handler does not log (the log writer's lock is not re-entrant); it records the request and
stops the scheduler's loop, tolerating a second signal or one that arrives before the loop
runs (the next tick then stops it). run() waits for a running tick before it returns.

Several daemons may run against one store (PostgreSQL; SQLite on one host): a lease
(lifecycle.store.lease) lets only one of them catch up the projections, sweep and extend the
audit chain; the others log each tick with `swept: false, lease: "held-elsewhere"` and the
projection lag they see, and take over at their next tick once the holder is gone (its
lease dies with its process or session, even under SIGKILL). Idempotent sweeps remain the
backstop.

The lease holder also keeps erasures final in copies: each tick vacuums the vault table
on PostgreSQL (`KeyVault.reclaim`), and rotates the master key when the `[keys]` policy
says so (`lifecycle.services.key_policy`) or a rotation is under way, under the rotation lease too.
"""

from __future__ import annotations

import logging
import signal
import threading
import weakref
from collections.abc import Callable
from datetime import UTC, datetime
from types import FrameType
from typing import TYPE_CHECKING, Any

from apscheduler.schedulers import SchedulerNotRunningError
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.interval import IntervalTrigger

from lifecycle.domain.errors import LifecycleError
from lifecycle.aggregates.request_case import DUE_SOON_DAYS
from lifecycle.store.actor import daemon_actor
from lifecycle.services.audit import chain_lag
from lifecycle.services.breaches import flag_overdue_breaches
from lifecycle.store.lease import SWEEP_LEASE, Lease, lease_for
from lifecycle.services.ledger import Ledger
from lifecycle.support.logs import get_logger
from lifecycle.services.rotation import RotationBusy, rotate_if_due

if TYPE_CHECKING:
    from lifecycle.services.key_policy import KeyPolicy

log = get_logger("lifecycle.daemon")


class _SchedulerLogs(logging.Handler):
    """APScheduler logs through the standard library: forward its records to our JSON log
    lines, so stderr stays one JSON document per line (e.g. a tick that overran its
    interval and made the scheduler skip a beat)."""

    def emit(self, record: logging.LogRecord) -> None:
        fields: dict[str, Any] = {"logger": record.name, "message": record.getMessage()}
        if record.exc_info and record.exc_info[0] is not None:
            # The type only, never a traceback (a driver's message may quote values);
            # --log-level DEBUG logs the whole of it.
            fields["error"] = record.exc_info[0].__name__
            log.debug("scheduler.traceback",
                      exception=logging.Formatter().formatException(record.exc_info))
        log.log(record.levelno, "scheduler.log", **fields)


class Daemon:
    def __init__(self, ledger: Ledger, interval_seconds: float,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 lease: Lease | None = None, due_soon_days: int = DUE_SOON_DAYS,
                 key_policy: KeyPolicy | None = None) -> None:
        self.ledger = ledger
        from lifecycle.services.key_policy import load_key_policy

        self.key_policy = (key_policy if key_policy is not None
                           else load_key_policy(ledger.settings.home))
        self.due_soon_days = due_soon_days
        self.lease = lease if lease is not None else lease_for(ledger.settings)
        ledger.actor = daemon_actor(self.lease.holder, SWEEP_LEASE)  # who its events name
        # A Daemon dropped without run() or close() (ticked by hand) still gives its lease
        # back when collected; a killed process loses it with its file or session.
        self._release_lease = weakref.finalize(self, self.lease.release)
        self._held: bool | None = None  # the lease at the last tick (None: no tick yet)
        self.interval_seconds = interval_seconds
        self.clock = clock
        self.ticks = 0
        self._lock = threading.Lock()
        self._stop_signal: int | None = None
        self._stop_requested = False
        self.scheduler = BlockingScheduler(timezone=UTC)
        self.scheduler.add_job(
            self.tick, IntervalTrigger(seconds=interval_seconds, timezone=UTC),
            # the first beat at start by the scheduler's own (real) clock: an injected clock
            # gives each tick its `now`, but must not postpone or advance the first run
            id="tick", next_run_time=datetime.now(UTC), misfire_grace_time=None, coalesce=True,
            max_instances=1,
        )

    def tick(self) -> dict[str, Any]:
        """One beat: with the lease, catch up projections, flag requests due soon or
        overdue, sweep everything due now and extend the audit chain; without it, only
        report the lag. Logs the counts."""
        if self._stop_requested:  # a signal that came before the loop ran
            self._halt()
        with self._lock:
            now = self.clock()
            if self._stop_requested:  # a beat started after stop: the ledger may be closed
                return {"at": now.isoformat(), "swept": False, "stopped": True}
            held = self.lease.acquire()
            if held != self._held:
                log.info("daemon.lease", lease="held" if held else "held-elsewhere",
                         holder=self.lease.holder)
                self._held = held
            if not held:
                return self._standby_tick(now)
            caught_up = self.ledger.projections.catch_up()
            # Flags first: the sweep's closing catch-up projects them in this same tick, so
            # the lag reported below is the one left after it. The chain is written with
            # the events (nothing to chain here: events_chained stays 0).
            flags = self.ledger.flag_requests(now, self.due_soon_days)
            breaches_overdue = flag_overdue_breaches(self.ledger.store, now)
            report = self.ledger.sweep(now, now)
            rotated = self._rotate_if_due(now)
            self.ledger.vault.reclaim(force=True)
            lag = max((st.lag for st in self.ledger.projections.status()), default=0)
            self.ticks += 1
            summary = {"at": now.isoformat(), "swept": True, "lease": "held",
                       "rotated_to_epoch": rotated,
                       "events_projected": caught_up,
                       "erased": len(report.erased), "reviews": len(report.reviews),
                       "paused": len(report.paused), "projection_lag": lag,
                       "events_chained": 0, "audit_lag": chain_lag(self.ledger.store),
                       "requests_due_soon": flags["due_soon"],
                       "requests_overdue": flags["overdue"],
                       "breaches_flagged_overdue": breaches_overdue}
            log.info("daemon.tick", **summary)
            return summary

    def _rotate_if_due(self, now: datetime) -> int | None:
        """Rotates the master key when the policy says so; the new epoch, or None."""
        try:
            report = rotate_if_due(self.ledger.settings, self.ledger.vault, self.ledger.store,
                                   self.key_policy, now, self.ledger.actor)
        except RotationBusy:
            log.info("daemon.rotation", state="running-elsewhere")
            return None
        except LifecycleError as error:  # e.g. this host lacks the key: the tick goes on
            log.warning("daemon.rotation", state="failed", reason=str(error))
            return None
        if report is None:
            return None
        log.info("daemon.rotation", state="done", old_epoch=report.old_epoch,
                 new_epoch=report.new_epoch, rewrapped=report.rewrapped,
                 operator_key_to_retire=report.operator_key)
        return report.new_epoch

    def log_first_sweep(self) -> None:
        """Says, before the first tick, what a sweep now would erase (a dry run): a fresh
        daemon's first tick shreds the whole overdue backlog at once."""
        now = self.clock()
        try:
            caught_up = self.ledger.projections.catch_up()  # the schedule, up to date
            report = self.ledger.sweep(now, now, dry_run=True)
        except Exception as error:  # noqa: BLE001 - the tick will meet and log it too
            log.warning("daemon.first_sweep", at=now.isoformat(), error=type(error).__name__)
            return
        log.info("daemon.first_sweep", at=now.isoformat(), due=len(report.erased),
                 reviews=len(report.reviews), paused=len(report.paused),
                 events_projected=caught_up)

    def _standby_tick(self, now: datetime) -> dict[str, Any]:
        """Another daemon holds the lease: sweep nothing, write nothing, report the lag
        (the holder catches the projections up on each of its ticks)."""
        lag = max((st.lag for st in self.ledger.projections.status()), default=0)
        self.ticks += 1
        summary = {"at": now.isoformat(), "swept": False, "lease": "held-elsewhere",
                   "events_projected": 0, "erased": 0, "reviews": 0, "paused": 0,
                   "projection_lag": lag}
        log.info("daemon.tick", **summary)
        return summary

    def close(self) -> None:
        """Gives the lease up, so a standby daemon can take over at once."""
        self._release_lease()

    def stop(self, signum: int | None = None, _frame: FrameType | None = None) -> None:
        """Asks run() to stop (a signal handler: no logging, no waiting)."""
        self._stop_signal = signum
        self._stop_requested = True
        self._halt()

    def _halt(self) -> None:
        try:
            self.scheduler.shutdown(wait=False)
        except SchedulerNotRunningError:
            pass  # not started yet, or already stopping

    def run(self, restore_signals: bool = True) -> None:
        """Ticks until SIGTERM or SIGINT. A process that exits next passes
        restore_signals=False, so a late second signal still finds a harmless handler."""
        previous = {sig: signal.signal(sig, self.stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        scheduler_logger = logging.getLogger("apscheduler")
        forward = _SchedulerLogs(logging.INFO)
        scheduler_logger.addHandler(forward)
        propagate, scheduler_logger.propagate = scheduler_logger.propagate, False
        if scheduler_logger.level == logging.NOTSET:
            scheduler_logger.setLevel(logging.WARNING)  # "Added job"/"Running job": noise
        try:
            log.info("daemon.started", interval_seconds=self.interval_seconds)
            self.log_first_sweep()
            if not self._stop_requested:
                self.scheduler.start()  # blocks until stop() ends the loop
            log.info("daemon.stopping", signal=self._stop_signal)
            with self._lock:  # a tick still running on the worker thread finishes its batch
                self.close()
            log.info("daemon.stopped", ticks=self.ticks)
        finally:
            for sig, handler in previous.items() if restore_signals else ():
                signal.signal(sig, handler)
            scheduler_logger.removeHandler(forward)
            scheduler_logger.propagate = propagate
