"""Every event names its actor (UK GDPR Art 5(2)): the command line's OS user, `--actor` or
$LIFECYCLE_ACTOR; the daemon's identity; a service's signed-in user through a context.
Shown in `history`, `certificate`, the policy adoptions of `report ropa` and the DSAR
export's request timeline. Events stored before actors were recorded read `unknown`.

Commands run as real processes (`python -m lifecycle`) on SQLite and PostgreSQL.
"""

from __future__ import annotations

import getpass
import os
import socket
from datetime import UTC, datetime
from typing import Any

import pytest

from lifecycle.store.actor import UNKNOWN, acting_as
from lifecycle.aggregates.data_subject import DataSubject
from lifecycle.daemon import Daemon
from lifecycle.store.event_store import SubjectStore, attach_signing_key, persistence_env
from lifecycle.services.ledger import Ledger
from lifecycle.store.settings import Settings
from tests.facts_builder import collected, fact, lines
from tests.processes import env_for, json_of, lifecycle
from tests.test_daemon_and_reports import HQIP, IHPA, NOW, prepare, unsubscriber_facts

ERASURE = "ER-7"
ACCESS = "SAR-7"


def request_facts() -> list[dict[str, Any]]:
    """member:7 with a record, an access request answered, and an erasure request."""
    return [
        fact("consent-given", "member:7", "2024-01-10T09:00:00+00:00",
             purpose="surveys-feedback", method="survey-form"),
        collected("member:7", "2024-01-10T09:00:00+00:00", "profile",
                  {"email": "olwen.pryce@example.org"}, purpose="surveys-feedback", category="feedback"),
        fact("access-requested", "member:7", "2024-02-01T09:00:00+00:00", request=ACCESS),
        fact("request-fulfilled", "member:7", "2024-02-20T09:00:00+00:00", request=ACCESS),
        fact("erasure-requested", "member:7", "2024-03-01T09:00:00+00:00", request=ERASURE),
    ]


def write_facts(tmp_path: Any, facts: list[dict[str, Any]], name: str = "facts.jsonl") -> str:
    path = tmp_path / name
    path.write_text("\n".join(lines(facts)) + "\n")
    return str(path)


def history_actors(settings: Settings, reference: str, *options: str) -> list[str]:
    document = json_of(lifecycle(settings, *options, "history", reference, "--json"))
    return [event["actor"] for event in document["events"]]


def test_the_command_line_names_the_os_user_on_every_event_it_stores(
        backend: Settings, tmp_path: Any) -> None:
    """Without --actor or $LIFECYCLE_ACTOR, every event an ingest stores names the OS user
    running it (`history --json`, every event)."""
    assert lifecycle(backend, "policy", "adopt", str(HQIP), "--at", "2023-01-01").returncode == 0
    assert lifecycle(backend, "ingest", write_facts(tmp_path, request_facts())).returncode == 0

    actors = history_actors(backend, "member:7")

    assert len(actors) >= 5 and set(actors) == {getpass.getuser()}


def test_actor_option_beats_the_environment_which_beats_the_os_user(
        backend: Settings, tmp_path: Any) -> None:
    """`--actor NAME` names the events of that command; $LIFECYCLE_ACTOR names them when
    no --actor is given; `history` (text) shows the actor of each event."""
    import subprocess
    import sys

    facts = request_facts()
    env = {**env_for(backend), "LIFECYCLE_ACTOR": "env clerk"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "lifecycle", *args], env=env,
                              capture_output=True, text=True, timeout=60)

    assert run("ingest", write_facts(tmp_path, facts[:2], "a.jsonl")).returncode == 0
    assert run("--actor", "dpo.jane", "ingest",
               write_facts(tmp_path, facts[2:], "b.jsonl")).returncode == 0

    actors = history_actors(backend, "member:7")
    assert actors[:3] == ["env clerk"] * 3  # registered, collected, access requested
    assert set(actors[3:]) == {"dpo.jane"}
    text = run("history", "member:7")
    assert text.returncode == 0 and "dpo.jane" in text.stdout and "env clerk" in text.stdout


@pytest.mark.parametrize("bad", ["", "   ", "line\nbreak", "bell\x07"])
def test_a_bad_actor_name_is_one_line_exit_2_and_stores_nothing(
        sqlite_settings: Settings, tmp_path: Any, bad: str) -> None:
    """An empty actor, or one with a control character, is refused before anything is
    stored: one line on stderr naming --actor, exit 2."""
    facts = write_facts(tmp_path, request_facts())

    result = lifecycle(sqlite_settings, "--actor", bad, "ingest", facts)

    assert result.returncode == 2, result.stderr
    assert len(result.stderr.splitlines()) == 1 and "--actor" in result.stderr
    assert not (sqlite_settings.home / "events.sqlite").exists()


def test_a_context_actor_beats_the_ledger_default(backend: Settings) -> None:
    """A service sets the signed-in user per request (`acting_as`); events stored in that
    context name them, and the ledger's default names the others."""
    with Ledger(backend, actor="batch-job") as ledger:
        ledger.ingest(lines(request_facts()[:2]), NOW)
        with acting_as("web:alice@controller.example"):
            ledger.ingest(lines(request_facts()[2:3]), NOW)
        actors = [e["actor"] for e in ledger.history("member:7")]
    assert actors == ["batch-job", "batch-job", "batch-job", "web:alice@controller.example"]


