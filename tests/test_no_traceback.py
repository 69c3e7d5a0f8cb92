"""No traceback reaches a user: every command and option, given a bad path (a missing
folder, an unwritable file, a directory where a file is expected, a home that cannot be
written), a bad value or format (`--plot f.txt`), a wrong or open master key, or a
corrupted store, ends with exactly one line on stderr and exit 2 (usage or configuration:
the command could not start) or 1 (it started and something was refused or found broken),
as the README defines; never a "Traceback".

One store is prepared once (a policy adopted, a sample ingested) and copied for each case;
each case runs the command line as a real process (`python -m lifecycle`). Informational
logs are silenced (`--log-level ERROR`) so stderr holds only what the user is told.
"""

from __future__ import annotations

import base64
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lifecycle.store.settings import Settings
from tests.processes import env_for

ROOT = Path(__file__).resolve().parents[1]
HQIP = ROOT / "config" / "hqip.toml"
SAMPLE_LINES = 400
SUBJECT = "subscriber:demo-1"
# Not writable even by root: /proc refuses new files and writes to this one.
UNWRITABLE_FILE = "/proc/version"
UNWRITABLE_FOLDER = "/proc/lifecycle-test-home"


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    code: int
    # Changes the copied home (or the case's folder) before the command runs.
    setup: Callable[[Path, Path], None] | None = None
    env: dict[str, str] = field(default_factory=dict)
    # What the one line must mention (lower-cased), e.g. the option or the path.
    mentions: tuple[str, ...] = ()


def make_file(name: str, text: str = "") -> Callable[[Path, Path], None]:
    def setup(_home: Path, work: Path) -> None:
        (work / name).write_text(text)
    return setup


def make_dir(name: str) -> Callable[[Path, Path], None]:
    def setup(_home: Path, work: Path) -> None:
        (work / name).mkdir()
    return setup


def replace_master_key(home: Path, _work: Path) -> None:
    (home / "master.key").write_text(base64.b64encode(os.urandom(32)).decode() + "\n")


def garble_master_key(home: Path, _work: Path) -> None:
    (home / "master.key").write_text("not a key\n")


def open_master_key(home: Path, _work: Path) -> None:
    (home / "master.key").chmod(0o644)


def garbage_file(name: str) -> Callable[[Path, Path], None]:
    def setup(home: Path, _work: Path) -> None:
        (home / name).write_bytes(b"garbage " * 4096)
    return setup


def truncate_file(name: str) -> Callable[[Path, Path], None]:
    def setup(home: Path, _work: Path) -> None:
        path = home / name
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    return setup


def sql(name: str, *statements: str) -> Callable[[Path, Path], None]:
    def setup(home: Path, _work: Path) -> None:
        with sqlite3.connect(home / name) as conn:
            for statement in statements:
                conn.execute(statement)
    return setup


