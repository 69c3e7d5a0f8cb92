"""Reading ingest input as bytes, one line at a time, each line decoded on its own.

A line that is not UTF-8 or is longer than the cap becomes an `UnreadableLine` carrying the
reason, so the parser rejects that line by number and the rest of the input still lands.
A long line is skipped in pieces of the cap: it is never held in memory whole.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from lifecycle.domain.facts import MAX_LINE_BYTES, UnreadableLine

BOM = b"\xef\xbb\xbf"
_COUNT_CHUNK = 1024 * 1024


class ByteLines(Protocol):
    def readline(self, size: int = -1, /) -> bytes: ...


def read_lines(stream: ByteLines, max_bytes: int = MAX_LINE_BYTES) -> Iterator[str]:
    """Yields each line of `stream` as text (newline kept), or an UnreadableLine."""
    first = True
    while True:
        # The cap plus a newline (plus a BOM before line 1, which is not part of the fact).
        raw = stream.readline(max_bytes + 1 + (len(BOM) if first else 0))
        if not raw:
            return
        if first:
            raw = raw.removeprefix(BOM)
            first = False
        if len(raw) - raw.endswith(b"\n") > max_bytes:
            while raw and not raw.endswith(b"\n"):  # skip the rest, a piece at a time
                raw = stream.readline(max_bytes + 1)
            yield UnreadableLine(f"line longer than {max_bytes} bytes")
            continue
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError:
            yield UnreadableLine("not valid UTF-8")


def count_lines(path: Path) -> int:
    """Lines in a file (for a progress bar), read in fixed-size pieces."""
    count = 0
    last = b"\n"
    with path.open("rb") as handle:
        while chunk := handle.read(_COUNT_CHUNK):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")
