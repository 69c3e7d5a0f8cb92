"""attack17: /proc unreadable (not mounted: a minimal chroot or sandbox; simulated by
failing every read of a /proc path in a process of its own). `_mount_point` returns False
when it cannot read /proc/self/fdinfo or /proc/self/mountinfo, so a key file bind-mounted
on its own is not refused: the rotation re-wraps every live key and only then fails to
rename over the mount (EBUSY, step 6), the rotation left under way. docs/guarantees.md:
refused before anything is written. Real bind mount (root), undone in `finally`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.key_file_stores import WITHOUT_PROC, operator_key_file
from tests.test_attack17_layouts_held import mounted


@pytest.mark.xfail(strict=True, reason="known limitation (docs/guarantees.md, master-key "
                   "epochs): without a readable /proc a key file bind-mounted on its own is "
                   "not seen before the rotation; it stops at step 6, one line, under way, "
                   "and finishes once the key file can be replaced")
def test_proc_unreadable_still_refuses_a_key_file_mounted_on_its_own(tmp_path: Path) -> None:
    """/proc unreadable (in a process of its own): a key file bind-mounted on its own is
    still refused before anything is written (a rename over it fails with EBUSY whether
    or not /proc is mounted)."""
    secret = operator_key_file(tmp_path / "secret.key")
    key_file = operator_key_file(tmp_path / "master.key")
    script = WITHOUT_PROC + f"""
import pathlib
from lifecycle.domain.errors import ConfigurationError
from lifecycle.store.epoch_keys import refuse_unreplaceable_key_file
from lifecycle.store.settings import Settings
p = pathlib.Path({str(key_file)!r})
try:
    refuse_unreplaceable_key_file(Settings(home=p.parent, database_url=None,
                                           master_key=None, master_key_file=p), None)
    print("accepted")
except ConfigurationError as error:
    print("refused", error)
"""
    with mounted("--bind", str(secret), str(key_file)):
        done = subprocess.run([sys.executable, "-c", script], capture_output=True,
                              text=True, timeout=30)
    assert done.returncode == 0, done.stderr[-400:]
    assert done.stdout.startswith("refused") and "mounted on its own" in done.stdout, (
        done.stdout)
