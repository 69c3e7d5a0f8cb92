"""The service's API against a real `lifecycle serve` process over HTTP, on SQLite and
PostgreSQL: case actions, finding a person, exports, bad input, logs, and caches that never
outlive an erasure made by another process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from lifecycle.store.settings import Settings
from tests.facts_builder import fact, lines
from tests.processes import lifecycle
from tests.web_service import EMAIL, NAME, Service, signed_in, start_service


@pytest.fixture
def service(backend: Settings, tmp_path: Path) -> Iterator[Service]:
    running = start_service(backend, tmp_path)
    yield running
    running.stop()


def test_a_responder_finds_a_person_acts_on_a_request_and_exports(service: Service) -> None:
    """By e-mail (in the body) to the subject; identity verified starts the clock; the
    export comes as JSON, CSV and HTML with the values; the step names its actor."""
    with service.client("responder") as api:
        found = api.post("/api/subjects/find", json={"email": EMAIL.upper()}).json()
        assert found["subjects"] == [{"subject": "m:1", "records": ["signup"]}]
        queue = api.get("/api/requests").json()["requests"]
        assert [r["deadline"] for r in queue if r["request"] == "SAR-1"] == [None]
        done = api.post("/api/requests/SAR-1/verify",
                        json={"at": "2025-02-03T09:00:00Z"})
        assert done.status_code == 200, done.text
        assert done.json()["actor"] == "responder-user"
        assert done.json()["fact"]["type"] == "identity-verified"
        queue = api.get("/api/requests").json()["requests"]
        assert [r["deadline"] for r in queue if r["request"] == "SAR-1"] == ["2025-03-03"]
        exported = api.get("/api/subjects/m:1/export", params={"format": "json"})
        assert exported.status_code == 200 and exported.json()["records"][0]["data"]["name"] == NAME
        csv = api.get("/api/subjects/m:1/export", params={"format": "csv"})
        assert csv.headers["content-type"].startswith("text/csv") and NAME in csv.text
        page = api.get("/api/subjects/m:1/export", params={"format": "html"})
        assert "attachment" in page.headers["content-disposition"] and NAME in page.text
        items = api.get("/api/notifications").json()["notifications"]
        assert [(i["erasure"], i["recipient"]) for i in items] == [("ER-2", "mailhouse")]
        assert api.post("/api/notifications/ack", json={"erasure": "ER-2"}).status_code == 200
        assert api.get("/api/notifications").json()["notifications"] == []
        cert = api.get("/api/certificates/ER-2").json()
        assert cert["recipients"][0]["acknowledged_at"] is not None
    assert '"actor": "responder-user"' in service.log_text()


def test_bad_input_is_a_clear_4xx_naming_the_field_and_nothing_is_stored(
        service: Service) -> None:
    """A bad body or action is 422 with the field and the reason (never the value), a
    step the statutory rules refuse is 422 with the reason, an unknown subject 404; the
    subject's history is unchanged."""
    with service.client("dpo") as api:
        before = len(api.get("/api/subjects/m:1/history").json()["events"])
        bad = api.post("/api/requests/SAR-1/extend", json={"months": 3})
        assert bad.status_code == 422
        assert bad.json()["detail"][0]["field"] == "body.months"
        assert api.post("/api/requests/SAR-1/shred").status_code == 422
        odd = api.post("/api/requests/SAR-1/extend", json={"reason": "Not A Slug!"})
        assert odd.status_code == 422 and "reason" in odd.text and "Not A Slug" not in odd.text
        refused = api.post("/api/requests/SAR-1/fulfil", json={"at": "1800-01-01T00:00:00Z"})
        assert refused.status_code == 422 and "before 1900" in refused.text
        secret = api.post("/api/subjects/find", json={"email": EMAIL, "extra": "x"})
        assert secret.status_code == 422 and EMAIL not in secret.text
        assert api.get("/api/subjects/nobody:9").status_code == 404
        facts = api.post("/api/facts", content="{not json}\n",
                         headers={"content-type": "application/x-ndjson"})
        assert facts.status_code == 200 and facts.json()["rejected"] == 1
        after = len(api.get("/api/subjects/m:1/history").json()["events"])
    assert after == before


