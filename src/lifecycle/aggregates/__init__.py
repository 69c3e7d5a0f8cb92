"""Aggregates: one per module, free of storage, scheduling and logging."""
