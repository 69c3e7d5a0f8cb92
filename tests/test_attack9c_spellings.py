"""Attack 9c: address lists and mailto: URIs the rewritten reader (commit 7bfd370) misses.

Rule (README "Suppressed means suppressed", docs/policy.md "One spelling per address" and
"What counts as an address", docs/guarantees.md): marketing data holding an address on
the suppression list is refused however the address is spelt; a value that is a list of
addresses holds each of them (separators inside quotes, comments or angle brackets do not
split it); a `mailto:` URI holds every address it sends to (path, to/cc/bcc headers);
`normalise` maps every spelling of one address to one string, and what it reads as an
address `find_addresses` finds.
"""

from __future__ import annotations

import pytest

from lifecycle.domain.email_address import find_addresses, normalise
from lifecycle.services.ledger import Ledger
from tests.suppression_setup import (  # noqa: F401 - hqip is a fixture
    ALICE, alice_unsubscribes, crm_marketing, hqip,
)


def found(value: str) -> set[str | None]:
    return {normalise(a) for a in find_addresses({"to": value})}


# -- 1. Lists of Outlook "Last, First <addr>" entries: only the last entry is found -------

# The rewrite made one `Smith, Alice <addr>` a mailbox again, but a *list* of such entries
# (Outlook copies its To: line as "Smith, Alice <a>; Jones, Bob <b>") is split at the
# comma inside each unquoted name: the parts "Smith" / "Jones" are not addresses, so the
# list reading gives nothing, and the whole-value reading keeps only the last <addr>.
OUTLOOK_LISTS = [
    "Smith, Alice <alice.smith@example.org>; Jones, Bob <bob@example.org>",
    "Smith, Alice <alice.smith@example.org>, Jones, Bob <bob@example.org>",
    "Smith, Alice <alice.smith@example.org>; bob@example.org",
    "alice.smith@example.org, Jones, Bob <bob@example.org>",
    "Alice <alice.smith@example.org>, Jones, Bob <bob@example.org>",
]


@pytest.mark.parametrize("value", OUTLOOK_LISTS)
def test_every_address_of_a_list_of_last_first_entries_is_found(value: str) -> None:
    """A value that is a list of addresses holds each of them; `Smith, Alice <addr>` is one
    mailbox (docs/policy.md), so a list of such mailboxes (Outlook's To: line) holds
    alice's address whatever entry follows it."""
    assert ALICE in found(value)


def test_a_suppressed_address_first_in_an_outlook_list_is_refused(hqip: Ledger) -> None:
    """Suppressed means suppressed: a CRM row whose To: line is Outlook's
    `Smith, Alice <alice.smith@example.org>; Jones, Bob <bob@example.org>` after Alice
    unsubscribed is refused."""
    alice_unsubscribes(hqip)
    report = crm_marketing(hqip, "crm:outlook", {"to": OUTLOOK_LISTS[0]})
    assert [r.line for r in report.rejected] == [2], report.as_dict()


# -- 2. Quotes and brackets that NFKC makes ASCII (or typographic ones) -------------------

# The list is split on the raw value, before NFKC: a full-width quote or parenthesis
# (NFKC: '"', '(') does not protect the comma inside it; typographic quotes (Word and
# Outlook autocorrect "Smith, Alice" to “Smith, Alice”) never do.
UNICODE_QUOTED_LISTS = [
    "\uff02Smith, Alice\uff02 <alice.smith@example.org>, bob@example.org",
    "alice.smith@example.org \uff08Smith, Alice\uff09, bob@example.org",
    "\u201cSmith, Alice\u201d <alice.smith@example.org>, \u201cJones, Bob\u201d <bob@example.org>",
    "\u201cSmith, Alice\u201d <alice.smith@example.org>; bob@example.org",
]


@pytest.mark.parametrize("value", UNICODE_QUOTED_LISTS)
def test_a_list_with_unicode_quotes_or_parentheses_holds_each_address(value: str) -> None:
    """Full-width `＂Smith, Alice＂` is `"Smith, Alice"` after NFKC (docs/policy.md: NFKC
    comes first), and a comma inside a quoted name or comment does not split a list: the
    list holds alice's address. Typographic quotes (autocorrected display names) likewise."""
    assert ALICE in found(value)