def test_access_logs_hold_route_templates_and_actors_never_personal_values(
        service: Service) -> None:
    """After a lookup by e-mail, a subject view and an export, the service's log holds
    method, route template, status and actor, and no address, name or subject path."""
    with service.client("responder") as api:
        api.post("/api/subjects/find", json={"email": EMAIL})
        api.get("/api/subjects/m:1")
        api.get("/api/subjects/m:1/export", params={"format": "csv"})
    text = service.log_text()
    access = [json.loads(line) for line in text.splitlines()
              if line.startswith("{") and '"http.access"' in line]
    assert {"method": "GET", "route": "/api/subjects/{reference}/export", "status": 200,
            "actor": "responder-user"}.items() <= access[-1].items()
    for personal in (EMAIL, EMAIL.lower(), "Oyelaran", "example.org", "m:1"):
        assert personal not in text


def test_the_service_never_serves_a_value_erased_by_another_process(
        service: Service) -> None:
    """The service opens a subject (its key cached), the CLI erases the subject in another
    process, and then the page, the API view, the export (also as of a date before the erasure, which
    replays a live record and opens its value with the key) and the lookup read "erased"."""
    earlier = {"format": "json", "as_of": "2025-02-15T00:00:00Z"}
    browser, _ = signed_in(service, "responder")
    assert NAME in browser.get("/subjects/m:1").text
    with service.client("responder") as api:
        assert api.get("/api/subjects/m:1").json()["records"][0]["data"]["name"] == NAME
        assert NAME in api.get("/api/subjects/m:1/export", params={"format": "csv"}).text
        assert api.get("/api/subjects/m:1/export", params=earlier).json()[
            "records"][0]["data"]["name"] == NAME
        erasure = lines([fact("erasure-requested", "m:1", "2025-03-01T00:00:00Z",
                              request="ER-1")])
        result = lifecycle(service.settings, "ingest", "-", stdin="\n".join(erasure) + "\n")
        assert result.returncode == 0, result.stderr
        assert api.get("/api/subjects/m:1").json()["records"][0]["data"] == "erased"
        export = api.get("/api/subjects/m:1/export", params={"format": "json"}).json()
        assert export["records"][0]["data"] == "erased"
        export = api.get("/api/subjects/m:1/export", params=earlier).json()
        assert export["records"][0]["data"] == "erased"
        assert api.post("/api/subjects/find", json={"email": EMAIL}).json()["subjects"] == []
    page = browser.get("/subjects/m:1").text
    assert NAME not in page and "erased" in page
    browser.close()


def test_an_ingest_user_posts_facts_and_nothing_else(service: Service) -> None:
    """`ingest` posts JSON Lines or a JSON array with the ingest's report (duplicates
    counted); every other route is 403 for it."""
    body = lines([fact("activity", "m:9", "2025-01-01T00:00:00Z", id="web-1")])
    with service.client("ingest") as api:
        first = api.post("/api/facts", content="\n".join(body))
        assert first.json()["accepted"] == 1
        again = api.post("/api/facts", json=[json.loads(body[0])])
        assert (again.json()["accepted"], again.json()["duplicates"]) == (0, 1)
        assert api.get("/api/requests").status_code == 403


