"""Reads policy files (TOML), reporting every problem with file, key and reason."""

from __future__ import annotations

import difflib
import hashlib
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from lifecycle.domain.errors import ConfigurationError
from lifecycle.policy.model import Policy, PolicyFile


@dataclass(frozen=True)
class Problem:
    file: str
    key: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.key}: {self.reason}"

    def as_dict(self) -> dict[str, str]:
        return {"file": self.file, "key": self.key, "reason": self.reason}


class PolicyError(ConfigurationError):
    """A policy file that cannot be adopted; carries every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


def _key(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + part
    return text


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The schema model that owns the key at `loc`, to suggest the key meant."""
    model: Any = PolicyFile
    for part in loc:
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return model  # a free-form key (purpose name, recipient name): look below it
        annotation = field.annotation
        model = _unwrap(annotation)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    """list[X] / dict[str, X] / X | None -> X, for walking the schema."""
    args = getattr(annotation, "__args__", None)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if args:
        for arg in reversed(args):
            found = _unwrap(arg)
            if isinstance(found, type) and issubclass(found, BaseModel):
                return found
    metadata = getattr(annotation, "__origin__", None)
    return metadata


def _schema_problems(file: str, error: ValidationError) -> list[Problem]:
    problems = []
    for item in error.errors(include_url=False, include_input=False):
        loc = tuple(item["loc"])
        reason = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            owner = _model_at(loc[:-1])
            known = list(owner.model_fields) if owner else []
            close = difflib.get_close_matches(str(loc[-1]), known, n=1)
            reason = "unknown key" + (f" (did you mean {close[0]!r}?)" if close else
                                      f" (expected one of: {', '.join(known)})")
        elif item["type"] == "missing":
            reason = "required key is missing"
        problems.append(Problem(file, _key(loc), reason))
    return problems


def _cross_problems(file: str, parsed: PolicyFile) -> list[Problem]:
    """References between sections: rules to purposes and windows, recipients to purposes."""
    problems = []
    seen: set[str] = set()
    for n, rule in enumerate(parsed.rules):
        where = f"rules[{n}]"
        if rule.id in seen:
            problems.append(Problem(file, f"{where}.id", f"rule id {rule.id!r} is used twice"))
        seen.add(rule.id)
        if rule.purpose is not None and rule.purpose not in parsed.purposes:
            problems.append(Problem(file, f"{where}.purpose",
                                    f"purpose {rule.purpose!r} is not declared in [purposes]"))
        if rule.purpose and rule.basis and rule.purpose in parsed.purposes and (
                rule.basis not in parsed.purposes[rule.purpose].bases):
            problems.append(Problem(file, f"{where}.basis",
                                    f"basis {rule.basis!r} is not allowed for {rule.purpose!r}"))
        if rule.window is not None and rule.window not in parsed.windows:
            problems.append(Problem(file, f"{where}.window",
                                    f"review window {rule.window!r} is not declared in [windows]"))
    for name, purpose_decl in parsed.purposes.items():
        where = f"purposes.{name}"
        if "special" in purpose_decl.categories and not purpose_decl.special_category_condition:
            problems.append(Problem(file, f"{where}.special_category_condition",
                                    "the purpose processes special-category data "
                                    "(categories holds 'special'): an Art 9(2) condition "
                                    "is required (e.g. \"Art 9(2)(a): explicit consent\")"))
        listed = "criminal-offence" in purpose_decl.categories
        if ((purpose_decl.criminal_offence_data or listed)
                and not purpose_decl.criminal_offence_condition):
            problems.append(Problem(file, f"{where}.criminal_offence_condition",
                                    "the purpose processes criminal-offence data: an Art 10 "
                                    "condition is required (e.g. \"DPA 2018 Sch 1 para 33: "
                                    "legal claims\")"))
        elif listed and not purpose_decl.criminal_offence_data:
            problems.append(Problem(file, f"{where}.criminal_offence_data",
                                    "categories hold 'criminal-offence': declare it with "
                                    "criminal_offence_data = true"))
        if "legitimate-interests" in purpose_decl.bases and not purpose_decl.legitimate_interest:
            problems.append(Problem(file, f"{where}.legitimate_interest",
                                    "the purpose allows the legitimate-interests basis: name "
                                    "the interest relied on"))
    for name, recipient in parsed.recipients.items():
        for purpose in recipient.purposes:
            if purpose not in parsed.purposes:
                problems.append(Problem(file, f"recipients.{name}.purposes",
                                        f"purpose {purpose!r} is not declared in [purposes]"))
    return problems


