"""A run's clock: the time the run was given, moved on by the time it has run since.

A run takes its `now` once (time is a parameter), but what it writes for other processes
to judge by the wall clock (a fact id's claim, a doomed key's mark, both dropped once
older than a grace) must be dated when written: a run that has gone on for longer than
the grace would otherwise write them already stale.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta


class RunClock:
    def __init__(self, started: datetime) -> None:
        self.started = started
        self._began = time.monotonic()

    def now(self) -> datetime:
        return self.started + timedelta(seconds=time.monotonic() - self._began)
