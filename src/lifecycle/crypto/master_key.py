"""The master key that wraps every data key: from the environment, a key file, or created."""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from lifecycle.errors import ConfigurationError
from lifecycle.settings import MASTER_KEY_ENV, MASTER_KEY_FILE_ENV, Settings

KEY_BYTES = 32


def _decode(text: str, where: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigurationError(f"{where}: the master key is not valid base64") from None
    if len(key) != KEY_BYTES:
        raise ConfigurationError(f"{where}: the master key must be {KEY_BYTES} bytes")
    return key


def load_master_key(settings: Settings) -> bytes:
    """Reads the master key; on first use of the embedded default, creates it (mode 0600)."""
    if settings.master_key:
        return _decode(settings.master_key, MASTER_KEY_ENV)
    path: Path = settings.master_key_file
    if path.exists():
        return _decode(path.read_text(), f"{MASTER_KEY_FILE_ENV} {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    key = os.urandom(KEY_BYTES)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(base64.b64encode(key).decode() + "\n")
    return key


def derive_key(master_key: bytes, purpose: str) -> bytes:
    """A sub-key for one use (key wrapping, suppression hashing), so uses never share a key."""
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None,
                info=f"lifecycle {purpose} v1".encode()).derive(master_key)
