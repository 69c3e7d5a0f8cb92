"""The audit chain, written with the events: digests, links and signed checkpoints.

Every stored event (as the recorder holds it: originator id, version, topic and the raw
`state` bytes, never decoded, so no key is needed and crypto-shredding changes nothing) gets
a row in `lifecycle_event_chain`, in the same transaction as the event itself:

- `event_digest`   = SHA-256 over its length-prefixed fields (see `event_digest`);
- `subject_digest` = SHA-256(previous subject_digest of the same originator || event_digest),
  a chain per aggregate, starting from a genesis bound to the originator id;
- `log_digest`     = SHA-256(previous log_digest || event_digest), one chain over the whole
  log in notification (position) order.

Each transaction that stores events also appends one row to `lifecycle_event_checkpoints`:
the checkpoint number (1, 2, 3 ... with no gap), the position and log digest of its last
event, how many events are chained up to there, when, and an Ed25519 signature over all of
these (`Checkpoint.message`) by the signing key kept outside the store
(`lifecycle.store.signing_key`). The newest checkpoint is therefore always at the newest
event. Both tables live beside the events (same database), not with the read models.

The global chain needs one writer at a time: on PostgreSQL the events table's EXCLUSIVE
lock (which the recorder takes anyway to keep notification ids in commit order), on SQLite
the database's write lock, both held from the INSERT of the events to the commit. Event
digests and the subjects' previous links are computed before the lock is taken; under it
only the log links (one SHA-256 of 64 bytes per event) and one signature are computed.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple
from uuid import UUID

from eventsourcing.persistence import ApplicationRecorder, Notification, StoredEvent

from lifecycle.store.signing_key import Signer, Verifier
from lifecycle.domain.errors import ConfigurationError, LifecycleError

CHAIN_TABLE = "lifecycle_event_chain"
CHECKPOINT_TABLE = "lifecycle_event_checkpoints"
SCHEME = b"lifecycle-audit-chain/v1"
CHECKPOINT_SCHEME = b"lifecycle-audit-checkpoint/v1"
LOG_GENESIS = hashlib.sha256(SCHEME + b"\x00log").digest()
UPGRADE_PAGE = 5000  # events chained per transaction when an older store is chained
# The signed head an older store's backlog is chained up to (one row): an upgrade killed
# midway, or run by several processes at once, is finished by whichever opens the store
# next, and never beyond that head.
UPGRADE_TABLE = "lifecycle_chain_upgrade"
UPGRADE_SCHEME = b"lifecycle-chain-upgrade/v1"
LINKS_KEPT = 200_000  # subject links a recorder remembers (see `ChainingRecorder._chained`)

_PREFIX = struct.pack(">Q", len(SCHEME)) + SCHEME
_pack_q, _pack_qq = struct.Struct(">Q").pack, struct.Struct(">Qq").pack
_new_row = tuple.__new__  # a ChainRow without its NamedTuple __new__ (a Python call)
_pack_cp = struct.Struct(">QQQ").pack
_sha256 = hashlib.sha256


def originator_text(originator_id: object) -> str:
    """The originator id as digests spell it (a UUID with hyphens)."""
    if isinstance(originator_id, UUID):
        return str(originator_id)
    text = str(originator_id)
    return str(UUID(text)) if len(text) == 32 else text


def event_digest(originator: str, version: int, topic: str, state: bytes) -> bytes:
    """SHA-256 over the stored event's fields, each length-prefixed (no ambiguity)."""
    who, name = originator.encode(), topic.encode()
    return _sha256(b"".join((
        _PREFIX, _pack_q(len(who)), who, _pack_qq(8, int(version)),
        _pack_q(len(name)), name, _pack_q(len(state)), state))).digest()


def subject_genesis(originator: str) -> bytes:
    return _sha256(SCHEME + b"\x00subject\x00" + originator.encode()).digest()


def link(previous: bytes, digest: bytes) -> bytes:
    """The next link of a chain: SHA-256(previous || digest)."""
    return _sha256(previous + digest).digest()


