"""Pausing Python's cyclic garbage collector around work that keeps many objects alive."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Work that holds thousands of aggregates (a projection catch-up, an ingest batch)
    would have the cyclic collector scan them again and again as it allocates: up to half
    the cost of applying events. What it allocates forms no cycles that need collecting
    before it ends, so the collector is paused for it and resumes after (restored as it
    was, also on error)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class PeriodicCollection:
    """For a long run under one pause (an ingest of millions of lines): resuming the
    collector between batches costs a tenth of an ingest (each resume scans the cached
    aggregates again), while a batch leaves only a few cyclic objects behind. So the run
    stays paused and collects once every `every` steps: its garbage stays bounded."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.steps = 0

    def step(self) -> None:
        self.steps += 1
        if self.steps % self.every == 0:
            gc.collect()
