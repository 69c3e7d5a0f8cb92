"""Suppression that holds: every spelling of a suppressed address, under any key, at any
depth, stays refused for marketing until the person's own opt-in; it survives erasure."""

from __future__ import annotations

import sys
import unicodedata
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lifecycle.aggregates.data_subject import DataSubject
from lifecycle.store.vault import KeyVault, create_vault_engine
from lifecycle.domain.email_address import (AT_SIGNS, could_be_address, find_addresses, method_slug,
                                     normalise, spellings)
from lifecycle.services.ledger import Ledger
from lifecycle.policy.loader import parse_policy
from tests.facts_builder import collected, fact, lines

HQIP = Path(__file__).resolve().parents[1] / "config" / "hqip.toml"
ADOPTED = datetime(2023, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 1, 1, tzinfo=UTC)
ALICE = "alice.smith@example.org"

# Every spelling issue 11 saw accepted for a suppressed alice.smith@example.org.
SPELLINGS = [
    "Alice.Smith+news@example.org",
    "alice.smith@example.org.",
    "ａｌｉｃｅ.ｓｍｉｔｈ@ｅｘａｍｐｌｅ.ｏｒｇ",
    "ａｌｉｃｅ．ｓｍｉｔｈ＠ｅｘａｍｐｌｅ．ｏｒｇ",
    "alice.smith\u200b@example.org",
    "ali\u00adce.smith@exa\u2060mple.org\ufeff",
    "\u202ealice.smith@example.org\u202c",
    "<alice.smith@example.org>",
    "mailto:alice.smith@example.org",
    "MAILTO:Alice.Smith@Example.org?subject=hello",
    "Alice Smith <alice.smith@example.org>",
    '"Smith, Alice" <mailto:alice.smith+crm@example.org.>',
    "  ALICE.SMITH@EXAMPLE.ORG \t",
    "ALICE.SMITH@EXAMPLE.ORG\x00",          # control characters a mail system drops
    "alice.smith\x7f@example.org\x1b",
    "ali\x00ce.smith@exa\x9fmple.org",
]
# Every place in `data` issue 11 saw go unchecked.
PLACES: list[Any] = [
    lambda v: {"Email": v},
    lambda v: {"e-mail": v},
    lambda v: {"email_address": v},
    lambda v: {"contact": {"addresses": ["not an address", v]}},
    lambda v: {"people": [{"name": "A", "channels": [{"kind": "mail", "value": v}]}]},
]


@pytest.fixture
def hqip(ledger: Ledger) -> Ledger:
    ledger.adopt_policy(HQIP, ADOPTED)
    return ledger


def policy_variant(tmp_path: Path, suppression: str) -> Path:
    """hqip.toml as a new version whose [suppression] table is `suppression`."""
    text = HQIP.read_text()
    head, marker, _ = text.partition("[suppression]")
    assert marker, "hqip.toml declares a [suppression] table"
    variant = tmp_path / "hqip-variant.toml"
    variant.write_text(head.replace('version = "2023-11"', 'version = "2023-12"')
                       + "[suppression]\n" + suppression + "\n")
    return variant


def alice_unsubscribes(ledger: Ledger, email: Any = ALICE, subject: str = "subscriber:alice",
                       ending: str = "unsubscribed", **ending_fields: Any) -> None:
    data = email if isinstance(email, dict) else {"email": email}
    report = ledger.ingest(lines([
        collected(subject, "2023-05-02T09:00:00Z", "newsletter", data),
        fact("consent-given", subject, "2023-05-02T09:00:00Z", purpose="direct-marketing",
             method="subscribe-form"),
        fact(ending, subject, "2024-03-10T10:00:00Z", **ending_fields),
    ]), NOW)
    assert report.rejected == [] and report.accepted == 3


def marketing_of(subject: str, data: dict[str, Any], at: str = "2024-06-01T09:00:00Z",
                 record: str = "crm-row") -> dict[str, Any]:
    return collected(subject, at, record, data, source="third-party")


