"""Projections: named read models that follow the event log."""
