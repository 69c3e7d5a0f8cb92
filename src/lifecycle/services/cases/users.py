"""Desk users: a name, a role and an API token stored only as its SHA-256 hash.

The token is 32 random bytes (URL-safe text), printed once when the user is added; a
token that high in entropy needs no slow hash. Users live beside the key vault (the store's
own database, not the derived views), so rebuilding the views never signs anyone out.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from lifecycle.domain.errors import LifecycleError

ROLES = ("dpo", "responder", "auditor", "ingest")
NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
TOKEN_PREFIX = "lc_"

metadata = sa.MetaData()
users = sa.Table(
    "lifecycle_users", metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
)


class UserRefused(LifecycleError):
    """A user cannot be added or revoked as asked."""


@dataclass(frozen=True)
class User:
    name: str
    role: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role}


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class UserBook:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        metadata.create_all(engine, checkfirst=True)

    def add(self, name: str, role: str, now: datetime, by: str) -> str:
        """Adds the user; returns its token (the only time it is ever seen)."""
        if not NAME.fullmatch(name):
            raise UserRefused(f"name {name!r}: use 1 to 64 lower-case letters, digits, dots, "
                              "hyphens or underscores, starting with a letter or digit")
        if role not in ROLES:
            raise UserRefused(f"role {role!r}: one of {', '.join(ROLES)}")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        try:
            with self.engine.begin() as conn:
                conn.execute(users.insert().values(
                    name=name, role=role, token_hash=token_hash(token), created_at=now,
                    created_by=by[:200], revoked_at=None))
        except sa.exc.IntegrityError:
            raise UserRefused(f"user {name!r} exists already (revoked users keep their "
                              "name)") from None
        return token

    def revoke(self, name: str, now: datetime) -> None:
        with self.engine.begin() as conn:
            done = conn.execute(users.update().where(users.c.name == name)
                                .where(users.c.revoked_at.is_(None))
                                .values(revoked_at=now)).rowcount
        if not done:
            raise UserRefused(f"no active user {name!r}")

    def list(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(users).order_by(users.c.name)).all()
        return [{"name": r.name, "role": r.role, "created_at": r.created_at.isoformat(),
                 "created_by": r.created_by,
                 "revoked_at": r.revoked_at.isoformat() if r.revoked_at else None}
                for r in rows]

    def authenticate(self, token: str) -> User | None:
        """The active user holding `token`, or None."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            return None
        digest = token_hash(token)
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(users.c.name, users.c.role, users.c.token_hash)
                               .where(users.c.token_hash == digest)
                               .where(users.c.revoked_at.is_(None))).first()
        if row is None or not hmac.compare_digest(row.token_hash, digest):
            return None
        return User(row.name, row.role)

    def is_active(self, name: str) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(users.c.name).where(users.c.name == name)
                                .where(users.c.revoked_at.is_(None))).first() is not None
