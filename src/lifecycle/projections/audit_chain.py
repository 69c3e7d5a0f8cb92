"""The audit chain: every stored event linked into hash chains, beside the read models.

Tamper evidence for an immutable log. Each stored event (as the recorder holds it: originator
id, version, topic and the raw `state` bytes, never decoded, so no key is needed and
crypto-shredding changes nothing) gets

- `event_digest`   = SHA-256 over its length-prefixed fields (see `event_digest`);
- `subject_digest` = SHA-256(previous subject_digest of the same originator || event_digest),
  a chain per aggregate (data subject, policy register, ...), starting from a genesis bound
  to the originator id;
- `log_digest`     = SHA-256(previous log_digest || event_digest), one chain over the whole
  log in notification order.

`lifecycle_audit_checkpoints` keeps the log digest every `CHECKPOINT_EVERY` chained events
and at the head after each batch (append-only), so an auditor can copy a checkpoint out of
the system and later prove that nothing up to it was rewritten (`verify(..., anchor=...)`).

These tables live on their own `MetaData` (created on first use on the views engine) and are
not rebuilt with the other projections: a chain rebuilt from a tampered log would bless it.
The chain's tracked position is its row in `lifecycle_projection_positions` (name
`audit-chain`), written in the same transaction as its rows.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from eventsourcing.persistence import Notification

from lifecycle.projections import tables

NAME = "audit-chain"
CHECKPOINT_EVERY = 1000
SCHEME = b"lifecycle-audit-chain/v1"
LOG_GENESIS = hashlib.sha256(SCHEME + b"\x00log").hexdigest()

# The chain's tables live with the other read models (created with them, at start-up,
# under the schema lock): see `tables.audit_chain` and `tables.audit_checkpoints`.
chain = tables.audit_chain
checkpoints = tables.audit_checkpoints


# -- digests ------------------------------------------------------------------------------

_PREFIX = struct.pack(">Q", len(SCHEME)) + SCHEME


_pack_q, _pack_qq = struct.Struct(">Q").pack, struct.Struct(">Qq").pack


def event_digest(originator_id: object, originator_version: int, topic: str,
                 state: bytes) -> str:
    """SHA-256 over the stored event's fields, each length-prefixed (no ambiguity)."""
    originator, name = str(originator_id).encode(), topic.encode()
    return hashlib.sha256(b"".join((
        _PREFIX, _pack_q(len(originator)), originator, _pack_qq(8, int(originator_version)),
        _pack_q(len(name)), name, _pack_q(len(state)), state))).hexdigest()


def notification_digest(notification: Notification) -> str:
    return event_digest(notification.originator_id, notification.originator_version,
                        notification.topic, bytes(notification.state))


def subject_genesis(originator_id: str) -> str:
    return hashlib.sha256(SCHEME + b"\x00subject\x00" + originator_id.encode()).hexdigest()


def link(previous: str, digest: str) -> str:
    """The next link of a chain: SHA-256(previous || digest), over the raw 32-byte values."""
    return hashlib.sha256(bytes.fromhex(previous + digest)).hexdigest()


# -- writing the chain ------------------------------------------------------------------------

class PositionMoved(Exception):
    """Another process chained the same events first; the caller retries from the new head."""


@dataclass(frozen=True)
class ChainHead:
    position: int  # the tracked position (0: nothing chained)
    seq: int
    log_digest: str


class AuditChainProjection:
    """Links raw notifications into the chain, inside a transaction the caller owns.

    Not a `views.Projection` (those see aggregates, this needs the stored bytes): feed it
    the recorder's notifications in order with `append(conn, batch, now)`.
    """

    name = NAME
    tables = (chain, checkpoints)

    def __init__(self, checkpoint_every: int = CHECKPOINT_EVERY) -> None:
        self.checkpoint_every = checkpoint_every

    def head(self, conn: sa.Connection, lock: bool = False) -> ChainHead:
        query = sa.select(tables.positions.c.position).where(tables.positions.c.name == NAME)
        position = conn.execute(query.with_for_update() if lock else query).scalar()
        last = conn.execute(sa.select(chain.c.seq, chain.c.log_digest)
                            .order_by(chain.c.notification_id.desc()).limit(1)).first()
        if last is None:
            return ChainHead(int(position or 0), 0, LOG_GENESIS)
        return ChainHead(int(position or 0), int(last.seq), str(last.log_digest))

    def append(self, conn: sa.Connection, batch: Sequence[Notification], now: datetime,
               head: ChainHead | None = None) -> ChainHead:
        """Chains `batch` (notifications after the head, in order); moves the position."""
        head = head or self.head(conn)
        if not batch:
            return head
        previous = self._subject_heads(conn, {str(n.originator_id) for n in batch})
        seq, log_digest = head.seq, head.log_digest
        rows: list[dict[str, Any]] = []
        marks: list[dict[str, Any]] = []
        for notification in batch:
            if notification.id <= head.position:
                raise PositionMoved(f"notification {notification.id} is behind the chain head")
            originator = str(notification.originator_id)
            digest = notification_digest(notification)
            subject_digest = link(previous.get(originator) or subject_genesis(originator),
                                  digest)
            previous[originator] = subject_digest
            log_digest = link(log_digest, digest)
            seq += 1
            rows.append({
                "notification_id": notification.id, "seq": seq, "originator_id": originator,
                "originator_version": notification.originator_version,
                "topic": notification.topic, "event_digest": digest,
                "subject_digest": subject_digest, "log_digest": log_digest, "chained_at": now,
            })
            if seq % self.checkpoint_every == 0:
                marks.append({"position": notification.id, "events": seq,
                              "log_digest": log_digest, "kind": "interval", "created_at": now})
        if not marks or marks[-1]["position"] != batch[-1].id:
            marks.append({"position": batch[-1].id, "events": seq, "log_digest": log_digest,
                          "kind": "head", "created_at": now})
        conn.execute(chain.insert(), rows)
        conn.execute(checkpoints.insert(), marks)
        self._move(conn, head.position, batch[-1].id)
        return ChainHead(batch[-1].id, seq, log_digest)

    @staticmethod
    def _subject_heads(conn: sa.Connection, originators: set[str]) -> dict[str, str]:
        """The last recorded subject digest of each originator (none if new)."""
        heads: dict[str, str] = {}
        ordered = sorted(originators)
        for start in range(0, len(ordered), 500):
            chunk = ordered[start:start + 500]
            latest = (sa.select(sa.func.max(chain.c.notification_id).label("nid"))
                      .where(chain.c.originator_id.in_(chunk))
                      .group_by(chain.c.originator_id).subquery())
            for originator, digest in conn.execute(
                    sa.select(chain.c.originator_id, chain.c.subject_digest)
                    .join(latest, chain.c.notification_id == latest.c.nid)):
                heads[str(originator)] = str(digest)
        return heads

    @staticmethod
    def _move(conn: sa.Connection, old: int, new: int) -> None:
        """Moves the tracked position, only if nobody else moved it meanwhile."""
        if old == 0 and conn.execute(sa.select(tables.positions.c.name)
                                     .where(tables.positions.c.name == NAME)).first() is None:
            conn.execute(tables.positions.insert().values(name=NAME, position=new))
            return
        moved = conn.execute(tables.positions.update()
                             .where(tables.positions.c.name == NAME)
                             .where(tables.positions.c.position == old)
                             .values(position=new))
        if moved.rowcount != 1:
            raise PositionMoved(f"the audit chain moved past {old} meanwhile")
