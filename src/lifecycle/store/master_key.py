"""The master key that wraps every data key: from the environment, a key file, or created."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import shlex
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from lifecycle.domain.errors import ConfigurationError
from lifecycle.support.logs import get_logger
from lifecycle.store.settings import (
    ALLOW_OPEN_KEY_ENV,
    MASTER_KEY_COMMAND_ENV,
    MASTER_KEY_ENV,
    Settings,
)

KEY_BYTES = 32
log = get_logger("lifecycle.master_key")


def _decode(text: str, where: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigurationError(f"{where}: the master key is not valid base64") from None
    if len(key) != KEY_BYTES:
        raise ConfigurationError(f"{where}: the master key must be {KEY_BYTES} bytes")
    return key


def given_master_key(settings: Settings) -> tuple[bytes, str] | None:
    """The master key from the environment, the key command or the key file, and where it
    came from; None if there is none of them (nothing is created here)."""
    if settings.master_key:
        return _decode(settings.master_key, MASTER_KEY_ENV), MASTER_KEY_ENV
    if settings.master_key_command:
        return command_key(settings.master_key_command), MASTER_KEY_COMMAND_ENV
    where = f"master key file {settings.master_key_file}"
    key = read_key_file(settings.master_key_file, where, _decode, settings.allow_open_key)
    return None if key is None else (key, where)


Key = TypeVar("Key")


def read_key_file(path: Path, where: str, decode: Callable[[str, str], Key],
                  allow_open: bool) -> Key | None:
    """The key a key file holds (`decode` checks it), or None when there is no file. A
    file that cannot be read, holds no key or is open to others is one line naming it."""
    if not path.exists() and not path.is_symlink():
        return None
    refuse_if_open(path, allow_open, where)  # before a byte of it is read
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not text"
        raise ConfigurationError(f"{where}: cannot be read ({reason})") from None
    return decode(text, where)


def command_key(command: str) -> bytes:
    """The key the operator's command prints (base64 on standard output). A command that
    cannot run, fails or prints something else is one line naming the variable; what it
    printed is never shown (it may be a key)."""
    where = MASTER_KEY_COMMAND_ENV
    try:
        argv = shlex.split(command)
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30,
                                stdin=subprocess.DEVNULL)
    except (OSError, ValueError, subprocess.TimeoutExpired) as error:
        raise ConfigurationError(f"{where}: the command cannot be run "
                                 f"({type(error).__name__})") from None
    if result.returncode != 0:
        raise ConfigurationError(f"{where}: the command exited with {result.returncode}")
    return _decode(result.stdout, where)


def refuse_if_open(path: Path, allowed: bool, where: str) -> None:
    """A key file that grants group or others any permission is refused (one line: the
    file, its mode and the fix, never the key), unless LIFECYCLE_ALLOW_OPEN_KEY=1, which
    turns the refusal into a warning. For the master key and any other key file."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return
    if not mode & 0o077:
        return
    if allowed:
        log.warning("key_file.not_private", file=str(path), mode=f"{mode:04o}",
                    fix=f"chmod 600 {path}", allowed_by=f"{ALLOW_OPEN_KEY_ENV}=1")
        return
    raise ConfigurationError(
        f"{where}: mode {mode:04o} lets group or others at the key; fix it with "
        f"chmod 600 {path} (or set {ALLOW_OPEN_KEY_ENV}=1 to accept it)")


def create_key_file(path: Path, where: str) -> None:
    """Writes a new random 32-byte key (base64) to `path`, mode 0600, unless a process
    creating it at the same time got there first (then its key stays): the file appears
    complete or not at all (written aside, then hard-linked into place)."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        aside = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}")
        fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(base64.b64encode(os.urandom(KEY_BYTES)).decode() + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(aside, path)
            except FileExistsError:
                pass  # another process created it first: use its key
        finally:
            aside.unlink(missing_ok=True)
    except OSError as error:
        raise ConfigurationError(f"{where}: cannot be created ({error.strerror})") from None


def create_master_key(settings: Settings) -> bytes:
    """Creates the key file (mode 0600) with a new random key, on first use of an empty
    vault. Of processes creating it at once, one wins and the others read its key: the file
    appears complete or not at all (written aside, then hard-linked into place)."""
    create_key_file(settings.master_key_file, f"master key file {settings.master_key_file}")
    given = given_master_key(settings)
    assert given is not None
    return given[0]


def derive_key(master_key: bytes, purpose: str) -> bytes:
    """A sub-key for one use (key wrapping, suppression hashing), so uses never share a key."""
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None,
                info=f"lifecycle {purpose} v1".encode()).derive(master_key)


KEY_CHECK_CONSTANT = b"lifecycle master key check v1"


def key_check_value(master_key: bytes) -> str:
    """The key-check value (KCV) of a master key: HMAC-SHA256 of a constant under a sub-key
    of its own, so it identifies the key without revealing it or any other sub-key."""
    return hmac.new(derive_key(master_key, "key-check"), KEY_CHECK_CONSTANT,
                    hashlib.sha256).hexdigest()


def key_fingerprint(key_check: str) -> str:
    """The short form of a key-check value that error messages show."""
    return key_check[:16]