def test_an_ingest_token_cannot_record_what_only_a_dpo_may(service: Service) -> None:
    """Holds and breaches are the DPO's and decisions on a request the responder's case
    actions: an `ingest` token posting them as facts is refused with 403 naming the line and
    its type, and nothing of the body is stored; a DPO may post the same facts."""
    with service.client("dpo") as api:
        placed = api.post("/api/holds", json={"subject": "m:1", "hold": "LIT-9",
                                              "reason": "claim"})
        assert placed.status_code == 200, placed.text
    release = fact("legal-hold-released", "m:1", "2030-01-01T00:00:00Z", id="web-rel",
                   hold="LIT-9")
    harmless = fact("activity", "m:9", "2025-01-01T00:00:00Z", id="web-act")
    for hostile in (release,
                    fact("legal-hold-placed", "m:1", "2025-01-01T00:00:00Z", id="web-hold",
                         hold="LIT-X", scope="all", reason="x"),
                    {"id": "web-breach", "type": "breach-detected",
                     "at": "2025-01-01T00:00:00Z", "breach": "B-1"},
                    fact("identity-verified", "m:1", "2025-01-01T00:00:00Z", id="web-idv",
                         request="R-1"),
                    fact("request-fulfilled", "m:1", "2025-01-01T00:00:00Z", id="web-ful",
                         request="R-1")):
        with service.client("ingest") as api:
            refused = api.post("/api/facts", json=[harmless, hostile])
        assert refused.status_code == 403, refused.text
        assert "line 2" in refused.text and str(hostile["type"]) in refused.text
    with service.client("ingest") as api:  # a byte-order mark before the fact hides nothing
        marked = api.post("/api/facts", content=("\ufeff" + json.dumps(release)).encode(),
                          headers={"content-type": "application/x-ndjson"})
    assert marked.status_code == 403, marked.text
    with service.client("dpo") as api:
        history = api.get("/api/subjects/m:1/history").json()["events"]
        assert history[-1]["event"] == "LegalHoldPlaced"
        assert api.get("/api/subjects/m:9/history").status_code == 404


def test_each_write_names_the_signed_in_user_as_its_actor(service: Service) -> None:
    """Where the store records actors, an identity verification through the API and a hold
    through it are stored naming the signed-in user (the history shows it)."""
    pytest.importorskip("lifecycle.store.actor", reason="the store does not record actors yet")
    with service.client("responder") as api:
        assert api.post("/api/requests/SAR-1/verify", json={}).status_code == 200
    with service.client("dpo") as api:
        placed = api.post("/api/holds", json={"subject": "m:1", "hold": "LIT-1",
                                              "reason": "claim"})
        assert placed.status_code == 200, placed.text
        events = api.get("/api/subjects/m:1/history").json()["events"]
    assert [e["actor"] for e in events[-2:]] == ["responder-user", "dpo-user"]


def test_an_auditor_reads_history_replay_audit_and_certificates_without_a_personal_value(
        service: Service) -> None:
    """Everything an auditor may read (history, replay with the subject, audit verify, the
    certificate, status) answers 200 and holds neither the address nor the name; the
    subject view and the export are 403 for it."""
    with service.client("auditor") as api:
        answers = [api.get("/api/subjects/m:1/history"),
                   api.get("/api/replay", params={"subject": "m:1"}),
                   api.get("/api/audit/verify"), api.get("/api/certificates/ER-2"),
                   api.get("/api/status")]
        assert [a.status_code for a in answers] == [200] * 5
        for answer in answers:
            for personal in (EMAIL, "Oyelaran", "quentin"):
                assert personal.lower() not in answer.text.lower()
        assert "<sealed>" in answers[0].text
        assert api.get("/api/subjects/m:1").status_code == 403
        assert api.get("/api/subjects/m:1/export").status_code == 403


def test_no_token_is_401_whatever_the_body(service: Service) -> None:
    """Without a bearer token an API call is 401 before its body is read: a malformed body
    does not turn it into a 422."""
    with service.client() as anonymous:
        answer = anonymous.post("/api/requests/SAR-1/verify", content=b"{not json",
                                headers={"content-type": "application/json"})
        assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer"


def test_a_retried_case_action_with_its_idempotency_key_records_one_fact(
        service: Service) -> None:
    """A case action sent again with the same Idempotency-Key (a client retrying after a
    timeout) records nothing the second time and says duplicate; a retried hold, release
    and acknowledgement alike. Without a key, each request is its own action."""
    with service.client("dpo") as api:
        def events() -> int:
            return len(api.get("/api/subjects/m:1/history").json()["events"])

        before = events()
        for attempt in range(2):
            done = api.post("/api/requests/SAR-1/verify", json={},
                            headers={"Idempotency-Key": "verify-SAR-1-try"})
            assert done.status_code == 200, done.text
            assert done.json()["duplicate"] is (attempt == 1)
        for path, body in (("/api/holds", {"subject": "m:1", "hold": "H-9", "reason": "r"}),
                           ("/api/holds/release", {"subject": "m:1", "hold": "H-9"}),
                           ("/api/notifications/ack", {"erasure": "ER-2"})):
            answers = [api.post(path, json=body, headers={"Idempotency-Key": f"k{path}"})
                       for _ in range(2)]
            assert [a.status_code for a in answers] == [200, 200], answers[1].text
            assert [a.json()["duplicate"] for a in answers] == [False, True], path
        assert events() == before + 3  # verify, hold, release (the ack is on m:2's case)