def consents_of(ledger: Ledger, *subjects: str) -> None:
    """Marketing consent (by a list import, not the person's own opt-in) for subjects whose
    marketing data should land when its address is not suppressed (a consent-based record
    needs a consent in force at its time)."""
    report = ledger.ingest(lines([
        fact("consent-given", subject, "2024-01-01T09:00:00Z", purpose="direct-marketing",
             method="list-import") for subject in subjects]), NOW)
    assert report.ok, report.as_dict()


# -- normalisation (pure) ------------------------------------------------------------------


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_every_spelling_of_an_address_normalises_to_one(spelling: str) -> None:
    """Case, width, invisible characters, mailto:, ?query, display names, a trailing dot
    of the domain and a +tag do not make a different address."""
    assert normalise(spelling) == ALICE


@pytest.mark.parametrize("value", [
    "", "alice", "alice@", "@example.org", "alice@example", "alice@@example.org",
    "alice@b@example.org", "alice smith@example.org", "write to alice@example.org today",
    "alice@.org", "alice@example..org", "Alice <>", "a@b.org, c@d.org", "<a@b.org",
    "alice@exa mple.org",
])
def test_what_is_not_an_address(value: str) -> None:
    """An address is one whole value: exactly one @, a local part, a dotted domain with no
    empty label and no white space; addresses inside free text or lists are not one."""
    assert normalise(value) is None


def test_a_sub_address_is_kept_when_the_policy_says_so() -> None:
    """keep_subaddress: local+tag@ is an address of its own."""
    assert normalise("Alice.Smith+News@example.org", keep_subaddress=True) == (
        "alice.smith+news@example.org")
    assert normalise("+news@example.org") == "+news@example.org"


def test_an_internationalised_domain_has_one_spelling() -> None:
    """A Unicode domain and its IDNA (xn--) form are one address."""
    assert normalise("Pat@Bücher.de") == normalise("pat@xn--bcher-kva.de") == (
        "pat@xn--bcher-kva.de")


def test_the_cheap_at_check_misses_no_spelling_of_at() -> None:
    """Only values holding one of AT_SIGNS are normalised: they are every character whose
    NFKC form holds "@"."""
    found = {chr(c) for c in range(sys.maxunicode + 1)
             if "@" in unicodedata.normalize("NFKC", chr(c))}
    assert found == set(AT_SIGNS)
    assert all(could_be_address(f"a{at}b.org") for at in found)


def test_addresses_are_found_under_any_key_at_any_depth() -> None:
    """Every string value that is an address, in nested objects and lists; keys, numbers
    and free text are not addresses."""
    data = {"Email": "a@b.org", "n": 3, "a@key.org": "no", "note": "mail me: c@d.org",
            "contact": {"addresses": ["x", "Bob <bob@b.org>"], "deep": [[{"v": "e@f.org"}]]}}
    assert sorted(find_addresses(data)) == ["Bob <bob@b.org>", "a@b.org", "e@f.org"]


def test_a_consent_method_is_compared_as_a_slug() -> None:
    """"Subscribe form" and "subscribe-form" are the same method."""
    assert method_slug(" Subscribe  form ") == method_slug("subscribe-form") == (
        "subscribe-form")


# -- the keyed hash: a property over random spellings -------------------------------------

_VAULT = KeyVault(create_vault_engine("sqlite://"), b"k" * 32)
_LOCAL = st.text("abcdefghijklmnopqrstuvwxyz0123456789._-", min_size=1, max_size=12)
_LABEL = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=10)
_ADDRESS = st.builds(lambda local, labels: f"{local}@{'.'.join(labels)}",
                     _LOCAL, st.lists(_LABEL, min_size=2, max_size=3))
_INVISIBLE = st.sampled_from(["\u200b", "\u200c", "\u200d", "\u200e", "\u200f", "\u202a",
                              "\u202b", "\u202c", "\u202d", "\u202e", "\u2060", "\u2061",
                              "\u2062", "\u2063", "\u2064", "\u2066", "\u2067", "\u2068",
                              "\u2069", "\ufeff", "\u00ad"])


