"""The key that signs the audit chain's checkpoints: from the environment, a key file, or created.

Kept apart from the store, as the master key is: `LIFECYCLE_SIGNING_KEY` (the base64 of a
32-byte Ed25519 private key) or the key file (`LIFECYCLE_SIGNING_KEY_FILE`, default
`signing.key` in the home), created with mode 0600 when a store without any checkpoint is
first opened. Someone who can rewrite the event store but not read this key cannot sign a
rewritten chain.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from lifecycle.store.master_key import create_key_file, read_key_file
from lifecycle.domain.errors import ConfigurationError
from lifecycle.store.settings import SIGNING_KEY_ENV, Settings

KEY_BYTES = 32


def fingerprint_of(public_key: bytes) -> str:
    """The short, printable identity of a public key: SHA-256 of its raw bytes, 16 hex."""
    return hashlib.sha256(public_key).hexdigest()[:16]


@dataclass(frozen=True)
class Verifier:
    """A public key that checks checkpoint signatures."""

    public_key: bytes  # raw 32 bytes

    @property
    def fingerprint(self) -> str:
        return fingerprint_of(self.public_key)

    def verifies(self, message: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True


class Signer:
    """The private key that signs checkpoints, with its public half."""

    def __init__(self, private_key: Ed25519PrivateKey, source: str) -> None:
        self._private = private_key
        self.source = source  # where it came from, as messages name it
        self.verifier = Verifier(
            private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))

    @property
    def fingerprint(self) -> str:
        return self.verifier.fingerprint

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)

    def __repr__(self) -> str:  # never the key
        return f"Signer(fingerprint={self.fingerprint})"


def _decode(text: str, where: str) -> Ed25519PrivateKey:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigurationError(f"{where}: the signing key is not valid base64") from None
    if len(raw) != KEY_BYTES:
        raise ConfigurationError(f"{where}: the signing key must be {KEY_BYTES} bytes")
    return Ed25519PrivateKey.from_private_bytes(raw)


def given_signing_key(settings: Settings) -> Signer | None:
    """The signing key from the environment or the key file; None if there is neither."""
    if settings.signing_key:
        return Signer(_decode(settings.signing_key, SIGNING_KEY_ENV), SIGNING_KEY_ENV)
    where = f"signing key file {settings.signing_key_path}"
    key = read_key_file(settings.signing_key_path, where, _decode, settings.allow_open_key)
    return None if key is None else Signer(key, where)


def create_signing_key(settings: Settings) -> Signer:
    """Creates the key file (mode 0600) with a new key. Of processes creating it at once,
    one wins and the others read its key (written aside, then hard-linked into place)."""
    path = settings.signing_key_path
    create_key_file(path, f"signing key file {path}")
    given = given_signing_key(settings)
    assert given is not None
    return given


def missing_key_error(settings: Settings, fingerprint: str) -> ConfigurationError:
    return ConfigurationError(
        f"signing key file {settings.signing_key_path} does not exist, but the audit chain "
        f"is signed with key {fingerprint}: restore the file or set {SIGNING_KEY_ENV}")
