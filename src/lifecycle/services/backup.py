"""`lifecycle backup DIR` and `lifecycle restore DIR`: consistent copies of the store that
carry no master key, and record the epoch they were taken in.

SQLite: each store file is copied with SQLite's online backup API, the event log first
and the key vault after it, while a read lock holds the vault still (`_vault_held_still`):
a copy never lacks a data key its log uses, and never holds a key destroyed without its
erasure in the copy's log. PostgreSQL: `pg_dump` of lifecycle's tables (one snapshot), when pg_dump is
on PATH; otherwise the command says so and the README's guidance for base backups holds.

A backup holds no master key. Restored with the key of its epoch, it opens as it was; once
that epoch is retired by a rotation, no key lifecycle holds opens its data keys: the
restore keeps the log and its structure and adopts the key given as a new epoch, and
every value of the backup reads as erased. That is the point (README, "Erasure in
backups").
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import sqlalchemy as sa

from lifecycle.store.master_key import given_master_key, key_check_value, key_fingerprint
from lifecycle.store.vault import (CURRENT, KEY_CHECK_ROW, RETIRED, backups, create_vault_engine,
                                    key_epochs, read_key_state, vault_meta, vault_secrets)
from lifecycle.domain.errors import LifecycleError
from lifecycle.store.settings import Settings, create_private_file

MANIFEST = "lifecycle-backup.json"
FORMAT = "lifecycle-backup/1"
SQLITE_FILES = ("events.sqlite", "keys.sqlite", "views.sqlite")  # in copy order
PG_DUMP_FILE = "lifecycle.pgdump"
PG_TABLES = "public.lifecycle*"


class BackupRefused(LifecycleError):
    """A backup or restore that cannot be done as asked (nothing was written)."""


@dataclass(frozen=True)
class BackupReport:
    directory: Path
    taken_at: datetime
    epoch: int
    fingerprint: str | None
    backend: str
    files: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {"directory": str(self.directory), "taken_at": self.taken_at.isoformat(),
                "epoch": self.epoch, "fingerprint": self.fingerprint,
                "backend": self.backend, "files": self.files}


def _empty_directory(directory: Path, what: str) -> None:
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise BackupRefused(f"{directory}: {what} must be a new or empty directory")


def _current_epoch(settings: Settings) -> tuple[int, str | None]:
    state = read_key_state(settings)
    current = next((e for e in state.epochs if e.state == CURRENT), None)
    if current is not None:
        return current.epoch, current.fingerprint
    return 0, key_fingerprint(state.key_check) if state.key_check else None


@contextmanager
def _vault_held_still(vault: Path) -> Iterator[None]:
    """Holds a read lock on the SQLite vault while the files are copied: no key is
    created, marked or destroyed between the log's copy and the vault's (writers wait, up
    to their 30 s busy timeout). So a key destroyed in the copy has its erasure in the
    copy's log, and a key the copy's log uses is in the copy's vault; an erasure recorded
    in the copy whose keys were still live keeps its marks there, for the restored store's
    next run to finish."""
    if not vault.exists():
        yield
        return
    with closing(sqlite3.connect(vault, timeout=30, isolation_level=None)) as lock:
        lock.execute("BEGIN")
        lock.execute("SELECT count(*) FROM sqlite_master").fetchone()  # the read lock
        try:
            yield
        finally:
            lock.execute("COMMIT")


def take_backup(settings: Settings, directory: Path, now: datetime) -> BackupReport:
    """Writes a consistent copy of the store to `directory` (new or empty) and records it
    in the vault, with the epoch it was taken in."""
    _empty_directory(directory, "the backup directory")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    epoch, fingerprint = _current_epoch(settings)
    if settings.database_url is None:
        files = []
        with _vault_held_still(settings.home / "keys.sqlite"):
            for name in SQLITE_FILES:
                source = settings.home / name
                if not source.exists():
                    continue
                target = directory / name
                create_private_file(target)
                with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
                    src.backup(dst)
                src.close()
                dst.close()
                files.append(name)
        backend = "sqlite"
    else:
        _pg_dump(settings.database_url, directory / PG_DUMP_FILE)
        files, backend = [PG_DUMP_FILE], "postgresql"
    epoch_after, _ = _current_epoch(settings)
    epoch = min(epoch, epoch_after)  # a rotation during the copy: the older epoch holds
    manifest = {"format": FORMAT, "taken_at": now.isoformat(), "epoch": epoch,
                "fingerprint": fingerprint, "backend": backend, "files": files}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    engine = create_vault_engine(settings.vault_url)
    try:
        with engine.begin() as conn:
            conn.execute(backups.insert().values(taken_at=now, epoch=epoch,
                                                 place=str(directory)[:500], backend=backend))
    finally:
        engine.dispose()
    return BackupReport(directory, now, epoch, fingerprint, backend, files)


def libpq_env(url: str) -> dict[str, str]:
    """The connection as libpq variables, so no password shows in a process list."""
    parts = urlparse(url)
    env = {**os.environ, "PGHOST": parts.hostname or "127.0.0.1",
           "PGPORT": str(parts.port or 5432), "PGUSER": unquote(parts.username or "postgres"),
           "PGDATABASE": unquote(parts.path.lstrip("/") or "postgres")}
    if parts.password:
        env["PGPASSWORD"] = unquote(parts.password)
    return env


def _pg_dump(url: str, target: Path) -> None:
    if shutil.which("pg_dump") is None:
        raise BackupRefused(
            "pg_dump is not on PATH: install the PostgreSQL client tools of the server's "
            "version, or take a base backup as the README's \"Erasure in backups\" says")
    result = subprocess.run(["pg_dump", "--format=custom", "--no-owner", "--table",
                             PG_TABLES, "--file", str(target)], env=libpq_env(url),
                            capture_output=True, text=True, timeout=3600)
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["failed"])[-1][:200]
        raise BackupRefused(f"pg_dump: {reason}")


def read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    try:
        manifest: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        raise BackupRefused(f"{path}: not a lifecycle backup (no readable manifest)") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise BackupRefused(f"{path}: format {found!r} is not {FORMAT}")
    files, epoch = manifest.get("files"), manifest.get("epoch", 0)
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise BackupRefused(f"{path}: files: not a list of file names")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        raise BackupRefused(f"{path}: epoch: {epoch!r} is not an epoch number")
    return manifest


def _check_sqlite_backup(directory: Path, files: list[str]) -> list[str]:
    """The store files of a SQLite backup, each checked to be there and to be a sound
    SQLite database before anything is restored; the log and the vault are required."""
    names = [name for name in SQLITE_FILES if name in files]
    for required in SQLITE_FILES[:2]:
        if required not in names:
            raise BackupRefused(f"{directory / MANIFEST}: files: {required} is not listed")
    for name in names:
        path = directory / name
        if not path.is_file():
            raise BackupRefused(f"{path}: listed in the backup's manifest but missing")
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                verdict = conn.execute("PRAGMA quick_check").fetchone()[0]
            finally:
                conn.close()
        except sqlite3.Error as error:
            raise BackupRefused(f"{path}: not a SQLite database ({error})") from None
        if verdict != "ok":
            raise BackupRefused(f"{path}: the database is damaged ({str(verdict)[:100]})")
    return names


@dataclass(frozen=True)
class RestoreReport:
    directory: Path
    epoch: int
    opens: bool           # the key given opens the backup's values
    adopted_epoch: int | None  # the new epoch of the key given, when it does not

    def as_dict(self) -> dict[str, Any]:
        return {"directory": str(self.directory), "backup_epoch": self.epoch,
                "values_open": self.opens, "adopted_epoch": self.adopted_epoch}


def restore_backup(settings: Settings, directory: Path, now: datetime) -> RestoreReport:
    """Restores a backup into an empty store, then checks the backup's epoch against the
    master key given: the key of its epoch opens it as it was; any other key is adopted
    as a new epoch and the backup's data keys, under epochs whose keys are gone, open
    nothing (their values read as erased)."""
    manifest = read_manifest(directory)
    backend = "sqlite" if settings.database_url is None else "postgresql"
    if manifest.get("backend") != backend:
        raise BackupRefused(f"{directory}: a {manifest.get('backend')} backup cannot be "
                            f"restored into a {backend} store")
    if settings.database_url is None:
        settings.check_home()
        present = [n for n in SQLITE_FILES if (settings.home / n).exists()]
        if present:
            raise BackupRefused(f"{settings.home}: the store is not empty ({present[0]} "
                                "exists): restore into an empty store")
        names = _check_sqlite_backup(directory, manifest["files"])
        settings.ensure_home()
        restored: list[Path] = []
        try:
            for name in names:
                target = settings.home / name
                restored.append(target)
                create_private_file(target)
                with closing(sqlite3.connect(f"file:{directory / name}?mode=ro", uri=True)
                             ) as src, closing(sqlite3.connect(target)) as dst:
                    src.backup(dst)
        except (OSError, sqlite3.Error) as error:
            for target in restored:  # no half-restored store is left behind
                target.unlink(missing_ok=True)
            raise BackupRefused(f"{settings.home}: the restore could not be written "
                                f"({error}); nothing was restored") from None
    else:
        _pg_restore(settings.database_url, directory / PG_DUMP_FILE)
    return _settle_epoch(settings, directory, int(manifest.get("epoch", 0)), now)


def _pg_restore(url: str, source: Path) -> None:
    engine = sa.create_engine("postgresql+psycopg://" + url.split("://", 1)[1])
    try:
        with engine.connect() as conn:
            tables = conn.execute(sa.text(
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' "
                "AND tablename LIKE 'lifecycle%'")).scalar_one()
    finally:
        engine.dispose()
    name = urlparse(url).path.lstrip("/") or "postgres"
    if tables:
        raise BackupRefused(f"PostgreSQL database {name}: the store is not empty (lifecycle "
                            "tables exist): restore into an empty database")
    if shutil.which("pg_restore") is None:
        raise BackupRefused("pg_restore is not on PATH: install the PostgreSQL client tools")
    env = libpq_env(url)
    result = subprocess.run(["pg_restore", "--no-owner", "--dbname", env["PGDATABASE"],
                             str(source)], env=env, capture_output=True, text=True,
                            timeout=3600)
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["failed"])[-1][:200]
        raise BackupRefused(f"pg_restore: {reason}")


def _settle_epoch(settings: Settings, directory: Path, epoch: int,
                  now: datetime) -> RestoreReport:
    given = given_master_key(settings)
    state = read_key_state(settings)
    if given is None:
        return RestoreReport(directory, epoch, False, None)
    check = key_check_value(given[0])
    known = state.epoch_of(check)
    if state.key_check == check or (known is not None and known.state != RETIRED):
        return RestoreReport(directory, epoch, True, None)
    engine = create_vault_engine(settings.vault_url)
    try:
        with engine.begin() as conn:
            newest = conn.execute(sa.select(sa.func.max(key_epochs.c.epoch))).scalar()
            if newest is None and state.key_check is not None:  # written before epochs
                newest = 0
                conn.execute(key_epochs.insert().values(
                    epoch=0, key_check=state.key_check,
                    fingerprint=key_fingerprint(state.key_check), state=RETIRED,
                    retired_at=now, rewrapped=0))
            adopted = (newest if newest is not None else epoch) + 1
            conn.execute(key_epochs.update().where(key_epochs.c.state != RETIRED)
                         .values(state=RETIRED, retired_at=now))
            conn.execute(key_epochs.insert().values(
                epoch=adopted, key_check=check, fingerprint=key_fingerprint(check),
                state=CURRENT, created_at=now, created_by="restore", rewrapped=0))
            conn.execute(vault_meta.delete())
            conn.execute(vault_meta.insert().values(id=KEY_CHECK_ROW, key_check=check,
                                                    fingerprint=key_fingerprint(check)))
            conn.execute(vault_secrets.delete())
    finally:
        engine.dispose()
    return RestoreReport(directory, epoch, False, adopted)