def test_events_stored_before_actors_read_unknown_and_still_decode(
        sqlite_settings: Settings) -> None:
    """An event stored by the library's plain mapper (as before this change) has no actor:
    it decodes as before and reads `unknown`; later events name their actor."""
    store = SubjectStore(env=persistence_env(sqlite_settings))  # no actor mapper
    attach_signing_key(store, sqlite_settings)
    subject = DataSubject(reference="member:old")
    store.save(subject)
    store.close()

    with Ledger(sqlite_settings, actor="auditor") as ledger:
        ledger.ingest(lines([fact("consent-given", "member:old", "2024-01-10T09:00:00+00:00",
                                  purpose="surveys-feedback", method="survey-form"),
                             collected("member:old", "2024-01-10T09:00:00+00:00", "profile",
                                       {"email": "a@example.org"}, purpose="surveys-feedback",
                                       category="feedback")]), NOW)
        timeline = ledger.history("member:old")
        assert ledger.subject("member:old").records["profile"].record == "profile"
    assert [e["actor"] for e in timeline] == [UNKNOWN, "auditor", "auditor"]


def test_the_daemon_names_its_host_pid_and_lease_on_what_it_stores(
        backend: Settings) -> None:
    """Events a daemon's tick stores (the erasures of its sweep) name the daemon: host, pid
    and the sweep lease."""
    prepare(backend, unsubscriber_facts())
    with Ledger(backend) as ledger:
        daemon = Daemon(ledger, 3600, clock=lambda: NOW)
        try:
            assert daemon.tick()["erased"] > 0
        finally:
            daemon.close()
        timeline = ledger.history("subscriber:0")
    swept = [e for e in timeline if e["event"] == "RetentionExpired"]
    assert swept, [e["event"] for e in timeline]
    expected = f"daemon {socket.gethostname()}:{os.getpid()} (sweep lease)"
    assert {e["actor"] for e in swept} == {expected}
    assert timeline[0]["actor"] == getpass.getuser()  # ingested in-process, as the OS user


def test_certificate_and_dsar_timeline_name_who_recorded_each_step(
        backend: Settings, tmp_path: Any) -> None:
    """The deletion certificate lists the request's steps with their actors (text and
    JSON); the DSAR export's requests carry their timeline with the actor of each step."""
    assert lifecycle(backend, "policy", "adopt", str(HQIP), "--at", "2023-01-01").returncode == 0
    facts = request_facts()
    assert lifecycle(backend, "--actor", "intake", "ingest",
                     write_facts(tmp_path, facts[:3], "a.jsonl")).returncode == 0
    assert lifecycle(backend, "--actor", "dpo.jane", "ingest",
                     write_facts(tmp_path, facts[3:], "b.jsonl")).returncode == 0

    certificate = json_of(lifecycle(backend, "certificate", ERASURE, "--json"))
    steps = {(s["step"], s["actor"]) for s in certificate["timeline"]}
    assert ("ErasureRequested", "dpo.jane") in steps and ("Received", "dpo.jane") in steps
    assert ("Erased", "dpo.jane") in steps
    text = lifecycle(backend, "certificate", ERASURE)
    assert text.returncode == 0 and "by dpo.jane" in text.stdout

    export = json_of(lifecycle(backend, "dsar", "export", "member:7", "--as-of",
                               "2024-02-10T00:00:00Z"))
    (access,) = [r for r in export["requests"] if r["request"] == ACCESS]
    assert [(s["step"], s["actor"]) for s in access["timeline"]] == [("Received", "intake")]
    latest = json_of(lifecycle(backend, "dsar", "export", "member:7"))
    (access,) = [r for r in latest["requests"] if r["request"] == ACCESS]
    assert [s["step"] for s in access["timeline"]] == ["Received", "Fulfilled"]
    html = lifecycle(backend, "dsar", "export", "member:7", "--format", "html")
    assert html.returncode == 0 and "intake" in html.stdout


def test_report_ropa_names_who_adopted_each_policy(sqlite_settings: Settings) -> None:
    """`report ropa` names the adopter of the policy in force and lists every adoption up
    to it with its adopter (JSON and HTML)."""
    assert lifecycle(sqlite_settings, "--actor", "dpo.jane", "policy", "adopt", str(HQIP),
                     "--at", "2023-01-01").returncode == 0
    assert lifecycle(sqlite_settings, "--actor", "dpo.raj", "policy", "adopt", str(IHPA),
                     "--at", "2024-01-01").returncode == 0

    document = json_of(lifecycle(sqlite_settings, "report", "ropa"))
    assert document["policy"]["adopted_by"] == "dpo.raj"
    assert [a["adopted_by"] for a in document["adoptions"]] == ["dpo.jane", "dpo.raj"]
    then = json_of(lifecycle(sqlite_settings, "report", "ropa", "--at", "2023-06-01T00:00:00Z"))
    assert then["policy"]["adopted_by"] == "dpo.jane" and len(then["adoptions"]) == 1
    html = lifecycle(sqlite_settings, "report", "ropa", "--format", "html")
    assert html.returncode == 0 and "by dpo.raj" in html.stdout


def test_the_actor_is_in_the_stored_event_so_the_chain_covers_it(backend: Settings) -> None:
    """The actor is part of the stored state (so the audit chain's digest covers it), not
    a side table: the raw stored event holds it."""
    with Ledger(backend, actor="clerk-42") as ledger:
        ledger.ingest(lines(request_facts()[:2]), datetime(2025, 1, 1, tzinfo=UTC))
        stored = ledger.store.recorder.select_events(DataSubject.create_id("member:7"))
    assert stored and all(b'"actor":"clerk-42"' in bytes(e.state) for e in stored)
