"""The audit chain's digests in hex, for documents that print them (the deletion certificate).

The chain itself is written with the events (`lifecycle.store.event_chain`), not with the read
models; these are the same functions over hex text.
"""

from __future__ import annotations

from lifecycle.store import event_chain

LOG_GENESIS = event_chain.LOG_GENESIS.hex()


def event_digest(originator_id: object, originator_version: int, topic: str,
                 state: bytes) -> str:
    """SHA-256 over the stored event's fields, each length-prefixed (no ambiguity)."""
    return event_chain.event_digest(event_chain.originator_text(originator_id),
                                    originator_version, topic, bytes(state)).hex()


def subject_genesis(originator_id: str) -> str:
    return event_chain.subject_genesis(originator_id).hex()


def link(previous: str, digest: str) -> str:
    """The next link of a chain: SHA-256(previous || digest), over the raw 32-byte values."""
    return event_chain.link(bytes.fromhex(previous), bytes.fromhex(digest)).hex()
