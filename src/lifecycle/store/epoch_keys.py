"""Where the keys of master-key epochs live on disk during and after a rotation.

A rotation writes its new key to a file of its own beside the key file
(`<key file>.next-<epoch it saw>-<key check>`, mode 0600) before any data key is wrapped
under it, so a run killed at any point leaves the key for the next run, and no run
removes another's while that one could still begin its epoch. Once every live data key
is re-wrapped and the rotation recorded,
`install_next_key` moves the new key over the key file in one rename and overwrites the
old key's bytes: the old epoch's key is then gone from wherever lifecycle keeps it. A key
the operator supplies (LIFECYCLE_MASTER_KEY, or LIFECYCLE_MASTER_KEY_COMMAND, which
prints it) is the operator's to retire.
"""

from __future__ import annotations

import base64
import os
import stat
from collections.abc import Callable
from pathlib import Path

from lifecycle.store.master_key import KEY_BYTES, command_key, key_check_value
from lifecycle.domain.errors import ConfigurationError
from lifecycle.store.settings import MASTER_KEY_COMMAND_ENV, MASTER_KEY_ENV, Settings


def next_key_path(settings: Settings, key_check: str | None = None,
                  seen: int | None = None) -> Path:
    """Where a rotation keeps its new key until it is installed: beside the key file, one
    file per key, named with the epoch its rotation saw current and the key's check
    (`<key file>.next-<seen>-<check>`), so a rotation never touches another's; None: the
    one file earlier versions used (`<key file>.next`), still read."""
    path = settings.master_key_file
    suffix = "" if key_check is None else f"-{seen}-{key_check[:16]}"
    return path.with_name(f"{path.name}.next{suffix}")


def next_key_files(settings: Settings) -> list[Path]:
    """Every rotation's new-key file beside the key file (this version's and the older one)."""
    path = settings.master_key_file
    try:
        found = sorted(path.parent.glob(f"{path.name}.next-*"))
    except OSError:
        found = []
    legacy = next_key_path(settings)
    return [legacy, *found] if legacy.exists() else found


def _read_key(path: Path) -> bytes | None:
    """The key in a key file; None if there is no such file or it holds no valid key."""
    try:
        key = base64.b64decode(path.read_text().strip(), validate=True)
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return key if len(key) == KEY_BYTES else None


def _given_env_key(settings: Settings) -> bytes | None:
    if not settings.master_key:
        if settings.master_key_command:
            try:
                return command_key(settings.master_key_command)
            except ConfigurationError:
                return None
        return None
    try:
        key = base64.b64decode(settings.master_key.strip(), validate=True)
    except ValueError:
        return None
    return key if len(key) == KEY_BYTES else None


def find_epoch_key(settings: Settings, key_check: str) -> bytes | None:
    """The key whose check value is `key_check`, from the environment, the key file or
    the rotation's file beside it; None if none of them holds it."""
    for key in (_given_env_key(settings), _read_key(settings.master_key_file)):
        if key is not None and key_check_value(key) == key_check:
            return key
    return _next_key(settings, key_check)[1]


def _next_key(settings: Settings, key_check: str) -> tuple[Path | None, bytes | None]:
    """The rotation's file holding the key of `key_check`, and that key."""
    for path in next_key_files(settings):
        key = _read_key(path)
        if key is not None and key_check_value(key) == key_check:
            return path, key
    return None, None


