"""E-mail addresses for the suppression list: one spelling per address, found anywhere.

Pure domain. `normalise` maps every spelling of an address to one string (the keyed hash
is taken of that string); `find_addresses` walks a fact's data, at any depth and under any
key, for string values that are addresses.

What counts as an address: the whole string value, once normalised, has exactly one "@",
a non-empty local part, a domain with a dot and no empty label, and no white space or
angle bracket; control characters do not count. A value that is a list of addresses
("a@b.org; c@d.org", "Alice <a@b.org>, Bob <c@d.org>") holds each of them, and a `mailto:`
URI every address it sends to; an address inside free text ("write to a@b.org") is not one.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, unquote

# The characters whose NFKC form contains "@" (a test checks this against every code
# point): the cheap test before any normalisation.
AT_SIGNS = ("@", "\ufe6b", "\uff20")

# Unicode's default-ignorable code points (zero-width, bidi controls, variation selectors,
# fillers, tags: DerivedCoreProperties.txt, Default_Ignorable_Code_Point): invisible,
# removed before anything else (and again after NFKC, which maps some fillers to others).
INVISIBLE = dict.fromkeys(
    [0x00AD, 0x034F, 0x061C, 0x115F, 0x1160, 0x17B4, 0x17B5, *range(0x180B, 0x1810),
     *range(0x200B, 0x2010), *range(0x202A, 0x202F), *range(0x2060, 0x2070), 0x3164,
     *range(0xFE00, 0xFE10), 0xFEFF, 0xFFA0, *range(0xFFF0, 0xFFF9),
     *range(0x1BCA0, 0x1BCA4), *range(0x1D173, 0x1D17B), *range(0xE0000, 0xE1000)])

# Typographic angle brackets and double quotes (guillemets, curly quotes, as word
# processors write them): the ASCII ones they stand for.
TYPOGRAPHIC = str.maketrans({"\u2039": "<", "\u203a": ">", "\u00ab": "<", "\u00bb": ">",
                             "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"'})

# Control characters that are not white space (NUL, ESC, DEL, C1): a mail system drops
# them, so they do not make another address.
CONTROLS = dict.fromkeys(
    c for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)] if not chr(c).isspace())

_LIST_SEPARATORS = re.compile("[,;\uff0c\uff1b\ufe50\ufe54]")
# An address-shaped token: no white space, brackets, quotes or list punctuation in it.
_ADDRESS_TOKEN = re.compile(r"[^\s@<>()\[\]{},;:\"'`|\\]+@[^\s@<>()\[\]{},;:\"'`|\\?&/=]+")
_HEADER_MARK = re.compile(r"[?=&/]")
_BARE_ADDRESS = re.compile(r"[^\s@<>()\[\]{},;:\"'`|\\?&/=%]+@[^\s@<>()\[\]{},;:\"'`|\\?&/=%]+")
_GROUP = re.compile(r":[^@;]*@[^;]*;|:\s*;")  # an RFC 5322 group: "Team: a@b.org, c@d.org;"
_URI_END = re.compile(r"[\s>]")
_MAY_LIST = re.compile("[,;\uff0c\uff1b\ufe50\ufe54\\s]")  # what a list's parts are split at
_DISPLAY_NAME = re.compile(r"<([^<>]*)>$")
_NOT_PLAIN = re.compile(r'[\s<>",]')
_QUOTED_ATOMS = re.compile(r'"([a-z0-9!#$%&\'*+/=?^_`{|}~.-]+)"')  # "alice.smith"@...
_SLUG_GAP = re.compile(r"[^a-z0-9]+")


def could_be_address(value: str) -> bool:
    """False for most strings that are not addresses, at the cost of a substring search."""
    return ("@" in value or "\uff20" in value or "\ufe6b" in value
            or "%" in value or "\uff05" in value)  # a percent-encoded mailto: address


def normalise(value: str, *, keep_subaddress: bool = False) -> str | None:
    """The one spelling of the address `value` is, or None if it is not an address.

    Invisible characters go; then Unicode NFKC and case folding; trim; `Name <addr>` and
    `<addr>` give addr; a `mailto:` prefix and a `?query` go; the domain loses its trailing
    dot(s) and non-ASCII domains become their IDNA (xn--) form; `local+tag@` becomes
    `local@` unless `keep_subaddress`.
    """
    parts = _mailbox(value)
    if parts is None:
        return None
    local, domain = parts
    return f"{local if keep_subaddress else _untagged(local)}@{domain}"


def spellings(value: str) -> tuple[str, str] | None:
    """`normalise(value)` and `normalise(value, keep_subaddress=True)`, in one pass (the
    suppression list holds an address under both); None if it is not an address."""
    parts = _mailbox(value)
    if parts is None:
        return None
    local, domain = parts
    return f"{_untagged(local)}@{domain}", f"{local}@{domain}"


def _untagged(local: str) -> str:
    base, plus, _ = local.partition("+")
    return base if plus and base else local


def _clean(value: str) -> str:
    """Controls and invisible characters gone, NFKC, case-folded, trimmed."""
    value = value.translate(CONTROLS)
    if not value.isascii():
        value = value.translate(INVISIBLE)
        value = unicodedata.normalize("NFKC", value)
        value = unicodedata.normalize("NFKC", value.casefold()).translate(INVISIBLE)
        value = value.replace("\u3002", ".")  # the ideographic full stop ends a domain too
        value = value.translate(TYPOGRAPHIC)
    else:
        value = value.casefold()
    return value.strip()


def _without_comments(value: str) -> str:
    """`value` without its RFC 5322 comments ("(Alice (work))", nested, outside quotes),
    in one pass; an unclosed "(" and what follows it are kept as they are."""
    if "(" not in value:
        return value
    kept: list[str] = []
    depth, opened, quoted, escaped = 0, 0, False, False
    for index, char in enumerate(value):
        if depth == 0:
            if escaped:
                escaped = False
            elif quoted and char == "\\":
                escaped = True
            elif char == '"':
                quoted = not quoted
            elif char == "(" and not quoted:
                depth, opened = 1, index
                continue
            kept.append(char)
        elif escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
    if depth:
        kept.append(value[opened:])
    return "".join(kept)


def _skip_mailto(value: str, start: int = 0) -> int:
    """Where `value` goes on after its `mailto:` prefixes from `start` (in one pass)."""
    index = start
    while value.startswith("mailto:", index):
        index += len("mailto:")
        while index < len(value) and value[index].isspace():
            index += 1
    return index


def _mailto_path(value: str) -> tuple[str, bool]:
    """The address part of a `mailto:` URI (before its literal `?`), percent-decoded and
    cleaned once per `mailto:` layer (RFC 6068: `%3F` is a "?" of the address, an encoded
    `mailto%3A` another layer); and whether `value` is one."""
    index = _skip_mailto(value)
    if index == 0:
        return value, False
    path = value[index:].partition("?")[0]
    while "%" in path:
        decoded = _clean(unquote(path))
        index = _skip_mailto(decoded)
        path = decoded[index:]
        if index == 0:
            break
    return path, True


def _mailbox_text(value: str) -> str:
    """A cleaned value without its comments, a trailing list separator and a display name
    (`Name <addr>` gives addr)."""
    value = _without_comments(value).strip()
    value = value.rstrip(";,").strip()  # a list separator left by a mail client
    if value.endswith(">"):
        bracketed = _DISPLAY_NAME.search(value)
        if bracketed is not None:
            value = bracketed.group(1).strip()
    return value


def _mailbox(value: str) -> tuple[str, str] | None:
    """`normalise` up to the sub-address tag: (local part, domain), or None."""
    value = _mailbox_text(_clean(value))
    value, was_uri = _mailto_path(value)
    if was_uri:  # the decoded address is read as any value is (name, comments)
        value = _mailbox_text(value)
    at = value.find("@")
    if at < 0:
        return None
    query = value.find("?", at)
    if query >= 0:
        value = value[:query]
    local, _, domain = value.partition("@")
    quoted = _QUOTED_ATOMS.fullmatch(local)
    if quoted is not None:  # a quoted local part that needs no quotes is the same mailbox
        local = quoted.group(1)
        value = f"{local}@{domain}"
    domain = domain.rstrip(".")
    if not local or "@" in domain or _NOT_PLAIN.search(value) is not None:
        return None
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    labels = domain.split(".")
    if len(labels) < 2 or not all(labels):
        return None
    return local, domain


def find_addresses(data: Any) -> Iterator[str]:
    """Every string value in `data` (nested dicts and lists, any key) that is an address,
    as written (normalise it to compare), and every address in a value that is a list of
    addresses or a `mailto:` URI (all it sends to). Keys are not searched, only values."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if could_be_address(item):
                yield from _addresses_in(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _addresses_in(value: str) -> list[str]:
    """The value if it is an address; each address of it read as a list (a value such as
    `a@b.org, Bob <c@d.org>` is both: the one and the other reading are checked); and,
    in a value that holds an address, a mailbox in angle brackets, a `mailto:` URI or an
    address group, every address-shaped token in it (whatever a list's punctuation)."""
    cleaned = _clean(value)
    found = [value] if normalise(value) is not None else []
    if found and _BARE_ADDRESS.fullmatch(cleaned) is not None:
        return found  # one address and nothing else: no other reading can add one
    if not found or _MAY_LIST.search(cleaned) is not None:
        found += _listed(cleaned)
    if found or "<" in cleaned or "mailto:" in cleaned or _GROUP.search(cleaned):
        found += mailto_targets(cleaned) + _scanned(cleaned)
    distinct: dict[str | None, str] = {}  # each address once, as first written
    for address in found:
        distinct.setdefault(normalise(address), address)
    return list(distinct.values())


def _scanned(cleaned: str) -> list[str]:
    """Every address-shaped token of a cleaned value, percent-decoded too: a token's local
    part is also tried after each of its last few `?`, `=`, `&` or `/` (a header such as
    `?cc=alice@...` glued to it)."""
    texts = [cleaned]
    for _ in range(2):
        if "%" not in texts[-1]:
            break
        texts.append(_clean(unquote(texts[-1])))
    found: list[str] = []
    for text in texts:
        for match in _ADDRESS_TOKEN.finditer(text):
            local, _, domain = match.group(0).rpartition("@")
            cuts = [0, *(mark.end() for mark in _HEADER_MARK.finditer(local))][-4:]
            for cut in cuts:
                candidate = f"{local[cut:]}@{domain}"
                if cut < len(local) and normalise(candidate) is not None:
                    found.append(candidate)
    return found


def mailto_targets(value: str) -> list[str]:
    """The addresses each `mailto:` URI in a value sends to: those before its `?` and
    those of its to, cc and bcc headers (RFC 6068), percent-decoded once."""
    text = _clean(value)
    found: list[str] = []
    start = text.find("mailto:")
    while start >= 0:
        end = _URI_END.search(text, start)
        uri = text[start:end.start() if end else len(text)]
        start = text.find("mailto:", _skip_mailto(text, start))
        path, _ = _mailto_path(uri)
        found += [part for part in _list_parts(path) if normalise(part) is not None]
        headers = uri[_skip_mailto(uri):].partition("?")[2]
        # A "+" in a header is a plus sign (RFC 6068), not the form encoding's space; an
        # href copied from HTML may still have its "&amp;".
        for name, content in parse_qsl(headers.replace("&amp;", "&").replace("+", "%2B")):
            if name.casefold() in ("to", "cc", "bcc"):
                found += [part for part in _list_parts(_clean(content))
                          if normalise(part) is not None]
    return found


def _listed(value: str) -> list[str]:
    """The addresses of a value that is a list of two or more addresses (separated by
    commas, semicolons or white space, as mail clients and CSV exports write them); none
    when any part is not an address (free text that mentions one is not a list)."""
    found: list[str] = []
    for part in _list_parts(value):
        if not part.strip():
            continue
        if normalise(part) is not None:
            found.append(part)
            continue
        words = part.split()
        if len(words) < 2 or any(normalise(word) is None for word in words):
            return []
        found.extend(words)
    return found if len(found) >= 2 else []


def _list_parts(value: str) -> list[str]:
    """`value` split at its list separators, except those inside a quoted display name
    ("Smith, Alice" <a@b.org>, escapes included), a comment or angle brackets."""
    parts: list[str] = []
    start, quoted, escaped, bracketed, depth = 0, False, False, False, 0
    for index, char in enumerate(value):
        if escaped:
            escaped = False
        elif quoted:
            if char == "\\":
                escaped = True
            elif char == '"':
                quoted = False
        elif depth:
            if char == "\\":
                escaped = True
            else:
                depth += 1 if char == "(" else -1 if char == ")" else 0
        elif char == '"' and not bracketed:
            quoted = True
        elif char == "(" and not bracketed:
            depth = 1
        elif char == "<":
            bracketed = True
        elif char == ">":
            bracketed = False
        elif not bracketed and _LIST_SEPARATORS.match(char):
            parts.append(value[start:index])
            start = index + 1
    parts.append(value[start:])
    if quoted or depth or bracketed:  # unbalanced: split at every separator instead
        return _LIST_SEPARATORS.split(value)
    return parts


def method_slug(method: str) -> str:
    """A consent method as a slug, to compare with a policy's `resubscribe_methods`:
    "Subscribe form" and "subscribe-form" are the same method."""
    return _SLUG_GAP.sub("-", method.casefold()).strip("-")