class ChainBroken(LifecycleError):
    """The chain cannot be extended from where it stands (a link or checkpoint it would
    continue from is missing, or stored events after its head are unchained): the write is
    refused rather than chained over the gap; `audit verify` reports the break."""

    def __init__(self, what: str) -> None:
        super().__init__(f"the audit chain cannot be extended: {what}; no event was stored. "
                         "`lifecycle audit verify` reports the break (exit 1); restore the "
                         "store from a backup")


def upgrade_message(target: int) -> bytes:
    """What the signing key signs for an upgrade's backlog head."""
    return UPGRADE_SCHEME + b"\x00" + _pack_q(target)


# -- checkpoints ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Checkpoint:
    seq: int            # 1, 2, 3 ... one per transaction that stored events
    position: int       # the notification id of that transaction's last event
    events: int         # events chained up to and including `position`
    log_digest: bytes
    signed_at: str      # RFC 3339, UTC
    key_id: str         # the signing key's fingerprint
    signature: bytes

    @staticmethod
    def message_of(seq: int, position: int, events: int, log_digest: bytes,
                   signed_at: str) -> bytes:
        return b"".join((CHECKPOINT_SCHEME, b"\x00", _pack_cp(seq, position, events),
                         log_digest, signed_at.encode()))

    @property
    def message(self) -> bytes:
        return self.message_of(self.seq, self.position, self.events, self.log_digest,
                               self.signed_at)

    @classmethod
    def signed(cls, signer: Signer, seq: int, position: int, events: int,
               log_digest: bytes, at: datetime | None = None) -> Checkpoint:
        signed_at = (at or datetime.now(UTC)).astimezone(UTC).isoformat()
        signature = signer.sign(cls.message_of(seq, position, events, log_digest, signed_at))
        return cls(seq, position, events, log_digest, signed_at, signer.fingerprint,
                   signature)

    def verified_by(self, verifier: Verifier) -> bool:
        return self.key_id == verifier.fingerprint and verifier.verifies(
            self.message, self.signature)

    def row(self) -> tuple[Any, ...]:
        return (self.seq, self.position, self.events, self.log_digest, self.signed_at,
                self.key_id, self.signature)


class ChainRow(NamedTuple):
    position: int
    originator: Any      # as the database returns it (hex text on SQLite, a UUID on PostgreSQL)
    version: int
    event_digest: bytes
    subject_digest: bytes
    log_digest: bytes


@dataclass
class Pending:
    """A batch's digests, computed before the lock."""

    originators: list[str]
    versions: list[int]
    digests: list[bytes]
    # The subject link each originator continues from (its event before the batch's first).
    previous: dict[str, bytes]
    # The chain rows written for the batch (PostgreSQL: handed out of the transaction).
    rows: list[ChainRow] = field(default_factory=list)
    # The (originator, version) links taken from the recorder's memory, not the store, and
    # the (position, log digest) of its newest committed chain row they stand on: checked
    # under the write lock (`ChainingRecorder._recheck`).
    remembered: list[tuple[str, int]] = field(default_factory=list)
    anchor: tuple[int, bytes] | None = None

    def wanted(self) -> list[tuple[str, int]]:
        """(originator, version) of each stored event whose subject link the batch
        continues: the one before each originator's first event in the batch."""
        first: dict[str, int] = {}
        for originator, version in zip(self.originators, self.versions, strict=True):
            first.setdefault(originator, version)
        return [(o, v - 1) for o, v in first.items() if v > 1]


