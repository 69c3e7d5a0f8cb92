"""The master key is checked, never guessed; a home that cannot be written is one line.

The key vault records a key-check value (KCV) of the master key it was first used with. A
vault that holds keys opened without a master key, or with another one, is a configuration
error (exit 2, one line, fingerprints only) and nothing is written: no key file, no row.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from lifecycle.store.master_key import key_check_value, key_fingerprint
from lifecycle.store.vault import vault_meta
from lifecycle.domain.errors import ConfigurationError
from lifecycle.services.ledger import Ledger
from lifecycle.store.settings import Settings
from tests.facts_builder import collected, lines
from tests.processes import env_for, lifecycle

NOW = datetime(2026, 1, 1, tzinfo=UTC)
EMAIL = "quentin.marlowe.52@example.org"
OTHER_KEY = base64.b64encode(bytes(range(100, 132))).decode()
FACTS = "\n".join(lines([
    collected("m:1", "2024-01-01T00:00:00Z", "signup", {"email": EMAIL}),
    collected("m:2", "2024-01-02T00:00:00Z", "signup", {"email": "x" + EMAIL}),
])) + "\n"


def key_bytes(settings: Settings) -> bytes:
    return base64.b64decode(settings.master_key_file.read_text())


def fingerprint(key: bytes) -> str:
    return key_fingerprint(key_check_value(key))


def recorded(settings: Settings) -> list[tuple[str, str]]:
    engine = sa.create_engine(settings.vault_url)
    try:
        with engine.connect() as conn:
            return [(r.key_check, r.fingerprint) for r in conn.execute(sa.select(vault_meta))]
    finally:
        engine.dispose()


def forget_key_check(settings: Settings) -> None:
    """Makes the store look like one written before key checks were recorded."""
    engine = sa.create_engine(settings.vault_url)
    try:
        with engine.begin() as conn:
            conn.execute(vault_meta.delete())
    finally:
        engine.dispose()


def snapshot(settings: Settings) -> dict[str, Any]:
    """Everything a refused open could have written: the files under the home (their
    bytes) and, on PostgreSQL, the row count of every table."""
    files: dict[str, Any] = {}
    if settings.home.exists():
        for path in sorted(settings.home.rglob("*")):
            files[str(path.relative_to(settings.home))] = (
                hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir")
    counts: dict[str, int] = {}
    if settings.database_url:
        engine = sa.create_engine(settings.sqlalchemy_url or "")
        try:
            with engine.connect() as conn:
                names = conn.execute(sa.text(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = 'public'")).scalars().all()
                for name in names:
                    counts[name] = conn.execute(
                        sa.text(f'SELECT count(*) FROM "{name}"')).scalar_one()
        finally:
            engine.dispose()
    return {"files": files, "rows": counts}


def ingested(settings: Settings) -> Settings:
    """The store after one ingest through a real process, which created the master key."""
    result = lifecycle(settings, "ingest", "-", stdin=FACTS)
    assert result.returncode == 0, result.stderr
    assert settings.master_key_file.exists()
    return settings


def assert_one_line_exit_2(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    message = result.stderr.strip()
    assert "\n" not in message, message
    assert "Traceback" not in message
    assert message.startswith("lifecycle: configuration error: "), message
    for needle in needles:
        assert needle in message, (needle, message)
    return message


# -- first use and the recorded check -------------------------------------------------------

def test_first_use_creates_a_private_key_and_records_its_check(backend: Settings) -> None:
    """On an empty vault the master key is created (0600) and its key-check value and
    fingerprint are recorded; opening again with the same key works."""
    with Ledger(backend):
        pass
    key = key_bytes(backend)
    assert backend.master_key_file.stat().st_mode & 0o777 == 0o600
    assert recorded(backend) == [(key_check_value(key), fingerprint(key))]
    assert len(fingerprint(key)) == 16
    with Ledger(backend) as again:
        again.ingest(lines([collected("m:1", "2024-01-01T00:00:00Z", "r", {"email": EMAIL})]),
                     NOW)
        assert again.subject_view("m:1")["records"][0]["data"] == {"email": EMAIL}
    assert recorded(backend) == [(key_check_value(key), fingerprint(key))]


def test_the_check_does_not_reveal_the_key(backend: Settings) -> None:
    """The recorded check is neither the key nor a plain hash of it, and two keys give two
    different checks."""
    with Ledger(backend):
        pass
    key = key_bytes(backend)
    [(check, _)] = recorded(backend)
    assert check not in (key.hex(), hashlib.sha256(key).hexdigest())
    assert key_check_value(base64.b64decode(OTHER_KEY)) != check


def test_a_store_without_a_check_gets_one_on_first_open_with_its_key(
        backend: Settings) -> None:
    """A vault written before checks were recorded gets the check of the key it is opened
    with, once that key is shown to unwrap its data keys."""
    with Ledger(backend) as ledger:
        ledger.ingest(lines([collected("m:1", "2024-01-01T00:00:00Z", "r", {"email": EMAIL})]),
                      NOW)
    forget_key_check(backend)
    with Ledger(backend) as ledger:
        assert ledger.subject_view("m:1")["records"][0]["data"] == {"email": EMAIL}
    key = key_bytes(backend)
    assert recorded(backend) == [(key_check_value(key), fingerprint(key))]


def test_a_store_without_a_check_refuses_a_key_that_does_not_unwrap_its_keys(
        backend: Settings) -> None:
    """A vault without a recorded check is not given the check of a wrong key: a key that
    cannot unwrap the vault's data keys is refused and nothing is recorded."""
    with Ledger(backend) as ledger:
        ledger.ingest(lines([collected("m:1", "2024-01-01T00:00:00Z", "r", {"email": EMAIL})]),
                      NOW)
    forget_key_check(backend)
    with pytest.raises(ConfigurationError, match="master key"):
        Ledger(replace(backend, master_key=OTHER_KEY))
    assert recorded(backend) == []


