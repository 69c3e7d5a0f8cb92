"""Runs `lifecycle serve` while a thread samples every thread's stack (a poor man's py-spy,
for bench/service_load.py --profile): every SAMPLE_SECONDS, each thread's stack is counted;
on SIGUSR1 the counts so far are written to $LIFECYCLE_BENCH_STACKS.N (N = 0, 1, ...) and
counting starts afresh; on exit (SIGTERM) the rest go to $LIFECYCLE_BENCH_STACKS. Collapsed
stacks ("frame;frame;frame count", the input of flamegraph tools), heaviest first.

    python bench/sampled_serve.py serve --port 18765   # with LIFECYCLE_BENCH_STACKS set
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections import Counter
from types import FrameType

SAMPLE_SECONDS = 0.01


def collapse(frame: FrameType | None) -> str:
    names = []
    while frame is not None:
        code = frame.f_code
        names.append(f"{code.co_name} ({os.path.basename(code.co_filename)}:{frame.f_lineno})")
        frame = frame.f_back
    return ";".join(reversed(names))


def main() -> None:
    target = os.environ["LIFECYCLE_BENCH_STACKS"]
    counts: Counter[str] = Counter()
    stop = threading.Event()
    me = threading.get_ident()

    def sample() -> None:
        while not stop.is_set():
            for ident, frame in sys._current_frames().items():
                if ident != me and ident != threading.get_ident():
                    counts[collapse(frame)] += 1
            time.sleep(SAMPLE_SECONDS)

    def write(path: str) -> None:
        with open(path, "w") as out:
            for stack, count in counts.most_common():
                out.write(f"{stack} {count}\n")

    def dump(*_: object) -> None:
        stop.set()
        write(target)
        os._exit(0)

    phase = [0]

    def next_phase(*_: object) -> None:
        # SIGUSR1: what was sampled so far goes to TARGET.N, and counting starts afresh.
        write(f"{target}.{phase[0]}")
        phase[0] += 1
        counts.clear()

    signal.signal(signal.SIGTERM, dump)
    signal.signal(signal.SIGUSR1, next_phase)
    threading.Thread(target=sample, daemon=True).start()
    from lifecycle.cli.main import main as cli

    sys.argv = ["lifecycle", *sys.argv[1:]]
    try:
        cli()
    finally:
        dump()


if __name__ == "__main__":
    main()
