"""attack18c: where reports go, and what a policy's time zone means.

- README: "a bad `--out`/`--plot` path is one line naming the option and the path, exit
  2"; "Whatever goes wrong, the user is told in one line on stderr". Standard output is
  where every report goes by default (`lifecycle dsar export S > /mnt/full/answer.json`):
  a standard output that cannot be written (a full disk) must be named as such, not as
  "unexpected error (OSError)".
- docs/policy.md: `timezone` is an "IANA time zone"; a policy is content-hashed and the
  same file must mean the same on every host that shares the store. `localtime` is not an
  IANA zone name: it is a link to the host's own /etc/localtime.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lifecycle.store.settings import Settings
from tests.processes import env_for

ROOT = Path(__file__).resolve().parents[1]
HQIP = ROOT / "config" / "hqip.toml"
FACT = ('{"id":"o1","type":"collected","subject":"m:1","at":"2024-01-02T10:00:00Z",'
        '"record":"signup","category":"contact","purpose":"enquiries",'
        '"basis":"legitimate-interests","source":"data-subject",'
        '"data":{"email":"cordelia.haverstock@example.org"}}\n')


def run(settings: Settings, *args: str, stdout: object = subprocess.PIPE,
        stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lifecycle", "--log-level", "ERROR", *args],
                          env=env_for(settings), input=stdin, stdout=stdout,
                          stderr=subprocess.PIPE, text=True, timeout=120)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_standard_output_that_cannot_be_written_is_named(sqlite_settings: Settings) -> None:
    """`dsar export` to a standard output on a full disk says in one line that standard
    output cannot be written and why, as `--out` does for a file, exit 2; and `--out` on
    the same device keeps doing so (held)."""
    assert run(sqlite_settings, "ingest", "-", stdin=FACT).returncode == 0
    with_out = run(sqlite_settings, "dsar", "export", "m:1", "--out", "/dev/full")
    assert with_out.returncode == 2 and "no space left" in with_out.stderr.lower()
    with open("/dev/full", "w") as full:
        result = run(sqlite_settings, "dsar", "export", "m:1", stdout=full)
    lines = result.stderr.splitlines()
    assert "Traceback" not in result.stderr
    assert len(lines) == 1 and "unexpected error" not in lines[0], result.stderr
    assert "no space left" in lines[0].lower() and "output" in lines[0].lower(), lines[0]
    assert result.returncode == 2


def test_a_policy_time_zone_is_an_iana_name_not_the_hosts_zone(tmp_path: Path) -> None:
    """`[policy] timezone` is an IANA time zone (docs/policy.md): `localtime`, which
    names whatever zone the host running the command is set to, is refused like
    `Mars/Olympus`, naming `policy.timezone`; `Europe/London` stays accepted."""
    text = HQIP.read_text()
    assert 'timezone = "Europe/London"' in text
    results = {}
    for zone in ("Europe/London", "Mars/Olympus", "localtime"):
        path = tmp_path / f"{zone.replace('/', '-')}.toml"
        path.write_text(text.replace('timezone = "Europe/London"', f'timezone = "{zone}"'))
        results[zone] = subprocess.run(
            [sys.executable, "-m", "lifecycle", "--log-level", "ERROR", "policy", "check",
             str(path)], capture_output=True, text=True, timeout=60)
    assert results["Europe/London"].returncode == 0, results["Europe/London"].stdout
    assert results["Mars/Olympus"].returncode == 2
    assert "policy.timezone" in results["Mars/Olympus"].stdout
    assert results["localtime"].returncode == 2, results["localtime"].stdout
    assert "policy.timezone" in results["localtime"].stdout
