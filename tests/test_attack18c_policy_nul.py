"""attack18c: a policy text holding a NUL character, on PostgreSQL.

docs/policy.md: `[policy] version` is "1 to 60 characters"; the file is TOML, where
`"\\u0000"` is a legal escape. `policy check` and `policy adopt` accept such a version, and
every retention decision cites it (`policy@version#adoption`). PostgreSQL text cannot hold
NUL, so the read models can no longer be written. README: "the same commands give the same
results" on both backends, and one accepted command must not leave a store every later
command fails on. Either the version is refused (one line naming `policy.version`, exit 2)
or status, the record of processing and a sweep keep working, as they do on SQLite.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


from lifecycle.store.settings import Settings
from tests.processes import env_for

ROOT = Path(__file__).resolve().parents[1]
HQIP = ROOT / "config" / "hqip.toml"
SAMPLE = ROOT / "examples" / "hqip-facts.jsonl"


def run(settings: Settings, *args: str, stdin: str | None = None
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lifecycle", "--log-level", "ERROR", *args],
                          env=env_for(settings), input=stdin, capture_output=True, text=True,
                          timeout=120)


def nul_policy(folder: Path) -> Path:
    text = HQIP.read_text()
    assert 'version = "2023-11"' in text
    path = folder / "hqip-nul.toml"
    path.write_text(text.replace('version = "2023-11"', 'version = "2023-11\\u0000b"'))
    return path


def check_adopt_and_use(settings: Settings, folder: Path) -> None:
    policy = nul_policy(folder)
    adopt = run(settings, "policy", "adopt", str(policy), "--at", "2020-01-01")
    assert "Traceback" not in adopt.stderr
    if adopt.returncode != 0:  # refused: one line naming the key
        assert adopt.returncode == 2 and "policy.version" in adopt.stderr, adopt.stderr
        return
    sample = "".join(SAMPLE.read_text().splitlines(keepends=True)[:40])
    ingest = run(settings, "ingest", "-", stdin=sample)
    assert ingest.returncode == 0, ingest.stdout + ingest.stderr
    for args in (("status",), ("report", "ropa"), ("sweep",)):
        result = run(settings, *args)
        assert "unexpected error" not in result.stderr, (args, result.stderr)
        assert result.returncode == 0, (args, result.stderr)


def test_a_nul_in_the_policy_version_keeps_a_sqlite_store_working(
        sqlite_settings: Settings, tmp_path: Path) -> None:
    """Held on SQLite: a policy whose version holds NUL is adopted and status, the record
    of processing and a sweep still answer (exit 0)."""
    check_adopt_and_use(sqlite_settings, tmp_path)


def test_a_nul_in_the_policy_version_never_breaks_a_postgresql_store(
        postgres_database: str, tmp_path: Path) -> None:
    """On PostgreSQL the same policy is either refused (one line naming `policy.version`,
    exit 2, nothing adopted) or adopted with every later command working as on SQLite."""
    home = tmp_path / "home"
    settings = Settings(home=home, database_url=postgres_database, master_key=None,
                        master_key_file=home / "master.key")
    check_adopt_and_use(settings, tmp_path)
