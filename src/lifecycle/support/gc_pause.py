"""Pausing Python's cyclic garbage collector around work that keeps many objects alive."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def cyclic_gc_paused(settle_above: int | None = None) -> Iterator[None]:
    """Work that holds thousands of aggregates (a projection catch-up, an ingest batch)
    would have the cyclic collector scan them again and again as it allocates: up to half
    the cost of applying events. What it allocates forms no cycles that need collecting
    before it ends, so the collector is paused for it and resumes after (restored as it
    was, also on error).

    `settle_above`: work that leaves more new objects alive than this (a catch-up that
    filled a cache) collects them once, fully, as it resumes. Otherwise the collection the
    pause put off falls on whatever allocates next (a sweep of a few hundred subjects
    scanned the 200,000 objects of the catch-up before it), and the objects stay young,
    to be scanned again by the next collections of the younger generations."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            if settle_above is not None and gc.get_count()[0] > settle_above:
                gc.collect()
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
