"""A rotation under way finishes through a key file that is a link once the link's target
holds the new key (docs/guarantees.md, "Erasure in every copy: master-key epochs").

A rotation replaces the key file, so it refuses a key file that is a link. But an operator
whose key lives in a secret store recovers a rotation under way by putting its new key
there and linking the key file to it: nothing is left to replace, and the next run must
finish the rotation rather than refuse it forever. A link to a secret that still holds the
old key is refused, and every value still reads (the new key is in its file beside).
Real `lifecycle keys rotate` processes, both backends.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from lifecycle.store.epoch_keys import next_key_files
from lifecycle.store.settings import Settings
from tests.test_attack15_symlinked_key import (cli, epochs, linked_store, one_line,
                                               reads_every_subject)


@pytest.fixture(params=["sqlite", "postgres"])
def under_way(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Settings, Path]:
    """A store whose key file is a regular file, its rotation killed once recorded (step 5):
    the new key is only in the new-key file beside the key file."""
    url = request.getfixturevalue("postgres_database") if request.param == "postgres" else None
    linked, secret = linked_store(tmp_path, url)
    link = linked.master_key_file
    link.unlink()
    link.write_bytes(secret.read_bytes())
    link.chmod(0o600)
    killed = cli(linked, "keys", "rotate", crash_at="rotate-recorded")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert len(next_key_files(linked)) == 1
    return linked, secret


def link_to(link: Path, secret: Path, key_text: bytes) -> None:
    secret.write_bytes(key_text)
    link.unlink()
    link.symlink_to(secret)


def test_a_link_to_the_new_key_lets_the_rotation_finish(
        under_way: tuple[Settings, Path]) -> None:
    """The operator copies the new key into the secret and links the key file to it: the
    next `keys rotate` finishes (exit 0, old epoch retired, no new-key file left), the key
    file is still the same link, and every value reads in a new process."""
    settings, secret = under_way
    link = settings.master_key_file
    link_to(link, secret, next_key_files(settings)[0].read_bytes())
    finished = cli(settings, "keys", "rotate")
    assert finished.returncode == 0, finished.stderr
    assert sorted(state for state, _ in epochs(settings).values()) == ["current", "retired"]
    assert link.is_symlink() and link.resolve() == secret.resolve()
    assert next_key_files(settings) == []
    assert reads_every_subject(settings) == []


def test_a_link_to_the_old_key_is_refused_and_loses_nothing(
        under_way: tuple[Settings, Path]) -> None:
    """The key file is made a link to a secret holding the old key: `keys rotate` is one
    line, exit 2, saying the rotation stays under way; the link and the epochs are as they
    were, and every value still reads (the new key from its file beside)."""
    settings, secret = under_way
    link = settings.master_key_file
    link_to(link, secret, secret.read_bytes())
    before = epochs(settings)
    refused = cli(settings, "keys", "rotate")
    assert refused.returncode == 2 and one_line(refused), refused.stderr
    assert "is a link" in refused.stderr and "under way" in refused.stderr
    assert link.is_symlink() and epochs(settings) == before
    assert reads_every_subject(settings) == []
