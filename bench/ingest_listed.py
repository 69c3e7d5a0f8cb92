"""What the suppression check costs ingest once the list is in use.

    python3 run.py bench bench/ingest_listed.py [--pairs 4]

The benchmark suite's 4,000 subjects (36,000 facts, `bench.suite.fact_lines`) are ingested
with `Ledger.ingest` into two fresh SQLite stores, in alternating pairs: one with an empty
suppression list (ingest then hashes no address: nothing can be listed), one where an
unrelated subject unsubscribed first (one address listed, so every direct-marketing value
is hashed and looked up). Prints the CPU seconds of each ingest and the ratio of the
medians (listed / empty), measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bench import suite
from lifecycle.services.ledger import Ledger
from lifecycle.store.settings import load_settings

OTHER = "other:listed-before"
LISTED_FIRST = [
    {"id": "listed-1", "type": "collected", "subject": OTHER, "at": "2022-06-01T00:00:00+00:00",
     "record": "newsletter", "category": "contact", "purpose": "direct-marketing",
     "basis": "consent", "source": "data-subject", "data": {"email": "someone@example.net"}},
    {"id": "listed-2", "type": "consent-given", "subject": OTHER,
     "at": "2022-06-01T00:00:00+00:00", "purpose": "direct-marketing", "method": "web-form"},
    {"id": "listed-3", "type": "unsubscribed", "subject": OTHER,
     "at": "2022-07-01T00:00:00+00:00", "channel": "email-link"},
]


def ingest_cpu(home: Path, lines: list[str], listed: bool) -> float:
    env = {suite.HOME_ENV: str(home), suite.MASTER_KEY_ENV: suite.MASTER_KEY}
    with Ledger(load_settings(env)) as ledger:
        ledger.adopt_policy(suite.POLICY, suite.ADOPTED)
        if listed:
            first = ledger.ingest([json.dumps(f) for f in LISTED_FIRST], suite.INGESTED_AT)
            assert first.accepted == len(LISTED_FIRST), first
    with Ledger(load_settings(env)) as ledger:
        began = time.process_time()
        report = ledger.ingest(lines, suite.INGESTED_AT)
        spent = time.process_time() - began
    assert report.accepted == len(lines) and not report.rejected, report
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=4)
    args = parser.parse_args()
    size = suite.SIZES["small"]
    lines = list(suite.fact_lines(0, size.subjects, size.subjects, size.due))
    spent: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        for pair in range(args.pairs):
            for listed in (False, True):
                home = Path(tmp) / f"store-{pair}-{listed}"
                spent[listed].append(ingest_cpu(home, lines, listed))
                shutil.rmtree(home)
                print(f"pair {pair + 1}: {'one address listed' if listed else 'empty list'}"
                      f": {spent[listed][-1]:.2f} CPU-s", flush=True)
    empty, listed = statistics.median(spent[False]), statistics.median(spent[True])
    print(f"median CPU-s: empty list {empty:.2f}, one address listed {listed:.2f}; "
          f"ratio listed / empty {listed / empty:.2f}")


if __name__ == "__main__":
    main()
