"""Policies that tell the notice's words from the controller's choices (issue 13, item 4).

`lifecycle policy check FILE --notice TEXT` fails when a quote is not verbatim in the notice
(white space normalised), when the notice file is not the one the policy names (SHA-256),
or when a period or a transfer safeguard the notice does not state has no `rationale`.
Special-category purposes need an Art 9 condition, criminal-offence data an Art 10 one.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from lifecycle.cli.main import cli
from lifecycle.services.ledger import Ledger
from lifecycle.policy.loader import parse_policy
from lifecycle.policy.notice import period_stated
from tests.facts_builder import collected, fact, lines

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config"
# The two notices the bundled policies encode, kept beside the checkout (not in it).
NOTICES = ROOT.parent / "shared" / "seeds"


def policy_check(*args: str) -> Result:
    return CliRunner().invoke(cli, ["policy", "check", *args])


def notice_for(org: str) -> Path:
    """The notice text the bundled policy names (by the SHA-256 it gives)."""
    if not NOTICES.is_dir():
        pytest.skip(f"the notice texts are not beside this checkout ({NOTICES.name} absent)")
    wanted = re.search(r'sha256 = "([0-9a-f]{64})"', (CONFIG / f"{org}.toml").read_text())
    assert wanted is not None, f"config/{org}.toml names no notice hash"
    for path in sorted(NOTICES.glob("*.txt")):
        if hashlib.sha256(path.read_bytes()).hexdigest() == wanted.group(1):
            return path
    raise AssertionError(f"no notice text has the SHA-256 config/{org}.toml names")


def variant(tmp_path: Path, org: str, old: str, new: str) -> Path:
    text = (CONFIG / f"{org}.toml").read_text(encoding="utf-8")
    assert text.count(old) == 1, old
    path = tmp_path / f"{org}-variant.toml"
    path.write_text(text.replace(old, new), encoding="utf-8")
    return path


@pytest.mark.parametrize("org", ["hqip", "ihpa"])
def test_both_policies_pass_policy_check_against_their_notices(org: str) -> None:
    """Each bundled policy passes `policy check --notice` against the notice it names:
    every quote verbatim, every period or safeguard the notice omits given a rationale."""
    result = policy_check(str(CONFIG / f"{org}.toml"), "--notice", str(notice_for(org)))
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith(": ok")


def test_a_quote_with_inserted_words_fails_naming_the_rule(tmp_path: Path) -> None:
    """The IHPA quote that had words inserted inside it (a period in brackets) is refused:
    exit 2, naming the file, the rule's key and how far the quote matches."""
    path = variant(tmp_path, "ihpa",
                   'quote = "We do this at the start of, and for the duration of, your '
                   'relationship with us."',
                   'quote = "We do this at the start of, and for the duration of, your '
                   'relationship with us (six years after it ends: Limitation Act 1980)."')
    result = policy_check(str(path), "--notice", str(notice_for("ihpa")))
    assert result.exit_code == 2
    assert f"{path}: rules[0].quote: not verbatim in the notice" in result.output
    assert "your relationship with us')" in result.output


def test_a_quote_is_compared_with_white_space_normalised(tmp_path: Path) -> None:
    """Line breaks and runs of spaces inside a quote do not make it differ from the notice."""
    path = variant(tmp_path, "ihpa",
                   'quote = "You can unsubscribe from any of the emails at any time."',
                   'quote = """You can unsubscribe   from any of\nthe emails at any time."""')
    result = policy_check(str(path), "--notice", str(notice_for("ihpa")))
    assert result.exit_code == 0, result.output


def test_a_notice_other_than_the_one_named_fails(tmp_path: Path) -> None:
    """The notice is identified by its SHA-256: checking HQIP's policy against IHPA's
    notice names notice.sha256 (and every quote not in that text)."""
    result = policy_check(str(CONFIG / "hqip.toml"), "--notice", str(notice_for("ihpa")),
                          "--json")
    assert result.exit_code == 2
    keys = {p["key"] for p in json.loads(result.output)["problems"]}
    assert "notice.sha256" in keys and "rules[0].quote" in keys


def test_a_period_the_notice_does_not_state_needs_a_rationale(tmp_path: Path) -> None:
    """HQIP's notice names no period for website analytics: without its rationale the
    26-month rule fails `policy check --notice`, naming rules[3].rationale."""
    path = variant(tmp_path, "hqip",
                   "rationale = \"The notice names no period for website analytics; the "
                   "controller's choice: 26 months, the analytics provider's retention.\"\n",
                   "")
    result = policy_check(str(path), "--notice", str(notice_for("hqip")))
    assert result.exit_code == 2
    assert "rules[3].rationale: the quote names no period of P26M" in result.output


