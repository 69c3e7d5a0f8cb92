"""Changing `keep_subaddress` keeps every listing in force (docs/policy.md, "[suppression]").

Under `keep_subaddress = true` a tagged address (alice+news@) is an address of its own and
is listed as such; under `false` it is the same address as alice@. A policy that drops the
tags later must still refuse alice@ (and any other tag of it) for a listing made while
tags were kept; a policy that keeps them must not refuse alice@ for alice+news@'s listing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from lifecycle.services.ledger import Ledger
from lifecycle.store.vault import KeyVault, create_vault_engine
from tests.facts_builder import collected, fact, lines
from tests.suppression_setup import ADOPTED, HQIP, NOW

SWITCHED = datetime(2024, 4, 1, tzinfo=UTC)


def variant(tmp_path: Path, version: str, keep: bool) -> Path:
    text = HQIP.read_text()
    head, marker, _ = text.partition("[suppression]")
    assert marker
    path = tmp_path / f"hqip-{version}.toml"
    path.write_text(head.replace('version = "2023-11"', f'version = "{version}"')
                    + "[suppression]\n" + f"keep_subaddress = {str(keep).lower()}\n"
                    + 'resubscribe_methods = ["subscribe-form"]\n')
    return path


def tagged_alice_unsubscribes(ledger: Ledger) -> None:
    alice = "subscriber:alice"
    report = ledger.ingest(lines([
        collected(alice, "2023-05-02T09:00:00Z", "newsletter",
                  {"email": "Alice.Smith+News@example.org"}),
        fact("consent-given", alice, "2023-05-02T09:00:00Z", purpose="direct-marketing",
             method="subscribe-form"),
        fact("unsubscribed", alice, "2024-03-10T10:00:00Z"),
    ]), NOW)
    assert report.ok and report.accepted == 3, report.as_dict()


def crm_rows(*addresses: str) -> list[str]:
    facts = []
    for n, address in enumerate(addresses):
        crm = f"crm:{n}"
        facts += [fact("consent-given", crm, "2024-06-01T00:00:00Z",
                       purpose="direct-marketing", method="crm-import"),
                  collected(crm, "2024-06-01T09:00:00Z", "crm-row", {"email": address},
                            source="third-party")]
    return lines(facts)


def test_a_tag_kept_when_listed_is_dropped_by_a_later_policy(ledger: Ledger,
                                                               tmp_path: Path) -> None:
    """Listed under keep_subaddress = true, alice+news@ bars alice@ and alice+other@ once a
    policy with keep_subaddress = false is in force (they are then one address)."""
    ledger.adopt_policy(variant(tmp_path, "2023-12", keep=True), ADOPTED)
    tagged_alice_unsubscribes(ledger)
    ledger.adopt_policy(variant(tmp_path, "2024-04", keep=False), SWITCHED)
    report = ledger.ingest(crm_rows("Alice.Smith@example.org",
                                    "alice.smith+other@example.org",
                                    "alice.smith+news@example.org"), NOW)
    assert [r.line for r in report.rejected] == [2, 4, 6], report.as_dict()
    assert all("suppression list" in r.reason for r in report.rejected)


def test_while_tags_are_kept_the_untagged_address_is_not_barred(ledger: Ledger,
                                                                 tmp_path: Path) -> None:
    """Under keep_subaddress = true, alice+news@'s listing bars only alice+news@."""
    ledger.adopt_policy(variant(tmp_path, "2023-12", keep=True), ADOPTED)
    tagged_alice_unsubscribes(ledger)
    report = ledger.ingest(crm_rows("Alice.Smith@example.org",
                                    "alice.smith+other@example.org",
                                    "alice.smith+news@example.org"), NOW)
    assert [r.line for r in report.rejected] == [6], report.as_dict()


def test_a_kept_row_is_flagged_after_the_switch_too(ledger: Ledger, tmp_path: Path) -> None:
    """A CRM row for alice@ kept before the listing arrived is flagged on read once the
    policy drops tags (the read side looks the address up as ingest does)."""
    ledger.adopt_policy(variant(tmp_path, "2023-12", keep=True), ADOPTED)
    assert ledger.ingest(crm_rows("Alice.Smith@example.org"), NOW).ok
    tagged_alice_unsubscribes(ledger)
    assert ledger.subject_view("crm:0")["limit_breaches"] == []
    ledger.adopt_policy(variant(tmp_path, "2024-04", keep=False), SWITCHED)
    flagged = [(b["fact"], b.get("record")) for b in
               ledger.subject_view("crm:0")["limit_breaches"]]
    assert flagged == [("collected", "crm-row")]


_VAULT = KeyVault(create_vault_engine("sqlite://"), bytes(range(32)))
_local = st.text("abc.", min_size=1, max_size=4).filter(
    lambda s: not s.startswith(".") and not s.endswith(".") and ".." not in s)
_tag = st.none() | st.text("xyz", min_size=1, max_size=3)


def _address(local: str, tag: str | None) -> str:
    return f"{local}{'' if tag is None else '+' + tag}@example.org"


@settings(max_examples=300, deadline=None)
@given(_local, _tag, _local, _tag, st.booleans(), st.booleans())
def test_a_lookup_meets_a_listing_exactly_when_the_policy_calls_them_one_address(
        listed_local: str, listed_tag: str | None, asked_local: str,
        asked_tag: str | None, kept_when_listed: bool, kept_when_asked: bool) -> None:
    """Whatever keep_subaddress was when an address was listed and is when another is
    looked up, the lookup finds the listing exactly when: tags dropped at the lookup, the
    two have the same untagged form; tags kept at the lookup, the same tagged form, or
    (for a listing made while tags were dropped, which stood for every tag) the lookup is
    of the untagged form itself."""
    listed = _address(listed_local, listed_tag)
    asked = _address(asked_local, asked_tag)
    on_list = set(_VAULT.listing_hashes(listed, kept_when_listed))
    if kept_when_listed:
        on_list.add(_VAULT.untagged_hash(listed) or "")
    found = bool(on_list & set(_VAULT.lookup_hashes(asked, kept_when_asked)))
    same_untagged = listed_local == asked_local
    same_tagged = same_untagged and listed_tag == asked_tag
    if kept_when_asked:
        assert found == (same_tagged or (not kept_when_listed and same_untagged
                                         and asked_tag is None)), (listed, asked)
    else:
        assert found == same_untagged, (listed, asked)
