"""A rotation refuses, before anything is written, a key file it could not replace
(docs/guarantees.md, "Key rotation"): here, a file bind-mounted on its own (a Kubernetes
`subPath` secret), writable, so only the mount tells. A real bind mount: needs `mount`
and the right to use it (root); without them the test says so and skips."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from lifecycle.domain.errors import ConfigurationError
from lifecycle.store.epoch_keys import refuse_unreplaceable_key_file
from lifecycle.store.settings import Settings


@pytest.fixture
def mounted_key_file(tmp_path: Path) -> Iterator[Path]:
    secret, key_file = tmp_path / "secret.key", tmp_path / "master.key"
    secret.write_text("c2VjcmV0\n")
    key_file.write_text("placeholder\n")
    if shutil.which("mount") is None:
        pytest.skip("no `mount` command on this machine")
    bound = subprocess.run(["mount", "--bind", str(secret), str(key_file)],
                           capture_output=True, text=True)
    if bound.returncode != 0:
        pytest.skip(f"cannot bind-mount a file here: {bound.stderr.strip()[:200]}")
    try:
        yield key_file
    finally:
        subprocess.run(["umount", str(key_file)], check=True)


def settings_for(key_file: Path) -> Settings:
    return Settings(home=key_file.parent, database_url=None, master_key=None,
                    master_key_file=key_file)


def test_a_key_file_mounted_on_its_own_is_refused(mounted_key_file: Path) -> None:
    """The key file is a bind mount (writable): one ConfigurationError naming the file and
    the reason, saying nothing was done."""
    with pytest.raises(ConfigurationError) as refused:
        refuse_unreplaceable_key_file(settings_for(mounted_key_file), under_way=None)
    text = str(refused.value)
    assert str(mounted_key_file) in text and "mounted on its own" in text
    assert "nothing was done" in text and "\n" not in text


def test_a_regular_key_file_in_a_writable_folder_is_accepted(tmp_path: Path) -> None:
    """The control: a regular, writable key file raises nothing (nor does a missing one,
    where the key comes from elsewhere)."""
    key_file = tmp_path / "master.key"
    refuse_unreplaceable_key_file(settings_for(key_file), under_way=None)
    key_file.write_text("c2VjcmV0\n")
    refuse_unreplaceable_key_file(settings_for(key_file), under_way="0" * 16)
