"""attack15: the key file in forms an operator writes by hand or configures loosely: a
relative LIFECYCLE_MASTER_KEY_FILE run from its folder and then from another working
directory, and a key written with CRLF and trailing blanks. Real `lifecycle` processes,
SQLite (the key file handling is the same on both backends).

Held: rotation writes the new-key file and the new key beside the relative path, in the
working directory's frame; from another directory the same relative setting names no
file and is one line exit 2 (nothing created, no key lost); a CRLF key file rotates, and
the old bytes are gone.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

from lifecycle.services.ledger import Ledger
from lifecycle.store.master_key import key_check_value
from lifecycle.store.settings import Settings
from tests.facts_builder import collected, lines
from tests.processes import env_for
from tests.test_attack15_symlinked_key import NOW, epochs, one_line


def populated(settings: Settings) -> None:
    facts = [collected(f"subscriber:form-{n}", "2024-01-01T09:00:00+00:00", "rec-1",
                       {"name": f"Name {n}"}, id=f"form-{n}") for n in range(3)]
    with Ledger(settings) as ledger:
        assert ledger.ingest(lines(facts), NOW).accepted == len(facts)


def cli(settings: Settings, key_file: str, cwd: Path, *args: str
        ) -> subprocess.CompletedProcess[str]:
    env = env_for(settings)
    env["LIFECYCLE_MASTER_KEY_FILE"] = key_file
    return subprocess.run([sys.executable, "-m", "lifecycle", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_a_relative_key_file_rotates_in_place_and_elsewhere_is_one_line(tmp_path: Path
                                                                         ) -> None:
    """LIFECYCLE_MASTER_KEY_FILE=keys/master.key, run from the folder holding `keys`: the
    rotation completes and the key file there holds the current key (no new-key file
    left); the same setting from another working directory is one line, exit 2, creates
    no key file there and destroys nothing."""
    work, other = tmp_path / "work", tmp_path / "other"
    (work / "keys").mkdir(parents=True, mode=0o700)
    other.mkdir()
    home = tmp_path / "lifecycle-data"
    absolute = Settings(home=home, database_url=None, master_key=None,
                        master_key_file=work / "keys" / "master.key")
    populated(absolute)
    rotated = cli(absolute, "keys/master.key", work, "keys", "rotate")
    assert rotated.returncode == 0, rotated.stderr
    current = [c for s, c in epochs(absolute).values() if s == "current"]
    key = base64.b64decode((work / "keys" / "master.key").read_text())
    assert [key_check_value(key)] == current
    assert sorted(os.listdir(work / "keys")) == ["master.key"]
    elsewhere = cli(absolute, "keys/master.key", other, "status")
    assert elsewhere.returncode == 2 and one_line(elsewhere), elsewhere.stderr
    assert "keys/master.key" in elsewhere.stderr and not (other / "keys").exists()


def test_a_key_file_with_crlf_and_blanks_rotates_and_loses_its_old_bytes(tmp_path: Path
                                                                          ) -> None:
    """A key file written as `KEY  \\r\\n` opens, rotates (exit 0), and afterwards holds
    the current epoch's key; the old key's text is nowhere in it."""
    home = tmp_path / "lifecycle-data"
    home.mkdir(mode=0o700)
    old = base64.b64encode(os.urandom(32)).decode()
    key_file = home / "master.key"
    key_file.write_bytes(old.encode() + b"  \r\n")
    key_file.chmod(0o600)
    settings = Settings(home=home, database_url=None, master_key=None,
                        master_key_file=key_file)
    populated(settings)
    rotated = cli(settings, str(key_file), tmp_path, "keys", "rotate")
    assert rotated.returncode == 0, rotated.stderr
    text = key_file.read_text()
    assert old not in text
    current = [c for s, c in epochs(settings).values() if s == "current"]
    assert [key_check_value(base64.b64decode(text.strip()))] == current
    with Ledger(settings) as ledger:
        assert ledger.subject_view("subscriber:form-2")["records"][0]["data"] == {
            "name": "Name 2"}