def _write_private(path: Path, key: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(base64.b64encode(key).decode() + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_next_key(settings: Settings, seen: int) -> bytes:
    """A new random key, written (0600, synced) beside the key file in a file of its own,
    named with `seen`, the epoch current when its rotation began: no other rotation's key
    file is touched (one whose lease was lost may still be running); see
    `remove_unused_next_keys`."""
    key = os.urandom(KEY_BYTES)
    path = next_key_path(settings, key_check_value(key), seen)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_private(path, key)
        _sync_folder(path.parent)
    except OSError as error:
        raise ConfigurationError(f"key file {path}: cannot be written ({error.strerror})"
                                 ) from None
    return key


def remove_next_key(settings: Settings, key_check: str) -> None:
    """Removes this rotation's own new-key file (its key never began an epoch)."""
    path, _ = _next_key(settings, key_check)
    if path is not None:
        path.unlink(missing_ok=True)


def remove_unused_next_keys(settings: Settings, epochs: Callable[[], tuple[int, set[str]]]
                            ) -> None:
    """Removes new-key files whose key can no longer begin an epoch: no live epoch's key
    (a retired epoch's key opens nothing that is kept, and must not stay on disk), and
    written by a rotation that saw an epoch older than the current one (an epoch begins
    only over the epoch its rotation saw, and epochs only move on), or holding no key.
    `epochs` reads (the current epoch, every live epoch's key check) from the vault; it
    is read after the files are listed, so a key that begins an epoch meanwhile is seen.
    The legacy file (no epoch in its name) goes once its key is no live epoch's."""
    files = next_key_files(settings)
    if not files:
        return
    current, checks = epochs()
    for path in files:
        key = _read_key(path)
        if key is not None and key_check_value(key) in checks:
            continue
        seen = _seen_epoch(path)
        if key is None or seen is None or seen < current:
            path.unlink(missing_ok=True)


def _seen_epoch(path: Path) -> int | None:
    """The epoch in a new-key file's name; None for the legacy file."""
    parts = path.name.rsplit(".next-", 1)
    if len(parts) != 2:
        return None
    seen, dash, _ = parts[1].partition("-")
    return int(seen) if dash and seen.isdigit() else -1  # -1: not this version's name


def refuse_unreplaceable_key_file(settings: Settings, under_way: str | None) -> None:
    """Raises ConfigurationError, before a rotation writes anything, if its last step could
    not put the new key in the key file: a link (to a mounted secret, say: the link would
    be replaced and its target keep a retired key, or be overwritten), anything but a
    regular file, a file mounted on its own, one that cannot be opened for writing, or a
    folder that cannot be written. `under_way`: the key check of the new key of a rotation
    under way; a key file that already holds that key (however it is kept) needs no
    replacing, and the refusal names the file that holds it."""
    path = settings.master_key_file
    pending: Path | None = None
    if under_way is not None:
        held = _read_key(path)
        if held is not None and key_check_value(held) == under_way:
            return
        pending = _next_key(settings, under_way)[0]
    if pending is not None:
        advice = (f"a rotation is under way and its new key is in {pending}: make the key "
                  "file hold that key (write it into the file a link points to, or put a "
                  "regular file holding it in the key file's place), keep that file until "
                  "the rotation is finished, and run again")
    else:
        advice = ("point LIFECYCLE_MASTER_KEY_FILE at a regular file in a folder lifecycle "
                  "may write (give the current key with LIFECYCLE_MASTER_KEY_COMMAND if it "
                  "lives in a secret store; the new key goes to that file)") + (
            "; the rotation under way stays so" if under_way is not None
            else "; nothing was done")

    def refuse(why: str) -> ConfigurationError:
        return ConfigurationError(f"key file {path}: {why}: a key rotation replaces the "
                                  f"key file; {advice}")

    folder = path.parent  # or the nearest folder there is: the new key's makes the rest
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        raise refuse(f"its folder {folder} cannot be written")
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        return  # the key comes from elsewhere: the new one is written here
    except OSError as error:
        raise refuse(f"cannot be examined ({error.strerror})") from None
    if stat.S_ISLNK(found.st_mode):
        raise refuse(f"is a link to {os.readlink(path)}")
    if not stat.S_ISREG(found.st_mode):
        raise refuse("is not a regular file")
    if _mount_point(path):
        raise refuse("is mounted on its own (a secret mount?), so it cannot be replaced")
    try:
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            raise refuse("is on a read-only file system")
        os.close(os.open(path, os.O_WRONLY | os.O_NOFOLLOW))
    except OSError as error:
        raise refuse(f"cannot be written ({error.strerror})") from None


def _mount_point(path: Path) -> bool:
    """Whether the mount `path` is on has `path` itself as its mount point (Linux: the
    mount id of an O_PATH descriptor, looked up in /proc/self/mountinfo): a file
    bind-mounted on its own cannot be renamed over. Not by device numbers (on overlay file
    systems, in containers, a file's differs from its folder's), nor by mount points
    alone (a mount hidden under a later one is no longer the file's)."""
    try:
        fd = os.open(path, os.O_PATH | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        info = Path(f"/proc/self/fdinfo/{fd}").read_text()
        table = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return False
    finally:
        os.close(fd)
    mount_id = next((line.split()[1] for line in info.splitlines()
                     if line.startswith("mnt_id:") and len(line.split()) > 1), None)
    target = os.path.realpath(path)
    for line in table.splitlines():
        fields = line.split(" ")
        if len(fields) > 4 and fields[0] == mount_id:
            return _unescaped(fields[4]) == target
    return False


def _unescaped(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"),
                       ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def install_next_key(settings: Settings, new_check: str) -> bool:
    """Moves the rotation's new key over the key file (one rename) and overwrites the old
    key file's bytes. Idempotent: True if the key file already holds, or now holds, the
    key of check `new_check`; False if the new key is nowhere to be found. Touches no
    other rotation's new-key file."""
    path = settings.master_key_file
    current = _read_key(path)
    if current is not None and key_check_value(current) == new_check:
        _drop_copies(settings, new_check)
        return True
    upcoming, new = _next_key(settings, new_check)
    if upcoming is None or new is None:
        return False
    try:
        # Never through a link: its target is not this file to overwrite.
        old_fd = (os.open(path, os.O_WRONLY | os.O_NOFOLLOW) if os.path.lexists(path)
                  else None)
        try:
            os.replace(upcoming, path)
            _sync_folder(path.parent)
            if old_fd is not None:  # the old key's inode, now unlinked: overwrite its bytes
                size = os.fstat(old_fd).st_size
                os.pwrite(old_fd, os.urandom(max(size, 1)), 0)
                os.fsync(old_fd)
        finally:
            if old_fd is not None:
                os.close(old_fd)
    except OSError as error:
        raise ConfigurationError(f"key file {path}: cannot be replaced ({error.strerror})"
                                 ) from None
    _drop_copies(settings, new_check)
    return True


def _drop_copies(settings: Settings, installed: str) -> None:
    """New-key files that still hold the key now in the key file (a copy, not another's).
    One a folder that cannot be written keeps is left: it holds the current key, as the
    key file does, and goes once its epoch is retired (`remove_unused_next_keys`)."""
    for path in next_key_files(settings):
        key = _read_key(path)
        if key is not None and key_check_value(key) == installed:
            try:
                path.unlink(missing_ok=True)
            except OSError:
                continue


def operator_key_source(settings: Settings) -> str | None:
    """The name of the place an operator supplies the key from (None: the key file)."""
    if settings.master_key:
        return MASTER_KEY_ENV
    return MASTER_KEY_COMMAND_ENV if settings.master_key_command else None