@st.composite
def spelling_of(draw: st.DrawFn, address: str) -> str:
    """A random spelling of `address` built from the transformations normalise undoes."""
    local, _, domain = address.partition("@")
    if draw(st.booleans()):
        local += "+" + draw(st.text("abcdefghijklmnopqrstuvwxyz0123456789-", max_size=8))
    if draw(st.booleans()):
        domain += "."
    chars = []
    for char in f"{local}@{domain}":
        if draw(st.booleans()):
            char = char.upper()
        if draw(st.integers(0, 3)) == 0:
            char = chr(ord(char) + 0xFEE0)  # its full-width form
        if draw(st.integers(0, 4)) == 0:
            char = draw(_INVISIBLE) + char
        chars.append(char)
    spelled = "".join(chars)
    wrapped = draw(st.sampled_from([
        "{}", "<{}>", "Some Name <{}>", '"Name, Some" <{}>', "mailto:{}",
        "MailTo:{}?subject=hi&cc=x@y.org", "<mailto:{}>"]))
    space = draw(st.sampled_from(["", " ", "\t", "\u3000"]))
    return space + wrapped.format(spelled) + space


@settings(max_examples=300, deadline=None)
@given(st.data(), _ADDRESS)
def test_random_spellings_of_one_address_hash_equal(data: st.DataObject,
                                                    address: str) -> None:
    """Any spelling built from case, width, invisible characters, +tags, a trailing dot,
    display names, mailto: and ?query hashes as the address does."""
    spelling = data.draw(spelling_of(address))
    assert _VAULT.email_hash(spelling) == _VAULT.email_hash(address)
    assert normalise(normalise(spelling) or "") == normalise(spelling)


@settings(max_examples=300, deadline=None)
@given(st.data(), _ADDRESS | st.text(max_size=30), st.booleans())
def test_both_listing_spellings_come_from_one_pass(data: st.DataObject, address: str,
                                                   keep_subaddress: bool) -> None:
    """`spellings` is `normalise` without and with the +tag, and the listing hashes (made
    from it, normalising once) are `email_hash` of each spelling, one hash when they are
    the same: for addresses, their spellings and any text."""
    value = data.draw(spelling_of(address)) if "@" in address else address
    untagged, tagged = normalise(value), normalise(value, keep_subaddress=True)
    assert spellings(value) == (None if untagged is None else (untagged, tagged))
    bare = _VAULT.email_hash(value, keep_subaddress=keep_subaddress)
    with_tag = _VAULT.email_hash(value, keep_subaddress=True)
    assert _VAULT.listing_hashes(value, keep_subaddress) == (
        (bare,) if with_tag == bare else (bare, with_tag))


@settings(max_examples=300, deadline=None)
@given(_ADDRESS, _ADDRESS)
def test_distinct_addresses_hash_apart(first: str, second: str) -> None:
    """Two addresses that differ in their one spelling never share a hash."""
    if normalise(first) != normalise(second):
        assert _VAULT.email_hash(first) != _VAULT.email_hash(second)


# -- the suppression list in the store (SQLite and PostgreSQL) ----------------------------


def test_every_spelling_under_every_key_is_refused_for_marketing(hqip: Ledger) -> None:
    """For a suppressed alice.smith@example.org, marketing data holding any spelling of it,
    under any key or nested, is refused; another address in the same place is not."""
    alice_unsubscribes(hqip)
    attempts = [marketing_of(f"crm:{n}-{m}", place(spelling))
                for n, spelling in enumerate(SPELLINGS) for m, place in enumerate(PLACES)]
    report = hqip.ingest(lines(attempts), NOW)
    assert report.accepted == 0
    assert [r.line for r in report.rejected] == list(range(1, len(attempts) + 1))
    assert all("suppression list" in r.reason for r in report.rejected)
    assert all("alice" not in r.reason.casefold() for r in report.rejected)
    consents_of(hqip, *(f"crm:other-{m}" for m in range(len(PLACES))))
    control = hqip.ingest(lines([marketing_of(f"crm:other-{m}", place("bob@example.org"))
                                 for m, place in enumerate(PLACES)]), NOW)
    assert (control.accepted, control.rejected) == (len(PLACES), [])


