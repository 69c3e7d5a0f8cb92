#!/usr/bin/env python3
"""One-step set-up and run: creates .venv, installs lifecycle into it, then runs.

    python3 run.py demo        # the main job on the embedded default (SQLite)
    python3 run.py test        # the test suite
    python3 run.py cli ARGS    # any lifecycle command, e.g. `cli subject show member:1`
    python3 run.py bench ...   # a benchmark: bench/X.py, or -m bench for the whole suite

Needs only Python >= 3.11; everything else comes from PyPI on first use.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".lifecycle-installed"


def ensure_environment() -> None:
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted:
        return
    if not (BIN / "python").exists():
        print("run.py: creating .venv", file=sys.stderr)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("run.py: installing lifecycle and its dependencies into .venv", file=sys.stderr)
    pip = [str(BIN / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", "-e", f"{ROOT}[test]"], check=True)
    STAMP.write_text(wanted)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"demo", "test", "cli", "bench"}:
        print(__doc__, file=sys.stderr)
        return 2
    ensure_environment()
    command, rest = argv[0], argv[1:]
    if command == "test":
        args = [str(BIN / "python"), "-m", "pytest", *rest]
    elif command == "bench":
        args = [str(BIN / "python"), *rest]
    elif command == "demo":
        args = [str(BIN / "lifecycle"), "demo", *rest]
    else:
        args = [str(BIN / "lifecycle"), *rest]
    env = {**os.environ, "PYTHONPATH": str(ROOT)} if command == "bench" else None
    return subprocess.call(args, cwd=ROOT if command == "test" else None, env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
