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