def make_backup(name: str, without: str | None = None,
                garbage: str | None = None) -> Callable[[Path, Path], None]:
    """A backup of the prepared store in the case's folder, as `lifecycle backup` writes
    it, with one of its files removed or overwritten."""
    def setup(home: Path, work: Path) -> None:
        settings = Settings(home, None, None, home / "master.key")
        result = subprocess.run([sys.executable, "-m", "lifecycle", "--log-level", "ERROR",
                                 "backup", str(work / name)], env=env_for(settings),
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        if without is not None:
            (work / name / without).unlink()
        if garbage is not None:
            (work / name / garbage).write_bytes(b"garbage " * 4096)
    return setup


STATE_AS_TEXT = sql("events.sqlite", "UPDATE stored_events SET state = CAST(state AS TEXT)")
STATE_GARBLED = sql("events.sqlite", "UPDATE stored_events SET state = X'00FF00FF' "
                                     "WHERE rowid % 7 = 3")
DOCUMENT_AS_TEXT = sql("views.sqlite", "UPDATE lifecycle_subjects SET document = 'not json'")
SCHEDULE_TIME_AS_TEXT = sql("views.sqlite",
                            "UPDATE lifecycle_retention_schedule SET dispose_at = 'soon', "
                            "due_at = 'soon'")
POSITION_AS_TEXT = sql("views.sqlite",
                       "UPDATE lifecycle_projection_positions SET position = 'far'")

W = "{work}"  # replaced by the case's own folder
CASES: dict[str, Case] = {
    # -- bad paths ---------------------------------------------------------------------
    "ingest a missing file": Case(("ingest", f"{W}/missing/facts.jsonl"), 2, mentions=("file",)),
    "ingest a directory": Case(("ingest", W), 2, mentions=("file",)),
    "policy check a missing file": Case(("policy", "check", f"{W}/none.toml"), 2),
    "policy check a directory": Case(("policy", "check", W), 2),
    "policy adopt a missing file": Case(("policy", "adopt", f"{W}/none.toml"), 2,
                                        mentions=("none.toml",)),
    "policy adopt a directory": Case(("policy", "adopt", W), 2),
    "policy adopt a non-policy file": Case(("policy", "adopt", f"{W}/f.txt"), 2,
                                           setup=make_file("f.txt", "just words\n")),
    "dsar --out in a missing folder": Case(
        ("dsar", "export", SUBJECT, "--out", f"{W}/missing/x.json"), 2, mentions=("--out",)),
    "dsar --out a directory": Case(("dsar", "export", SUBJECT, "--out", W), 2,
                                   mentions=("--out",)),
    "dsar --out an unwritable file": Case(
        ("dsar", "export", SUBJECT, "--out", UNWRITABLE_FILE), 2, mentions=("--out",)),
    "ropa --out in a missing folder": Case(
        ("report", "ropa", "--out", f"{W}/missing/r.json"), 2, mentions=("--out",)),
    "ropa --out a directory": Case(("report", "ropa", "--out", W), 2, mentions=("--out",)),
    "ropa --out an unwritable file": Case(("report", "ropa", "--format", "html", "--out",
                                           UNWRITABLE_FILE), 2, mentions=("--out",)),
    "forecast --plot f.txt": Case(("forecast", "--plot", f"{W}/f.txt"), 2,
                                  mentions=("--plot", ".png")),
    "forecast --plot in a missing folder": Case(("forecast", "--plot", f"{W}/no/f.png"), 2,
                                                mentions=("--plot",)),
    "forecast --plot a directory": Case(("forecast", "--plot", f"{W}/d.png"), 2,
                                        setup=make_dir("d.png"), mentions=("--plot",)),
    "forecast --plot an unwritable place": Case(
        ("forecast", "--plot", f"{UNWRITABLE_FOLDER}.png"), 2, mentions=("--plot",)),
    "replay --into a file": Case(("replay", "--into", f"{W}/f"), 2, setup=make_file("f")),
    "replay --into a folder with read models": Case(
        ("replay", "--into", f"{W}/r"), 2,
        setup=lambda home, work: (work / "r").mkdir() or shutil.copy(
            home / "views.sqlite", work / "r" / "views.sqlite")),
    "replay --into an unwritable place": Case(("replay", "--into", UNWRITABLE_FOLDER), 2,
                                              mentions=("--into",)),
    "home is a file": Case(("status",), 2, env={"LIFECYCLE_HOME": f"{W}/f"},
                           setup=make_file("f"), mentions=("lifecycle_home",)),
    "home cannot be created": Case(("status",), 2, env={"LIFECYCLE_HOME": UNWRITABLE_FOLDER},
                                   mentions=("lifecycle_home",)),
    "master key file is a directory": Case(("status",), 2,
                                           env={"LIFECYCLE_MASTER_KEY_FILE": W},
                                           mentions=("master key",)),
    "master key file in a missing folder": Case(
        ("status",), 2, env={"LIFECYCLE_MASTER_KEY_FILE": f"{W}/missing/master.key"}),
    # -- keys ----------------------------------------------------------------------------
    "a replaced master key": Case(("subject", "show", SUBJECT), 2, setup=replace_master_key,
                                  mentions=("fingerprint",)),
    "a garbled master key": Case(("status",), 2, setup=garble_master_key,
                                 mentions=("base64",)),
    "an open master key file": Case(("status",), 2, setup=open_master_key,
                                    mentions=("chmod 600",)),
    "a master key in the environment that is not base64": Case(
        ("status",), 2, env={"LIFECYCLE_MASTER_KEY": "%%%"}, mentions=("lifecycle_master_key",)),
    "a database url that is not postgresql": Case(
        ("status",), 2, env={"LIFECYCLE_DATABASE_URL": "mysql://db/x"}),
    "a database nobody listens on": Case(
        ("status",), 2, env={"LIFECYCLE_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/x"}),
    # -- bad values and formats ---------------------------------------------------------
    "sweep --at not a time": Case(("sweep", "--at", "tomorrow"), 2, mentions=("--at",)),
    "sweep --at without an offset": Case(("sweep", "--at", "2024-01-01T00:00"), 2),
    "policy adopt --at not a time": Case(("policy", "adopt", str(HQIP), "--at", "x"), 2),
    "dsar --as-of not a time": Case(("dsar", "export", SUBJECT, "--as-of", "x"), 2),
    "dsar --format pdf": Case(("dsar", "export", SUBJECT, "--format", "pdf"), 2),
    "ropa --at not a time": Case(("report", "ropa", "--at", "x"), 2),
    "ropa --format pdf": Case(("report", "ropa", "--format", "pdf"), 2),
    "replay --until not a time": Case(("replay", "--until", "x"), 2),
    "forecast --months not a number": Case(("forecast", "--months", "many"), 2),
    "forecast --months negative": Case(("forecast", "--months", "-3"), 2),
    "forecast --from not a time": Case(("forecast", "--from", "x"), 2),
    "audit verify --anchor garbage": Case(("audit", "verify", "--anchor", "x"), 2),
    "daemon --interval zero": Case(("daemon", "--interval", "0"), 2),
    "daemon --interval negative": Case(("daemon", "--interval", "-5"), 2),
    "status --next negative": Case(("status", "--next", "-1"), 2),
    "requests --due-within negative": Case(("requests", "list", "--due-within", "-1"), 2),
    "rebuild an unknown read model": Case(("projections", "rebuild", "nosuch"), 2),
    "rebuild --workers 0": Case(("projections", "rebuild", "--workers", "0"), 2),
    "an unknown command": Case(("frobnicate",), 2),
    "an unknown option": Case(("status", "--loud"), 2),
    "an empty --actor": Case(("--actor", "", "status"), 2, mentions=("--actor",)),
    # -- case actions, users, keys, backups (the responders' desk and issue 14) ------------
    "request verify an unknown request": Case(("request", "verify", "nosuch"), 1,
                                              mentions=("nosuch",)),
    "request extend --months too many": Case(("request", "extend", "r", "--months", "9"), 2,
                                             mentions=("--months",)),
    "request extend --months not a number": Case(("request", "extend", "r", "--months", "x"),
                                                 2, mentions=("--months",)),
    "request verify --at not a time": Case(("request", "verify", "r", "--at", "soon"), 2,
                                           mentions=("--at",)),
    "request with an unknown step": Case(("request", "approve", "r"), 2),
    "hold place --until not a time": Case(
        ("hold", "place", SUBJECT, "h1", "--reason", "r", "--until", "later"), 2,
        mentions=("--until",)),
    "hold place --scope an undeclared purpose": Case(
        ("hold", "place", SUBJECT, "h1", "--reason", "r", "--scope", "nosuch"), 1,
        mentions=("scope",)),
    "hold release a hold never placed": Case(("hold", "release", SUBJECT, "nosuch"), 1),
    "notifications ack an unknown erasure": Case(("notifications", "ack", "nosuch"), 1),
    "subject find --email not an address": Case(("subject", "find", "--email", "x"), 1,
                                                mentions=("--email",)),
    "subject find without --email": Case(("subject", "find"), 2, mentions=("--email",)),
    "users add a bad name": Case(("users", "add", "Bad Name", "--role", "dpo"), 2,
                                 mentions=("name",)),
    "users add an unknown role": Case(("users", "add", "x", "--role", "root"), 2,
                                      mentions=("--role",)),
    "users revoke an unknown user": Case(("users", "revoke", "nosuch"), 1),
    "breaches impact an unknown breach": Case(("breaches", "impact", "nosuch"), 1),
    "keys rotate --batch 0": Case(("keys", "rotate", "--batch", "0"), 2, mentions=("--batch",)),
    "backup into a file": Case(("backup", f"{W}/f"), 2, setup=make_file("f")),
    "backup into a folder that is not empty": Case(("backup", W), 2,
                                                   setup=make_file("f"), mentions=("backup",)),
    "backup into an unwritable place": Case(("backup", UNWRITABLE_FOLDER), 2,
                                            mentions=("backup",)),
    "restore a missing folder": Case(("restore", f"{W}/missing"), 2),
    "restore a folder that is no backup": Case(("restore", W), 1, mentions=("manifest",)),
    "restore into a store that is not empty": Case(
        ("restore", f"{W}/b"), 1, setup=make_backup("b"), mentions=("not empty",)),
    "restore a backup whose files are missing": Case(
        ("restore", f"{W}/b"), 1, setup=make_backup("b", without="events.sqlite"),
        env={"LIFECYCLE_HOME": f"{W}/fresh"}, mentions=("events.sqlite",)),
    "restore a backup whose files are garbage": Case(
        ("restore", f"{W}/b"), 1, setup=make_backup("b", garbage="events.sqlite"),
        env={"LIFECYCLE_HOME": f"{W}/fresh"}, mentions=("events.sqlite",)),
    # -- refused ------------------------------------------------------------------------
    "history of an unknown subject": Case(("history", "nobody:1"), 1),
    "certificate of an unknown request": Case(("certificate", "no-such-request"), 1),
    # -- corrupted stores ------------------------------------------------------------------
    "events: state rewritten as TEXT, history": Case(("history", SUBJECT), 1,
                                                     setup=STATE_AS_TEXT),
    "events: state rewritten as TEXT, rebuild": Case(("projections", "rebuild"), 1,
                                                     setup=STATE_AS_TEXT),
    "events: state rewritten as TEXT, replay": Case(("replay",), 1, setup=STATE_AS_TEXT),
    "events: state rewritten as TEXT, dsar": Case(("dsar", "export", SUBJECT), 1,
                                                  setup=STATE_AS_TEXT),
    "events: state garbled, rebuild": Case(("projections", "rebuild"), 1, setup=STATE_GARBLED),
    "events: state garbled, sweep": Case(("sweep", "--dry-run"), 1, setup=STATE_GARBLED),
    "events: garbage file": Case(("status",), 2, setup=garbage_file("events.sqlite")),
    "events: truncated file": Case(("history", SUBJECT), 2,
                                   setup=truncate_file("events.sqlite")),
    "keys: garbage file": Case(("status",), 2, setup=garbage_file("keys.sqlite")),
    "views: garbage file": Case(("status",), 2, setup=garbage_file("views.sqlite")),
    "views: document rewritten as TEXT": Case(("subject", "show", SUBJECT), 1,
                                              setup=DOCUMENT_AS_TEXT),
    "views: schedule times rewritten as TEXT, status": Case(("status",), 1,
                                                            setup=SCHEDULE_TIME_AS_TEXT),
    "views: positions rewritten as TEXT": Case(("projections", "status"), 1,
                                               setup=POSITION_AS_TEXT),
}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home with hqip adopted and the first lines of the sample ingested (projected)."""
    home = tmp_path_factory.mktemp("prepared") / "home"
    settings = Settings(home, None, None, home / "master.key")
    sample = ROOT / "examples" / "hqip-facts.jsonl"
    wanted = [line for line in sample.read_text().splitlines() if SUBJECT in line]
    facts = home.parent / "facts.jsonl"
    facts.write_text("\n".join(sample.read_text().splitlines()[:SAMPLE_LINES] + wanted) + "\n")
    for args in (("policy", "adopt", str(HQIP), "--at", "2020-01-01"), ("ingest", str(facts)),
                 ("status",)):
        result = subprocess.run([sys.executable, "-m", "lifecycle", *args],
                                env=env_for(settings), capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0, result.stderr
    return home


@pytest.mark.parametrize("name", list(CASES))
def test_one_line_and_the_documented_exit_code_never_a_traceback(
        name: str, prepared: Path, tmp_path: Path) -> None:
    """Whatever is wrong, the user gets one line on stderr naming it and exit 2 (could
    not start: usage, path, key, store that cannot be opened) or 1 (refused or found
    broken); never a traceback."""
    case = CASES[name]
    home = tmp_path / "home"
    shutil.copytree(prepared, home)
    work = tmp_path / "work"
    work.mkdir()
    if case.setup is not None:
        case.setup(home, work)
    settings = Settings(home, None, None, home / "master.key")
    env = {**env_for(settings), **{k: v.replace(W, str(work)) for k, v in case.env.items()}}
    args = [a.replace(W, str(work)) for a in case.args]

    result = subprocess.run([sys.executable, "-m", "lifecycle", "--log-level", "ERROR", *args],
                            env=env, capture_output=True, text=True, timeout=120)

    lines = result.stderr.splitlines()
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("lifecycle: "), lines[0]
    assert result.returncode == case.code, result.stderr
    for word in case.mentions:
        assert word in lines[0].lower(), lines[0]
