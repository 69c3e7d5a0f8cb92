"""Attack 18a, the command line in real processes: the same facts split into several
`lifecycle ingest` runs in another order give the same `subject show --json` as one run in
fact-time order, before and after a `sweep`; the certificate lists exactly the keys the
vault destroyed; and a late earlier episode of a hold id (see
tests/test_attack18a_late_facts.py) through the command line.

Rules: README "State follows fact time", "Erased means erased"; docs/guarantees.md "Fact
time, not arrival order" (holds and restrictions dated before an erasure request arrive
before it here: that order is the documented limit).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lifecycle.store.settings import Settings
from tests.facts_builder import collected, fact
from tests.histories import canonical_view
from tests.processes import destroyed_keys, json_of, lifecycle

CONFIG = Path(__file__).resolve().parents[1] / "config"


def history(who: str) -> list[dict[str, Any]]:
    """A lawful history: an enquiry under a hold (released after the request), a
    legal-obligation record, marketing on consent, an event record under a legal-claims
    restriction, a rectification, a survey record, then an erasure request."""
    tag = {"m:a": "TAGA", "m:b": "TAGB"}[who]

    def i(n: int) -> str:
        return f"{tag}-{n}"

    return [
        collected(who, "2023-01-01T00:00:00Z", "enq", {"name": f"Zq{tag}EnqQv"},
                  purpose="enquiries-complaints", basis="legitimate-interests", id=i(1)),
        collected(who, "2023-01-02T00:00:00Z", "svc", {"name": f"Zq{tag}SvcQv"},
                  purpose="service-communications", basis="legal-obligation", id=i(2)),
        fact("consent-given", who, "2023-01-03T00:00:00Z", purpose="direct-marketing",
             method="subscribe-form", id=i(3)),
        collected(who, "2023-01-04T00:00:00Z", "mkt", {"email": f"zq.{tag}@example.org"},
                  id=i(4)),
        collected(who, "2023-01-05T00:00:00Z", "evt", {"name": f"Zq{tag}EvtQv"},
                  purpose="events", basis="contract", category="identity", id=i(5)),
        fact("legal-hold-placed", who, "2023-02-01T00:00:00Z", hold="H",
             scope="enquiries-complaints", reason="pending claim", id=i(6)),
        fact("rectified", who, "2023-02-15T00:00:00Z", record="enq",
             data={"name": f"Zq{tag}RectQv"}, id=i(7)),
        fact("restricted", who, "2023-03-01T00:00:00Z", scope="events",
             reason="legal-claims", id=i(8)),
        collected(who, "2023-04-01T00:00:00Z", "srv", {"name": f"Zq{tag}SrvQv"},
                  purpose="surveys-feedback", basis="legitimate-interests", id=i(9)),
        fact("erasure-requested", who, "2023-06-01T00:00:00Z", request=f"ER-{tag}",
             id=i(10)),
        fact("legal-hold-released", who, "2023-09-01T00:00:00Z", hold="H", id=i(11)),
    ]


def feed(settings: Settings, facts: list[dict[str, Any]]) -> dict[str, Any]:
    done = lifecycle(settings, "ingest", "-", "--json",
                     stdin="".join(json.dumps(f) + "\n" for f in facts))
    report: dict[str, Any] = json_of(done)
    assert report["rejected"] == 0, report
    return report


def shown(settings: Settings, who: str) -> dict[str, Any]:
    view: dict[str, Any] = json_of(lifecycle(settings, "subject", "show", who, "--json"))
    return view


def same_form(view: dict[str, Any]) -> dict[str, Any]:
    text = json.dumps({**view, "subject": "X"})
    for tag in ("TAGA", "TAGB"):
        text = text.replace(tag, "TAGX")
    return canonical_view(json.loads(text))


def test_split_ingests_in_another_order_show_the_same_subject_before_and_after_a_sweep(
        backend: Settings) -> None:
    """Subject m:a's facts in one `lifecycle ingest` run (fact-time order); m:b's same
    facts in three runs in another order (holds and the restriction first, then the
    request, the consent and the kept record, then the records it covers). Both
    `subject show --json` agree (the marketing and survey records erased, the rest kept
    on their grounds), both certificates list the same erased and kept records and, with
    the vault, exactly the keys destroyed; after a `sweep` (the hold released since) both
    still agree and no erased value is shown."""
    assert lifecycle(backend, "policy", "adopt", str(CONFIG / "hqip.toml"),
                     "--at", "2019-01-01T00:00:00Z").returncode == 0
    feed(backend, history("m:a"))
    b = history("m:b")
    feed(backend, [b[5], b[7], b[10]])
    feed(backend, [b[9], b[2], b[1]])
    feed(backend, [b[8], b[3], b[0], b[6], b[4]])
    a_view, b_view = shown(backend, "m:a"), shown(backend, "m:b")
    assert same_form(a_view) == same_form(b_view)
    kept = {r["record"]: r["data"] != "erased" for r in b_view["records"]}
    assert kept == {"enq": True, "svc": True, "mkt": False, "evt": True, "srv": False}
    assert {r["record"]: r["data"] for r in b_view["records"]}["enq"] == {
        "name": "ZqTAGBRectQv"}
    certificates = {who: json_of(lifecycle(backend, "certificate", f"ER-{tag}", "--subject",
                                           who, "--json"))
                    for who, tag in (("m:a", "TAGA"), ("m:b", "TAGB"))}
    for who, certificate in certificates.items():
        assert sorted(r["record"] for r in certificate["erased"]) == ["mkt", "srv"]
        assert sorted(r["record"] for r in certificate["kept"]) == ["enq", "evt", "svc"]
        assert certificate["all_keys_destroyed"]
        assert len(certificate["keys_destroyed"]) == 2
    assert {r["record"]: r["erased_on_arrival"] for r in certificates["m:b"]["erased"]} == {
        "mkt": True, "srv": True}
    assert destroyed_keys(backend) == 4
    swept = json_of(lifecycle(backend, "sweep", "--json"))
    assert sorted((i["subject"], i["record"]) for i in swept["items"]["erased"]) == [
        ("m:a", "enq"), ("m:b", "enq")]
    assert sorted((i["subject"], i["record"], i["paused_by"])
                  for i in swept["items"]["paused"]) == [
        ("m:a", "evt", "restriction (legal-claims)"),
        ("m:b", "evt", "restriction (legal-claims)")]
    a_view, b_view = shown(backend, "m:a"), shown(backend, "m:b")
    assert same_form(a_view) == same_form(b_view)
    dumped = json.dumps(a_view) + json.dumps(b_view)
    for gone in ("EnqQv", "RectQv", "SrvQv", "zq.TAG"):
        assert gone not in dumped
    assert destroyed_keys(backend) == 6


def test_cli_placing_a_hold_again_to_widen_it_keeps_what_it_kept(backend: Settings) -> None:
    """A DPO widens legal hold LIT-1 (placed on enquiries before an erasure request that
    kept the enquiry under it) with `lifecycle hold place SUBJECT LIT-1 --scope all`: the
    hold was in force at the request's time, so the enquiry stays kept, readable, the
    refusal stands, and the vault destroys nothing."""
    assert lifecycle(backend, "policy", "adopt", str(CONFIG / "hqip.toml"),
                     "--at", "2019-01-01T00:00:00Z").returncode == 0
    who = "m:cli-widen"
    feed(backend, [
        collected(who, "2023-01-01T00:00:00Z", "enq", {"name": "ZqCliWidenQv"},
                  purpose="enquiries-complaints", basis="legitimate-interests"),
        fact("legal-hold-placed", who, "2023-02-01T00:00:00Z", hold="LIT-1",
             scope="enquiries-complaints", reason="claim"),
        fact("erasure-requested", who, "2023-03-01T00:00:00Z", request="ER-cli-w"),
    ])
    assert [x["record"] for x in shown(backend, who)["erasure_refusals"]] == ["enq"]
    placed = lifecycle(backend, "hold", "place", who, "LIT-1", "--reason", "claim widened",
                       "--scope", "all")
    assert placed.returncode == 0, placed.stderr
    view = shown(backend, who)
    assert [r["data"] for r in view["records"]] == [{"name": "ZqCliWidenQv"}]
    assert [x["record"] for x in view["erasure_refusals"]] == ["enq"]
    assert destroyed_keys(backend) == 0