# -- a missing or different key, in process --------------------------------------------------

def test_a_missing_master_key_where_the_vault_holds_keys_is_refused(backend: Settings) -> None:
    """With the key file gone and no LIFECYCLE_MASTER_KEY, opening a vault that holds keys is
    a configuration error naming the recorded fingerprint; no key file is created and
    nothing is written."""
    with Ledger(backend) as ledger:
        ledger.ingest(lines([collected("m:1", "2024-01-01T00:00:00Z", "r", {"email": EMAIL})]),
                      NOW)
    key = key_bytes(backend)
    backend.master_key_file.unlink()
    before = snapshot(backend)
    with pytest.raises(ConfigurationError) as raised:
        Ledger(backend)
    assert fingerprint(key) in str(raised.value)
    assert str(backend.master_key_file) in str(raised.value)
    assert not backend.master_key_file.exists()
    assert snapshot(backend) == before


def test_a_different_master_key_is_refused_naming_both_fingerprints(backend: Settings) -> None:
    """Another master key, from the environment or in the key file, is a configuration error
    naming the recorded and the given fingerprints and never the key; nothing is written."""
    with Ledger(backend):
        pass
    key = key_bytes(backend)
    other = base64.b64decode(OTHER_KEY)
    before = snapshot(backend)
    with pytest.raises(ConfigurationError) as raised:
        Ledger(replace(backend, master_key=OTHER_KEY))
    message = str(raised.value)
    assert fingerprint(key) in message and fingerprint(other) in message
    assert "LIFECYCLE_MASTER_KEY" in message and OTHER_KEY not in message
    assert snapshot(backend) == before
    backend.master_key_file.write_text(OTHER_KEY + "\n")
    before = snapshot(backend)
    with pytest.raises(ConfigurationError) as raised:
        Ledger(backend)
    assert fingerprint(key) in str(raised.value) and fingerprint(other) in str(raised.value)
    assert snapshot(backend) == before


# -- the command line, through real processes ----------------------------------------------

def test_cli_a_deleted_master_key_after_ingest_is_one_line_exit_2(backend: Settings) -> None:
    """`status` and `ingest` after master.key was deleted: one line naming the recorded
    fingerprint, exit 2, no traceback, no new key file, nothing written."""
    ingested(backend)
    key = key_bytes(backend)
    backend.master_key_file.unlink()
    before = snapshot(backend)
    for args, stdin in ((("status",), None), (("ingest", "-"), FACTS)):
        result = lifecycle(backend, *args, stdin=stdin)
        assert_one_line_exit_2(result, fingerprint(key), str(backend.master_key_file))
        assert not backend.master_key_file.exists()
        assert snapshot(backend) == before