@pytest.mark.parametrize("listed", [
    "alice.smith@example.org;bob@example.org",
    "bob@example.org, Alice.Smith@Example.org",
    "bob@example.org; <alice.smith+x@example.org>",
    "bob@example.org alice.smith@example.org",
])
def test_a_suppressed_address_in_a_list_of_addresses_is_refused(hqip: Ledger,
                                                                listed: str) -> None:
    """A value that is a list of addresses (separated by commas, semicolons or spaces, as
    mail clients and CSV exports write them) holds each of them: marketing data listing
    a suppressed address is refused. Free text holding an address still is not a list."""
    alice_unsubscribes(hqip)
    consents_of(hqip, "crm:listed", "crm:text")
    report = hqip.ingest(lines([marketing_of("crm:listed", {"email": listed})]), NOW)
    assert report.accepted == 0 and len(report.rejected) == 1, report.as_dict()
    assert "suppression list" in report.rejected[0].reason
    text = hqip.ingest(lines([marketing_of(
        "crm:text", {"note": "write to alice.smith@example.org today"})]), NOW)
    assert (text.accepted, text.rejected) == (1, [])


def test_every_address_of_the_subject_is_suppressed_whatever_the_event(hqip: Ledger) -> None:
    """An unsubscribe, a direct-marketing objection and an exclusion each put every address
    the subject's live records hold on the list, whatever the key, in any spelling."""
    alice_unsubscribes(hqip, {"Email": "Carol <carol@example.org>",
                              "contact": {"addresses": ["carol.work+x@example.com."]}},
                       subject="s:carol")
    alice_unsubscribes(hqip, {"e-mail": "mailto:dan@example.org"}, subject="s:dan",
                       ending="objected", purpose="direct-marketing")
    alice_unsubscribes(hqip, {"email_address": "ERIN@EXAMPLE.ORG"}, subject="s:erin",
                       ending="excluded", reason="code of conduct")
    addresses = ["carol@example.org", "carol.work@example.com", "dan@example.org",
                 "erin@example.org"]
    report = hqip.ingest(lines([marketing_of(f"crm:{n}", {"email": a})
                                for n, a in enumerate(addresses)]), NOW)
    assert (report.accepted, len(report.rejected)) == (0, len(addresses))


def test_rectifying_marketing_data_to_a_suppressed_address_is_refused(hqip: Ledger) -> None:
    """A rectification cannot bring a suppressed address into marketing data."""
    alice_unsubscribes(hqip)
    hqip.ingest(lines([
        fact("consent-given", "s:bob", "2024-01-01T00:00:00Z", purpose="direct-marketing",
             method="crm-import"),
        marketing_of("s:bob", {"email": "bob@example.org"}, at="2024-01-01T00:00:00Z"),
    ]), NOW)
    report = hqip.ingest(lines([
        fact("rectified", "s:bob", "2024-07-01T00:00:00Z", record="crm-row",
             data={"email": "bob@example.org", "alt": ["<Alice.Smith@example.org>"]}),
    ]), NOW)
    assert report.accepted == 0 and "suppression list" in report.rejected[0].reason


def test_a_suppressed_address_is_kept_for_other_purposes(hqip: Ledger) -> None:
    """Suppression concerns marketing: an enquiry from the same address is recorded."""
    alice_unsubscribes(hqip)
    report = hqip.ingest(lines([
        collected("enquirer:1", "2024-06-01T00:00:00Z", "enquiry", {"email": ALICE},
                  purpose="enquiries-complaints", basis="legitimate-interests"),
    ]), NOW)
    assert (report.accepted, report.rejected) == (1, [])