def test_a_transfer_safeguard_the_notice_does_not_name_needs_a_rationale(
        tmp_path: Path) -> None:
    """IHPA's notice names no transfer safeguard: a recipient in the US with neither the
    notice's words nor a rationale fails."""
    path = variant(tmp_path, "ihpa",
                   'quote = "IHPA and our third-party partners (Google, Mailchimp, Paypal, '
                   'Mailgun and IPSE), such as our advertising and analytics partners, use '
                   'cookies and other tracking technologies"\nrationale = "The notice names '
                   'no transfer safeguard; the controller\'s choice: the UK International '
                   'Data Transfer Addendum to the EU standard contractual clauses."\n', "")
    result = policy_check(str(path), "--notice", str(notice_for("ihpa")))
    assert result.exit_code == 2
    assert "recipients.Google.rationale" in result.output


def test_transfer_statement_not_in_the_notice_is_shown_as_the_controllers_choice() -> None:
    """IHPA's notice says nothing about transfers: what people are told is marked as the
    controller's choice; HQIP's transfer words are the notice's own, unmarked."""
    ihpa, _ = parse_policy((CONFIG / "ihpa.toml").read_bytes(), "ihpa.toml")
    hqip, _ = parse_policy((CONFIG / "hqip.toml").read_bytes(), "hqip.toml")
    assert ihpa is not None and hqip is not None
    assert ihpa.file.disclosures.transfers == ""
    told = ihpa.file.disclosures.statement("transfers")
    assert told.startswith("Controller's choice, not stated in the notice: ")
    assert "UK International Data Transfer Addendum" in told
    assert hqip.file.disclosures.statement("transfers").startswith(
        "Your website activity information may be processed outside the United Kingdom.")


def test_a_special_category_purpose_without_an_art_9_condition_fails(tmp_path: Path) -> None:
    """HQIP's surveys may hold health information (categories hold `special`): without
    its Art 9(2) condition `policy check` fails (no notice needed), naming the key."""
    text = (CONFIG / "hqip.toml").read_text(encoding="utf-8")
    stripped = re.sub(r"special_category_condition = .*\n", "", text)
    assert stripped != text
    path = tmp_path / "hqip-no-art9.toml"
    path.write_text(stripped, encoding="utf-8")
    result = policy_check(str(path))
    assert result.exit_code == 2
    assert "purposes.surveys-feedback.special_category_condition" in result.output
    assert "Art 9(2) condition is required" in result.output


def test_hqip_encodes_an_art_9_condition_for_health_information() -> None:
    """The one HQIP purpose that collects health information names its Art 9 condition."""
    hqip, problems = parse_policy((CONFIG / "hqip.toml").read_bytes(), "hqip.toml")
    assert hqip is not None, problems
    special = {name: p.special_category_condition for name, p in hqip.purposes.items()
               if "special" in p.categories}
    assert list(special) == ["surveys-feedback"]
    assert (special["surveys-feedback"] or "").startswith("Art 9(2)(a)")


def test_criminal_offence_data_needs_an_art_10_condition(tmp_path: Path) -> None:
    """A purpose that declares criminal-offence data fails without an Art 10 condition,
    and passes with one."""
    without = variant(tmp_path, "ihpa", '[purposes.law-enforcement]\n',
                      '[purposes.law-enforcement]\ncriminal_offence_data = true\n')
    result = policy_check(str(without))
    assert result.exit_code == 2
    assert "purposes.law-enforcement.criminal_offence_condition" in result.output
    with_condition = variant(
        tmp_path, "ihpa", '[purposes.law-enforcement]\n',
        '[purposes.law-enforcement]\ncriminal_offence_data = true\ncriminal_offence_'
        'condition = "DPA 2018 Sch 1 para 10: preventing or detecting unlawful acts"\n')
    assert policy_check(str(with_condition)).exit_code == 0


def test_a_legitimate_interests_purpose_names_its_interest(tmp_path: Path) -> None:
    """The ICO's documentation asks for the legitimate interest relied on: a purpose that
    allows the legitimate-interests basis without naming it fails."""
    text = (CONFIG / "ihpa.toml").read_text(encoding="utf-8")
    stripped = re.sub(r"legitimate_interest = .*\n", "", text)
    path = tmp_path / "ihpa-no-interest.toml"
    path.write_text(stripped, encoding="utf-8")
    result = policy_check(str(path))
    assert result.exit_code == 2
    assert "purposes.member-blocklist.legitimate_interest" in result.output


@pytest.mark.parametrize("keep_for, quote, stated", [
    ("P13M", "will be kept for 13 months for the purpose of management reporting", True),
    ("P6Y", "kept for six years after the contract ends", True),
    ("P6Y", "kept for 7 years", False),
    ("P26M", "Analyse how you use our website via google analytics", False),
    ("P0D", "You can withdraw your consent at any time", False),
    ("P0D", "deleted immediately", True),
    ("P1Y6M", "one year and 6 months", True),
])
def test_a_period_counts_as_stated_only_when_the_quote_names_it(
        keep_for: str, quote: str, stated: bool) -> None:
    """A quote states a period when it names the number (digits or words) and the unit."""
    assert period_stated(keep_for, quote) is stated