def test_cli_a_different_master_key_file_is_one_line_exit_2(backend: Settings) -> None:
    """`status` and `ingest` with another key in master.key: one line naming both
    fingerprints, exit 2, and nothing written."""
    ingested(backend)
    key = key_bytes(backend)
    backend.master_key_file.write_text(OTHER_KEY + "\n")
    before = snapshot(backend)
    for args, stdin in ((("status",), None), (("ingest", "-"), FACTS)):
        result = lifecycle(backend, *args, stdin=stdin)
        message = assert_one_line_exit_2(result, fingerprint(key),
                                         fingerprint(base64.b64decode(OTHER_KEY)))
        assert OTHER_KEY not in message and base64.b64encode(key).decode() not in message
        assert snapshot(backend) == before


def test_cli_another_key_in_the_environment_is_one_line_exit_2(backend: Settings) -> None:
    """LIFECYCLE_MASTER_KEY set to another key than the vault's: one line naming both
    fingerprints and the variable, exit 2, nothing written."""
    ingested(backend)
    key = key_bytes(backend)
    before = snapshot(backend)
    other = replace(backend, master_key=OTHER_KEY)
    for args, stdin in ((("status",), None), (("ingest", "-"), FACTS)):
        result = lifecycle(other, *args, stdin=stdin)
        message = assert_one_line_exit_2(result, "LIFECYCLE_MASTER_KEY", fingerprint(key),
                                         fingerprint(base64.b64decode(OTHER_KEY)))
        assert OTHER_KEY not in message
        assert snapshot(backend) == before


