"""A policy held to the privacy notice it encodes (`lifecycle policy check FILE --notice TEXT`).

The notice's words and the controller's choices are kept apart: every `quote` (of a rule, a
purpose, a recipient), the `[disclosures]` statements and the `[security]` measures must be
the notice's own words, found verbatim in its text once runs of white space are made one
space; what the notice does not say goes in a `rationale`. A rule whose quote names no
period (`13 months`, `six years`) must say in `rationale` that the period is the
controller's choice; so must a transfer whose safeguard the notice does not name. The
notice is identified by the SHA-256 of its file's bytes (`[notice] sha256`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator

from lifecycle.policy.loader import Problem
from lifecycle.policy.model import _DURATION, PolicyFile
from lifecycle.domain.vocabulary import HOME_COUNTRY

_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                 "nine", "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen",
                 "sixteen", "seventeen", "eighteen", "nineteen", "twenty")
_UNITS = {"years": "year", "months": "month", "weeks": "week", "days": "day",
          "hours": "hour", "minutes": "minute", "seconds": "second"}
_AT_ONCE = re.compile(r"\b(at once|immediately|without delay)\b", re.IGNORECASE)


def normalise(text: str) -> str:
    """White space made single spaces (line breaks, tabs, non-breaking spaces alike)."""
    return " ".join(text.split())


def period_stated(keep_for: str, quote: str) -> bool:
    """Whether `quote` names the period `keep_for` (P13M: "13 months" or "thirteen
    months"; P0D: "at once", "immediately" or "without delay")."""
    match = _DURATION.match(keep_for)
    if match is None:
        return False
    parts = [(int(v), _UNITS[k]) for k, v in match.groupdict().items() if v and int(v)]
    if not parts:
        return _AT_ONCE.search(quote) is not None
    for number, unit in parts:
        spelt = _NUMBER_WORDS[number] if number < len(_NUMBER_WORDS) else str(number)
        if re.search(rf"\b({number}|{spelt})[\s-]+{unit}s?\b", quote, re.IGNORECASE) is None:
            return False
    return True


def notice_words(file: PolicyFile) -> Iterator[tuple[str, str]]:
    """(key, text) of every value that claims to be the notice's own words."""
    for n, rule in enumerate(file.rules):
        yield f"rules[{n}].quote", rule.quote
    for name, purpose in file.purposes.items():
        yield f"purposes.{name}.quote", purpose.quote
    for name, recipient in file.recipients.items():
        yield f"recipients.{name}.quote", recipient.quote
    for key in ("complaint", "automated_decision_making", "transfers"):
        yield f"disclosures.{key}", getattr(file.disclosures, key)
    for n, measure in enumerate(file.security.measures):
        yield f"security.measures[{n}]", measure


def _first_departure(quote: str, notice: str) -> str:
    """The words of `quote` up to where it stops matching the notice, for the message."""
    words = quote.split(" ")
    low, high = 0, len(words)
    while low < high:  # the longest prefix (in words) found in the notice
        middle = (low + high + 1) // 2
        if " ".join(words[:middle]) in notice:
            low = middle
        else:
            high = middle - 1
    matched = " ".join(words[:low])
    tail = matched[-60:]
    return f"matches up to '…{tail}'" if low else "its first word is nowhere in the notice"


def notice_problems(file: PolicyFile, path: str, notice: bytes,
                    notice_path: str) -> list[Problem]:
    """Every way the policy `file` departs from the notice text: the hash, the quotes, the
    periods and safeguards the notice does not name without a rationale."""
    try:
        text = normalise(notice.decode("utf-8"))
    except UnicodeDecodeError:  # not a notice at all: the hash would only repeat that
        return [Problem(notice_path, "-", "not UTF-8 text")]
    problems: list[Problem] = []
    digest = hashlib.sha256(notice).hexdigest()
    if digest != file.notice.sha256:
        problems.append(Problem(path, "notice.sha256",
                                f"{notice_path} has SHA-256 {digest}, not the one the "
                                "policy names: another text or another version"))
    for key, words in notice_words(file):
        quote = normalise(words)
        if quote and quote not in text:
            problems.append(Problem(path, key, f"not verbatim in the notice {notice_path} "
                                    f"({_first_departure(quote, text)})"))
    for n, rule in enumerate(file.rules):
        if not rule.quote.strip():
            problems.append(Problem(path, f"rules[{n}].quote",
                                    "required: the notice's words the rule enforces"))
        elif not rule.rationale.strip() and not period_stated(rule.keep_for, rule.quote):
            problems.append(Problem(path, f"rules[{n}].rationale",
                                    f"the quote names no period of {rule.keep_for}: state "
                                    "the controller's choice in 'rationale'"))
    for name, recipient in file.recipients.items():
        if (recipient.country != HOME_COUNTRY and not recipient.quote.strip()
                and not recipient.rationale.strip()):
            problems.append(Problem(path, f"recipients.{name}.rationale",
                                    "a transfer outside the UK whose safeguard the notice "
                                    "does not name: give the notice's words in 'quote' or "
                                    "the controller's choice in 'rationale'"))
    return problems