def test_a_bulk_crm_import_cannot_resubscribe_a_suppressed_address(hqip: Ledger) -> None:
    """A new subject's consent-given by crm-import, then its marketing data with the
    suppressed address: the data is refused. Only the person's own opt-in lifts it."""
    alice_unsubscribes(hqip)
    report = hqip.ingest(lines([
        fact("consent-given", "crm:77", "2024-06-01T00:00:00Z", purpose="direct-marketing",
             method="crm-import"),
        marketing_of("crm:77", {"email": "Alice.Smith+Promo@Example.org"}),
    ]), NOW)
    assert report.accepted == 1
    assert [r.line for r in report.rejected] == [2]
    assert "suppression list" in report.rejected[0].reason


def test_the_persons_own_opt_in_lifts_suppression_for_their_subject(hqip: Ledger) -> None:
    """A direct-marketing consent given by a method in resubscribe_methods (the Subscribe
    form) lets marketing data with the address in, under a new subject too."""
    alice_unsubscribes(hqip)
    report = hqip.ingest(lines([
        fact("consent-given", "web:alice", "2024-06-01T00:00:00Z",
             purpose="direct-marketing", method="subscribe-form"),
        marketing_of("web:alice", {"email": ALICE}, at="2024-06-01T00:05:00Z"),
    ]), NOW)
    assert (report.accepted, report.rejected) == (2, [])


def test_another_consent_for_a_suppressed_subject_is_rejected(hqip: Ledger) -> None:
    """A direct-marketing consent-given whose method the policy does not declare as the
    person's own is rejected for a suppressed subject, or for a subject whose address is on
    the list; the reason carries no value. The person's own opt-in is accepted."""
    alice_unsubscribes(hqip)
    hqip.ingest(lines([
        collected("enquirer:2", "2024-06-01T00:00:00Z", "enquiry",
                  {"from": "Alice <alice.smith@example.org>"},
                  purpose="enquiries-complaints", basis="legitimate-interests"),
    ]), NOW)
    method = "phone-call"  # not an own opt-in (free text is refused as a format error)
    report = hqip.ingest(lines([
        fact("consent-given", "subscriber:alice", "2024-07-01T00:00:00Z",
             purpose="direct-marketing", method=method),
        fact("consent-given", "enquirer:2", "2024-07-01T00:00:00Z",
             purpose="direct-marketing", method="crm-import"),
        fact("consent-given", "subscriber:alice", "2024-07-02T00:00:00Z",
             purpose="website-analytics", method="cookie-banner"),
    ]), NOW)
    assert report.accepted == 1
    assert [r.line for r in report.rejected] == [1, 2]
    for rejection in report.rejected:
        assert "suppression list" in rejection.reason and "resubscribe_methods" in (
            rejection.reason)
        assert "Zelda" not in rejection.reason and "alice" not in rejection.reason
    assert hqip.subject_view("subscriber:alice")["suppressed"] is True

    again = hqip.ingest(lines([
        fact("consent-given", "subscriber:alice", "2024-08-01T00:00:00Z",
             purpose="direct-marketing", method="subscribe-form"),
    ]), NOW)
    assert (again.accepted, again.rejected) == (1, [])
    assert hqip.subject_view("subscriber:alice")["suppressed"] is False


def test_without_a_policy_no_method_lifts_suppression(ledger: Ledger) -> None:
    """Until a policy declares resubscribe_methods, no consent-given lifts suppression."""
    alice_unsubscribes(ledger)
    report = ledger.ingest(lines([
        fact("consent-given", "subscriber:alice", "2024-06-01T00:00:00Z",
             purpose="direct-marketing", method="subscribe-form"),
        fact("consent-given", "web:alice", "2024-06-01T00:00:00Z",
             purpose="direct-marketing", method="subscribe-form"),
        marketing_of("web:alice", {"email": ALICE}, at="2024-06-01T00:05:00Z"),
    ]), NOW)
    assert report.accepted == 1
    assert [r.line for r in report.rejected] == [1, 3]


