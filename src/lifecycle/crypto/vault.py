"""The key vault: per-subject data keys, wrapped by the master key, outside the event store.

Destroying a key overwrites its wrapped bytes and, on SQLite, ``secure_delete`` zeroes the
freed space and the rollback journal (not WAL) leaves no old page behind, so the raw
file holds no trace of a destroyed key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from lifecycle.crypto.master_key import (create_master_key, derive_key, given_master_key,
                                         key_check_value, key_fingerprint)
from lifecycle.email_address import normalise
from lifecycle.engines import create_store_engine
from lifecycle.errors import ConfigurationError, KeyDestroyed
from lifecycle.settings import MASTER_KEY_ENV, Settings

NONCE_BYTES = 12

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
    sa.Index("ix_data_keys_subject_scope", "subject_id", "scope"),
)
# Keys an erasure decided on, written before the events that record it are saved and
# removed when the keys are destroyed after the save: a run killed in between leaves
# them here for the next run to finish (`lifecycle.shredding.finish_interrupted`).
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
    "SELECT u.f, u.s, u.d, :now FROM unnest(CAST(:ids AS text[]), CAST(:subjects AS text[]), "
    "CAST(:digests AS text[])) AS u(f, s, d) "
    "ON CONFLICT (fact_id) DO NOTHING RETURNING fact_id").bindparams(_CLAIMED_AT)
_CLAIM_SQLITE = sa.text(
    "INSERT INTO lifecycle_fact_ids (fact_id, subject_id, digest, claimed_at) "
    "SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), "
    "json_extract(value, '$[2]'), :now FROM json_each(:rows) WHERE true "
    "ON CONFLICT (fact_id) DO NOTHING RETURNING fact_id").bindparams(_CLAIMED_AT)
# A binding whose fact never reached its subject (its run was killed before saving) is
# given up after this; younger, it may belong to a run still saving.
CLAIM_GRACE = timedelta(minutes=5)


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


@dataclass(frozen=True)
class VaultKeyState:
    """What a vault says about its master key: the recorded key-check value (None: none
    recorded, as in a store written before checks were) and whether it holds any data key."""

    key_check: str | None
    holds_keys: bool


def read_key_state(settings: Settings) -> VaultKeyState:
    """The vault's key state, read without writing: a vault file or table that does not
    exist yet reads as empty."""
    path = settings.vault_path
    if path is not None and not path.exists():
        return VaultKeyState(None, False)
    engine = sa.create_engine(settings.vault_url)
    try:
        with engine.connect() as conn:
            inspector = sa.inspect(conn)
            check = None
            if inspector.has_table(vault_meta.name):
                check = conn.execute(sa.select(vault_meta.c.key_check)
                                     .where(vault_meta.c.id == KEY_CHECK_ROW)).scalar()
            holds = inspector.has_table(data_keys.name) and conn.execute(
                sa.select(data_keys.c.key_id).limit(1)).first() is not None
        return VaultKeyState(check, holds)
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
    start together on a fresh store agree on one key."""
    state = read_key_state(settings)
    recorded = key_fingerprint(state.key_check) if state.key_check else None
    given = given_master_key(settings)
    if given is None:
        if state.key_check is not None or state.holds_keys:
            used = (f"was first used with the master key of fingerprint {recorded}"
                    if recorded else "holds data keys")
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
    if state.key_check is not None and state.key_check != check:
        raise mismatch
    if settings.vault_path is not None:
        settings.ensure_home()
    vault = KeyVault(create_vault_engine(settings.vault_url), key)
    try:
        if state.key_check is None:
            if state.holds_keys and not vault.unwraps_a_live_key():
                raise mismatch
            if vault.record_key_check(check) != check:
                raise mismatch  # another process recorded another key's check first
    except BaseException:
        vault.engine.dispose()
        raise
    return vault


def create_vault_engine(url: str) -> sa.Engine:
    # secure_delete zeroes freed pages; a rollback journal (not WAL) keeps no old page copy.
    return create_store_engine(url, metadata, ("secure_delete=ON", "journal_mode=DELETE"))


