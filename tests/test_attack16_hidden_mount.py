"""attack16: a false refusal. `_mount_point` compares the key file's path with every
mount point in /proc/self/mountinfo, including mounts no longer visible: a file that was
bind-mounted at that path and whose folder was later mounted over (a volume mounted on
the folder after the old secret mount). The key file then seen is a regular file in the
new mount, which a rename replaces like any other; the rotation should not refuse it.
Real bind mounts (root), always undone, innermost first."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from lifecycle.store.epoch_keys import refuse_unreplaceable_key_file
from lifecycle.store.settings import Settings


def mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True, text=True).returncode == 0


def test_a_regular_key_file_over_a_hidden_mount_is_not_refused(tmp_path: Path) -> None:
    """The visible key file is a regular file in a writable mount on its folder, and
    `os.replace` over it works: refuse_unreplaceable_key_file raises nothing."""
    if shutil.which("mount") is None:
        pytest.skip("no mount")
    folder, volume = tmp_path / "data", tmp_path / "volume"
    folder.mkdir()
    volume.mkdir()
    key_file = folder / "master.key"
    key_file.write_text("placeholder\n")
    secret = tmp_path / "secret.key"
    secret.write_text("c2VjcmV0\n")
    done: list[Path] = []
    try:
        if not mount("--bind", str(secret), str(key_file)):
            pytest.skip("cannot bind-mount")
        done.append(key_file)
        assert mount("--bind", str(volume), str(folder))
        done.append(folder)
        probe = folder / "probe"
        probe.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
        os.replace(probe, key_file)  # what step 6 does: a rename over it works
        settings = Settings(home=folder, database_url=None, master_key=None,
                            master_key_file=key_file)
        refuse_unreplaceable_key_file(settings, under_way=None)
    finally:
        # the folder mount first (it hides the file mount), then the file mount below it
        if folder in done:
            subprocess.run(["umount", str(folder)], check=True)
        if key_file in done:
            subprocess.run(["umount", str(key_file)], check=True)
