"""Attack 13: probes of the last changes that held (no break found).

Rules: `Settings.check_home` refuses a store file that is not a regular file (a FIFO, a
symlink to a directory) whatever the race fix; `subject_view` agrees with
`dsar_export(ref, now)` on `limit_breaches` (docs/guarantees.md "Suppression") for a
subject with values rectified before and after a consent by others.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lifecycle.domain.errors import ConfigurationError
from lifecycle.services.ledger import Ledger
from lifecycle.store.settings import Settings
from tests.facts_builder import collected, fact, lines
from tests.suppression_setup import NOW, hqip  # noqa: F401 - fixture
from tests.test_attack12_consents_by_others import X, Y, alice_lists_x, crm_consent


@pytest.mark.parametrize("kind", ["fifo", "symlink-to-dir"])
def test_check_home_refuses_non_regular_store_files(tmp_path: Path, kind: str) -> None:
    """A FIFO or a symlink to a directory in a store file's place is refused."""
    if kind == "fifo":
        os.mkfifo(tmp_path / "events.sqlite")
    else:
        (tmp_path / "d").mkdir()
        (tmp_path / "keys.sqlite-journal").symlink_to(tmp_path / "d")
    settings = Settings(home=tmp_path, database_url=None, master_key=None,
                        master_key_file=tmp_path / "k")
    with pytest.raises(ConfigurationError, match="not a regular file"):
        settings.check_home()


@pytest.mark.parametrize("listing_first", [True, False])
def test_subject_view_agrees_with_export(hqip: Ledger, listing_first: bool) -> None:
    """Bob: an enquiry holding Y, rectified to X before the crm consent and back to Y
    after it (the document dates both by the collection); view == export."""
    bob = [
        collected("s:bob", "2023-06-01T00:00:00Z", "enquiry", {"email": Y},
                  purpose="enquiries-complaints", basis="legitimate-interests"),
        fact("rectified", "s:bob", "2023-07-01T00:00:00Z", record="enquiry",
             data={"email": X}),
        crm_consent(),
        fact("rectified", "s:bob", "2024-06-01T00:00:00Z", record="enquiry",
             data={"email": Y}),
    ]
    for batch in ([alice_lists_x(), bob] if listing_first else [bob, alice_lists_x()]):
        hqip.ingest(lines(batch), NOW)
    view = sorted((b["fact"], b["at"]) for b in hqip.subject_view("s:bob")["limit_breaches"])
    export = sorted((b["fact"], b["at"])
                    for b in hqip.dsar_export("s:bob", NOW)["limit_breaches"])
    assert view == export
