"""lifecycle: an event-sourced personal-data lifecycle and retention scheduler."""

__version__ = "0.1.0"
