"""Suppression lists written by the code before ing2 (which normalised an address once per
spelling) still refuse every spelling of the address under this code (which normalises once
for both), with keep_subaddress false and true. Real processes: the unsubscribes by the old
code, the marketing by this one; on SQLite the old code's own answer for the same file is
the oracle as well."""

from __future__ import annotations

import json
import shutil
import unicodedata
from pathlib import Path
from typing import Any

import pytest

from lifecycle.store.settings import Settings
from tests.facts_builder import collected, fact
from tests.processes import keyed_store
from tests.test_ingest_write_upgrade import (MASTER_KEY, before_src, ingest,  # noqa: F401
                                             run, write)
from tests.test_suppression import policy_variant

FULLWIDTH = {c: chr(ord(c) + 0xFEE0) for c in "abcdefghijklmnopqrstuvwxyz.@+"}


def variants(local: str, domain: str) -> list[str]:
    """Spellings of local@domain a mail system delivers to the same mailbox."""
    plain = f"{local}@{domain}"
    return [
        plain, plain.upper(), f"{local.title()}@{domain.upper()}",
        "".join(FULLWIDTH.get(c, c) for c in plain),
        unicodedata.normalize("NFKD", "".join(FULLWIDTH.get(c, c) for c in plain)),
        f"{local[:2]}\u200b{local[2:]}@{domain}", f"{local[:3]}\u00ad{local[3:]}@{domain}\ufeff",
        f"\u202e{plain}\u202c", f"<{plain}>", f"mailto:{plain}", f"MAILTO:{plain}?subject=hi",
        f"Some One <{plain}>", f'"One, Some" <mailto:{plain}.>', f"{plain}.", f"  {plain} \t",
        f"{plain.upper()}\x00", f"{local[:2]}\x00{local[2:]}@{domain}",
    ]


KEEP = {False: "keep_subaddress = false", True: "keep_subaddress = true"}


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    return keyed_store(request.param, tmp_path, MASTER_KEY,
                       lambda: request.getfixturevalue("postgres_database"))


def unsubscribes(subject: str, email: str) -> list[dict[str, Any]]:
    return [collected(subject, "2023-05-02T09:00:00Z", "newsletter", {"email": email}),
            fact("consent-given", subject, "2023-05-02T09:00:00Z", purpose="direct-marketing",
                 method="subscribe-form"),
            fact("unsubscribed", subject, "2024-03-10T10:00:00Z")]


@pytest.mark.parametrize("keep", [False, True])
def test_an_old_suppression_list_refuses_every_spelling(
        store: Settings, before_src: Path, tmp_path: Path, keep: bool) -> None:  # noqa: F811
    """Rule: an address unsubscribed under the old code (one tagged, one not) is refused for
    marketing under this code in every spelling (case, NFKC, invisible characters, mailto:,
    display names, trailing dot, controls); with keep_subaddress false a tag never escapes
    it, with true a tag is another address (the tagged listing refuses only its own tag); and
    this code answers every line as the old code does."""
    policy = policy_variant(tmp_path, KEEP[keep])
    assert run(store, before_src, "policy", "adopt", str(policy), "--at",
               "2023-01-01").returncode == 0
    listed = [*unsubscribes("subscriber:alice", "Alice.Smith+News@Example.org"),
              *unsubscribes("subscriber:pat", "pat@example.org")]
    code, report = ingest(store, before_src, write(tmp_path / "listed.jsonl", listed))
    assert (code, report["accepted"]) == (0, len(listed)), report

    expected: list[bool] = []  # refused?
    spelt: list[str] = []
    for local, domain, refused in [
            ("alice.smith+news", "example.org", True),
            ("alice.smith", "example.org", not keep),
            ("alice.smith+other", "example.org", not keep),
            ("pat", "example.org", True),
            ("pat+x", "example.org", not keep),
            ("bob+news", "example.org", False)]:
        for spelling in variants(local, domain):
            spelt.append(spelling)
            expected.append(refused)
    subjects = [f"crm:{n}" for n in range(len(spelt))]
    marketing = [fact("consent-given", s, "2024-01-01T09:00:00Z", purpose="direct-marketing",
                      method="list-import") for s in subjects]
    marketing += [collected(s, "2024-06-01T09:00:00Z", "crm-row", {"email": e},
                            source="third-party") for s, e in zip(subjects, spelt)]
    path = write(tmp_path / "marketing.jsonl", marketing)
    oracle = None
    if store.database_url is None:  # the old code's answer on a copy of the same store
        copy = Settings(home=tmp_path / "copy", database_url=None, master_key=MASTER_KEY,
                        master_key_file=tmp_path / "copy" / "master.key")
        shutil.copytree(store.home, copy.home)
        oracle = ingest(copy, before_src, path)[1]
    code, report = ingest(store, Path(__file__).resolve().parents[1] / "src", path)
    first = len(subjects) + 1  # the line of the first marketing fact
    refused = {r["line"] - first for r in report["rejections"]}
    assert all("suppression list" in r["reason"] for r in report["rejections"]), report
    assert [n in refused for n in range(len(spelt))] == expected, [
        (spelt[n], expected[n]) for n in range(len(spelt)) if (n in refused) != expected[n]]
    if oracle is not None:
        assert json.dumps(report["rejections"]) == json.dumps(oracle["rejections"])
