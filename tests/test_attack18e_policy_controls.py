"""attack18e: policy text and control characters, and host time zones.

docs/policy.md: "any key or text holding a control character other than a tab or a line
break" is an error; `timezone` is an IANA zone, never the host's own (`localtime`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lifecycle.policy.loader import parse_policy

ROOT = Path(__file__).resolve().parents[1]
HQIP = (ROOT / "config" / "hqip.toml").read_text(encoding="utf-8")
NAME = 'name = "Healthcare'


def _with_name(inserted: str) -> bytes:
    assert NAME in HQIP
    return HQIP.replace(NAME, f'name = "Health{inserted}care', 1).encode("utf-8")


def _problems(text: bytes) -> list[str]:
    policy, problems = parse_policy(text, "p.toml")
    return [f"{p.key}: {p.reason}" if hasattr(p, "key") else str(p) for p in problems]


def test_the_file_as_shipped_is_sound() -> None:
    """Held (baseline): config/hqip.toml parses with no problem."""
    policy, problems = parse_policy(HQIP.encode("utf-8"), "p.toml")
    assert policy is not None and not problems, problems


@pytest.mark.parametrize("inserted", ["\\u0001", "\\u001b", "\\u007f", "\\u0000", "\x7f"])
def test_c0_controls_by_escape_or_raw_are_refused(inserted: str) -> None:
    """Held: a C0 control or DEL in a policy string, written as a TOML escape or raw, is a
    problem (TOML itself refuses a raw DEL)."""
    problems = _problems(_with_name(inserted))
    assert problems and any("control character" in p or "not valid TOML" in p
                            for p in problems), problems


def test_a_control_character_in_a_quoted_key_is_refused() -> None:
    """Held: a quoted TOML key holding a control character is refused (never reported as
    merely unknown, which would repeat it)."""
    text = HQIP.replace("[controller]\n", '[controller]\n"x\\u0007y" = "z"\n', 1)
    problems = _problems(text.encode("utf-8"))
    assert problems and all("\x07" not in p for p in problems), problems
    assert any("control character" in p for p in problems), problems


@pytest.mark.parametrize("inserted", ["\\u009b", "\x9b", "\\u0090"])
def test_c1_controls_are_refused(inserted: str) -> None:
    """docs/policy.md: a key or text holding a control character other than a tab or a line
    break is an error. U+009B (CSI, which terminals read as the start of an escape
    sequence) and U+0090 (DCS) are control characters (Unicode Cc) and no line break."""
    problems = _problems(_with_name(inserted))
    assert problems and any("control character" in p for p in problems), problems


@pytest.mark.parametrize("zone", ["localtime", "LocalTime", "posixrules", "Factory",
                                  "/etc/localtime", "./localtime", "Europe/../localtime"])
def test_host_zones_are_refused(zone: str) -> None:
    """Held: the host's own zone under any spelling is not an IANA zone."""
    text = HQIP.replace('timezone = "Europe/London"', f'timezone = "{zone}"', 1)
    assert text != HQIP
    problems = _problems(text.encode("utf-8"))
    assert problems and any("IANA" in p for p in problems), (zone, problems)
