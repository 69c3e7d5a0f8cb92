"""Crash points for the crash-matrix tests: a process dies at the named step.

The tests set LIFECYCLE_CRASH_AT=<step> in a child process; unset, a crash point costs one
environment lookup. The steps are listed in STEPS so a test can walk every one.
"""

from __future__ import annotations

import os
import signal

CRASH_ENV = "LIFECYCLE_CRASH_AT"
STEPS = (
    "keys-stored",     # new data keys stored, marks and events not yet
    "marks-stored",    # keys to destroy marked, events not yet saved
    "events-saved",    # events saved, keys not yet destroyed
    "keys-destroyed",  # keys destroyed, the run not yet finished
)


_passed: dict[str, int] = {}


def crash_point(step: str) -> None:
    """Kills this process (SIGKILL: no clean-up runs) if the tests named this step, as
    `step` (its first passage) or `step:N` (its Nth, e.g. in an ingest's second batch)."""
    wanted = os.environ.get(CRASH_ENV)
    if wanted is None or not wanted.startswith(step):
        return
    _passed[step] = _passed.get(step, 0) + 1
    if wanted in (step, f"{step}:{_passed[step]}"):
        os.kill(os.getpid(), signal.SIGKILL)
