"""Attack 9: spellings and shapes of a suppressed address that marketing data slips past.

Rule (README "Suppressed means suppressed", docs/guarantees.md): marketing data holding an
address on the suppression list is refused however the address is spelt (case, full-width
letters, invisible characters, `mailto:`, `Name <addr>`, a trailing dot, `+tags`) and
under whichever key it comes; a value that is a list of addresses holds each of them.
"""

from __future__ import annotations


import pytest

from lifecycle.domain.email_address import find_addresses, normalise
from lifecycle.services.ledger import Ledger
from tests.facts_builder import collected, fact, lines

from tests.suppression_setup import (  # noqa: F401 - hqip is a fixture
    ALICE, NOW, alice_unsubscribes, crm_marketing, hqip,
)


# -- 1. An address list whose last entry is bracketed hides every address before it ----

ADDRESS_LISTS = [
    "alice.smith@example.org, Bob <bob@example.org>",
    "Alice Smith <alice.smith@example.org>, Bob Jones <bob@example.org>",
    "<alice.smith@example.org>, <bob@example.org>",
    '"Smith, Alice" <alice.smith@example.org>; "Jones, Bob" <bob@example.org>',
]


@pytest.mark.parametrize("listed", ADDRESS_LISTS)
def test_every_address_of_a_list_ending_in_a_bracketed_address_is_found(listed: str) -> None:
    """A value that is a list of addresses holds each of them (README: "a value that is a
    list of addresses ... holds each of them"): the address before a `Name <addr>` entry
    is found too, not just the bracketed one at the end."""
    found = {normalise(a) for a in find_addresses({"to": listed})}
    assert ALICE in found


@pytest.mark.parametrize("listed", ADDRESS_LISTS)
def test_a_suppressed_address_first_in_a_list_ending_in_a_bracketed_one_is_refused(
        hqip: Ledger, listed: str) -> None:
    """Suppressed means suppressed: marketing data holding a suppressed address in an
    address list ("alice..., Bob <bob@example.org>", as mail clients write To: lines) is
    refused, whatever address follows it."""
    alice_unsubscribes(hqip)
    report = crm_marketing(hqip, "crm:listed", {"to": listed})
    assert report.accepted == 1, report.as_dict()  # the consent lands, the data does not
    assert [r.line for r in report.rejected] == [2]
    assert "suppression list" in report.rejected[0].reason


# -- 2. Invisible characters the normaliser does not drop ------------------------------

# Default-ignorable (invisible, zero-width) code points outside lifecycle's INVISIBLE
# table that NFKC keeps: combining grapheme joiner, Mongolian free variation selector,
# variation selector-16, Khmer inherent vowel, a tag character, the Hangul filler.
INVISIBLE_SPELLINGS = [
    "alice.smith\u034f@example.org",
    "alice.smith\u180b@example.org",
    "alice.smith\ufe0f@example.org",
    "alice\u17b4.smith@example.org",
    "alice.smith@example\U000e0041.org",
    "alice.smith\u3164@example.org",
]


@pytest.mark.parametrize("spelling", INVISIBLE_SPELLINGS)
def test_invisible_characters_do_not_make_a_new_address(spelling: str) -> None:
    """Invisible characters do not make a new address (README: "case, full-width letters,
    invisible characters ... do not make a new address"; the guarantee: zero-width removed).
    """
    assert normalise(spelling) == ALICE


def test_a_suppressed_address_with_an_invisible_character_is_refused(hqip: Ledger) -> None:
    """Marketing data holding the suppressed address with a zero-width default-ignorable
    character in it (it renders, and reads, as the same address) is refused."""
    alice_unsubscribes(hqip)
    consents = [fact("consent-given", f"crm:inv{n}", "2024-06-01T00:00:00Z",
                     purpose="direct-marketing", method="crm-import")
                for n in range(len(INVISIBLE_SPELLINGS))]
    data = [collected(f"crm:inv{n}", "2024-06-01T09:00:00Z", "crm-row", {"email": spelling},
                      source="third-party")
            for n, spelling in enumerate(INVISIBLE_SPELLINGS)]
    report = hqip.ingest(lines(consents + data), NOW)
    count = len(INVISIBLE_SPELLINGS)
    assert report.accepted == count, report.as_dict()
    assert [r.line for r in report.rejected] == list(range(count + 1, 2 * count + 1))


# -- 3. mailto: URIs with percent-encoding ----------------------------------------------

@pytest.mark.parametrize("spelling", [
    "mailto:alice.smith%2Bnews@example.org",
    "mailto:alice%2Esmith@example.org",
    "MAILTO:Alice.Smith%2bcrm@Example.org?subject=Hi",
])
def test_a_percent_encoded_mailto_is_the_same_address(spelling: str) -> None:
    """`mailto:` does not make a new address; a mailto: URI (RFC 6068) percent-encodes
    "+" (as %2B) and may encode any other character: decoded, it is the same mailbox."""
    assert normalise(spelling) == ALICE


# -- 4. RFC 5322 comments nest -------------------------------------------------------------

def test_a_nested_comment_does_not_hide_an_address() -> None:
    """Comments ("a@b.org (Alice)") no longer hide an address (commit abc3465); RFC 5322
    comments nest, so "alice.smith@example.org (Alice (work))" is alice's address."""
    assert normalise("alice.smith@example.org (Alice (work))") == ALICE