def test_a_suppressed_address_behind_curly_quotes_in_a_list_is_refused(hqip: Ledger) -> None:
    """Suppressed means suppressed: `“Smith, Alice” <alice...>, “Jones, Bob” <bob...>`
    (an autocorrected To: line) after Alice unsubscribed is refused."""
    alice_unsubscribes(hqip)
    report = crm_marketing(hqip, "crm:curly", {"to": UNICODE_QUOTED_LISTS[2]})
    assert [r.line for r in report.rejected] == [2], report.as_dict()


# -- 3. Unbalanced brackets that swallow the rest of a list ---------------------------------

def test_an_unclosed_parenthesis_does_not_hide_the_rest_of_a_list() -> None:
    """A list holds each of its addresses. Before the rewrite (9335b9b)
    `Bob (work <bob@example.org>, alice.smith@example.org` gave both addresses; an unclosed
    "(" is kept as it is (docs: "an unclosed ( and what follows it are kept"), it does not
    turn the rest of the value into a comment."""
    assert ALICE in found("Bob (work <bob@example.org>, alice.smith@example.org")


def test_an_escaped_parenthesis_in_a_comment_does_not_hide_a_list() -> None:
    """RFC 5322 comments may hold a quoted-pair (`\\)`), which does not close the comment:
    `alice.smith@example.org (Smith \\) x), bob@example.org` is a list of two addresses."""
    assert ALICE in found("alice.smith@example.org (Smith \\) x), bob@example.org")


# -- 4. mailto: URIs whose headers are missed -------------------------------------------------

MAILTO_MISSED = {
    # a mailto: in angle brackets with a name before it (List-Unsubscribe, HTML exports)
    "named-bracketed": "List <mailto:bob@example.org?cc=alice.smith@example.org>",
    # a list of bracketed mailto: URIs: the cc keeps the next entry's ">, <mailto:..."
    "list-of-uris": "<mailto:bob@example.org?cc=alice.smith@example.org>, <mailto:carol@example.org>",
    # a mailto: as one entry of a list (mailto_targets only reads values that start with it)
    "uri-in-list": "bob@example.org, mailto:?to=alice.smith@example.org",
    # full-width (NFKC: mailto:) or with an invisible character: the raw value is tested
    # for "mailto:" before NFKC and invisible characters are removed
    "full-width-scheme": "\uff4d\uff41\uff49\uff4c\uff54\uff4f:?to=alice.smith@example.org",
    "full-width-colon": "mailto\uff1a?to=alice.smith@example.org",
    "invisible-in-scheme": "mail\u200bto:?to=alice.smith@example.org",
    # HTML-escaped query (an href copied from a page's source): parse_qsl reads "amp;cc"
    "html-amp": "mailto:bob@example.org?subject=Hi&amp;cc=alice.smith@example.org",
    # a percent-encoded header name (%43 is "C", an unreserved character: the same URI)
    "encoded-header-name": "mailto:bob@example.org?%43C=alice.smith@example.org",
}


@pytest.mark.parametrize("name", sorted(MAILTO_MISSED))
def test_every_address_a_mailto_uri_sends_to_is_found(name: str) -> None:
    """A `mailto:` URI holds every address it sends to (docs/policy.md: `?to=`, `?cc=`,
    `?bcc=`), in whatever spelling of the URI (NFKC, case, invisible characters, angle
    brackets with a name, as one entry of a list): alice's address is found."""
    assert ALICE in found(MAILTO_MISSED[name])


def test_a_suppressed_address_in_a_named_mailto_cc_is_refused(hqip: Ledger) -> None:
    """Suppressed means suppressed: a CRM row `List <mailto:bob@...?cc=alice...>` after
    Alice unsubscribed is refused."""
    alice_unsubscribes(hqip)
    report = crm_marketing(hqip, "crm:namedmailto", {"link": MAILTO_MISSED["named-bracketed"]})
    assert [r.line for r in report.rejected] == [2], report.as_dict()