MAX_POLICY_BYTES = 1 << 20  # a policy is some 15 kB; a megabyte is a mistake or an attack
MAX_NOTICE_BYTES = 1 << 20  # a privacy notice is some 20 kB


def _read_capped(path: Path, limit: int, what: str) -> bytes:
    """The file's bytes; raises ValueError (the reason) past `limit`, never reading more
    than one byte beyond it (a FIFO or device does not hang or fill memory)."""
    with path.open("rb") as stream:
        text = stream.read(limit + 1)
    if len(text) > limit:
        raise ValueError(f"larger than {limit // 1024} KiB: not a {what}")
    return text


# Control characters (C0, DEL and C1) other than tab and line breaks: a NUL cannot be stored in a
# PostgreSQL text or JSON column, and none belongs in a policy.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _control_characters(file: str, value: Any, where: str) -> Iterator[Problem]:
    """A problem for each key or string of the parsed file holding a control character."""
    if isinstance(value, str):
        if _CONTROL.search(value):
            yield Problem(file, where or "-", "holds a control character")
    elif isinstance(value, dict):
        for key, item in value.items():
            place = f"{where}.{key}" if where else str(key)
            if _CONTROL.search(str(key)):
                yield Problem(file, where or "-", "a key holds a control character")
                continue
            yield from _control_characters(file, item, place)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _control_characters(file, item, f"{where}[{index}]")


def parse_policy(text: bytes, file: str) -> tuple[Policy | None, list[Problem]]:
    """The policy in `text`, or every problem found (TOML, schema, then references)."""
    try:
        raw = tomllib.loads(text.decode("utf-8"))
    except UnicodeDecodeError:
        return None, [Problem(file, "-", "not UTF-8 text")]
    except tomllib.TOMLDecodeError as error:
        return None, [Problem(file, "-", f"not valid TOML: {error}")]
    except RecursionError:
        return None, [Problem(file, "-", "not valid TOML: arrays or tables nested too deeply")]
    controls = list(_control_characters(file, raw, ""))
    if controls:
        return None, controls
    try:
        parsed = PolicyFile.model_validate(raw)
    except ValidationError as error:
        return None, _schema_problems(file, error)
    problems = _cross_problems(file, parsed)
    if problems:
        return None, problems
    return Policy(parsed, hashlib.sha256(text).hexdigest()), []


def check_policy(path: Path, notice: Path | None = None) -> list[Problem]:
    """Every problem in the policy file at `path` (empty: it can be adopted); with
    `notice`, also every way the file departs from that notice text (docs/policy.md)."""
    try:
        text = _read_capped(path, MAX_POLICY_BYTES, "policy file")
    except OSError as error:
        return [Problem(str(path), "-", f"cannot read the file ({error.strerror})")]
    except ValueError as error:
        return [Problem(str(path), "-", str(error))]
    policy, problems = parse_policy(text, str(path))
    if policy is None or notice is None:
        return problems
    from lifecycle.policy.notice import notice_problems

    try:
        notice_text = _read_capped(notice, MAX_NOTICE_BYTES, "privacy notice")
    except OSError as error:
        return [Problem(str(notice), "-", f"cannot read the notice ({error.strerror})")]
    except ValueError as error:
        return [Problem(str(notice), "-", str(error))]
    return notice_problems(policy.file, str(path), notice_text, str(notice))


def load_policy(path: Path) -> Policy:
    """The policy at `path`; raises PolicyError naming every problem."""
    try:
        text = _read_capped(path, MAX_POLICY_BYTES, "policy file")
    except OSError as error:
        raise PolicyError([Problem(str(path), "-", f"cannot read the file ({error.strerror})")])
    except ValueError as error:
        raise PolicyError([Problem(str(path), "-", str(error))])
    policy, problems = parse_policy(text, str(path))
    if policy is None:
        raise PolicyError(problems)
    return policy


_adopted: dict[str, Policy] = {}


def policy_from_document(document: dict[str, Any]) -> Policy:
    """The policy stored in an adoption event (validated once per content hash)."""
    content_hash = str(document["content_hash"])
    policy = _adopted.get(content_hash)
    if policy is None:
        fields = {k: v for k, v in document.items() if k != "content_hash"}
        policy = _adopted[content_hash] = Policy(PolicyFile.model_validate(fields),
                                                 content_hash)
    return policy


def bundled_policy(org: str) -> Path:
    """config/ORG.toml from the working directory, else from the source checkout."""
    for base in (Path.cwd(), Path(__file__).resolve().parents[3]):
        candidate = base / "config" / f"{org}.toml"
        if candidate.exists():
            return candidate
    raise ConfigurationError(f"config/{org}.toml not found (run from the lifecycle checkout)")