def test_suppression_survives_erasure(hqip: Ledger) -> None:
    """After the suppressed subject is erased (every value reads "erased"), the address is
    still refused for marketing under a new subject."""
    alice_unsubscribes(hqip, {"Email": "Alice Smith <Alice.Smith@example.org>"})
    hqip.ingest(lines([fact("erasure-requested", "subscriber:alice", "2024-04-01T00:00:00Z",
                            request="ER-alice")]), NOW)
    view = hqip.subject_view("subscriber:alice")
    assert [r["data"] for r in view["records"]] == ["erased"]
    report = hqip.ingest(lines([
        fact("consent-given", "crm:new", "2024-06-01T00:00:00Z", purpose="direct-marketing",
             method="crm-import"),
        marketing_of("crm:new", {"contact": {"addresses": ["alice.smith@example.org"]}}),
    ]), NOW)
    assert report.accepted == 1 and [r.line for r in report.rejected] == [2]


def test_hashes_of_stores_before_normalisation_still_match(hqip: Ledger) -> None:
    """A store written before addresses were normalised holds the hash of the trimmed,
    case-folded value; that value, spelled so again, is still refused."""
    old = DataSubject("subscriber:old")
    legacy = hqip.vault.email_hash(" <Old.Pat@Example.org.> ", legacy=True)
    assert legacy != hqip.vault.email_hash(" <Old.Pat@Example.org.> ")
    old.unsubscribe("old-1", datetime(2022, 1, 1, tzinfo=UTC), None, [legacy])
    hqip.store.save(old)
    report = hqip.ingest(lines([marketing_of("crm:1", {"email": "<old.pat@example.org.>"})]),
                         NOW)
    assert report.accepted == 0 and "suppression list" in report.rejected[0].reason


def test_keep_subaddress_makes_a_tag_a_different_address(ledger: Ledger,
                                                         tmp_path: Path) -> None:
    """With keep_subaddress = true a suppressed alice@ does not refuse alice+news@, and a
    suppressed alice+news@ still refuses alice+news@."""
    ledger.adopt_policy(policy_variant(tmp_path, "keep_subaddress = true"), ADOPTED)
    alice_unsubscribes(ledger)
    alice_unsubscribes(ledger, "pat+news@example.org", subject="subscriber:pat")
    consents_of(ledger, "crm:1", "crm:4")
    report = ledger.ingest(lines([
        marketing_of("crm:1", {"email": "alice.smith+news@example.org"}),
        marketing_of("crm:2", {"email": "Alice.Smith@example.org"}),
        marketing_of("crm:3", {"email": "PAT+news@example.org"}),
        marketing_of("crm:4", {"email": "pat@example.org"}),
    ]), NOW)
    assert report.accepted == 2
    assert [r.line for r in report.rejected] == [2, 3]


# -- the policy settings -------------------------------------------------------------------


def test_the_bundled_policies_declare_the_subscribe_form_as_the_persons_own() -> None:
    """hqip and ihpa let only the Subscribe form lift suppression and drop +tags."""
    for org in ("hqip", "ihpa"):
        path = HQIP.with_name(f"{org}.toml")
        policy, problems = parse_policy(path.read_bytes(), str(path))
        assert problems == [] and policy is not None
        assert policy.suppression.resubscribe_methods == ["subscribe-form"]
        assert policy.suppression.keep_subaddress is False


@pytest.mark.parametrize("table, key, reason", [
    ('keep_subaddress = "yes"', "suppression.keep_subaddress", "boolean"),
    ('resubscribe_methods = ["Subscribe form"]', "suppression.resubscribe_methods[0]",
     "pattern"),
    ("resubscribe_method = []", "suppression.resubscribe_method", "did you mean"),
])
def test_a_bad_suppression_setting_is_reported_with_its_key(table: str, key: str,
                                                             reason: str) -> None:
    """policy check names the key and the reason of a bad [suppression] setting."""
    text = HQIP.read_text().partition("[suppression]")[0] + "[suppression]\n" + table + "\n"
    policy, problems = parse_policy(text.encode(), "p.toml")
    assert policy is None
    assert [p.key for p in problems] == [key] and reason in problems[0].reason
