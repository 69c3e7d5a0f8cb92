"""Master-key epochs, rotation and backups: an erasure becomes final in every copy.

Every test runs on SQLite and on PostgreSQL, through real `lifecycle` processes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from lifecycle.store.vault import CURRENT, RETIRED, data_keys, key_epochs
from lifecycle.store.settings import Settings
from tests.conftest import _admin_connect
from tests.facts_builder import collected, fact, lines
from tests.processes import json_of, lifecycle

ERASED = "subscriber:erased"
KEPT = "subscriber:kept"
ERASED_VALUES = {"name": "ZqEpochErasedNameQv", "email": "zq.epoch.erased@example.org"}
KEPT_VALUES = {"name": "ZqEpochKeptNameQv", "email": "zq.epoch.kept@example.org"}


def facts() -> list[dict[str, Any]]:
    return [collected(ERASED, "2024-01-01T09:00:00+00:00", "rec-e", ERASED_VALUES,
                      id="ep-1"),
            collected(KEPT, "2024-01-01T09:00:00+00:00", "rec-k", KEPT_VALUES, id="ep-2")]


def erasure() -> list[dict[str, Any]]:
    return [fact("erasure-requested", ERASED, "2024-02-01T09:00:00+00:00", request="ER-ep",
                 id="ep-3")]


def ingest(settings: Settings, batch: list[dict[str, Any]]) -> None:
    result = lifecycle(settings, "ingest", "-", "--json", stdin="\n".join(lines(batch)) + "\n")
    assert result.returncode == 0, result.stderr


def record_data(settings: Settings, reference: str) -> Any:
    view = json_of(lifecycle(settings, "subject", "show", reference, "--json"))
    return view["records"][0]["data"]


@pytest.fixture(params=["sqlite", "postgres"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Settings, ...]]:
    """Three stores: the live one and two fresh ones to restore into."""
    created: list[str] = []
    made = []
    for name in ("live", "restored-old", "restored-new"):
        url = None
        if request.param == "postgres":
            base = request.getfixturevalue("postgres_server").rsplit("/", 1)[0]
            database = f"lifecycle_test_{uuid.uuid4().hex[:12]}"
            with _admin_connect() as conn:  # type: ignore[attr-defined]
                conn.execute(f'CREATE DATABASE "{database}"')
            created.append(database)
            url = f"{base}/{database}"
        made.append(Settings(home=tmp_path / name, database_url=url, master_key=None,
                             master_key_file=tmp_path / name / "master.key"))
    yield tuple(made)
    for database in created:
        with _admin_connect() as conn:  # type: ignore[attr-defined]
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def hold_current_key(live: Settings, target: Settings) -> None:
    """The fresh store gets the keys lifecycle holds now (the live store's key files: the
    master key, and the signing key the restored chain's checkpoints were signed with)."""
    target.home.mkdir(mode=0o700, parents=True, exist_ok=True)
    for source, copy in ((live.master_key_file, target.master_key_file),
                         (live.signing_key_path, target.signing_key_path)):
        copy.write_bytes(source.read_bytes())
        copy.chmod(0o600)


def test_a_backup_from_a_retired_epoch_opens_no_value(stores: tuple[Settings, ...],
                                                      tmp_path: Path) -> None:
    """A backup taken before an erasure and a rotation, restored with the keys lifecycle
    holds now, opens no value at all (the erased subject's nor any other); a backup taken
    after the rotation opens every live value and the erased subject's stay erased."""
    live, restored_old, restored_new = stores
    ingest(live, facts())
    assert record_data(live, ERASED) == ERASED_VALUES
    old_backup, new_backup = tmp_path / "backup-old", tmp_path / "backup-new"
    result = lifecycle(live, "backup", str(old_backup), "--json")
    assert json_of(result)["epoch"] == 0
    ingest(live, erasure())
    assert record_data(live, ERASED) == "erased"
    rotated = json_of(lifecycle(live, "--actor", "dpo@example", "keys", "rotate", "--json"))
    assert (rotated["old_epoch"], rotated["new_epoch"]) == (0, 1)
    assert rotated["by"] == "dpo@example" and rotated["old_epoch_destroyed"]
    assert record_data(live, KEPT) == KEPT_VALUES  # live values still open, new epoch
    status = json_of(lifecycle(live, "status", "--json"))
    assert status["keys"]["backup_predates_epoch"] is True
    assert json_of(lifecycle(live, "backup", str(new_backup), "--json"))["epoch"] == 1

    hold_current_key(live, restored_old)
    hold_current_key(live, restored_new)
    restored = json_of(lifecycle(restored_old, "restore", str(old_backup), "--json"))
    assert restored["values_open"] is False
    assert record_data(restored_old, ERASED) == "erased"
    assert record_data(restored_old, KEPT) == "erased"
    history = json_of(lifecycle(restored_old, "history", KEPT, "--json"))
    assert history["events"], "the log and its structure are restored"

    restored = json_of(lifecycle(restored_new, "restore", str(new_backup), "--json"))
    assert restored["values_open"] is True
    assert record_data(restored_new, KEPT) == KEPT_VALUES
    assert record_data(restored_new, ERASED) == "erased"
    for directory in (old_backup, new_backup):
        blob = b"".join(p.read_bytes() for p in directory.iterdir())
        assert ERASED_VALUES["name"].encode() not in blob
        assert KEPT_VALUES["name"].encode() not in blob


def test_status_and_certificate_say_when_an_erasure_is_final_in_backups(
        stores: tuple[Settings, ...]) -> None:
    """Before a rotation, status counts the erasure as not yet final in backups and the
    certificate says it is not yet final; after it, status counts none and the
    certificate names the rotation's time."""
    live = stores[0]
    ingest(live, facts() + erasure())
    keys = json_of(lifecycle(live, "status", "--json"))["keys"]
    assert keys["epoch"] == 0 and keys["unsealed_erasures"] >= 1
    cert = json_of(lifecycle(live, "certificate", "ER-ep", "--json"))
    assert cert["final_in_backups_from"] is None
    rotated = json_of(lifecycle(live, "keys", "rotate", "--json"))
    keys = json_of(lifecycle(live, "status", "--json"))["keys"]
    assert keys["epoch"] == 1 and keys["unsealed_erasures"] == 0
    cert = json_of(lifecycle(live, "certificate", "ER-ep", "--json"))
    assert cert["final_in_backups_from"] == rotated["at"]
    text = lifecycle(live, "certificate", "ER-ep").stdout
    assert f"final in backups from {rotated['at']}" in text
    # An erasure dated before the rotation but carried out after it is not final yet:
    # copies taken since the rotation hold its key under the current epoch.
    ingest(live, [fact("erasure-requested", KEPT, "2024-02-01T09:00:00+00:00",
                       request="ER-late", id="ep-4")])
    keys = json_of(lifecycle(live, "status", "--json"))["keys"]
    assert keys["unsealed_erasures"] >= 1
    assert json_of(lifecycle(live, "certificate", "ER-late", "--json"))[
        "final_in_backups_from"] is None
    assert "not yet final in backups" in lifecycle(live, "certificate", "ER-late").stdout


@pytest.mark.parametrize("supplied", ["variable", "command"])
def test_a_key_the_operator_supplies_is_named_to_retire_and_refused_once_retired(
        backend: Settings, tmp_path: Path, supplied: str) -> None:
    """With the key given by LIFECYCLE_MASTER_KEY or LIFECYCLE_MASTER_KEY_COMMAND, a
    rotation names that place as the operator's to retire; the retired key given again is
    refused in one line naming its epoch, and the key file lifecycle now keeps opens."""
    import base64
    import os

    from tests.processes import env_for

    key = base64.b64encode(os.urandom(32)).decode()
    env = env_for(backend)
    if supplied == "variable":
        env["LIFECYCLE_MASTER_KEY"], place = key, "LIFECYCLE_MASTER_KEY"
    else:
        key_source = tmp_path / "operator.key"
        key_source.write_text(key + "\n")
        env["LIFECYCLE_MASTER_KEY_COMMAND"] = f"cat {key_source}"
        place = "LIFECYCLE_MASTER_KEY_COMMAND"

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "lifecycle", *args], env=env,
                              input=stdin, capture_output=True, text=True, timeout=120)

    assert run("ingest", "-", stdin="\n".join(lines(facts())) + "\n").returncode == 0
    rotated = run("keys", "rotate")
    assert rotated.returncode == 0, rotated.stderr
    assert f"unset {place}" in rotated.stdout and "retired epoch 0" in rotated.stdout
    refused = run("status")
    assert refused.returncode == 2
    assert "epoch 0, retired by a key rotation" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and key not in refused.stderr
    del env[place]
    shown = run("subject", "show", KEPT, "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["records"][0]["data"] == KEPT_VALUES
