"""A bounded load smoke test: 8 concurrent clients read the queue, person pages and exports
of a running `lifecycle serve` while an ingest of the sample and a sweep run in other
processes; every answer is a 200 and both runs finish cleanly. (Latency under load is
measured by bench/service_load.py, never asserted here.)"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from lifecycle.services.ledger import Ledger
from lifecycle.policy.loader import bundled_policy
from lifecycle.projections import tables
from lifecycle.services.samples import generate_facts
from lifecycle.store.settings import Settings
from tests.processes import lifecycle
from tests.web_service import Service, signed_in, start_service

CLIENTS = 8
ROUNDS = 8  # per client: a queue, a person page and an export each


@pytest.fixture
def service(backend: Settings, tmp_path: Path) -> Iterator[tuple[Service, list[str]]]:
    """The service over the HQIP sample (120 subjects), and up to 60 of its subjects."""
    facts = generate_facts("hqip", 120)
    with Ledger(backend) as ledger:
        ledger.adopt_policy(bundled_policy("hqip"), datetime(2023, 1, 1, tzinfo=UTC))
        ledger.ingest((json.dumps(f) for f in facts), datetime.now(UTC))
        ledger.projections.catch_up()
        with ledger.views.connect() as conn:
            references = list(conn.execute(sa.select(tables.subjects.c.reference)
                                           .order_by(tables.subjects.c.reference)
                                           .limit(60)).scalars())
    running = start_service(backend, tmp_path, seed=False)
    yield running, references
    running.stop()


def test_clients_under_an_ingest_and_a_sweep_get_only_200s(
        service: tuple[Service, list[str]], tmp_path: Path) -> None:
    """CLIENTS threads x ROUNDS (queue, person API or page, JSON export) while a second
    sample is ingested and a sweep erases: no error answer, no failed run."""
    service, references = service
    assert references
    more = tmp_path / "more.jsonl"
    # New fact ids: the sample's own are taken already, and an ingest refusing every fact
    # would write nothing under the clients.
    lines = [json.dumps(dict(f, id=f"load-{f['id']}"))
             for f in generate_facts("hqip", 120, seed=7) if not f["subject"].endswith("demo-1")]
    more.write_text("\n".join(lines) + "\n")
    statuses: list[tuple[str, int]] = []
    lock = threading.Lock()

    def client(number: int) -> None:
        pick = random.Random(number)
        browser, _ = signed_in(service, "responder")
        with service.client("responder") as api:
            for _ in range(ROUNDS):
                reference = pick.choice(references)
                answers = [("queue", api.get("/api/requests").status_code),
                           ("page", browser.get(f"/subjects/{reference}").status_code),
                           ("export", api.get(f"/api/subjects/{reference}/export").status_code)]
                with lock:
                    statuses.extend(answers)
        browser.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    ingest = lifecycle(service.settings, "ingest", str(more), "--json")
    sweep = lifecycle(service.settings, "sweep", "--json")
    for thread in threads:
        thread.join(timeout=300)
    assert ingest.returncode in (0, 1), ingest.stderr  # 1: sample lines the store refuses
    assert json.loads(ingest.stdout)["accepted"] >= len(lines) // 2  # it really wrote
    assert sweep.returncode == 0, sweep.stderr
    assert len(statuses) == CLIENTS * ROUNDS * 3
    assert [s for s in statuses if s[1] != 200] == []