def test_processes_starting_together_on_a_fresh_store_agree_on_one_key(
        backend: Settings) -> None:
    """Four ingests started together on an empty store (no key yet) all succeed, under one
    master key: one key file, one recorded check, and every value readable with it."""
    env = env_for(backend)
    procs = []
    for n in range(4):
        facts = "\n".join(lines([collected(f"m:{n}", "2024-01-01T00:00:00Z", "r",
                                           {"email": f"{n}{EMAIL}"})])) + "\n"
        proc = subprocess.Popen([sys.executable, "-m", "lifecycle", "ingest", "-"], env=env,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        procs.append((proc, facts))
    for proc, facts in procs:
        _, err = proc.communicate(facts, timeout=120)
        assert proc.returncode == 0, err
    key = key_bytes(backend)
    assert recorded(backend) == [(key_check_value(key), fingerprint(key))]
    with Ledger(backend) as ledger:
        for n in range(4):
            assert ledger.subject_view(f"m:{n}")["records"][0]["data"] == {"email": f"{n}{EMAIL}"}


# -- two hosts, one PostgreSQL database ---------------------------------------------------

def two_homes(database_url: str, tmp_path: Path) -> tuple[Settings, Settings]:
    a, b = tmp_path / "host-a", tmp_path / "host-b"
    return (Settings(home=a, database_url=database_url, master_key=None,
                     master_key_file=a / "master.key"),
            Settings(home=b, database_url=database_url, master_key=None,
                     master_key_file=b / "master.key"))


def test_a_second_host_without_the_key_is_refused_and_writes_nothing(
        postgres_database: str, tmp_path: Path) -> None:
    """Two hosts share one PostgreSQL database with different homes: the second host, with
    no master.key of its own, gets one line and exit 2 on every command, and neither a key
    file nor a row is written. Given the first host's keys (master and signing), it works."""
    host_a, host_b = two_homes(postgres_database, tmp_path)
    ingested(host_a)
    key = key_bytes(host_a)
    before = snapshot(host_a)
    for args, stdin in ((("status",), None), (("ingest", "-"), FACTS),
                        (("subject", "show", "m:1"), None)):
        result = lifecycle(host_b, *args, stdin=stdin)
        assert_one_line_exit_2(result, fingerprint(key))
        assert not host_b.master_key_file.exists()
        assert snapshot(host_a) == before
    shared = replace(host_b, master_key=base64.b64encode(key).decode(),
                     signing_key=host_a.signing_key_path.read_text().strip())
    assert lifecycle(shared, "status").returncode == 0


def test_two_hosts_starting_together_on_a_fresh_database_do_not_both_create_a_key(
        postgres_database: str, tmp_path: Path) -> None:
    """Two hosts (two homes) opening one fresh PostgreSQL database at the same moment: one
    creates the master key and records its check; the other is refused (exit 2) and
    creates no key of its own."""
    host_a, host_b = two_homes(postgres_database, tmp_path)
    procs = [subprocess.Popen([sys.executable, "-m", "lifecycle", "ingest", "-"],
                              env=env_for(host), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for host in (host_a, host_b)]
    results = [(proc, *proc.communicate(FACTS, timeout=120)) for proc in procs]
    codes = sorted(proc.returncode for proc, _, _ in results)
    assert codes == [0, 2], [err for _, _, err in results]
    winner = host_a if host_a.master_key_file.exists() else host_b
    loser = host_b if winner is host_a else host_a
    assert not loser.master_key_file.exists()
    key = key_bytes(winner)
    assert recorded(winner) == [(key_check_value(key), fingerprint(key))]


# -- a home that cannot be written --------------------------------------------------------

def sqlite_store(home: Path) -> Settings:
    return Settings(home=home, database_url=None, master_key=None,
                    master_key_file=home / "master.key")


COMMANDS = ((("status",), None), (("ingest", "-"), FACTS))


def test_a_home_under_a_regular_file_is_one_line_exit_2(tmp_path: Path) -> None:
    """LIFECYCLE_HOME whose parent is a regular file (it cannot be created, even by root):
    `status` and `ingest` print one line naming the home, exit 2, no traceback."""
    (tmp_path / "plain-file").write_text("not a directory\n")
    store = sqlite_store(tmp_path / "plain-file" / "home")
    for args, stdin in COMMANDS:
        assert_one_line_exit_2(lifecycle(store, *args, stdin=stdin), str(store.home),
                               "not a directory")


def test_a_home_that_is_a_regular_file_is_one_line_exit_2(tmp_path: Path) -> None:
    """LIFECYCLE_HOME naming a regular file: one line naming it, exit 2, file untouched."""
    home = tmp_path / "home"
    home.write_text("a file\n")
    for args, stdin in COMMANDS:
        assert_one_line_exit_2(lifecycle(sqlite_store(home), *args, stdin=stdin), str(home),
                               "not a directory")
    assert home.read_text() == "a file\n"


def test_a_store_file_that_cannot_be_opened_is_one_line_exit_2(tmp_path: Path) -> None:
    """An events.sqlite that is not a regular file (here a directory, which no user can
    open as a database): one line naming the home and the file, exit 2."""
    store = ingested(sqlite_store(tmp_path / "home"))
    events = store.home / "events.sqlite"
    events.unlink()
    events.mkdir()
    for args, stdin in COMMANDS:
        assert_one_line_exit_2(lifecycle(store, *args, stdin=stdin), str(store.home),
                               "events.sqlite")


@pytest.fixture
def world_readable_dir() -> Iterator[Path]:
    """A directory another user can reach (pytest's own are private to their owner)."""
    path = Path(tempfile.mkdtemp(prefix="lifecycle-ro-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("read_only", ["home", "events.sqlite"])
def test_a_read_only_home_or_store_file_is_one_line_exit_2(world_readable_dir: Path,
                                                         read_only: str) -> None:
    """A home the user may read but not write (chmod 0500), or a read-only events.sqlite
    (0400) in a writable home: `status` and `ingest` print one line naming the home and
    what is read-only, exit 2, and the store is unchanged. When the tests run as root
    (which ignores permissions) the commands run as the unprivileged `nobody`, for whom the
    root-owned home or file is read-only."""
    store = ingested(sqlite_store(world_readable_dir / "home"))
    run_as: dict[str, Any] = {}
    as_root = os.geteuid() == 0
    if as_root:
        run_as = {"user": 65534, "group": 65534, "extra_groups": []}
    for path in (store.home, *store.home.iterdir()):
        if as_root:
            path.chmod(0o755 if path.is_dir() else 0o644)
            if read_only != "home" and path.name != read_only:
                os.chown(path, 65534, 65534)  # nobody's own, but for the read-only one
        elif path.name == read_only:
            path.chmod(0o500 if path.is_dir() else 0o400)
    env = env_for(store)
    if env.get("PYTHONPATH"):  # as given to the tests, which may be relative to their cwd
        env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p)
                                            for p in env["PYTHONPATH"].split(os.pathsep))
    what = "is not writable" if read_only == "home" else f"{read_only} is not writable"
    try:
        before = snapshot(store)
        for args, stdin in COMMANDS:
            result = subprocess.run([sys.executable, "-m", "lifecycle", *args], env=env,
                                    input=stdin, capture_output=True, text=True, timeout=60,
                                    **run_as)
            assert_one_line_exit_2(result, f"{store.home}: {what}")
        assert snapshot(store) == before
    finally:
        store.home.chmod(0o700)