def prepare(events: Iterable[Any]) -> Pending:
    """Digests of stored events (anything with originator_id, originator_version, topic
    and state)."""
    originators, versions, digests = [], [], []
    texts: dict[Any, str] = {}  # an aggregate's events come together: spelt once
    # `event_digest`'s fields, those of an originator and of a topic packed once each.
    heads: dict[str, bytes] = {}
    topics: dict[str, bytes] = {}
    last_id: Any = None
    originator = ""
    head = b""
    for event in events:
        if event.originator_id is not last_id:  # (the same object: no UUID hash)
            last_id = event.originator_id
            found = texts.get(last_id)
            if found is None:
                found = texts[last_id] = originator_text(last_id)
            originator = found
            head = heads.get(originator) or heads.setdefault(originator, _head(originator))
        version = int(event.originator_version)
        topic = topics.get(event.topic)
        if topic is None:
            name = event.topic.encode()
            topic = topics[event.topic] = _pack_q(len(name)) + name
        state = bytes(event.state)
        originators.append(originator)
        versions.append(version)
        digests.append(_sha256(b"".join((head, _pack_qq(8, version), topic,
                                         _pack_q(len(state)), state))).digest())
    return Pending(originators, versions, digests, {})


def _head(originator: str) -> bytes:
    """The start of `event_digest`'s message for one originator."""
    who = originator.encode()
    return _PREFIX + _pack_q(len(who)) + who


class Tail(NamedTuple):
    """What the chain stands on, read under the write lock with the newest checkpoint."""
    below: int       # the newest stored event before the batch (0: none)
    chain_head: int  # the newest chain row (0: none)


def check_tail(head: Checkpoint | None, tail: Tail) -> None:
    """Raises ChainBroken unless the batch continues the chain at its signed head: the
    newest checkpoint at the newest chain row, which is the newest stored event before the
    batch (no checkpoint: no chain row and no event before it)."""
    at = 0 if head is None else head.position
    if tail.chain_head != at:
        raise ChainBroken(
            "its newest checkpoint is missing" if head is None and tail.chain_head else
            f"its newest chain row (position {tail.chain_head}) is not at its newest "
            f"checkpoint (position {at})")
    if tail.below != at:
        raise ChainBroken(
            f"the stored event at position {tail.below} is not in it (its head is at "
            f"position {at})" if tail.below > at else
            f"the stored event at its head (position {at}) is missing")


def extend(pending: Pending, positions: Sequence[int], head: Checkpoint | None,
           signer: Signer, tail: Tail, at: datetime | None = None
           ) -> tuple[list[ChainRow], Checkpoint]:
    """The chain rows of a batch stored at `positions` after `head`, and its checkpoint.
    Raises ChainBroken when the chain does not stand where the batch would continue it
    (`check_tail`) or a subject's previous event has no link: never restarts at genesis
    over a gap."""
    check_tail(head, tail)
    log_digest = LOG_GENESIS if head is None else head.log_digest
    subjects = dict(pending.previous)
    rows = []
    sha256 = _sha256  # `link`, written out: two per event
    for position, originator, version, digest in zip(
            positions, pending.originators, pending.versions, pending.digests, strict=True):
        previous = subjects.get(originator)
        if previous is None:
            if version > 1:
                raise ChainBroken(f"the event before the one at position {position} "
                                  f"(version {version - 1} of its originator) has no "
                                  "chain row")
            previous = subject_genesis(originator)
        subject_digest = sha256(previous + digest).digest()
        subjects[originator] = subject_digest
        log_digest = sha256(log_digest + digest).digest()
        rows.append(_new_row(ChainRow, (int(position), originator, version, digest,
                                        subject_digest, log_digest)))
    seq = 1 if head is None else head.seq + 1
    events = len(rows) + (0 if head is None else head.events)
    return rows, Checkpoint.signed(signer, seq, int(positions[-1]), events, log_digest, at)


def check_signing_key(signer: Signer, newest_key_id: str | None) -> None:
    """Raises ConfigurationError when the chain's newest checkpoint was signed with another
    key than `signer`: writing on would start a second chain that `audit verify` rejects."""
    if newest_key_id is not None and newest_key_id != signer.fingerprint:
        raise ConfigurationError(
            f"the signing key ({signer.source}, fingerprint {signer.fingerprint}) is not "
            f"the key the audit chain is signed with ({newest_key_id}): nothing was "
            "written; restore that key, or run `lifecycle audit verify` if the chain was "
            "re-signed behind the application's back")


