"""attack17: the key given by LIFECYCLE_MASTER_KEY_COMMAND (a secret store), no key file
yet, LIFECYCLE_MASTER_KEY_FILE naming where lifecycle is to keep the new key, in a folder
not made yet (`/var/lib/lifecycle/keys/master.key` on a fresh host; its parent writable).
`write_next_key` makes that folder (`mkdir(parents=True)`), and until c124cca `keys rotate`
did; the new folder check (`os.access(path.parent, W_OK|X_OK)`, false for a folder that
does not exist) now refuses it: "its folder ... cannot be written ... point
LIFECYCLE_MASTER_KEY_FILE at a regular file in a folder lifecycle may write", exit 2.

The rule: a check added to refuse rotations that cannot finish refuses only those; one
that would have finished (the folder made, the new key written, the rotation recorded)
is not refused. SQLite."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path


from lifecycle.services.ledger import Ledger
from lifecycle.store.settings import Settings
from tests.facts_builder import collected, lines
from tests.processes import env_for

NOW = datetime(2024, 6, 1, tzinfo=UTC)
SUBJECTS = [f"subscriber:a17c-{n}" for n in range(3)]


def test_command_key_rotation_into_a_folder_not_made_yet(tmp_path: Path) -> None:
    """Key from LIFECYCLE_MASTER_KEY_COMMAND, LIFECYCLE_MASTER_KEY_FILE in a folder that
    does not exist yet under a writable one: `keys rotate` finishes (exit 0), the new key
    is in that file, and every subject reads with the key file alone."""
    operator_key = tmp_path / "operator.key"
    operator_key.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    operator_key.chmod(0o600)
    home = tmp_path / "data"
    home.mkdir(mode=0o700)
    key_file = tmp_path / "keys" / "lifecycle" / "master.key"
    settings = Settings(home=home, database_url=None, master_key=None,
                        master_key_file=key_file,
                        master_key_command=f"cat {operator_key}")
    facts = [collected(s, "2024-01-01T09:00:00+00:00", "rec-1", {"name": f"Name {n}"},
                       id=f"a17c-{n}") for n, s in enumerate(SUBJECTS)]
    with Ledger(settings) as ledger:
        assert ledger.ingest(lines(facts), NOW).accepted == len(facts)
    env = env_for(settings)
    env["LIFECYCLE_MASTER_KEY_FILE"] = str(key_file)
    env["LIFECYCLE_MASTER_KEY_COMMAND"] = f"cat {operator_key}"
    rotated = subprocess.run([sys.executable, "-m", "lifecycle", "keys", "rotate"], env=env,
                             capture_output=True, text=True, timeout=120)
    assert rotated.returncode == 0, rotated.stderr.strip()[-400:]
    assert key_file.is_file()
    del env["LIFECYCLE_MASTER_KEY_COMMAND"]
    for n, subject in enumerate(SUBJECTS):
        shown = subprocess.run([sys.executable, "-m", "lifecycle", "subject", "show",
                                subject, "--json"], env=env, capture_output=True,
                               text=True, timeout=60)
        assert shown.returncode == 0 and f"Name {n}" in shown.stdout, shown.stderr[-300:]
