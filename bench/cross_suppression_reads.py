"""CPU time of `Ledger.subject_view` and `Ledger.dsar_export` with and without the
cross-subject suppression check (branch suppr6), alternating call by call on one store.

    PYTHONPATH=src:. python bench/cross_suppression_reads.py [SUBJECTS [READS]]

The store: SUBJECTS subjects (500) shaped as bench/sweep_bench.py `subject_facts` (one
direct-marketing record each), HQIP adopted, on the embedded SQLite default, views caught
up; READS (200) subjects drawn at random (seed 7), each read once per variant, the order
of the variants alternating. "old" patches the check out (`with_suppression_breaches`
returns what it is given, `marketing_values` finds nothing), "new" is the code as is.
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sweep_bench import ADOPTED, INGESTED_AT, POLICY, settings_for, subject_facts  # noqa: E402

from lifecycle.services import ledger as ledger_module  # noqa: E402
from lifecycle.services.ledger import Ledger  # noqa: E402

AS_OF = datetime(2027, 1, 1, tzinfo=UTC)
REAL = (ledger_module.with_suppression_breaches, ledger_module.live_values,
        ledger_module.DIRECT_MARKETING)


def variant(new: bool) -> None:
    with_breaches, marketing, purpose = REAL
    ledger_module.with_suppression_breaches = (  # type: ignore[assignment]
        with_breaches if new else (lambda known, *args, **kwargs: known))
    ledger_module.live_values = (  # type: ignore[assignment]
        marketing if new else (lambda subject: []))
    ledger_module.DIRECT_MARKETING = purpose if new else "no-such-purpose"


def main(subjects: int, reads: int) -> None:
    with tempfile.TemporaryDirectory() as root, \
            Ledger(settings_for(Path(root) / "home")) as ledger:
        ledger.adopt_policy(POLICY, ADOPTED)
        facts = [f for n in range(subjects) for f in subject_facts(n, 10, False)]
        report = ledger.ingest([json.dumps(f) for f in facts], INGESTED_AT)
        assert report.ok, report.as_dict()["rejections"][:3]
        ledger.projections.catch_up()
        rng = random.Random(7)
        picks = [f"subscriber:{rng.randrange(subjects)}" for _ in range(reads)]
        calls: dict[str, Callable[[str], Any]] = {
            "subject_view": ledger.subject_view,
            "dsar_export": lambda ref: ledger.dsar_export(ref, AS_OF)}
        for name, call in calls.items():
            spent: dict[bool, float] = {True: 0.0, False: 0.0}
            for new in (True, False) * 5:  # warm both
                variant(new)
                call(picks[0])
            for i, ref in enumerate(picks):
                for new in ((True, False) if i % 2 else (False, True)):
                    variant(new)
                    started = time.process_time()
                    call(ref)
                    spent[new] += time.process_time() - started
            variant(True)
            old, now = spent[False] / reads * 1000, spent[True] / reads * 1000
            print(f"{name}: old {old:.2f} ms CPU/call, new {now:.2f} ms CPU/call, "
                  f"ratio {now / old:.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 500,
         int(sys.argv[2]) if len(sys.argv) > 2 else 200)
