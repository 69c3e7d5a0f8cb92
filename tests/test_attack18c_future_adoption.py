"""attack18c: `policy adopt FILE --at T` with T far in the future (a slip of the keyboard:
2205 for 2025).

README: "A policy applies from its adoption time, never to the past"; `status` shows "the
policy in force"; `replay` "rebuild[s] the state as of T from the log"; a sweep dated more
than 5 minutes after now is refused because a what-if belongs to `--dry-run`. An adoption
dated in 2205 is not in force today, so status must not name it as the policy in force,
and it must not stop the controller from adopting the policy that is meant to be in force
now: the event log is immutable, so nothing could ever undo that.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


from lifecycle.store.settings import Settings
from tests.processes import env_for

ROOT = Path(__file__).resolve().parents[1]
HQIP = ROOT / "config" / "hqip.toml"
IHPA = ROOT / "config" / "ihpa.toml"
TYPO = "2205-01-01T00:00:00Z"


def run(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lifecycle", "--log-level", "ERROR", *args],
                          env=env_for(settings), capture_output=True, text=True, timeout=120)


def test_status_names_as_in_force_only_a_policy_adopted_by_now(
        sqlite_settings: Settings) -> None:
    """If a far-future adoption is accepted at all, `status` (the policy in force) and
    `replay` as of now (the state rebuilt from the same log) agree that no policy is in
    force yet; if it is refused, it is one line naming `--at`, exit 2."""
    adopt = run(sqlite_settings, "policy", "adopt", str(HQIP), "--at", TYPO)
    assert "Traceback" not in adopt.stderr
    if adopt.returncode != 0:
        assert adopt.returncode == 2 and "--at" in adopt.stderr, adopt.stderr
        return
    status = run(sqlite_settings, "status", "--json")
    replay = run(sqlite_settings, "replay", "--json")
    assert status.returncode == 0 and replay.returncode == 0, status.stderr + replay.stderr
    in_force_now = json.loads(replay.stdout)["policy"]
    assert in_force_now is None, in_force_now
    assert json.loads(status.stdout)["policy"] == in_force_now


def test_a_far_future_adoption_never_blocks_the_policy_meant_for_now(
        sqlite_settings: Settings) -> None:
    """A slip (2205 for 2025) is either refused on the spot (one line naming `--at`, exit
    2, nothing adopted) or leaves the controller able to adopt a policy from now: a
    policy adopted now (no `--at`) is accepted and is the policy status shows."""
    adopt = run(sqlite_settings, "policy", "adopt", str(HQIP), "--at", TYPO)
    assert "Traceback" not in adopt.stderr
    if adopt.returncode != 0:
        assert adopt.returncode == 2 and "--at" in adopt.stderr, adopt.stderr
    now = run(sqlite_settings, "policy", "adopt", str(IHPA))
    assert now.returncode == 0, now.stderr
    status = run(sqlite_settings, "status", "--json")
    assert json.loads(status.stdout)["policy"].startswith("ihpa@"), status.stdout


def test_a_back_dated_adoption_before_the_policy_in_force_is_refused_in_one_line(
        sqlite_settings: Settings) -> None:
    """Held: adopting a policy from a time before the adoption in force (2019 after one
    from 2022) is refused in one line, exit 1, and the record of processing of a time in
    between still says no policy was in force then."""
    assert run(sqlite_settings, "policy", "adopt", str(HQIP), "--at", "2022-01-01").returncode == 0
    back = run(sqlite_settings, "policy", "adopt", str(IHPA), "--at", "2019-01-01")
    assert back.returncode == 1 and len(back.stderr.splitlines()) == 1, back.stderr
    assert "before the one now in force" in back.stderr
    between = run(sqlite_settings, "report", "ropa", "--at", "2020-06-01T00:00:00Z")
    assert between.returncode == 1 and "no policy was in force" in between.stderr
