"""One setting moves the store: the demo and a DSAR export read the same on both backends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("postgres_server")


def lifecycle(args: list[str], home: Path, database_url: str | None) -> str:
    env = {**os.environ, "LIFECYCLE_HOME": str(home)}
    for name in ("LIFECYCLE_DATABASE_URL", "LIFECYCLE_MASTER_KEY", "LIFECYCLE_MASTER_KEY_FILE"):
        env.pop(name, None)
    if database_url:
        env["LIFECYCLE_DATABASE_URL"] = database_url
    done = subprocess.run([sys.executable, "-m", "lifecycle", *args], env=env, cwd=home.parent,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_demo_and_export_agree_on_sqlite_and_postgresql(tmp_path: Path,
                                                        postgres_database: str) -> None:
    """With LIFECYCLE_DATABASE_URL set to PostgreSQL, `lifecycle demo` prints the same
    sweeps, erasures and subject, and `dsar export --as-of` the same document, as on the
    embedded SQLite default for the same sample."""
    outputs = {}
    for name, url in (("sqlite", None), ("postgres", postgres_database)):
        home = tmp_path / name / "lifecycle-data"
        home.parent.mkdir()
        demo = lifecycle(["demo", "--subjects", "150"], home, url)
        export = lifecycle(["dsar", "export", "subscriber:demo-1", "--as-of",
                            "2025-01-01T00:00:00+00:00"], home, url)
        outputs[name] = (
            [line for line in demo.splitlines() if not line.startswith("demo finished in")],
            json.loads(export))
    assert outputs["sqlite"] == outputs["postgres"]
    demo_lines, export = outputs["sqlite"]
    assert any(line.startswith("2025-07-01: erased") for line in demo_lines)
    assert export["records"] and export["subject"] == "subscriber:demo-1"