class BrokenEvent(LifecycleError):
    """A stored event that does not decode or does not match its chain row: the log was
    altered behind the application's back. Names the event (position, subject, version)."""

    def __init__(self, position: int | None, originator: object, version: int, what: str,
                 name: str | None = None) -> None:
        self.position, self.originator, self.version = position, str(originator), version
        where = f"position {position}: " if position is not None else ""
        who = name or f"originator {originator}"
        super().__init__(f"the stored event at {where}{who} v{version} {what}: the event "
                         "log was altered; `lifecycle audit verify` lists every change")


def check_page(page: Sequence[Any], chained: dict[int, bytes],
               name_of: Callable[[Any], str | None] | None,
               row_at: Callable[[int], ChainRow | None] | None = None) -> None:
    """Raises BrokenEvent for the first notification of `page` whose digest differs from
    its chain row's (`chained`: position -> event digest) or that has none. With `row_at`
    (the page holds every stored event of the positions `chained` covers), also for a
    chain row whose event is gone."""
    for n in page:
        digest = chained.pop(n.id, None)
        found = event_digest(originator_text(n.originator_id), n.originator_version, n.topic,
                             bytes(n.state))
        if digest != found:
            what = ("is not in the audit chain" if digest is None
                    else "does not match its audit chain row")
            raise BrokenEvent(n.id, originator_text(n.originator_id), n.originator_version,
                              what, name_of(n.originator_id) if name_of else None)
    if row_at is not None and chained:
        position = min(chained)
        row = row_at(position)
        assert row is not None
        raise BrokenEvent(position, originator_text(row.originator), row.version,
                          "was removed (the audit chain has it)",
                          name_of(row.originator) if name_of else None)


class ChainNotReady(Exception):
    """A recorder asked to store events before a signing key was attached to it."""


