"""Stores for the key-file tests: an operator's key file, and a store keyed by it holding
one named record per subject (what a rotation re-wraps and a reader must still open)."""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime
from pathlib import Path

from lifecycle.services.ledger import Ledger
from lifecycle.store.settings import Settings
from tests.facts_builder import collected, lines

NOW = datetime(2024, 6, 1, tzinfo=UTC)


def operator_key_file(path: Path) -> Path:
    """A key file as an operator writes one: base64 of 32 random bytes, mode 0600."""
    path.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    path.chmod(0o600)
    return path


def named_store(home: Path, key_file: Path, url: str | None, subjects: list[str],
                prefix: str) -> Settings:
    """A store at `home` keyed by `key_file` (an operator's, written if there is none),
    holding for subject n one record `rec-1` with {"name": "Name n"} (fact ids prefix-n)."""
    if not os.path.lexists(key_file):
        operator_key_file(key_file)
    settings = Settings(home=home, database_url=url, master_key=None, master_key_file=key_file)
    facts = [collected(s, "2024-01-01T09:00:00+00:00", "rec-1", {"name": f"Name {n}"},
                       id=f"{prefix}-{n}") for n, s in enumerate(subjects)]
    with Ledger(settings) as ledger:
        assert ledger.ingest(lines(facts), NOW).accepted == len(facts)
    return settings
