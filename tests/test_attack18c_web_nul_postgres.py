"""attack18c: the desk on PostgreSQL, asked for a reference holding NUL (`%00` in a path).

README (desk API): "bad input: 422 ...; an unknown subject or request: 404"; "the same
commands give the same results" on both backends. A reference never holds a control
character (docs/facts.md), so `/api/subjects/%00` names no subject: on SQLite it is a 404.
On PostgreSQL the lookup itself fails (text cannot hold NUL) and the service answers 500
"unexpected error (DataError)".
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lifecycle.store.settings import Settings
from tests.web_service import Service, start_service


@pytest.fixture
def service(postgres_database: str, tmp_path: Path) -> Iterator[Service]:
    home = tmp_path / "home"
    settings = Settings(home=home, database_url=postgres_database, master_key=None,
                        master_key_file=home / "master.key")
    started = start_service(settings, tmp_path)
    yield started
    started.stop()


def test_a_reference_holding_nul_is_unknown_or_bad_input_never_a_server_error(
        service: Service) -> None:
    """A path reference holding NUL names no subject or request: the answer is 404
    (unknown) or 422 (bad input), never a 500, on PostgreSQL as on SQLite."""
    answers = {}
    # One connection each: after a 500 the service resets the connection it came on.
    for name, method, path in (("subject", "GET", "/api/subjects/%00"),
                               ("certificate", "GET", "/api/certificates/%00"),
                               ("request step", "POST", "/api/requests/%00/verify")):
        with service.client("dpo") as client:
            answers[name] = client.request(method, path, json={} if method == "POST" else None)
    for name, answer in answers.items():
        assert "unexpected error" not in answer.text, (name, answer.text)
        assert answer.status_code in (404, 422), (name, answer.status_code)