class ChainingRecorder(ApplicationRecorder):
    """What both chained recorders (SQLite, PostgreSQL) share: the signing key, a batch's
    chain prepared before the lock, and reads of the log checked against the chain while
    `checked_reads` is set (a rebuild, a replay): BrokenEvent names the first event that
    does not match; `name_of` gives a subject's reference."""

    signer: Signer | None = None
    # originator -> (version, subject digest) of its newest event this recorder chained
    _links: dict[str, tuple[int, bytes]]
    # (position, log digest) of the newest chain row this recorder committed: while the
    # store still holds it, it holds every row before it, so every remembered link
    _anchor: tuple[int, bytes] | None
    key_checked = False  # the newest checkpoint's key was compared with `signer`
    checked_reads = False
    name_of: Callable[[Any], str | None] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._links = {}
        self._anchor = None

    def _pending(self, stored_events: Sequence[StoredEvent]) -> Pending | None:
        """The batch's digests and previous subject links, before the lock (None: nothing
        to chain)."""
        if not stored_events:
            return None
        if self.signer is None:
            raise ChainNotReady("no signing key attached to the event recorder")
        if not self.key_checked:
            check_signing_key(self.signer, self.newest_key_id())
            self.key_checked = True
        pending = prepare(stored_events)
        wanted = pending.wanted()
        links = self._links
        if links:
            known = {o: links[o][1] for o, v in wanted if links.get(o, (0,))[0] == v}
            if known:
                # Read after the links: `_chained` moves the anchor on before them.
                pending.anchor = self._anchor
                pending.remembered = [(o, v) for o, v in wanted if o in known]
                wanted = [(o, v) for o, v in wanted if o not in known]
                pending.previous.update(known)
        pending.previous.update(self.subject_links(wanted))
        return pending

    def _anchor_position(self, pending: Pending) -> int:
        """The chain position whose log digest `_recheck` needs (0: none)."""
        return pending.anchor[0] if pending.remembered and pending.anchor else 0

    def _recheck(self, pending: Pending, anchored: bytes | None,
                 read: Callable[[list[tuple[str, int]]], dict[str, bytes]]) -> None:
        """Under the write lock, before the batch is chained: the links it took from
        memory stand only if the store still holds the chain row they were anchored on
        (`anchored`: its log digest there now, None if no row). A store put back to an
        older state under this recorder (a restore), where others may have stored other
        events since, has its links read again (`read`, in the transaction) and the
        memory is dropped."""
        if not pending.remembered:
            return
        if pending.anchor is not None and anchored == pending.anchor[1]:
            return
        self._links.clear()
        self._anchor = None
        for originator, _ in pending.remembered:
            pending.previous.pop(originator, None)
        pending.previous.update(read(pending.remembered))
        pending.remembered = []

    def _chained(self, rows: Sequence[ChainRow]) -> None:
        """Remembers the subject links of a batch this recorder has committed: its next
        batch continues them without reading them back (a subject saved in several
        batches of one ingest). An event at (originator, version) never changes; a batch
        that continues an older version than the newest stored conflicts on its insert."""
        if not rows:
            return
        newest = max(rows, key=lambda row: row.position)
        if self._anchor is None or newest.position > self._anchor[0]:
            self._anchor = (newest.position, newest.log_digest)  # before the links
        links = self._links
        if len(links) > LINKS_KEPT:
            links.clear()
        for row in rows:
            links[row.originator] = (row.version, row.subject_digest)

    def select_notifications(self, start: int | None, limit: int, stop: int | None = None,
                             topics: Sequence[str] = (), *,
                             inclusive_of_start: bool = True) -> Sequence[Notification]:
        # The recorder this is mixed into (next in the MRO) does the reading.
        page = super().select_notifications(  # type: ignore[safe-super]
            start, limit, stop, topics, inclusive_of_start=inclusive_of_start)
        if self.checked_reads and page:
            after = page[0].id - 1 if start is None or inclusive_of_start else start
            self.check(page, after, page[-1].id, whole_range=not topics)
        return page

    def check(self, page: Sequence[Notification], after: int, upto: int,
              whole_range: bool) -> None:
        """Raises BrokenEvent unless `page` matches the chain rows of (after, upto]."""
        check_page(page, self.chain_digests(after, upto), self.name_of,
                   self.chain_row if whole_range else None)

    def chain_row(self, position: int) -> ChainRow | None:
        rows = self.chain_rows(position - 1, position, 1)
        return rows[0] if rows else None

    def chain_digests(self, after: int, upto: int) -> dict[int, bytes]:
        """Position -> event digest of the chain rows in (after, upto]."""
        raise NotImplementedError

    def chain_rows(self, after: int, upto: int, limit: int) -> list[ChainRow]:
        """The chain rows in (after, upto], at most `limit`, in position order."""
        raise NotImplementedError

    def newest_key_id(self) -> str | None:
        """The key id of the newest checkpoint, or None."""
        raise NotImplementedError

    def upgrade_target(self, verifier: Verifier) -> int | None:
        """The position an older store's backlog is chained up to, if an upgrade began
        and its head is signed by `verifier`'s key (else None: nothing to resume)."""
        found = self.upgrade_row()
        if found is None:
            return None
        target, key_id, signature = found
        if key_id != verifier.fingerprint or not verifier.verifies(
                upgrade_message(target), signature):
            return None
        return target

    def upgrade_row(self) -> tuple[int, str, bytes] | None:
        """(target, key id, signature) of the upgrade row, if any."""
        raise NotImplementedError

    def begin_upgrade(self, signer: Signer, target: int) -> None:
        """Records the signed head an older store's backlog is chained up to, unless an
        upgrade began already (its head stands)."""
        raise NotImplementedError

    def chain_backlog(self, signer: Signer, limit: int, upto: int) -> int:
        """Chains up to `limit` stored events after the chain's head and at most at `upto`,
        in one transaction under the write lock; returns how many. The subjects' previous
        links are read under that lock: processes that chain pages at once take turns."""
        raise NotImplementedError

    def subject_links(self, wanted: list[tuple[str, int]]) -> dict[str, bytes]:
        """The chained subject digest of each (originator, version) that has one."""
        raise NotImplementedError
