"""Fact-id claims bind each unbound id once, whichever way the vault writes them: on
PostgreSQL a batch of new ids goes in by one COPY, and a batch holding an id bound already
goes through the statement that skips bound ids, in the same transaction."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from lifecycle.store.settings import Settings
from lifecycle.store.vault import KeyVault, open_vault

NOW = datetime(2025, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
ODD_OFFSET = NOW.astimezone(timezone(timedelta(hours=5, minutes=30, seconds=15)))


def _raw_claimed_at(vault: KeyVault) -> dict[str, object]:
    with vault.engine.connect() as conn:
        return dict(conn.exec_driver_sql(
            "SELECT fact_id, claimed_at FROM lifecycle_fact_ids").all())


def test_a_batch_with_a_bound_id_binds_the_others_and_reports_every_binding(
        backend: Settings) -> None:
    """Rule: claiming a batch in which one id is bound already binds every other id of it
    to what was offered, leaves the bound one as it was, and returns all the bindings (the
    caller compares digests); a batch of new ids returns nothing and binds them all."""
    vault = open_vault(backend)
    try:
        assert vault.claim({"a": ("s1", "d1")}, NOW) == {}
        found = vault.claim({"b": ("s2", "db"), "a": ("s2", "d2"), "c": ("s3", "dc")}, NOW)
        assert {fid: (b.subject_id, b.digest) for fid, b in found.items()} == {
            "a": ("s1", "d1"), "b": ("s2", "db"), "c": ("s3", "dc")}
        stored = vault.claimed(["a", "b", "c"])
        assert {fid: (b.subject_id, b.digest) for fid, b in stored.items()} == {
            "a": ("s1", "d1"), "b": ("s2", "db"), "c": ("s3", "dc")}
    finally:
        vault.engine.dispose()


def test_a_given_up_binding_is_dropped_even_when_the_batch_meets_a_bound_id(
        backend: Settings) -> None:
    """Rule: a binding given up (its fact never reached its subject) is dropped and the id
    bound again to what is offered now, also in a batch where another id is bound already
    (the first attempt at the batch is undone, the dropping is not)."""
    vault = open_vault(backend)
    try:
        vault.claim({"stale": ("s1", "old"), "kept": ("s1", "dk")}, NOW)
        found = vault.claim({"stale": ("s2", "new"), "kept": ("s2", "other"),
                             "fresh": ("s2", "df")}, NOW, given_up={"stale": "old"})
        assert {fid: b.digest for fid, b in found.items()} == {
            "stale": "new", "kept": "dk", "fresh": "df"}
        assert {fid: b.digest for fid, b in vault.claimed(["stale", "kept", "fresh"]).items()
                } == {"stale": "new", "kept": "dk", "fresh": "df"}
    finally:
        vault.engine.dispose()


def test_the_claim_time_is_written_alike_whichever_way_the_batch_goes(
        backend: Settings) -> None:
    """Rule: an id bound in a batch of new ids and one bound in a batch that met a bound id
    keep the same claim time for the same `now` (on SQLite the same raw text, on
    PostgreSQL the same instant), at any offset, and a naive `now` is kept as before."""
    vault = open_vault(backend)
    try:
        vault.claim({"taken": ("s0", "d0")}, NOW)
        for n, now in enumerate((NOW, ODD_OFFSET, NOW.replace(tzinfo=None))):
            assert vault.claim({f"alone-{n}": ("s1", "d1")}, now) == {}
            assert set(vault.claim({f"beside-{n}": ("s1", "d1"), "taken": ("s1", "dx")},
                                   now)) == {f"beside-{n}", "taken"}
        raw = _raw_claimed_at(vault)
        for n in range(3):
            assert raw[f"alone-{n}"] == raw[f"beside-{n}"], n
        if backend.database_url:  # PostgreSQL keeps the instant
            assert raw["alone-0"] == raw["alone-1"] == NOW
    finally:
        vault.engine.dispose()