def test_a_suppressed_address_in_a_full_width_mailto_is_refused(hqip: Ledger) -> None:
    """Suppressed means suppressed: `ｍａｉｌｔｏ:?to=alice.smith@example.org` (NFKC:
    `mailto:?to=alice...`) after Alice unsubscribed is refused."""
    alice_unsubscribes(hqip)
    report = crm_marketing(hqip, "crm:fwmailto", {"link": MAILTO_MISSED["full-width-scheme"]})
    assert [r.line for r in report.rejected] == [2], report.as_dict()


# -- 5. normalise() reads an address find_addresses() never looks at --------------------------

NORMALISED_BUT_NOT_FOUND = [
    "mailto:alice.smith\uff05\uff14\uff10example.org",   # full-width "%40": NFKC "%40"
    "mailto:mailto%3Aalice.smith%2540example.org",      # two mailto: layers, decoded twice
]


@pytest.mark.parametrize("value", NORMALISED_BUT_NOT_FOUND)
def test_what_normalise_reads_as_an_address_is_found(value: str) -> None:
    """`normalise` decodes a `mailto:` address once per `mailto:` layer after NFKC
    (docs/policy.md), and says this value is alice's address; `find_addresses`, which
    decides what ingest checks against the suppression list, must find it too."""
    assert normalise(value) == ALICE
    assert ALICE in found(value)


def test_a_suppressed_address_with_a_full_width_percent_is_refused(hqip: Ledger) -> None:
    """Suppressed means suppressed: a CRM row whose e-mail normalise() reads as alice's
    (`mailto:alice.smith％４０example.org`) is refused after Alice unsubscribed."""
    alice_unsubscribes(hqip)
    report = crm_marketing(hqip, "crm:fwpct", {"email": NORMALISED_BUT_NOT_FOUND[0]})
    assert [r.line for r in report.rejected] == [2], report.as_dict()


# -- 6. Regressions of normalise() on single mailto: addresses --------------------------------

# What 9335b9b's normalise gave (it normalised the decoded address as any value: display
# name, comments, "?" only after the "@"), and what it gives now.
NORMALISE_REGRESSIONS = {
    "mailto:Alice%20%3Calice.smith@example.org%3E": ALICE,        # now None
    "mailto:%28work%29alice.smith@example.org": ALICE,            # now "(work)alice.smith@..."
    "mailto:alice.smith%3Fwork@example.org": "alice.smith?work@example.org",  # now None
}


@pytest.mark.parametrize("value", sorted(NORMALISE_REGRESSIONS))
def test_a_percent_encoded_mailto_normalises_as_before(value: str) -> None:
    """One spelling per address: the percent-decoded `mailto:` address is normalised as
    any value is (before 7bfd370 it was: `Alice <addr>` gives addr, a comment goes, a
    "?" in the local part, legal when encoded as %3F per RFC 6068, is kept)."""
    assert normalise(value) == NORMALISE_REGRESSIONS[value]


# -- 7. RFC 5322 group syntax ------------------------------------------------------------------

@pytest.mark.parametrize("value", [
    "Team: alice.smith@example.org, bob@example.org;",
    "undisclosed-recipients:;, alice.smith@example.org",
])
def test_an_address_list_with_a_group_holds_each_address(value: str) -> None:
    """An RFC 5322 address list may hold groups (`display-name: mailbox-list;`, and the
    empty `undisclosed-recipients:;` mail clients write): such a value is a list of
    addresses and holds alice's."""
    assert ALICE in found(value)


@pytest.mark.parametrize("value", [
    "\u2039alice.smith@example.org\u203a", "Alice \u00abalice.smith@example.org\u00bb",
    "\u201cSmith, Alice\u201d \u2039alice.smith@example.org\u203a"])
def test_typographic_brackets_and_quotes_read_as_ascii_ones(value: str) -> None:
    """Guillemets and curly quotes, as word processors write `<`, `>` and `"`, give the
    same address as the ASCII ones (not a different one holding the bracket)."""
    assert normalise(value) == ALICE
    assert found(value) == {ALICE}
