"""attack16: key-file layouts the rotation's refusal of unreplaceable key files
(`refuse_unreplaceable_key_file`) must get right: no false refusal of a replaceable file
(a folder reached by a link, a relative path, a hard-linked file), and a file mounted on
its own found whatever its name (spaces, tabs, backslashes: escaped in mountinfo), also
when named through a linked folder or a relative path. In process, SQLite; bind mounts
are real (root) and always undone."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lifecycle.domain.errors import ConfigurationError
from lifecycle.services.ledger import Ledger
from lifecycle.services.rotation import rotate
from lifecycle.store.epoch_keys import refuse_unreplaceable_key_file
from lifecycle.store.settings import Settings
from tests.facts_builder import collected, lines

NOW = datetime(2024, 6, 1, tzinfo=UTC)


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode() + "\n"


def key_in(path: Path) -> bytes | None:
    try:
        key = base64.b64decode(path.read_text().strip(), validate=True)
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return key if len(key) == 32 else None


def populated(home: Path, key_file: Path) -> Settings:
    settings = Settings(home=home, database_url=None, master_key=None,
                        master_key_file=key_file)
    with Ledger(settings) as ledger:
        assert ledger.ingest(lines([collected("subscriber:lay-1", "2024-01-01T09:00:00+00:00",
                                              "rec-1", {"name": "Name 1"}, id="lay-1")]),
                             NOW).accepted == 1
    return settings


def rotated_and_read(settings: Settings) -> None:
    with Ledger(settings) as ledger:
        report = rotate(settings, ledger.vault, ledger.store, NOW)
        assert report.destroyed
    with Ledger(settings) as ledger:
        assert ledger.subject_view("subscriber:lay-1")["records"][0]["data"] == {"name": "Name 1"}


@contextmanager
def bind(source: Path, target: Path) -> Iterator[None]:
    if shutil.which("mount") is None:
        pytest.skip("no mount")
    bound = subprocess.run(["mount", "--bind", str(source), str(target)],
                           capture_output=True, text=True)
    if bound.returncode != 0:
        pytest.skip(f"cannot bind-mount: {bound.stderr[:200]}")
    try:
        yield
    finally:
        subprocess.run(["umount", str(target)], check=True)


def test_a_key_file_in_a_linked_folder_rotates(tmp_path: Path) -> None:
    """home/secrets is a link to a folder elsewhere; the key file in it is a regular file:
    not refused; the rotation installs the new key in the real folder, the link stays."""
    real = tmp_path / "elsewhere"
    real.mkdir(mode=0o700)
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    (home / "secrets").symlink_to(real)
    (real / "master.key").write_text(new_key())
    (real / "master.key").chmod(0o600)
    settings = populated(home, home / "secrets" / "master.key")
    old = key_in(real / "master.key")
    rotated_and_read(settings)
    assert (home / "secrets").is_symlink()
    assert key_in(real / "master.key") not in (None, old)


def test_a_hard_linked_key_file_rotates_and_no_name_keeps_the_retired_key(
        tmp_path: Path) -> None:
    """The key file has a second name (a hard link): not refused (renaming over one name
    works); after the rotation the key file holds the new key and the other name, still
    the old inode, no longer holds the retired key (its bytes were overwritten)."""
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    key_file = home / "master.key"
    key_file.write_text(new_key())
    key_file.chmod(0o600)
    other = tmp_path / "backup.key"
    os.link(key_file, other)
    settings = populated(home, key_file)
    old = key_in(key_file)
    rotated_and_read(settings)
    assert key_in(other) is None and old is not None
    assert old not in other.read_bytes() and base64.b64encode(old) not in other.read_bytes()


def test_a_relative_key_file_path_rotates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    """LIFECYCLE_MASTER_KEY_FILE given relative to the working folder: not refused."""
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    (home / "master.key").write_text(new_key())
    (home / "master.key").chmod(0o600)
    monkeypatch.chdir(home)
    settings = populated(home, Path("master.key"))
    rotated_and_read(settings)


@pytest.mark.parametrize("name", ["master key.key", "tab\tkey", "back\\040slash.key",
                                  "new\nline.key", "d\\134ouble.key"])
def test_a_mounted_key_file_with_an_odd_name_is_refused(tmp_path: Path, name: str) -> None:
    """A key file bind-mounted on its own, its folder and name holding characters that
    mountinfo escapes (space, tab, newline, a backslash followed by digits): refused as
    mounted on its own."""
    folder = tmp_path / "odd dir\\011x"
    folder.mkdir()
    key_file = folder / name
    key_file.write_text("placeholder\n")
    secret = tmp_path / "secret.key"
    secret.write_text("c2VjcmV0\n")
    settings = Settings(home=folder, database_url=None, master_key=None,
                        master_key_file=key_file)
    with bind(secret, key_file):
        with pytest.raises(ConfigurationError) as refused:
            refuse_unreplaceable_key_file(settings, under_way=None)
        assert "mounted on its own" in str(refused.value)


def test_a_mounted_key_file_named_through_a_linked_folder_or_relatively_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The mounted key file named by a path through a linked folder, or relative to the
    working folder: still found mounted on its own."""
    real = tmp_path / "real"
    real.mkdir()
    key_file = real / "master.key"
    key_file.write_text("placeholder\n")
    secret = tmp_path / "secret.key"
    secret.write_text("c2VjcmV0\n")
    (tmp_path / "via").symlink_to(real)
    with bind(secret, key_file):
        for named in (tmp_path / "via" / "master.key", Path("master.key")):
            monkeypatch.chdir(real)
            settings = Settings(home=real, database_url=None, master_key=None,
                                master_key_file=named)
            with pytest.raises(ConfigurationError, match="mounted on its own"):
                refuse_unreplaceable_key_file(settings, under_way=None)
