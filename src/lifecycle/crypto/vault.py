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
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from lifecycle.crypto.master_key import derive_key
from lifecycle.email_address import normalise
from lifecycle.engines import create_store_engine
from lifecycle.errors import ConfigurationError, KeyDestroyed

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


def create_vault_engine(url: str) -> sa.Engine:
    # secure_delete zeroes freed pages; a rollback journal (not WAL) keeps no old page copy.
    return create_store_engine(url, metadata, ("secure_delete=ON", "journal_mode=DELETE"))


class KeyVault:
    """Creates, opens and destroys data keys; seals and opens personal values with them."""

    def __init__(self, engine: sa.Engine, master_key: bytes) -> None:
        self.engine = engine
        self._wrapper = AESGCM(derive_key(master_key, "key-wrapping"))
        self._hash_key = derive_key(master_key, "suppression-hash")
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

    def destroy_all(self, shreds: Iterable[tuple[list[str], datetime, str]]) -> int:
        """Destroys each group of keys (at, by) in one transaction; idempotent. Returns
        how many were live."""
        groups = [(list(dict.fromkeys(ids)), at, by) for ids, at, by in shreds if ids]
        if not groups:
            return 0
        destroyed = 0
        with self.engine.begin() as conn:
            for ids, at, by in groups:
                destroyed += conn.execute(
                    data_keys.update()
                    .where(data_keys.c.key_id.in_(ids))
                    .where(data_keys.c.destroyed_at.is_(None))
                    .values(wrapped=None, destroyed_at=at, destroyed_by=by)
                ).rowcount
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
