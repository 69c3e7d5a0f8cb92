"""`python -m bench [--size small|medium] [--backends sqlite,postgres]`: the benchmark suite."""

import sys

from bench.suite import main

if __name__ == "__main__":
    sys.exit(main())