def test_a_facts_body_over_the_limit_is_413_naming_it_and_nothing_is_stored(
        service: Service) -> None:
    """POST /api/facts takes at most FACTS_BODY_LIMIT bytes: a larger body, with its
    Content-Length or streamed without one, is 413 naming the limit; nothing is stored."""
    from lifecycle.web.api import FACTS_BODY_LIMIT

    line = lines([fact("activity", "m:9", "2025-01-01T00:00:00Z", id="big-1")])[0] + "\n"
    body = line * (FACTS_BODY_LIMIT // len(line) + 1)
    assert len(body) > FACTS_BODY_LIMIT

    def streamed() -> Iterator[bytes]:
        for start in range(0, len(body), 65536):
            yield body[start:start + 65536].encode()

    with service.client("ingest") as api:
        for answer in (api.post("/api/facts", content=body),
                       api.post("/api/facts", content=streamed())):
            assert answer.status_code == 413, answer.text[:200]
            assert f"{FACTS_BODY_LIMIT:,} bytes" in answer.json()["detail"]
    with service.client("dpo") as api:
        assert api.get("/api/subjects/m:9").status_code == 404


def test_a_facts_body_cut_off_by_its_client_is_400_not_a_server_error() -> None:
    """A client that goes away before its body ends (a timeout, or a Content-Length shorter
    than what it sends, which the server answers 400 and closes) gets one clear line, 400:
    it is not a server error (a 500 with a traceback in the log)."""
    import asyncio

    from fastapi import HTTPException
    from starlette.requests import Request

    from lifecycle.web.api import _capped_body

    messages = [{"type": "http.request", "body": b'{"id": "a"', "more_body": True},
                {"type": "http.disconnect"}]

    async def receive() -> dict[str, object]:
        return messages.pop(0)

    request = Request({"type": "http", "method": "POST", "headers": []}, receive)
    with pytest.raises(HTTPException) as refused:
        asyncio.run(_capped_body(request, 1024))
    assert refused.value.status_code == 400
    assert "nothing was stored" in str(refused.value.detail)


def test_posted_facts_are_read_line_by_line_as_the_ingest_reads_a_file(service: Service) -> None:
    """POST /api/facts reads its JSON Lines as `lifecycle ingest` reads a file: a line that
    is not UTF-8 is rejected by number (not stored with its bad bytes replaced), and a line
    is ended by a newline only (a value holding U+2028 or U+0085, valid in JSON, is one
    fact, not two broken lines)."""
    from tests.facts_builder import collected

    bad = json.dumps(collected("m:70", "2025-01-01T00:00:00Z", "signup", {"name": "Os@car"},
                               id="web-utf-1"))
    odd = json.dumps(collected("m:71", "2025-01-01T00:00:00Z", "signup",
                               {"name": "Ana\u2028Lee\x85Bo"}, id="web-utf-2"),
                     ensure_ascii=False)
    body = bad.encode().replace(b"Os@car", b"Os\xffcar") + b"\n" + odd.encode() + b"\n"
    with service.client("dpo") as api:
        report = api.post("/api/facts", content=body,
                          headers={"content-type": "application/x-ndjson"}).json()
        assert report["accepted"] == 1, report
        assert report["rejections"] == [{"line": 1, "fact": None,
                                         "reason": "not valid UTF-8"}], report
        assert api.get("/api/subjects/m:70").status_code == 404
        stored = api.get("/api/subjects/m:71").json()["records"][0]["data"]
        assert stored == {"name": "Ana\u2028Lee\x85Bo"}
