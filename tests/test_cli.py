"""The command line: exit codes, --json output, and logs free of personal values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from lifecycle.cli.main import cli
from tests.facts_builder import collected, fact, lines
from tests.test_ingest import hundred_facts_with_five_bad

EMAIL = "olabisi.ferreira.77@example.org"
SURNAME = "Ferreira-Quist"


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("LIFECYCLE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LIFECYCLE_DATABASE_URL", raising=False)
    monkeypatch.delenv("LIFECYCLE_MASTER_KEY", raising=False)
    monkeypatch.delenv("LIFECYCLE_MASTER_KEY_FILE", raising=False)
    return CliRunner()


def write(tmp_path: Path, name: str, content: list[str]) -> str:
    path = tmp_path / name
    path.write_text("\n".join(content) + "\n")
    return str(path)


def test_ingest_exits_1_naming_bad_lines_and_0_when_clean(run: CliRunner, tmp_path: Path) -> None:
    """Ingest exits 1 when any line was rejected, naming each, and 0 when all are good."""
    data, bad = hundred_facts_with_five_bad()
    result = run.invoke(cli, ["ingest", write(tmp_path, "f.jsonl", data), "--json"])
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert (document["accepted"], document["rejected"]) == (95, 5)
    assert [r["line"] for r in document["rejections"]] == sorted(bad)
    good = [line for n, line in enumerate(data, 1) if n not in bad]
    result = run.invoke(cli, ["ingest", write(tmp_path, "g.jsonl", good)])
    assert result.exit_code == 0
    assert "0 accepted, 95 duplicates, 0 rejected" in result.stdout


def test_ingest_reads_standard_input(run: CliRunner) -> None:
    """`lifecycle ingest -` reads facts from standard input."""
    text = "\n".join(lines([collected("m:1", "2024-01-01T00:00:00Z", "r", {"a": "b"})]))
    result = run.invoke(cli, ["ingest", "-", "--json"], input=text)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["accepted"] == 1


def test_usage_errors_exit_2(run: CliRunner, tmp_path: Path) -> None:
    """A missing file is a usage error: exit code 2."""
    result = run.invoke(cli, ["ingest", str(tmp_path / "missing.jsonl")])
    assert result.exit_code == 2


def test_a_bad_master_key_is_a_configuration_error(run: CliRunner,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A master key that is not 32 bytes of base64 is refused with exit code 2."""
    monkeypatch.setenv("LIFECYCLE_MASTER_KEY", "not-a-key")
    result = run.invoke(cli, ["subject", "show", "m:1"])
    assert result.exit_code == 2
    assert "LIFECYCLE_MASTER_KEY" in result.stderr


def test_the_embedded_default_creates_a_private_master_key(run: CliRunner,
                                                           tmp_path: Path) -> None:
    """On first use the data directory and a 0600 master key file are created."""
    run.invoke(cli, ["ingest", "-"], input="")
    key_file = tmp_path / "home" / "master.key"
    assert key_file.exists()
    assert key_file.stat().st_mode & 0o777 == 0o600


def test_show_and_history_give_one_json_document(run: CliRunner, tmp_path: Path) -> None:
    """`subject show --json` and `history --json` print one JSON document each."""
    facts = write(tmp_path, "f.jsonl", lines([
        collected("m:1", "2024-01-01T00:00:00Z", "r", {"email": EMAIL}),
        fact("access-requested", "m:1", "2024-02-01T00:00:00Z", request="SAR-1"),
    ]))
    run.invoke(cli, ["ingest", facts])
    shown = json.loads(run.invoke(cli, ["subject", "show", "m:1", "--json"]).stdout)
    assert shown["records"][0]["data"] == {"email": EMAIL}
    assert shown["requests"][0]["request"] == "SAR-1"
    history = json.loads(run.invoke(cli, ["history", "m:1", "--json"]).stdout)
    assert [e["event"] for e in history["events"]] == [
        "Registered", "Collected", "AccessRequested"]
    assert EMAIL not in json.dumps(history)


def test_an_unknown_subject_exits_1(run: CliRunner) -> None:
    """Showing a subject with no facts says so and exits 1."""
    result = run.invoke(cli, ["subject", "show", "m:404"])
    assert result.exit_code == 1
    assert "m:404" in result.stderr


def test_logs_and_errors_never_carry_personal_values(run: CliRunner, tmp_path: Path) -> None:
    """No personal value reaches a log line or an error message, in ingest or erasure."""
    facts = lines([
        collected("m:1", "2024-01-01T00:00:00Z", "signup", {"email": EMAIL, "last": SURNAME}),
        fact("consent-given", "m:1", "2024-01-01T00:00:00Z", purpose="direct-marketing"),
        # rejected lines carrying personal values in the wrong places
        collected("m:1", "2024-01-02T00:00:00Z", "signup", {"email": EMAIL}),
        collected("m:1", "2024-01-02T00:00:00", "x", {"email": EMAIL}),
        collected("m:1", "2024-01-02T00:00:00Z", "y", {"email": EMAIL}, basis=SURNAME),
        {"id": "z", "type": EMAIL, "subject": "m:1", "at": "2024-01-02T00:00:00Z"},
        fact("objected", "m:1", "2024-01-03T00:00:00Z", purpose="direct-marketing"),
        fact("legal-hold-placed", "m:1", "2024-01-04T00:00:00Z", hold="H", scope="all",
             reason=f"claim by {SURNAME}"),
        fact("legal-hold-released", "m:1", "2024-01-05T00:00:00Z", hold="H"),
        fact("erasure-requested", "m:1", "2024-01-06T00:00:00Z", request="ER-1"),
    ]) + ['{"id": "q", "email": "' + EMAIL + '"']
    result = run.invoke(cli, ["--log-level", "DEBUG", "ingest",
                              write(tmp_path, "f.jsonl", facts)])
    assert result.exit_code == 1
    assert "ingest.rejected" in result.stderr and "ingest.finished" in result.stderr
    for needle in (EMAIL, SURNAME, EMAIL.split("@")[0]):
        assert needle not in result.stderr
        assert needle not in result.stdout
