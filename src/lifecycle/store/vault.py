"""The key vault: per-subject data keys, wrapped by the master key, outside the event store.

Destroying a key overwrites its wrapped bytes and, on SQLite, ``secure_delete`` zeroes the
freed space and the rollback journal (not WAL) leaves no old page behind, so the raw
file holds no trace of a destroyed key. On PostgreSQL `reclaim` vacuums the table after
an erasure batch, so its live files stop holding the destroyed rows.

Master-key epochs: the master key is the key of one epoch. Every data key records the
epoch whose key wrapped it; `lifecycle.services.rotation` moves every live data key to a new
epoch and then destroys the old epoch's key, so a copy of the vault taken before (a
backup, a snapshot, WAL) opens nothing once its epoch is retired. Keys are wrapped when
they are stored (`flush`), under the epoch current at that moment: the flush reads the
current epoch under a lock the rotation's switch conflicts with, so no key is stored
under an epoch that is retiring. The keyed-hash and fact-digest keys outlive epochs:
derived from the first master key, then kept wrapped under the current epoch
(`lifecycle_vault_secrets`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import orjson
import psycopg
import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from lifecycle.store.master_key import (create_master_key, derive_key, given_master_key,
                                         key_check_value, key_fingerprint)
from lifecycle.domain.email_address import normalise, spellings
from lifecycle.store.engines import create_store_engine, reads_of
from lifecycle.store.fast_json import plain
from lifecycle.domain.errors import ConfigurationError, KeyDestroyed, LifecycleError
from lifecycle.store.lease import advisory_key
from lifecycle.store.settings import MASTER_KEY_ENV, Settings

NONCE_BYTES = 12
# json.dumps(value, separators=(",", ":"), sort_keys=True), its encoder made once.
_SEALED_JSON = json.JSONEncoder(separators=(",", ":"), sort_keys=True)
# Unwrapped keys kept per process (least recently used dropped first, keys not yet
# stored never): a long-running service's memory does not grow with subjects served.
CIPHER_CACHE = 50_000

metadata = sa.MetaData()
data_keys = sa.Table(
    "lifecycle_data_keys",
    metadata,
    sa.Column("key_id", sa.String(32), primary_key=True),
    sa.Column("subject_id", sa.String(36), nullable=False),
    sa.Column("scope", sa.String(200), nullable=False),
    sa.Column("wrapped", sa.LargeBinary, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("destroyed_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("destroyed_by", sa.String(200), nullable=True),
    # The master-key epoch whose key wrapped `wrapped` (0: the first master key).
    sa.Column("epoch", sa.Integer, nullable=False, server_default="0"),
    sa.Index("ix_data_keys_subject_scope", "subject_id", "scope"),
)
# One row per master-key epoch. state: current (new keys are wrapped under it), retiring
# (a rotation is moving its keys to the current epoch; its key still opens them) or
# retired (its key is destroyed). created_at: when the rotation into it began (epoch 0:
# None, the vault's first use).
key_epochs = sa.Table(
    "lifecycle_key_epochs",
    metadata,
    sa.Column("epoch", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("key_check", sa.String(64), nullable=False),
    sa.Column("fingerprint", sa.String(16), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("created_by", sa.String(200), nullable=True),
    sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("rewrapped", sa.Integer, nullable=False, server_default="0"),
)
CURRENT, RETIRING, RETIRED = "current", "retiring", "retired"
# Keys that outlive epochs (the keyed-hash and fact-digest keys), wrapped under one epoch.
vault_secrets = sa.Table(
    "lifecycle_vault_secrets",
    metadata,
    sa.Column("name", sa.String(40), primary_key=True),
    sa.Column("epoch", sa.Integer, nullable=False),
    sa.Column("wrapped", sa.LargeBinary, nullable=False),
)
# Each `lifecycle backup`, with the epoch it was taken in (status warns when the newest
# predates the current epoch: it would open no personal value).
backups = sa.Table(
    "lifecycle_backups",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("epoch", sa.Integer, nullable=False),
    sa.Column("place", sa.String(500), nullable=False),
    sa.Column("backend", sa.String(20), nullable=False),
)
# Keys an erasure decided on, written before the events that record it are saved and
# removed when the keys are destroyed after the save: a run killed in between leaves
# them here for the next run to finish (`lifecycle.services.shredding.finish_interrupted`).
doomed_keys = sa.Table(
    "lifecycle_doomed_keys",
    metadata,
    sa.Column("key_id", sa.String(32), primary_key=True),
    sa.Column("subject_id", sa.String(36), nullable=False),
    sa.Column("erased_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("erased_by", sa.String(200), nullable=False),
    sa.Column("marked_at", sa.DateTime(timezone=True), nullable=False),
)
# A fact id names one fact: the keyed digest of the first valid fact offered under it.
fact_ids = sa.Table(
    "lifecycle_fact_ids",
    metadata,
    sa.Column("fact_id", sa.String(200), primary_key=True),
    sa.Column("subject_id", sa.String(36), nullable=False),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
)
_CLAIMED_AT = sa.bindparam("now", type_=sa.DateTime(timezone=True))
_CLAIM_POSTGRES = sa.text(
    "INSERT INTO lifecycle_fact_ids (fact_id, subject_id, digest, claimed_at) "
    "SELECT e->>0, e->>1, e->>2, :now FROM json_array_elements(CAST(:rows AS json)) AS e "
    "ON CONFLICT (fact_id) DO NOTHING").bindparams(_CLAIMED_AT)
_CLAIM_SQLITE = (
    "INSERT INTO lifecycle_fact_ids (fact_id, subject_id, digest, claimed_at) "
    "VALUES (?, ?, ?, ?) ON CONFLICT (fact_id) DO NOTHING")
# PostgreSQL: a batch's claims are first offered as a binary COPY (no conflict check per
# row, no JSON to take apart: a third of the statement's server time); an id bound
# already fails the COPY, and the batch goes through `_CLAIM_POSTGRES` instead.
_COPY_CLAIMS = ("COPY lifecycle_fact_ids (fact_id, subject_id, digest, claimed_at) "
                "FROM STDIN (FORMAT BINARY)")
_CLAIM_TYPES = ("varchar", "varchar", "varchar", "timestamptz")
# New data keys, wrapped (`KeyVault._insert_pending`).
_STORE_KEYS_POSTGRES = sa.text(
    "INSERT INTO lifecycle_data_keys (key_id, subject_id, scope, wrapped, created_at, epoch) "
    "SELECT e->>0, e->>1, e->>2, decode(e->>3, 'hex'), CAST(e->>4 AS timestamptz), :epoch "
    "FROM json_array_elements(CAST(:rows AS json)) AS e")
_COPY_KEYS = ("COPY lifecycle_data_keys (key_id, subject_id, scope, wrapped, created_at, epoch) "
              "FROM STDIN (FORMAT BINARY)")
_KEY_TYPES = ("varchar", "varchar", "varchar", "bytea", "timestamptz", "int4")
_STORE_KEYS_SQLITE = (
    "INSERT INTO lifecycle_data_keys (key_id, subject_id, scope, wrapped, created_at, epoch) "
    "VALUES (?, ?, ?, ?, ?, ?)")
_MARK_DOOMED_SQLITE = (
    "INSERT INTO lifecycle_doomed_keys (key_id, subject_id, erased_at, erased_by, marked_at) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (key_id) DO UPDATE SET subject_id = excluded.subject_id, "
    "erased_at = excluded.erased_at, erased_by = excluded.erased_by, "
    "marked_at = excluded.marked_at")
_MARK_DOOMED_POSTGRES = sa.text(
    "INSERT INTO lifecycle_doomed_keys (key_id, subject_id, erased_at, erased_by, marked_at) "
    "SELECT e->>0, e->>1, CAST(e->>2 AS timestamptz), e->>3, :marked_at "
    "FROM json_array_elements(CAST(:rows AS json)) AS e ON CONFLICT (key_id) DO UPDATE SET "
    "subject_id = excluded.subject_id, erased_at = excluded.erased_at, "
    "erased_by = excluded.erased_by, marked_at = excluded.marked_at").bindparams(
    sa.bindparam("marked_at", type_=sa.DateTime(timezone=True)))
_LOCK_TO_DESTROY = sa.text(
    "SELECT key_id FROM lifecycle_data_keys WHERE key_id = ANY(CAST(:ids AS text[])) "
    "AND destroyed_at IS NULL ORDER BY ctid FOR UPDATE")
# Batches of one long sweep vacuum the vault table at most this often (the daemon's tick
# always does, so destroyed keys leave the live files within one tick).
RECLAIM_EVERY_S = 2.0
# PostgreSQL: the data-key table's pages are filled to this percentage by inserts, so a
# key re-wrapped (or destroyed) gets its new row version on the same page (a HOT update:
# no index entry, no new page), even when every key on a page is re-wrapped in one
# transaction: the new versions take as much room as the old ones. Tables made with 70
# (before rotation round 2) are moved to it; pages already filled keep their layout until
# a rotation and VACUUM leave them half empty.
FILLFACTOR = 45
# A binding whose fact never reached its subject (its run was killed before saving) is
# given up after this; younger, it may belong to a run still saving.
CLAIM_GRACE = timedelta(minutes=5)
# Tries in all of a claim or a marking that PostgreSQL undid to break a deadlock (rows are
# written in key order, but another writer's deletes may lock them in another).
_DEADLOCK_ATTEMPTS = 5


def _sealed_json(value: Any) -> bytes:
    """`json.dumps(value, separators=(",", ":"), sort_keys=True)` as UTF-8, by orjson for a
    plain value (a fifth of the time): the same value when read back, only spelt apart
    where JSON allows (non-ASCII unescaped; a float's shortest form). What orjson would
    write otherwise or refuses (NaN, a big integer, a lone surrogate, a datetime, a
    tuple) is json's, errors included."""
    kind = type(value)
    if kind is str or ((kind is dict or kind is list) and plain(value)):
        try:
            return orjson.dumps(value, option=_SEALED_ORJSON)
        except orjson.JSONEncodeError:
            pass
    return _SEALED_JSON.encode(value).encode()


# Datetimes pass to a `default` there is none of: refused, so json's encoder refuses them.
_SEALED_ORJSON = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME


def _copy(conn: sa.Connection, statement: str, types: tuple[str, ...],
          rows: Iterable[tuple[Any, ...]]) -> None:
    """Writes `rows` by one binary COPY in `conn`'s transaction (PostgreSQL)."""
    driver = conn.connection.driver_connection
    assert isinstance(driver, psycopg.Connection)
    with driver.cursor() as cursor, cursor.copy(statement) as copy:
        copy.set_types(list(types))
        for row in rows:
            copy.write_row(row)


_T = TypeVar("_T")


def _redone_on_deadlock(work: Callable[[], _T]) -> _T:
    """`work()`, a whole transaction of its own, redone if PostgreSQL undid it to break
    a deadlock (what it writes must come out the same when redone)."""
    for attempt in range(_DEADLOCK_ATTEMPTS):
        try:
            return work()
        except (psycopg.errors.DeadlockDetected, sa.exc.OperationalError) as error:
            deadlock = isinstance(error, psycopg.errors.DeadlockDetected) or isinstance(
                getattr(error, "orig", None), psycopg.errors.DeadlockDetected)
            if not deadlock or attempt == _DEADLOCK_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def _postgres_time(moment: datetime) -> str:
    """A time as PostgreSQL's timestamptz input reads it: the instant in UTC (it takes no
    offset below a second, which a datetime may have); a naive time stays naive (the
    session's zone places it, as it places the driver's parameter)."""
    return (moment if moment.tzinfo is None else moment.astimezone(UTC)).isoformat()


def _json_rows(rows: list[list[str]]) -> str:
    """`json.dumps(rows)`, by orjson when it can (the same values, a fifth of the time;
    it refuses a lone surrogate, which json.dumps escapes)."""
    try:
        return orjson.dumps(rows).decode()
    except orjson.JSONEncodeError:
        return json.dumps(rows)


class RotationOvertaken(LifecycleError):
    """Another rotation began or ended an epoch since this one looked: it begins none."""


class KeyedHash:
    """HMAC-SHA256 under one key (RFC 2104: the same digests as `hmac.digest`), its two
    padded-key blocks hashed once: OpenSSL 3's one-shot HMAC spends most of a short
    message's time setting the key up (1.4 us a digest, here 0.5 us)."""

    def __init__(self, key: bytes) -> None:
        self.key = key
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        block = key.ljust(_BLOCK, b"\0")
        self._inner = hashlib.sha256(block.translate(_INNER_PAD))
        self._outer = hashlib.sha256(block.translate(_OUTER_PAD))

    def hexdigest(self, message: bytes) -> str:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()


_BLOCK = 64  # SHA-256's block size
_INNER_PAD = bytes(x ^ 0x36 for x in range(256))
_OUTER_PAD = bytes(x ^ 0x5C for x in range(256))


@dataclass(frozen=True)
class Binding:
    subject_id: str
    digest: str
    claimed_at: datetime | None
# Unrecorded marks younger than this may belong to a run still saving its events.
DOOMED_GRACE = timedelta(minutes=30)


@dataclass(frozen=True)
class Shred:
    """Keys to destroy for one subject, once the event recording why is stored."""

    subject_id: str
    key_ids: list[str]
    at: datetime
    by: str

# One row: the key-check value of the master key the vault was first used with.
vault_meta = sa.Table(
    "lifecycle_vault_meta",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("key_check", sa.String(64), nullable=False),
    sa.Column("fingerprint", sa.String(16), nullable=False),
)


KEY_CHECK_ROW = 1
# The version of the vault's tables this code writes (every table of `metadata`, the epoch
# column, PostgreSQL's fillfactor); recorded once they are there (`migrate_vault`). A
# change to the vault's tables raises it and adds its step to `_migrate`.
VAULT_SCHEMA = 1
vault_schema = sa.Table(
    "lifecycle_vault_schema",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("version", sa.Integer, nullable=False),
)


@dataclass(frozen=True)
class RewrapBatch:
    """Keys of one range read under epoch `old` and wrapped under `new`, not yet stored
    (`KeyVault.read_rewrap`, `KeyVault.apply_rewrap`): the places [start, stop) they were
    read from, their SQLite rowids (None on PostgreSQL), ids and new wrappings."""
    old: int
    new: int
    start: int
    stop: int
    rowids: list[int] | None
    key_ids: list[str]
    wrapped: list[bytes]


def as_utc(moment: datetime | None) -> datetime | None:
    """A stored time, aware: SQLite gives back the UTC times it was given without zone."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def in_utc(moment: datetime) -> datetime:
    """A time to store, in UTC: SQLite keeps a time's wall clock and drops its offset, so a
    fact time at +01:00 (an erasure's) would read back an hour off."""
    return moment.astimezone(UTC) if moment.tzinfo is not None else moment


@dataclass(frozen=True)
class EpochRow:
    epoch: int
    key_check: str
    state: str
    created_at: datetime | None
    retired_at: datetime | None
    created_by: str | None = None
    rewrapped: int = 0

    @property
    def fingerprint(self) -> str:
        return key_fingerprint(self.key_check)


@dataclass(frozen=True)
class VaultKeyState:
    """What a vault says about its master key: the recorded key-check value (None: none
    recorded, as in a store written before checks were), whether it holds any data key,
    and its epochs (none recorded before epochs were)."""

    key_check: str | None
    holds_keys: bool
    epochs: tuple[EpochRow, ...] = ()

    def epoch_of(self, key_check: str) -> EpochRow | None:
        return next((e for e in self.epochs if e.key_check == key_check), None)


def _epoch_rows(conn: sa.Connection) -> tuple[EpochRow, ...]:
    rows = conn.execute(sa.select(key_epochs).order_by(key_epochs.c.epoch)).all()
    return tuple(EpochRow(r.epoch, r.key_check, r.state, as_utc(r.created_at),
                          as_utc(r.retired_at), r.created_by, r.rewrapped) for r in rows)


def read_key_state(settings: Settings) -> VaultKeyState:
    """The vault's key state, read without writing: a vault file or table that does not
    exist yet reads as empty."""
    path = settings.vault_path
    if path is not None and not path.exists():
        return VaultKeyState(None, False)
    # SQLite: wait as every store connection waits (a backup holds the vault still).
    engine = sa.create_engine(settings.vault_url, connect_args=(
        {"timeout": 30} if settings.vault_path is not None else {}))
    try:
        with engine.connect() as conn:
            inspector = sa.inspect(conn)
            check = None
            if inspector.has_table(vault_meta.name):
                check = conn.execute(sa.select(vault_meta.c.key_check)
                                     .where(vault_meta.c.id == KEY_CHECK_ROW)).scalar()
            holds = inspector.has_table(data_keys.name) and conn.execute(
                sa.select(data_keys.c.key_id).limit(1)).first() is not None
            epochs = _epoch_rows(conn) if inspector.has_table(key_epochs.name) else ()
        return VaultKeyState(check, holds, epochs)
    finally:
        engine.dispose()


def open_vault(settings: Settings) -> KeyVault:
    """The key vault, opened only with the master key it was first used with.

    Before anything is written, the vault's recorded key check is read: a vault that holds
    a check or any data key, opened without a master key or with another one, is a
    ConfigurationError naming fingerprints only, and no key file, table or row is written.
    Only an empty vault (first use) gets a new master key (file mode 0600). A vault written
    before checks were recorded gets the check of the key it is opened with, once that key
    is shown to unwrap a live data key. Callers hold the schema lock, so processes that
    start together on a fresh store agree on one key.

    The key of the current epoch opens the vault, and so does the key of an epoch a
    rotation is retiring (the rotation's new key is then read from the key file or the
    file beside it); the key of a retired epoch is refused, naming the epoch."""
    from lifecycle.store.epoch_keys import find_epoch_key

    state = read_key_state(settings)
    recorded = key_fingerprint(state.key_check) if state.key_check else None
    given = given_master_key(settings)
    if given is None:
        if state.key_check is not None or state.holds_keys:
            used = (f"was first used with the master key of fingerprint {recorded}"
                    if recorded else "holds data keys")
            if state.epochs and len(state.epochs) > 1:
                used = f"uses the master key of fingerprint {recorded}"
            raise ConfigurationError(
                f"{settings.vault_place}: {used}, but no master key is given "
                f"(set {MASTER_KEY_ENV} or restore the key file {settings.master_key_file}); "
                "nothing was written")
        key, source = create_master_key(settings), f"master key file {settings.master_key_file}"
    else:
        key, source = given
    check = key_check_value(key)
    mismatch = ConfigurationError(
        f"{settings.vault_place}: master key mismatch: the vault's key has fingerprint "
        f"{recorded or '(none recorded)'}, the key from {source} has fingerprint "
        f"{key_fingerprint(check)}; nothing was written")
    epoch = 0
    if state.key_check is not None and state.key_check != check:
        row = state.epoch_of(check)
        if row is None:
            raise mismatch
        if row.state == RETIRED:
            retired = row.retired_at.isoformat() if row.retired_at else "(unknown)"
            raise ConfigurationError(
                f"{settings.vault_place}: the key from {source} (fingerprint "
                f"{row.fingerprint}) is the key of master-key epoch {row.epoch}, retired by "
                f"a key rotation at {retired}: it opens nothing now. Retire it and give the "
                f"current key (fingerprint {recorded}), kept in the key file "
                f"{settings.master_key_file}; nothing was written")
        epoch = row.epoch
    elif state.key_check is not None:
        row = state.epoch_of(check)
        epoch = row.epoch if row is not None else 0
    if settings.vault_path is not None:
        settings.ensure_home()
    vault = KeyVault(create_vault_engine(settings.vault_url), key, epoch=epoch,
                     find_key=lambda wanted: find_epoch_key(settings, wanted))
    try:
        if state.key_check is None:
            if state.holds_keys and not vault.unwraps_a_live_key():
                raise mismatch
            if vault.record_key_check(check) != check:
                raise mismatch  # another process recorded another key's check first
        vault.record_first_epoch()
        vault.load_secrets()
    except BaseException:
        vault.engine.dispose()
        raise
    return vault


def create_vault_engine(url: str) -> sa.Engine:
    # secure_delete zeroes freed pages; a rollback journal (not WAL) keeps no old page copy.
    engine = create_store_engine(url, metadata, ("secure_delete=ON", "journal_mode=DELETE"),
                                 create_tables=False)
    try:
        if schema_version(engine) != VAULT_SCHEMA:
            migrate_vault(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine


def schema_version(engine: sa.Engine) -> int | None:
    """The vault schema version recorded in the vault (None: none recorded, or no vault)."""
    try:
        with engine.connect() as conn:
            found = conn.execute(sa.select(vault_schema.c.version)
                                 .where(vault_schema.c.id == 1)).scalar()
    except sa.exc.DBAPIError:  # no marker table: a new vault, or one older than it
        return None
    return None if found is None else int(found)


def migrate_vault(engine: sa.Engine) -> None:
    """Creates the vault's tables and brings an older vault's up to `VAULT_SCHEMA`, then
    records that version; once per vault (later opens read the version only). Under a
    lock held to the commit (SQLite's write lock, taken first; a PostgreSQL advisory
    lock), so processes that open an older vault at once migrate it in turn: the second
    finds the version recorded and does nothing."""
    if engine.dialect.name == "sqlite":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                _migrate(conn)
            except BaseException:
                conn.exec_driver_sql("ROLLBACK")
                raise
            conn.exec_driver_sql("COMMIT")
        return
    with engine.begin() as conn:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"),
                     {"key": advisory_key("vault-schema")})
        _migrate(conn)


def _migrate(conn: sa.Connection) -> None:
    metadata.create_all(conn)  # tables (and the marker table) a vault lacks
    if conn.execute(sa.select(vault_schema.c.version)
                    .where(vault_schema.c.id == 1)).scalar() == VAULT_SCHEMA:
        return  # another process migrated it while this one waited for the lock
    columns = {c["name"] for c in sa.inspect(conn).get_columns(data_keys.name)}
    if "epoch" not in columns:  # a vault written before epochs: every key is epoch 0
        conn.execute(sa.text(f"ALTER TABLE {data_keys.name} "
                             "ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0"))
    if conn.dialect.name == "postgresql" and conn.execute(sa.text(
            "SELECT reloptions IS NULL OR reloptions = '{fillfactor=70}' FROM pg_class "
            f"WHERE oid = '{data_keys.name}'::regclass")).scalar():
        # Room on each page, so a re-wrap or a destroy updates in place (HOT): no new
        # index entries, and VACUUM has less to do (see FILLFACTOR).
        conn.execute(sa.text(
            f"ALTER TABLE {data_keys.name} SET (fillfactor = {FILLFACTOR})"))
    conn.execute(vault_schema.delete())
    conn.execute(vault_schema.insert().values(id=1, version=VAULT_SCHEMA))


def key_of(sealed: str) -> str:
    """The id of the data key a sealed value (`KeyVault.seal`) was sealed with."""
    return sealed.partition(".")[0]


class KeyVault:
    """Creates, opens and destroys data keys; seals and opens personal values with them."""

    def __init__(self, engine: sa.Engine, master_key: bytes, epoch: int = 0,
                 find_key: Callable[[str], bytes | None] | None = None) -> None:
        self.engine = engine
        self._reads = reads_of(engine)
        self.epoch = epoch  # the epoch of the key this vault was opened with
        self._epoch_keys: dict[int, bytes] = {epoch: master_key}
        self._wrappers: dict[int, AESGCM] = {
            epoch: AESGCM(derive_key(master_key, "key-wrapping"))}
        self._find_key = find_key
        self._email_hasher = KeyedHash(derive_key(master_key, "suppression-hash"))
        self._fact_hasher = KeyedHash(derive_key(master_key, "fact-digest"))
        self._secrets: dict[str, bytes] = {}  # pending keys' raw secrets, until flushed
        self._retired: set[int] = set()  # epochs whose key is destroyed: their keys too
        self._reclaimed_at = -RECLAIM_EVERY_S  # monotonic time of the last VACUUM
        self._active: dict[tuple[str, str], str] = {}
        self._slot_of: dict[str, tuple[str, str]] = {}  # key id -> its (subject, scope)
        self._ciphers: OrderedDict[str, AESGCM] = OrderedDict()
        self._destroyed: set[str] = set()
        # A long-running reader (the service) asks the vault on every open whether another
        # process destroyed the key since, so no cache outlives an erasure.
        self.check_destroyed_on_open = False
        self._pending: list[dict[str, Any]] = []
        self._preloaded: set[str] = set()  # subjects whose live keys are all in _active

    # -- keys ---------------------------------------------------------------------

    def preload(self, subject_ids: Iterable[str]) -> None:
        """Loads the live keys of many subjects in one query (ingest batches)."""
        wanted = [s for s in set(subject_ids) if s not in self._preloaded]
        with self.engine.connect() as conn:
            for chunk_start in range(0, len(wanted), 500):
                chunk = wanted[chunk_start:chunk_start + 500]
                rows = conn.execute(
                    sa.select(data_keys.c.key_id, data_keys.c.subject_id, data_keys.c.scope,
                              data_keys.c.wrapped, data_keys.c.epoch)
                    .where(data_keys.c.subject_id.in_(chunk))
                    .where(data_keys.c.destroyed_at.is_(None))
                    .where(data_keys.c.key_id.not_in(sa.select(doomed_keys.c.key_id)))
                    .order_by(data_keys.c.created_at)
                )
                for key_id, subject_id, scope, wrapped, epoch in rows:
                    if epoch in self._retired:
                        continue  # opens nothing (a restored backup of a retired epoch)
                    self._remember(subject_id, scope, key_id)
                    self._ciphers[key_id] = AESGCM(self._unwrap(key_id, wrapped, epoch))
            self._preloaded.update(wanted)
        self._trim_ciphers()

    def forget_loaded(self) -> None:
        """Drops what preload learnt, so keys another writer created are read again."""
        self._preloaded.clear()
        self._active.clear()
        self._slot_of.clear()
        # Unwrapped keys too (read again when needed), except those not yet stored.
        pending = {row["key_id"] for row in self._pending}
        self._ciphers = OrderedDict((k, c) for k, c in self._ciphers.items() if k in pending)

    def key_for(self, subject_id: str, scope: str, now: datetime) -> str:
        """The live key for a subject's scope, created (pending until flush) if none."""
        key_id = self._active.get((subject_id, scope))
        if key_id is None and subject_id not in self._preloaded:
            self.preload([subject_id])
            key_id = self._active.get((subject_id, scope))
        if key_id is None:
            key_id = uuid.uuid4().hex
            secret = AESGCM.generate_key(bit_length=256)
            # Wrapped when stored, under the epoch current then (see the module).
            self._pending.append({"key_id": key_id, "subject_id": subject_id, "scope": scope,
                                  "created_at": now})
            self._secrets[key_id] = secret
            self._remember(subject_id, scope, key_id)
            self._ciphers[key_id] = AESGCM(secret)
        return key_id

    def retire(self, key_ids: Iterable[str]) -> None:
        """Stops handing out keys about to be destroyed, so new data gets a new key."""
        for key_id in key_ids:
            slot = self._slot_of.pop(key_id, None)
            if slot is not None and self._active.get(slot) == key_id:
                del self._active[slot]

    def flush(self) -> None:
        """Stores keys created since the last flush (before any event that uses them)."""
        if not self._pending:
            return
        with self.engine.begin() as conn:
            epoch = self._lock_current_epoch(conn)
            self._insert_pending(conn, epoch)
        self._pending = []
        self._secrets.clear()

    def _insert_pending(self, conn: sa.Connection, epoch: int) -> None:
        """The pending keys' rows, wrapped under `epoch`, handed to the driver as they are
        (the table's insert through SQLAlchemy processed every value of every row in
        Python: a third of a flush): on PostgreSQL one binary COPY (exact instants at any
        offset; a naive time, which it cannot place in the session's zone, goes as one
        JSON array, as before), on SQLite the driver's executemany, times in
        SQLAlchemy's own text for them."""
        secrets = self._secrets
        if conn.dialect.name == "postgresql" and all(
                row["created_at"].tzinfo is not None for row in self._pending):
            _copy(conn, _COPY_KEYS, _KEY_TYPES, (
                (row["key_id"], row["subject_id"], row["scope"],
                 self._wrap(row["key_id"], secrets[row["key_id"]], epoch),
                 row["created_at"], epoch) for row in self._pending))
            return
        if conn.dialect.name == "postgresql":
            # The instant in UTC (a timestamptz keeps only that): PostgreSQL reads no offset
            # below a second, which a datetime may have. A naive time stays naive (the
            # session's zone places it, as for the driver's own parameter).
            last: Any = None
            spelt_pg = ""
            texts = []
            for row in self._pending:
                created_at = row["created_at"]
                if created_at is not last:  # an ingest's keys share its `now`: spelt once
                    last = created_at
                    spelt_pg = (created_at if created_at.tzinfo is None
                                else created_at.astimezone(UTC)).isoformat()
                texts.append([row["key_id"], row["subject_id"], row["scope"],
                              self._wrap(row["key_id"], secrets[row["key_id"]], epoch).hex(),
                              spelt_pg])
            conn.execute(_STORE_KEYS_POSTGRES, {"epoch": epoch, "rows": _json_rows(texts)})
            return
        column_type = data_keys.c.created_at.type
        spelt = column_type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
        # Spelt once per run of keys made at the same time object (an ingest's keys share
        # its `now`). Not a dict of times: datetimes equal as instants at other offsets
        # are spelt apart (SQLite keeps a time's wall clock).
        last = None
        text: Any = None
        rows = []
        for row in self._pending:
            created_at = row["created_at"]
            if created_at is not last:
                last = created_at
                text = spelt(created_at) if spelt else created_at
            rows.append((row["key_id"], row["subject_id"], row["scope"],
                         self._wrap(row["key_id"], secrets[row["key_id"]], epoch),
                         text, epoch))
        conn.exec_driver_sql(_STORE_KEYS_SQLITE, rows)

    def destroy(self, key_ids: Iterable[str], at: datetime, by: str) -> int:
        """Destroys keys for good; idempotent. Returns how many were live."""
        return self.destroy_all([(list(key_ids), at, by)])

    def mark_doomed(self, shreds: Iterable[Shred], now: datetime) -> None:
        """Notes the keys an erasure decided on, before its events are saved."""
        rows: dict[str, dict[str, Any]] = {
            key_id: {"key_id": key_id, "subject_id": s.subject_id, "erased_at": in_utc(s.at),
                     "erased_by": s.by[:200], "marked_at": in_utc(now)}
            for s in shreds for key_id in s.key_ids}
        if not rows:
            return
        _redone_on_deadlock(lambda: self._mark(rows, now))
        self.retire(rows)

    def _mark(self, rows: dict[str, dict[str, Any]], now: datetime) -> None:
        # In key order: two runs marking the same keys each in its own order each waited
        # for a key the other held (PostgreSQL: a deadlock).
        ordered = [rows[key_id] for key_id in sorted(rows)]
        with self.engine.begin() as conn:
            if conn.dialect.name == "sqlite":
                # A mark left for a key is replaced: one upsert through the driver, times
                # in SQLAlchemy's own text for them (its insert spent more per row in
                # Python than SQLite did).
                spell = doomed_keys.c.marked_at.type.dialect_impl(conn.dialect) \
                    .bind_processor(conn.dialect)
                assert spell is not None
                conn.exec_driver_sql(_MARK_DOOMED_SQLITE, [
                    (r["key_id"], r["subject_id"], spell(r["erased_at"]), r["erased_by"],
                     spell(r["marked_at"])) for r in ordered])
            else:  # one upsert whatever the count, its rows one JSON array (as claims)
                marks = [[r["key_id"], r["subject_id"], _postgres_time(r["erased_at"]),
                          r["erased_by"]] for r in ordered]
                conn.execute(_MARK_DOOMED_POSTGRES, {"marked_at": in_utc(now),
                                                     "rows": _json_rows(marks)})

    def doomed(self) -> list[Shred]:
        """Marks left by runs that did not get to destroy their keys, oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(doomed_keys).order_by(doomed_keys.c.marked_at)).all()
        return [Shred(r.subject_id, [r.key_id], as_utc(r.erased_at) or r.erased_at, r.erased_by)
                for r in rows]

    def drop_marks(self, key_ids: Iterable[str], older_than: datetime | None = None) -> None:
        """Forgets marks whose erasure was never recorded (the run died before saving)."""
        ids = list(key_ids)
        with self.engine.begin() as conn:
            for start in range(0, len(ids), 500):
                query = doomed_keys.delete().where(
                    doomed_keys.c.key_id.in_(ids[start:start + 500]))
                if older_than is not None:
                    query = query.where(doomed_keys.c.marked_at < in_utc(older_than))
                conn.execute(query)

    def destroy_all(self, shreds: Iterable[tuple[list[str], datetime, str]]) -> int:
        """Destroys each group of keys (at, by) in one transaction, and their marks;
        idempotent. Returns how many were live."""
        # One statement per (at, by) and 500 keys, not per group: a sweep's batch is
        # hundreds of one-key groups sharing a rule.
        # A key named twice keeps its first (at, by), as if destroyed group by group.
        merged: dict[tuple[datetime, str], dict[str, None]] = {}
        seen: set[str] = set()
        for ids, at, by in shreds:
            fresh = [key_id for key_id in ids if key_id not in seen]
            if fresh:
                seen.update(fresh)
                merged.setdefault((at, by), {}).update(dict.fromkeys(fresh))
        groups = [(list(ids), at, by) for (at, by), ids in merged.items()]
        if not groups:
            return 0
        destroyed = 0
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # Every key locked first, in the table's order: a rotation's re-wrap batch
                # locks its keys in that order too, so the two never wait for each other
                # in a cycle (a deadlock, which PostgreSQL breaks by failing the erasure).
                conn.execute(_LOCK_TO_DESTROY, {"ids": list(seen)})
            for ids, at, by in groups:
                for start in range(0, len(ids), 500):
                    chunk = ids[start:start + 500]
                    destroyed += conn.execute(
                        data_keys.update()
                        .where(data_keys.c.key_id.in_(chunk))
                        .where(data_keys.c.destroyed_at.is_(None))
                        .values(wrapped=None, destroyed_at=in_utc(at), destroyed_by=by)
                    ).rowcount
                    conn.execute(doomed_keys.delete().where(doomed_keys.c.key_id.in_(chunk)))
        for ids, _, _ in groups:
            self.retire(ids)
            for key_id in ids:
                self._ciphers.pop(key_id, None)
                self._destroyed.add(key_id)
        return destroyed

    def destroyed(self, key_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """When and why each of these keys was destroyed (absent: never existed)."""
        ids = list(set(key_ids))
        if not ids:
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(data_keys.c.key_id, data_keys.c.destroyed_at,
                                          data_keys.c.destroyed_by)
                                .where(data_keys.c.key_id.in_(ids)))
            return {key_id: {"destroyed_at": (as_utc(at) or at).isoformat() if at else None,
                             "destroyed_by": by} for key_id, at, by in rows}

    def live_key_ids(self, key_ids: Iterable[str]) -> set[str]:
        ids = list(set(key_ids))
        if not ids:
            return set()
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(data_keys.c.key_id)
                                .where(data_keys.c.key_id.in_(ids))
                                .where(data_keys.c.destroyed_at.is_(None)))
            return {row[0] for row in rows}

    def _remember(self, subject_id: str, scope: str, key_id: str) -> None:
        self._active[(subject_id, scope)] = key_id
        self._slot_of[key_id] = (subject_id, scope)

    # -- epochs ---------------------------------------------------------------------

    def epochs(self) -> tuple[EpochRow, ...]:
        """Every master-key epoch, oldest first (none before the vault's first use)."""
        with self.engine.connect() as conn:
            return _epoch_rows(conn)

    def epoch_key(self, epoch: int, key_check: str | None = None) -> bytes:
        """The master key of `epoch`: the one this vault was opened with, or one found by
        its check value (the key file, or the rotation's new key beside it)."""
        key = self._epoch_keys.get(epoch)
        if key is not None:
            return key
        if key_check is None:
            with self.engine.connect() as conn:
                key_check = conn.execute(sa.select(key_epochs.c.key_check)
                                         .where(key_epochs.c.epoch == epoch)).scalar()
        found = self._find_key(key_check) if self._find_key and key_check else None
        if found is None or key_check_value(found) != key_check:
            fingerprint = key_fingerprint(key_check) if key_check else "(none recorded)"
            raise ConfigurationError(
                f"the key of master-key epoch {epoch} (fingerprint {fingerprint}) is "
                "neither the key given nor in the key file or the rotation's file beside it")
        self._epoch_keys[epoch] = found
        return found

    def _lock_current_epoch(self, conn: sa.Connection) -> int:
        """The current epoch, locked against a rotation's switch until `conn` commits."""
        if conn.dialect.name == "sqlite":  # take the write lock first: no read-then-write race
            conn.execute(key_epochs.update().where(key_epochs.c.epoch == -1)
                         .values(state=key_epochs.c.state))
        query = sa.select(key_epochs.c.epoch, key_epochs.c.key_check).where(
            key_epochs.c.state == CURRENT)
        if conn.dialect.name == "postgresql":
            query = query.with_for_update(read=True)
        for _ in range(20):
            row = conn.execute(query).first()
            if row is not None:
                self.epoch_key(row.epoch, row.key_check)
                return int(row.epoch)
            if conn.execute(sa.select(key_epochs.c.epoch).limit(1)).first() is None:
                return self.epoch  # no epochs recorded (a vault not opened by open_vault)
            # PostgreSQL: a rotation switched the current epoch while this statement
            # waited for its row, and the new one is not in the statement's snapshot; a
            # new statement sees it (this process's own epoch may be the retiring one).
        raise RotationOvertaken("no current master-key epoch could be read; run again")

    def record_first_epoch(self) -> None:
        """Records epoch 0 (the key whose check the vault holds) unless epochs are recorded."""
        try:
            with self.engine.begin() as conn:
                if conn.execute(sa.select(key_epochs.c.epoch).limit(1)).first() is not None:
                    return
                check = conn.execute(sa.select(vault_meta.c.key_check)
                                     .where(vault_meta.c.id == KEY_CHECK_ROW)).scalar()
                if check is None:
                    return
                conn.execute(key_epochs.insert().values(
                    epoch=0, key_check=check, fingerprint=key_fingerprint(check),
                    state=CURRENT, rewrapped=0))
        except sa.exc.IntegrityError:
            pass  # recorded by another process meanwhile

    def load_secrets(self) -> None:
        """The keyed-hash and fact-digest keys, once a rotation has stored them wrapped;
        and which epochs are retired."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(vault_secrets)).all()
            self._retired = set(conn.execute(sa.select(key_epochs.c.epoch).where(
                key_epochs.c.state == RETIRED)).scalars())
        for row in rows:
            secret = self._unwrap(f"secret:{row.name}", row.wrapped, row.epoch)
            if row.name == "suppression-hash":
                self._hash_key = secret
            elif row.name == "fact-digest":
                self._digest_key = secret

    @property
    def _hash_key(self) -> bytes:
        return self._email_hasher.key

    @_hash_key.setter
    def _hash_key(self, key: bytes) -> None:
        self._email_hasher = KeyedHash(key)

    @property
    def _digest_key(self) -> bytes:
        return self._fact_hasher.key

    @_digest_key.setter
    def _digest_key(self, key: bytes) -> None:
        self._fact_hasher = KeyedHash(key)

    def begin_epoch(self, new_key: bytes, now: datetime, by: str,
                    after: int | None = None) -> tuple[int, int]:
        """Makes `new_key` the key of a new current epoch and the current one retiring, in
        one transaction (new data keys are wrapped under the new epoch from then on).
        `after`: the epoch the caller saw current; if another is current now, or a
        rotation is under way, nothing is done (RotationOvertaken). Returns (old epoch,
        new epoch)."""
        check = key_check_value(new_key)
        with self.engine.begin() as conn:
            if conn.dialect.name == "sqlite":  # the write lock before reading
                conn.execute(key_epochs.update().where(sa.false()).values(state=CURRENT))
            query = sa.select(key_epochs).where(key_epochs.c.state == CURRENT)
            if conn.dialect.name == "postgresql":
                query = query.with_for_update()
            current = conn.execute(query).first()
            if current is None:
                # PostgreSQL: another rotation switched the epoch while this statement
                # waited for its row (the new row is not in the statement's snapshot).
                raise RotationOvertaken("another rotation began a new epoch meanwhile")
            if conn.execute(sa.select(key_epochs.c.epoch)
                            .where(key_epochs.c.state == RETIRING)).first() is not None:
                raise RotationOvertaken("a key rotation is already under way")
            if after is not None and int(current.epoch) != after:
                raise RotationOvertaken(
                    f"master-key epoch {current.epoch} began since this rotation saw "
                    f"epoch {after} current")
            old, new = int(current.epoch), int(current.epoch) + 1
            self._epoch_keys[new] = new_key
            conn.execute(key_epochs.update().where(key_epochs.c.epoch == old)
                         .values(state=RETIRING))
            conn.execute(key_epochs.insert().values(
                epoch=new, key_check=check, fingerprint=key_fingerprint(check),
                state=CURRENT, created_at=now, created_by=by[:200], rewrapped=0))
            conn.execute(vault_meta.update().where(vault_meta.c.id == KEY_CHECK_ROW)
                         .values(key_check=check, fingerprint=key_fingerprint(check)))
            conn.execute(vault_secrets.delete())
            conn.execute(vault_secrets.insert(), [
                {"name": name, "epoch": new,
                 "wrapped": self._wrap(f"secret:{name}", secret, new)}
                for name, secret in (("suppression-hash", self._hash_key),
                                     ("fact-digest", self._digest_key))])
        return old, new

    @property
    def overlaps_reads(self) -> bool:
        """Whether reading a range of keys while another connection commits a batch costs
        neither a wait: on PostgreSQL (MVCC); not on SQLite, whose rollback journal makes
        a commit wait for every reader and a new reader for the commit."""
        return self.engine.dialect.name == "postgresql"

    def rewrap_extent(self, epoch: int) -> tuple[int, int]:
        """Where the live keys of `epoch` lie, for `rewrap_range`: (the end of the table's
        places, how many live keys `epoch` holds). Places follow the table's storage
        order: SQLite's rowids, PostgreSQL's pages, so ranges of them are read front to
        back and two ranges share no row."""
        with self.engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                end = conn.execute(sa.text(
                    "SELECT pg_relation_size(:t) / current_setting('block_size')::int"),
                    {"t": data_keys.name}).scalar_one()
            else:
                end = conn.execute(sa.text(
                    f"SELECT coalesce(max(rowid), 0) + 1 FROM {data_keys.name}")).scalar_one()
        return int(end), self.live_keys_under(epoch)

    def rewrap_range(self, old: int, new: int, start: int, stop: int,
                     limit: int | None = None) -> int:
        """Re-wraps the live keys of epoch `old` at the places [start, stop) (see
        `rewrap_extent`) under `new`, at most `limit` keys per transaction (a range denser
        than its share holds the writer's lock no longer); a key destroyed meanwhile stays
        destroyed. Returns how many were re-wrapped. Safe to run in several threads at
        once on disjoint ranges (each takes its own connection). `read_rewrap` then
        `apply_rewrap` of each batch it returns (a caller can overlap the two)."""
        return sum(self.apply_rewrap(batch)
                   for batch in self.read_rewrap(old, new, start, stop, limit))

    def read_rewrap(self, old: int, new: int, start: int, stop: int,
                    limit: int | None = None) -> list[RewrapBatch]:
        """The live keys of epoch `old` at the places [start, stop), read (no lock or
        snapshot kept) and wrapped under `new`, in batches of at most `limit` keys for
        `apply_rewrap`. Writes nothing. On the driver's own connection: a million keys
        spend their time in AES and the database, not in building statements."""
        sqlite = self.engine.dialect.name == "sqlite"
        with self.engine.connect() as conn:
            raw: Any = conn.connection.driver_connection
            cursor = raw.cursor()
            if sqlite:
                cursor.execute(
                    f"SELECT rowid, key_id, wrapped FROM {data_keys.name} WHERE rowid >= ? "
                    "AND rowid < ? AND epoch = ? AND wrapped IS NOT NULL", (start, stop, old))
            else:  # a range of pages: a TID range scan; binary rows (no hex to parse)
                cursor.execute(
                    f"SELECT NULL, d.key_id, d.wrapped FROM {data_keys.name} d "
                    "WHERE d.ctid >= format('(%%s,0)', %s::bigint)::tid "
                    "AND d.ctid < format('(%%s,0)', %s::bigint)::tid "
                    "AND d.epoch = %s AND d.wrapped IS NOT NULL", (start, stop, old),
                    binary=True)
            found = cursor.fetchall()
            cursor.close()
            raw.rollback()  # no lock or snapshot held while wrapping
        unwrap, wrap = self._wrapper(old).decrypt, self._wrapper(new).encrypt
        urandom, cut = os.urandom, NONCE_BYTES
        step = limit or len(found) or 1
        batches: list[RewrapBatch] = []
        for first in range(0, len(found), step):
            rows = found[first:first + step]
            wrapped: list[bytes] = []
            append = wrapped.append
            nonces = urandom(cut * len(rows))  # one call: a fresh nonce per key
            at = 0
            try:
                for _, key_id, sealed in rows:
                    aad = key_id.encode()
                    secret = unwrap(sealed[:cut], sealed[cut:], aad)
                    nonce = nonces[at:at + cut]
                    at += cut
                    append(nonce + wrap(nonce, secret, aad))
            except InvalidTag:
                raise ConfigurationError(
                    f"a data key of epoch {old} cannot be unwrapped with that epoch's key"
                ) from None
            batches.append(RewrapBatch(old, new, start, stop,
                                       [r[0] for r in rows] if sqlite else None,
                                       [r[1] for r in rows], wrapped))
        return batches

    def apply_rewrap(self, batch: RewrapBatch) -> int:
        """Stores one batch of `read_rewrap` in one transaction: each key still live and
        still under the old epoch takes its new wrapping (a key destroyed or re-wrapped
        since it was read is left as it is). Returns how many were re-wrapped."""
        if not batch.key_ids:
            return 0
        old, new, wrapped = batch.old, batch.new, batch.wrapped
        width = len(wrapped[0])
        same_width = all(len(w) == width for w in wrapped)
        with self.engine.connect() as conn:
            raw: Any = conn.connection.driver_connection
            cursor = raw.cursor()
            with conn.begin():
                if batch.rowids is not None and same_width:
                    # One statement: the wrapped keys as one blob, cut by position in
                    # SQLite (no Python call per row).
                    cursor.execute(
                        f"UPDATE {data_keys.name} SET epoch = ?, "
                        "wrapped = substr(?, j.key * ? + 1, ?) FROM json_each(?) AS j "
                        f"WHERE {data_keys.name}.rowid = j.value "
                        f"AND {data_keys.name}.epoch = ? "
                        f"AND {data_keys.name}.destroyed_at IS NULL",
                        (new, b"".join(wrapped), width, width, json.dumps(batch.rowids), old))
                elif batch.rowids is not None:
                    cursor.executemany(
                        f"UPDATE {data_keys.name} SET wrapped = ?, epoch = ? "
                        "WHERE rowid = ? AND epoch = ? AND destroyed_at IS NULL",
                        [(w, new, r, old) for w, r in zip(wrapped, batch.rowids, strict=True)])
                else:
                    # The keys' ids as one string and the wrapped keys as one blob, cut
                    # in the server: sending arrays cost psycopg a Python call per
                    # element. The keys hashed in memory, not spilled to a temporary file.
                    cursor.execute("SET LOCAL work_mem = '64MB'")
                    ids = " ".join(batch.key_ids)
                    # string_to_array('', ' ') is empty: a lone key of id '' goes per key.
                    if same_width and ids and ids.count(" ") == len(batch.key_ids) - 1:
                        cursor.execute(
                            f"UPDATE {data_keys.name} AS d SET epoch = %s, "
                            "wrapped = substring(%b::bytea FROM (u.i::int - 1) * %s + 1 FOR %s) "
                            "FROM unnest(string_to_array(%s::text, ' ')) "
                            "WITH ORDINALITY AS u(k, i) "
                            "WHERE d.key_id = u.k AND d.epoch = %s AND d.destroyed_at IS NULL "
                            "AND d.ctid >= format('(%%s,0)', %s::bigint)::tid "
                            "AND d.ctid < format('(%%s,0)', %s::bigint)::tid",
                            (new, b"".join(wrapped), width, width, ids, old, batch.start,
                             batch.stop))
                    else:
                        cursor.execute(
                            f"UPDATE {data_keys.name} AS d SET wrapped = u.w, epoch = %s "
                            "FROM unnest(%b::text[], %b::bytea[]) AS u(k, w) "
                            "WHERE d.key_id = u.k AND d.epoch = %s AND d.destroyed_at IS NULL "
                            "AND d.ctid >= format('(%%s,0)', %s::bigint)::tid "
                            "AND d.ctid < format('(%%s,0)', %s::bigint)::tid",
                            (new, batch.key_ids, wrapped, old, batch.start, batch.stop))
                count = int(cursor.rowcount)
                conn.execute(key_epochs.update().where(key_epochs.c.epoch == new)
                             .values(rewrapped=key_epochs.c.rewrapped + count))
            cursor.close()
        return count

    def live_keys_under(self, epoch: int) -> int:
        """How many live data keys are wrapped under `epoch`."""
        with self.engine.connect() as conn:
            return int(conn.execute(
                sa.select(sa.func.count()).select_from(data_keys)
                .where(data_keys.c.epoch == epoch)
                .where(data_keys.c.wrapped.is_not(None))).scalar_one())

    def retire_epoch(self, epoch: int, now: datetime) -> bool:
        """Marks a retiring epoch retired (its key destroyed); True only the first time."""
        with self.engine.begin() as conn:
            return bool(conn.execute(
                key_epochs.update().where(key_epochs.c.epoch == epoch)
                .where(key_epochs.c.state == RETIRING)
                .values(state=RETIRED, retired_at=now)).rowcount)

    def forget_epoch_key(self, epoch: int) -> None:
        """Drops a retired epoch's key from this process."""
        self._epoch_keys.pop(epoch, None)
        self._wrappers.pop(epoch, None)

    def reclaim(self, force: bool = False) -> None:
        """PostgreSQL: VACUUM the vault's data-key table (outside any transaction), so its
        live files stop holding the rows of destroyed or re-wrapped keys. SQLite needs
        nothing: secure_delete zeroes freed space as it is freed. A long sweep's batches
        vacuum at most once per RECLAIM_EVERY_S; `force` (a daemon tick, a rotation's end)
        always does."""
        if self.engine.dialect.name != "postgresql":
            return
        if not force and time.monotonic() - self._reclaimed_at < RECLAIM_EVERY_S:
            return
        self._reclaimed_at = time.monotonic()
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(f"VACUUM {data_keys.name}")

    def first_key_at(self) -> datetime | None:
        """When the first data key was created (epoch 0 has no recorded start)."""
        first = sa.func.min(data_keys.c.created_at, type_=data_keys.c.created_at.type)
        with self.engine.connect() as conn:
            return as_utc(conn.execute(sa.select(first)).scalar())

    def newest_backup(self) -> tuple[datetime, int, str] | None:
        """When the newest `lifecycle backup` was taken, its epoch and where it went."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(backups).order_by(backups.c.taken_at.desc())
                               .limit(1)).first()
        if row is None:
            return None
        taken = as_utc(row.taken_at)
        assert taken is not None
        return taken, int(row.epoch), str(row.place)

    def unsealed_destructions(self) -> tuple[int, datetime | None]:
        """How many destroyed keys were last wrapped under an epoch that is not retired
        (a copy taken before they were destroyed still opens them with a live key), and
        the oldest of their destruction times (the erasures' times)."""
        oldest_at = sa.func.min(data_keys.c.destroyed_at, type_=data_keys.c.destroyed_at.type)
        retired = sa.select(key_epochs.c.epoch).where(key_epochs.c.state == RETIRED)
        query = (sa.select(sa.func.count(), oldest_at)
                 .where(data_keys.c.destroyed_at.is_not(None))
                 .where(data_keys.c.epoch.not_in(retired)))
        with self.engine.connect() as conn:
            count, oldest = conn.execute(query).one()
        return int(count), as_utc(oldest)

    def epochs_of(self, key_ids: Iterable[str]) -> dict[str, int]:
        """The epoch each key was last wrapped under (for a destroyed key: when destroyed)."""
        ids = list(set(key_ids))
        found: dict[str, int] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(ids), 500):
                found.update((k, int(e)) for k, e in conn.execute(
                    sa.select(data_keys.c.key_id, data_keys.c.epoch)
                    .where(data_keys.c.key_id.in_(ids[start:start + 500]))))
        return found

    # -- fact ids -------------------------------------------------------------------

    def fact_digest(self, canonical: bytes) -> str:
        """Keyed digest of a fact's content: equal for the same fact, reveals nothing."""
        return self._fact_hasher.hexdigest(canonical)

    def claimed(self, ids: Iterable[str]) -> dict[str, Binding]:
        """The binding of each of these fact ids, where there is one."""
        wanted = list(set(ids))
        found: dict[str, Binding] = {}
        if not wanted:
            return found
        with self.engine.connect() as conn:
            for start in range(0, len(wanted), 500):
                rows = conn.execute(sa.select(fact_ids).where(
                    fact_ids.c.fact_id.in_(wanted[start:start + 500])))
                found.update((r.fact_id, Binding(r.subject_id, r.digest, r.claimed_at))
                             for r in rows)
        return found

    @staticmethod
    def _give_up(conn: sa.Connection, given_up: dict[str, str] | None) -> None:
        for fid, digest in sorted((given_up or {}).items()):
            conn.execute(fact_ids.delete().where(fact_ids.c.fact_id == fid)
                         .where(fact_ids.c.digest == digest))

    def claim(self, claims: dict[str, tuple[str, str]], now: datetime,
              given_up: dict[str, str] | None = None) -> dict[str, Binding]:
        """Binds each unbound fact id to (subject id, digest), first dropping the given-up
        bindings (fact id -> digest) if still as they were. Returns {} when every id was
        unbound (this call bound them all); else the binding of each id, those found bound
        (by this fact before, or by another writer's) and those this call bound (the
        subject and digest offered): callers compare digests."""
        if not claims:
            return {}
        # In one order of ids for every writer: two claims taking the same ids in their
        # files' orders each waited for an id the other held (PostgreSQL: a deadlock).
        rows = sorted((fid, subject, digest) for fid, (subject, digest) in claims.items())
        return _redone_on_deadlock(lambda: self._claim(claims, rows, now, given_up))

    def _claim(self, claims: dict[str, tuple[str, str]], rows: list[tuple[str, str, str]],
               now: datetime, given_up: dict[str, str] | None) -> dict[str, Binding]:
        """`claim` once, in its own transaction(s): redone whole if the server undid it
        (given-up bindings still as they were, unbound ids only: the same outcome)."""
        if self.engine.dialect.name == "postgresql" and now.tzinfo is not None:
            # Usually no id is bound: the batch goes in by one COPY (a third of the server
            # time of the statement below). An id bound already fails it, and the whole
            # transaction (the given-up bindings' drop too) is undone and done that way.
            try:
                with self.engine.begin() as conn:
                    self._give_up(conn, given_up)
                    _copy(conn, _COPY_CLAIMS, _CLAIM_TYPES, ((*row, now) for row in rows))
                return {}
            except psycopg.errors.UniqueViolation:
                pass
        with self.engine.begin() as conn:
            self._give_up(conn, given_up)
            if conn.dialect.name == "postgresql":
                # One statement whatever the batch size, its rows one JSON array (a
                # many-row VALUES list costs more to build than to run, and text arrays
                # are dumped element by element in Python); a naive `now` is placed in
                # the session's zone, as the driver places a parameter.
                inserted = conn.execute(_CLAIM_POSTGRES, {
                    "rows": _json_rows([list(r) for r in rows]), "now": now}).rowcount
            else:
                claimed_at = _CLAIMED_AT.type.dialect_impl(conn.dialect).bind_processor(
                    conn.dialect)
                # In UTC, as read back: SQLite keeps a time's wall clock, not its offset
                # (a claim at -05:00 looked five hours old, past its grace).
                spelt = claimed_at(in_utc(now)) if claimed_at else now
                inserted = conn.exec_driver_sql(
                    _CLAIM_SQLITE, [(*row, spelt) for row in rows]).rowcount
        # The count of rows inserted says whether any id was bound already.
        if inserted == len(rows):
            return {}
        return self.claimed(claims)

    def unwraps_a_live_key(self) -> bool:
        """Whether the master key unwraps a live data key (True if none is live)."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(data_keys.c.key_id, data_keys.c.wrapped,
                                         data_keys.c.epoch)
                               .where(data_keys.c.wrapped.is_not(None)).limit(1)).first()
        if row is None:
            return True
        try:
            self._unwrap(row.key_id, row.wrapped, row.epoch)
        except ConfigurationError:
            return False
        return True

    def record_key_check(self, key_check: str) -> str:
        """Records the master key's check value unless one is; returns the recorded one."""
        try:
            with self.engine.begin() as conn:
                conn.execute(vault_meta.insert().values(
                    id=KEY_CHECK_ROW, key_check=key_check,
                    fingerprint=key_fingerprint(key_check)))
        except sa.exc.IntegrityError:
            pass  # recorded by another process meanwhile
        with self.engine.connect() as conn:
            return str(conn.execute(sa.select(vault_meta.c.key_check)
                                    .where(vault_meta.c.id == KEY_CHECK_ROW)).scalar_one())

    # -- values -------------------------------------------------------------------

    def seal(self, key_id: str, value: Any) -> str:
        plaintext = _sealed_json(value)
        nonce = os.urandom(NONCE_BYTES)
        box = self._cipher(key_id).encrypt(nonce, plaintext, key_id.encode())
        return f"{key_id}.{base64.b64encode(nonce + box).decode()}"

    def open(self, sealed: str) -> Any:
        """The personal value inside a sealed string; raises KeyDestroyed once shredded."""
        key_id, _, encoded = sealed.partition(".")
        cipher = self._cipher(key_id)
        raw = base64.b64decode(encoded)
        plaintext = cipher.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], key_id.encode())
        return json.loads(plaintext)

    def listing_hashes(self, email: str, keep_subaddress: bool) -> tuple[str, ...]:
        """The hashes an address is listed under on the suppression list: its one spelling
        (by the policy's `keep_subaddress`), and that spelling with any sub-address tag
        kept (one hash when the two are the same)."""
        return self._listing_hashes(email, spellings(email), keep_subaddress)

    def _listing_hashes(self, email: str, forms: tuple[str, str] | None,
                        keep_subaddress: bool) -> tuple[str, ...]:
        if forms is None:  # not an address: hashed as `email_hash` hashes it
            return (self._email_hasher.hexdigest(email.strip().casefold().encode()),)
        untagged, tagged = forms
        own = tagged if keep_subaddress else untagged
        bare = self._email_hasher.hexdigest(own.encode())
        return (bare,) if tagged == own else (bare, self._email_hasher.hexdigest(tagged.encode()))

    def untagged_hash(self, email: str) -> str | None:
        """The hash a listing made while tags were kept (`keep_subaddress`) also holds of a
        tagged address, and a lookup while tags are dropped also asks for: the address
        without its tag, hashed apart from every address's own hash (no address holds a
        line break), so alice+news@'s listing bars alice@ only once tags are dropped.
        None if it is not an address."""
        forms = spellings(email)
        return None if forms is None else self._untagged_digest(forms[0])

    def lookup_hashes(self, email: str, keep_subaddress: bool) -> tuple[str, ...]:
        """The hashes an address is looked up under on the suppression list: its
        `listing_hashes` and, while tags are dropped, its `untagged_hash` (normalised once)."""
        forms = spellings(email)  # the address normalised once for every hash
        listed = self._listing_hashes(email, forms, keep_subaddress)
        if forms is None or keep_subaddress:
            return listed
        return (*listed, self._untagged_digest(forms[0]))

    def _untagged_digest(self, untagged: str) -> str:
        return self._email_hasher.hexdigest(b"untagged\n" + untagged.encode())

    def email_hash(self, email: str, *, keep_subaddress: bool = False,
                   legacy: bool = False) -> str:
        """Keyed hash of the e-mail in its one spelling (`email_address.normalise`):
        survives erasure, reveals nothing. A string that is not an address, or `legacy`,
        is hashed as stores written before that normalisation did: trimmed and case-folded.
        """
        text = None if legacy else normalise(email, keep_subaddress=keep_subaddress)
        if text is None:
            text = email.strip().casefold()
        return self._email_hasher.hexdigest(text.encode())

    # -- internals ----------------------------------------------------------------

    def _cipher(self, key_id: str) -> AESGCM:
        if key_id in self._destroyed:
            raise KeyDestroyed(f"data key {key_id} was destroyed")
        cipher = self._ciphers.get(key_id)
        if cipher is not None and not self.check_destroyed_on_open:
            self._ciphers.move_to_end(key_id)
            return cipher
        with self._reads.connect() as conn:
            row = conn.execute(sa.select(data_keys.c.wrapped, data_keys.c.epoch)
                               .where(data_keys.c.key_id == key_id)).first()
        stored = row is not None and row.wrapped is not None and row.epoch not in self._retired
        if not stored and not any(pending["key_id"] == key_id for pending in self._pending):
            self._destroyed.add(key_id)
            self._ciphers.pop(key_id, None)
            raise KeyDestroyed(f"data key {key_id} was destroyed")
        if cipher is None:
            assert row is not None
            cipher = AESGCM(self._unwrap(key_id, row.wrapped, row.epoch))
            self._ciphers[key_id] = cipher
            self._trim_ciphers()
        self._ciphers.move_to_end(key_id)
        return cipher

    def _trim_ciphers(self) -> None:
        """Drops the least recently used unwrapped keys beyond CIPHER_CACHE (a tenth more
        at a time), never one not stored yet."""
        if len(self._ciphers) <= CIPHER_CACHE:
            return
        pending = {row["key_id"] for row in self._pending}
        for key_id in list(self._ciphers)[:len(self._ciphers) - CIPHER_CACHE * 9 // 10]:
            if key_id not in pending:
                del self._ciphers[key_id]
        if len(self._destroyed) > CIPHER_CACHE:
            self._destroyed.clear()  # only a memo of lookups: asked again when needed

    def _wrap(self, key_id: str, secret: bytes, epoch: int) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._wrapper(epoch).encrypt(nonce, secret, key_id.encode())

    def _unwrap(self, key_id: str, wrapped: bytes, epoch: int | None = None) -> bytes:
        try:
            return self._wrapper(self.epoch if epoch is None else epoch).decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:],
                                                key_id.encode())
        except InvalidTag:
            raise ConfigurationError(
                f"data key {key_id} cannot be unwrapped: is this the right master key?"
            ) from None

    def _wrapper(self, epoch: int) -> AESGCM:
        wrapper = self._wrappers.get(epoch)
        if wrapper is None:
            wrapper = AESGCM(derive_key(self.epoch_key(epoch), "key-wrapping"))
            self._wrappers[epoch] = wrapper
        return wrapper