def test_the_dsar_export_shows_the_deciding_rules_quote_and_the_controllers_choice(
        ledger: Ledger) -> None:
    """A record's retention in the DSAR export carries the notice's words of the rule that
    decides apart from the controller's choice; IHPA's transfers read as its choice."""
    ledger.adopt_policy(CONFIG / "ihpa.toml", datetime(2022, 1, 1, tzinfo=UTC))
    report = ledger.ingest(lines([
        collected("member:1", "2023-02-01T10:00:00+00:00", "cookies", {"ip": "192.0.2.1"},
                  purpose="online-analytics", category="online"),
        fact("consent-given", "member:1", "2023-02-01T10:00:00+00:00",
             purpose="online-analytics"),
    ]), datetime(2024, 1, 1, tzinfo=UTC))
    assert report.ok, report.rejected
    document = ledger.dsar_export("member:1", datetime(2024, 1, 1, tzinfo=UTC))
    retention = document["records"][0]["retention"]
    assert retention["rule"] == "analytics-26m"
    assert retention["notice_quote"].startswith("IHPA and our third-party partners")
    assert "26 months" in retention["controller_choice"]
    assert document["transfers"].startswith("Controller's choice, not stated in the notice")


def test_subject_show_csv_and_html_mark_the_controllers_choice(ledger: Ledger) -> None:
    """`subject show` (the subject view), the CSV and the HTML export carry the deciding
    rule's notice words apart from the controller's choice, marked as such."""
    from lifecycle.services.dsar_render import to_csv, to_html

    ledger.adopt_policy(CONFIG / "ihpa.toml", datetime(2022, 1, 1, tzinfo=UTC))
    report = ledger.ingest(lines([
        collected("member:1", "2023-02-01T10:00:00+00:00", "cookies", {"ip": "192.0.2.1"},
                  purpose="online-analytics", category="online"),
        fact("consent-given", "member:1", "2023-02-01T10:00:00+00:00",
             purpose="online-analytics"),
    ]), datetime(2024, 1, 1, tzinfo=UTC))
    assert report.ok, report.rejected
    view = ledger.subject_view("member:1")
    retention = view["records"][0]["retention"]
    assert retention["rule"] == "analytics-26m"
    assert "26 months" in retention["controller_choice"]
    document = ledger.dsar_export("member:1", datetime(2024, 1, 1, tzinfo=UTC))
    assert "the analytics provider's retention" in to_csv(document)
    assert "Our choice, not stated in our privacy notice: The notice names no period" in (
        to_html(document))


@pytest.mark.parametrize("content, reason", [
    (b"a = " + b"[" * 100_000 + b"]" * 100_000 + b"\n", "nested too deeply"),
    ((CONFIG / "hqip.toml").read_bytes() + b"#" + b"x" * (2 << 20) + b"\n", "larger than"),
])
def test_a_hostile_policy_file_gives_one_line_and_exit_2(
        tmp_path: Path, content: bytes, reason: str) -> None:
    """A policy file nested past the parser's depth or larger than any policy could be is
    refused with one line naming the file, exit 2, never a traceback."""
    path = tmp_path / "hostile.toml"
    path.write_bytes(content)
    result = policy_check(str(path))
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    [line] = result.output.strip().splitlines()
    assert line.startswith(f"{path}: -:") and reason in line


def test_a_notice_larger_than_any_notice_is_refused_in_one_line(tmp_path: Path) -> None:
    """A --notice file of many megabytes (a log, a disk image by mistake) is refused with one
    line naming it, exit 2, instead of being read whole."""
    notice = tmp_path / "notice.txt"
    notice.write_bytes(b"word " * (4 << 20))
    result = policy_check(str(CONFIG / "hqip.toml"), "--notice", str(notice))
    assert result.exit_code == 2, result.output
    [line] = result.output.strip().splitlines()
    assert line.startswith(f"{notice}: -:") and "larger than" in line


def test_a_purpose_listing_the_criminal_offence_category_needs_an_art_10_condition(
        tmp_path: Path) -> None:
    """A purpose whose `categories` hold `criminal-offence` processes criminal-offence
    data whatever its `criminal_offence_data` flag says: without an Art 10 condition the
    check fails naming it (else the policy passes and every such record is refused)."""
    where = 'requires it."\nbases = ["legal-obligation"]\ncategories = ["identity", '
    spelled = variant(tmp_path, "ihpa", where, where + '"criminal-offence", ')
    result = policy_check(str(spelled))
    assert result.exit_code == 2, result.output
    assert "purposes.law-enforcement.criminal_offence_condition" in result.output


def test_a_binary_notice_is_one_line_naming_it(tmp_path: Path) -> None:
    """A --notice file that is not UTF-8 text (a PDF, a Latin-1 export) gives one line
    naming it and saying so, exit 2, not a hash mismatch beside it."""
    notice = tmp_path / "notice.pdf"
    notice.write_bytes(b"%PDF-1.7\n\xff\xfe\x00\x9c binary")
    result = policy_check(str(CONFIG / "hqip.toml"), "--notice", str(notice))
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [f"{notice}: -: not UTF-8 text"]