class KeyVault:
    """Creates, opens and destroys data keys; seals and opens personal values with them."""

    def __init__(self, engine: sa.Engine, master_key: bytes) -> None:
        self.engine = engine
        self._wrapper = AESGCM(derive_key(master_key, "key-wrapping"))
        self._hash_key = derive_key(master_key, "suppression-hash")
        self._digest_key = derive_key(master_key, "fact-digest")
        self._active: dict[tuple[str, str], str] = {}
        self._slot_of: dict[str, tuple[str, str]] = {}  # key id -> its (subject, scope)
        self._ciphers: dict[str, AESGCM] = {}
        self._destroyed: set[str] = set()
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
                              data_keys.c.wrapped)
                    .where(data_keys.c.subject_id.in_(chunk))
                    .where(data_keys.c.destroyed_at.is_(None))
                    .where(data_keys.c.key_id.not_in(sa.select(doomed_keys.c.key_id)))
                    .order_by(data_keys.c.created_at)
                )
                for key_id, subject_id, scope, wrapped in rows:
                    self._remember(subject_id, scope, key_id)
                    self._ciphers[key_id] = AESGCM(self._unwrap(key_id, wrapped))
            self._preloaded.update(wanted)

    def forget_loaded(self) -> None:
        """Drops what preload learnt, so keys another writer created are read again."""
        self._preloaded.clear()
        self._active.clear()
        self._slot_of.clear()
        # Unwrapped keys too (read again when needed), except those not yet stored.
        pending = {row["key_id"] for row in self._pending}
        self._ciphers = {k: c for k, c in self._ciphers.items() if k in pending}

    def key_for(self, subject_id: str, scope: str, now: datetime) -> str:
        """The live key for a subject's scope, created (pending until flush) if none."""
        key_id = self._active.get((subject_id, scope))
        if key_id is None and subject_id not in self._preloaded:
            self.preload([subject_id])
            key_id = self._active.get((subject_id, scope))
        if key_id is None:
            key_id = uuid.uuid4().hex
            secret = AESGCM.generate_key(bit_length=256)
            self._pending.append({
                "key_id": key_id, "subject_id": subject_id, "scope": scope,
                "wrapped": self._wrap(key_id, secret), "created_at": now,
            })
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
            conn.execute(data_keys.insert(), self._pending)
        self._pending = []

    def destroy(self, key_ids: Iterable[str], at: datetime, by: str) -> int:
        """Destroys keys for good; idempotent. Returns how many were live."""
        return self.destroy_all([(list(key_ids), at, by)])

    def mark_doomed(self, shreds: Iterable[Shred], now: datetime) -> None:
        """Notes the keys an erasure decided on, before its events are saved."""
        rows = {key_id: {"key_id": key_id, "subject_id": s.subject_id, "erased_at": s.at,
                         "erased_by": s.by[:200], "marked_at": now}
                for s in shreds for key_id in s.key_ids}
        if not rows:
            return
        with self.engine.begin() as conn:
            ids = list(rows)
            for start in range(0, len(ids), 500):
                conn.execute(doomed_keys.delete().where(
                    doomed_keys.c.key_id.in_(ids[start:start + 500])))
            conn.execute(doomed_keys.insert(), list(rows.values()))
        self.retire(rows)

    def doomed(self) -> list[Shred]:
        """Marks left by runs that did not get to destroy their keys, oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(doomed_keys).order_by(doomed_keys.c.marked_at)).all()
        return [Shred(r.subject_id, [r.key_id], r.erased_at, r.erased_by) for r in rows]

    def drop_marks(self, key_ids: Iterable[str], older_than: datetime | None = None) -> None:
        """Forgets marks whose erasure was never recorded (the run died before saving)."""
        ids = list(key_ids)
        with self.engine.begin() as conn:
            for start in range(0, len(ids), 500):
                query = doomed_keys.delete().where(
                    doomed_keys.c.key_id.in_(ids[start:start + 500]))
                if older_than is not None:
                    query = query.where(doomed_keys.c.marked_at < older_than)
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
            for ids, at, by in groups:
                for start in range(0, len(ids), 500):
                    chunk = ids[start:start + 500]
                    destroyed += conn.execute(
                        data_keys.update()
                        .where(data_keys.c.key_id.in_(chunk))
                        .where(data_keys.c.destroyed_at.is_(None))
                        .values(wrapped=None, destroyed_at=at, destroyed_by=by)
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
            return {key_id: {"destroyed_at": at.isoformat() if at else None,
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

    # -- fact ids -------------------------------------------------------------------

    def fact_digest(self, canonical: bytes) -> str:
        """Keyed digest of a fact's content: equal for the same fact, reveals nothing."""
        return hmac.new(self._digest_key, canonical, hashlib.sha256).hexdigest()

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

    def claim(self, claims: dict[str, tuple[str, str]], now: datetime,
              given_up: dict[str, str] | None = None) -> dict[str, Binding]:
        """Binds each unbound fact id to (subject id, digest), first dropping the given-up
        bindings (fact id -> digest) if still as they were. Returns the bindings of the ids
        that were bound already (by this fact before, or by another writer's)."""
        if not claims:
            return {}
        with self.engine.begin() as conn:
            for fid, digest in (given_up or {}).items():
                conn.execute(fact_ids.delete().where(fact_ids.c.fact_id == fid)
                             .where(fact_ids.c.digest == digest))
            # One statement whatever the batch size (arrays on PostgreSQL, a JSON array on
            # SQLite): a many-row VALUES list costs more to build than to run.
            rows = [[fid, subject, digest] for fid, (subject, digest) in claims.items()]
            if self.engine.dialect.name == "postgresql":
                statement = _CLAIM_POSTGRES
                params: dict[str, Any] = {"ids": [r[0] for r in rows],
                                          "subjects": [r[1] for r in rows],
                                          "digests": [r[2] for r in rows], "now": now}
            else:
                statement = _CLAIM_SQLITE
                params = {"rows": json.dumps(rows), "now": now}
            inserted = set(conn.execute(statement, params).scalars())
        return self.claimed(fid for fid in claims if fid not in inserted)

    def unwraps_a_live_key(self) -> bool:
        """Whether the master key unwraps a live data key (True if none is live)."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(data_keys.c.key_id, data_keys.c.wrapped)
                               .where(data_keys.c.wrapped.is_not(None)).limit(1)).first()
        if row is None:
            return True
        try:
            self._unwrap(row.key_id, row.wrapped)
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
        plaintext = json.dumps(value, separators=(",", ":"), sort_keys=True).encode()
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

    def email_hash(self, email: str, *, keep_subaddress: bool = False,
                   legacy: bool = False) -> str:
        """Keyed hash of the e-mail in its one spelling (`email_address.normalise`):
        survives erasure, reveals nothing. A string that is not an address, or `legacy`,
        is hashed as stores written before that normalisation did: trimmed and case-folded.
        """
        text = None if legacy else normalise(email, keep_subaddress=keep_subaddress)
        if text is None:
            text = email.strip().casefold()
        return hmac.new(self._hash_key, text.encode(), hashlib.sha256).hexdigest()

    # -- internals ----------------------------------------------------------------

    def _cipher(self, key_id: str) -> AESGCM:
        cipher = self._ciphers.get(key_id)
        if cipher is not None:
            return cipher
        if key_id in self._destroyed:
            raise KeyDestroyed(f"data key {key_id} was destroyed")
        with self.engine.connect() as conn:
            wrapped = conn.execute(sa.select(data_keys.c.wrapped)
                                   .where(data_keys.c.key_id == key_id)).scalar()
        if wrapped is None:
            self._destroyed.add(key_id)
            raise KeyDestroyed(f"data key {key_id} was destroyed")
        cipher = AESGCM(self._unwrap(key_id, wrapped))
        self._ciphers[key_id] = cipher
        return cipher

    def _wrap(self, key_id: str, secret: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._wrapper.encrypt(nonce, secret, key_id.encode())

    def _unwrap(self, key_id: str, wrapped: bytes) -> bytes:
        try:
            return self._wrapper.decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:],
                                         key_id.encode())
        except InvalidTag:
            raise ConfigurationError(
                f"data key {key_id} cannot be unwrapped: is this the right master key?"
            ) from None
