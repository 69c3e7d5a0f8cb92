"""A run finds a listing made under a keep-tags policy while it is under way
(docs/policy.md, "[suppression]").

A listing made while `keep_subaddress = true` was in force also stores the untagged form
of a tagged address. Ingest asks for that form whatever policies the store had when the
run began, so a listing that another process makes under a keep-tags policy adopted after
the run began is still found.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from lifecycle.services.ledger import Ledger
from lifecycle.store.settings import Settings
from tests.suppression_setup import ADOPTED, HQIP, NOW
from tests.test_subaddress_switch import crm_rows, tagged_alice_unsubscribes, variant


def test_a_listing_made_under_a_keep_tags_policy_adopted_while_a_run_began_is_found(
        backend: Settings, tmp_path: Path) -> None:
    """The run starts under a policy that drops tags, with no keep-tags policy in the
    store. While its lines are read, another ledger adopts a keep-tags policy and lists
    alice+news@. The run's CRM row for alice@ (the same address under the run's policy)
    dated after the listing is refused."""
    with Ledger(backend) as setup:
        setup.adopt_policy(HQIP, ADOPTED)

    def lines_then_the_other_process() -> Iterator[str]:
        yield from crm_rows("Alice.Smith@example.org")
        with Ledger(backend) as other:  # after the run read its policy, before it applies
            other.adopt_policy(variant(tmp_path, "2023-12", keep=True), ADOPTED)
            tagged_alice_unsubscribes(other)

    with Ledger(backend) as run:
        report = run.ingest(lines_then_the_other_process(), NOW)
    assert [r.line for r in report.rejected] == [2], report.as_dict()
    assert "suppression list" in report.rejected[0].reason
