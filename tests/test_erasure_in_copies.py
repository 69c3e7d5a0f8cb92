"""Erasure in every copy: the daemon rotates by policy, and on PostgreSQL the vault
table's live files hold no destroyed key after an erasure batch and one daemon tick."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from lifecycle.store.vault import data_keys
from lifecycle.daemon import Daemon
from lifecycle.domain.errors import ConfigurationError
from lifecycle.services.key_policy import load_key_policy
from lifecycle.services.ledger import Ledger
from lifecycle.store.settings import Settings
from tests.facts_builder import collected, fact, lines

NOW = datetime(2024, 6, 1, tzinfo=UTC)


def person(reference: str, n: int) -> dict[str, object]:
    return collected(reference, "2024-01-01T09:00:00+00:00", "rec-1",
                     {"name": f"ZqCopyName{n}Qv"}, id=f"copy-{n}")


def erase(ledger: Ledger, reference: str, now: datetime) -> None:
    report = ledger.ingest(lines([fact("erasure-requested", reference,
                                       "2024-02-01T09:00:00+00:00",
                                       request=f"ER-{reference}", id=f"er-{reference}")]), now)
    assert report.accepted == 1


def write_config(settings: Settings, text: str) -> None:
    settings.home.mkdir(mode=0o700, parents=True, exist_ok=True)
    (settings.home / "lifecycle.toml").write_text(text)


def test_the_daemon_rotates_once_the_erasures_reach_the_configured_count(
        backend: Settings) -> None:
    """With rotate_after_erasures = 2, a tick after one erased key does not rotate; a
    tick after the second does, and status then counts no unsealed erasure."""
    write_config(backend, "[keys]\nrotate_after_erasures = 2\n")
    with Ledger(backend) as ledger:
        ledger.ingest(lines([person("subscriber:a", 1), person("subscriber:b", 2)]), NOW)
        daemon = Daemon(ledger, 60, clock=lambda: NOW + timedelta(hours=1))
        try:
            erase(ledger, "subscriber:a", NOW)
            assert daemon.tick()["rotated_to_epoch"] is None
            erase(ledger, "subscriber:b", NOW)
            assert daemon.tick()["rotated_to_epoch"] == 1
            assert daemon.tick()["rotated_to_epoch"] is None
        finally:
            daemon.close()
        assert [e.state for e in ledger.vault.epochs()] == ["retired", "current"]


def test_the_daemon_rotates_when_the_epoch_is_older_than_rotate_every(
        backend: Settings) -> None:
    """With rotate_every = "P1M", the daemon does not rotate two weeks into the epoch and
    does a month and a day in."""
    write_config(backend, '[keys]\nrotate_every = "P1M"\n')
    with Ledger(backend) as ledger:
        ledger.ingest(lines([person("subscriber:c", 3)]), NOW)
        moments = iter([NOW + timedelta(days=14), NOW + timedelta(days=32)])
        daemon = Daemon(ledger, 60, clock=lambda: next(moments))
        try:
            assert daemon.tick()["rotated_to_epoch"] is None
            assert daemon.tick()["rotated_to_epoch"] == 1
        finally:
            daemon.close()
        assert ledger.subject_view("subscriber:c")["records"][0]["data"] == {
            "name": "ZqCopyName3Qv"}


@pytest.mark.parametrize("text, field", [
    ('[keys]\nrotate_every = "monthly"\n', "rotate_every"),
    ("[keys]\nrotate_after_erasures = 0\n", "rotate_after_erasures"),
    ("[keys]\nrotate_sometimes = 1\n", "rotate_sometimes"),
])
def test_a_bad_key_policy_is_one_line_naming_the_field(tmp_path: Path, text: str,
                                                        field: str) -> None:
    """A bad [keys] setting is refused with the file and the field named."""
    (tmp_path / "lifecycle.toml").write_text(text)
    with pytest.raises(ConfigurationError) as raised:
        load_key_policy(tmp_path, {})
    assert field in str(raised.value) and "lifecycle.toml" in str(raised.value)
    assert "\n" not in str(raised.value)


def heap_bytes(url: str, data_dir: Path, relpath: str) -> bytes:
    """The table's heap files: read from the data directory when this user can (root or
    postgres on the server's host), else through the server with pg_read_binary_file
    (superuser or pg_read_server_files); skips, saying why, when neither can."""
    heap = data_dir / relpath
    try:
        files = [heap, *sorted(heap.parent.glob(f"{heap.name}.[0-9]*"))]
        if heap.exists():
            return b"".join(p.read_bytes() for p in files)
    except PermissionError:
        pass
    import psycopg

    blob = b""
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            for segment in range(1024):
                name = relpath if segment == 0 else f"{relpath}.{segment}"
                row = conn.execute("SELECT pg_read_binary_file(%s::text, 0, 1073741819, true)",
                                   [name]).fetchone()
                if row is None or row[0] is None:
                    break
                blob += bytes(row[0])
    except psycopg.errors.InsufficientPrivilege:
        pytest.skip(f"neither the data directory {data_dir} nor pg_read_binary_file is "
                    "open to this user")
    return blob


def test_postgres_vault_files_hold_no_destroyed_key_after_an_erasure_and_a_tick(
        postgres_database: str, tmp_path: Path) -> None:
    """After an erasure batch and one daemon tick (and a checkpoint), a byte search of the
    heap files of lifecycle_data_keys finds none of the destroyed keys' wrapped bytes,
    while it does find a live key's (so the search reads the right files)."""
    home = tmp_path / "home"
    settings = Settings(home=home, database_url=postgres_database, master_key=None,
                        master_key_file=home / "master.key")
    with Ledger(settings) as ledger:
        ledger.ingest(lines([person(f"subscriber:pg-{n}", 10 + n) for n in range(20)]), NOW)
        with ledger.vault.engine.connect() as conn:
            wrapped = {r.subject_id: bytes(r.wrapped) for r in conn.execute(
                sa.select(data_keys.c.subject_id, data_keys.c.wrapped))}
            data_dir = conn.exec_driver_sql("SHOW data_directory").scalar_one()
            relpath = conn.exec_driver_sql(
                "SELECT pg_relation_filepath('lifecycle_data_keys')").scalar_one()
        erased = [ledger.subject(f"subscriber:pg-{n}") for n in range(5)]
        for subject in erased:
            erase(ledger, subject.reference, NOW)
        daemon = Daemon(ledger, 60, clock=lambda: NOW)
        try:
            daemon.tick()
        finally:
            daemon.close()
        with ledger.vault.engine.connect().execution_options(
                isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("CHECKPOINT")
        live_one = wrapped[str(ledger.subject("subscriber:pg-10").id)]
    blob = heap_bytes(postgres_database, Path(data_dir), relpath)
    assert live_one in blob
    for subject in erased:
        assert wrapped[str(subject.id)] not in blob, subject.reference
