"""attack18c: POST /api/facts with a JSON array holding one bad element.

README: `POST /api/facts` takes "JSON Lines or a JSON array: the ingest's validation,
dedupe and report"; docs/guarantees.md, "Bad input never costs good input": a bad line is
rejected whole with its number and reason, good lines land; docs/facts.md: a fact nested
deeper than 32 levels is rejected ("nested deeper than 32 levels"). Sent as JSON Lines, a
good fact beside a too-deep one lands and the deep one is rejected by its line. The same
two facts as a JSON array must give the same report, not lose the good fact.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from lifecycle.store.settings import Settings
from tests.web_service import Service, start_service

GOOD = {"id": "arr-good", "type": "activity", "subject": "m:1", "at": "2025-01-05T00:00:00Z"}
DEEP = "[" * 5000 + "]" * 5000  # one element nested far past the cap
# A valid JSON number with more digits than Python's int parser takes by default.
BIG = ('{"id":"arr-big","type":"activity","subject":"m:1","at":"2025-01-05T00:00:00Z",'
       '"n":' + "9" * 5000 + "}")


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    folder: Path = tmp_path_factory.mktemp("arrays18c")
    home = folder / "home"
    settings = Settings(home=home, database_url=None, master_key=None,
                        master_key_file=home / "master.key")
    started = start_service(settings, folder, seed=False)
    yield started
    started.stop()


def post(service: Service, body: str, content_type: str) -> tuple[int, str]:
    with service.client("dpo") as client:
        answer = client.post("/api/facts", content=body,
                             headers={"content-type": content_type})
    return answer.status_code, answer.text


def test_as_json_lines_the_good_fact_lands_and_the_deep_one_is_named(service: Service) -> None:
    """Held: as JSON Lines, the good fact lands and the too-deep line 2 is rejected as
    nested deeper than 32 levels."""
    good = dict(GOOD, id="lines-good")
    status, text = post(service, json.dumps(good) + "\n" + DEEP + "\n", "application/x-ndjson")
    assert status == 200, text
    report = json.loads(text)
    assert report["accepted"] == 1
    assert [(r["line"], r["reason"]) for r in report["rejections"]] == [
        (2, "nested deeper than 32 levels")]


def test_a_json_array_with_one_too_deep_element_keeps_the_good_one(service: Service) -> None:
    """As a JSON array, the same two facts give the same report: element 1 lands, element
    2 is rejected as nested too deep; never a 500."""
    status, text = post(service, "[" + json.dumps(GOOD) + "," + DEEP + "]", "application/json")
    assert "unexpected error" not in text, text
    assert status == 200, text
    report = json.loads(text)
    assert report["accepted"] == 1 and [r["line"] for r in report["rejections"]] == [2]


def test_a_json_array_with_one_huge_number_keeps_the_good_one(service: Service) -> None:
    """A 5000-digit number is valid JSON; as JSON Lines its line alone is rejected. As a
    JSON array, the good element still lands and only the other is rejected."""
    good = dict(GOOD, id="big-good")
    lines_status, lines_text = post(service, json.dumps(dict(good, id="big-lines")) + "\n"
                                    + BIG.replace("arr-big", "big-lines-2") + "\n",
                                    "application/x-ndjson")
    assert lines_status == 200 and json.loads(lines_text)["accepted"] == 1, lines_text
    status, text = post(service, "[" + json.dumps(good) + "," + BIG + "]", "application/json")
    assert status == 200, text
    report = json.loads(text)
    assert report["accepted"] == 1 and [r["line"] for r in report["rejections"]] == [2]
