"""robustmo: build model organisms, attack them with untargeted training, measure robustness."""

import os

__version__ = "0.1.0"

# libgomp's OpenMP threads spin while they wait; when another process competes for the cores
# (a second run, a sweep shard, a test suite) a CPU training step was measured 5-10x slower on
# 2 cores. Sleeping waits avoid that (docs/performance.md). It only takes effect if set before
# torch loads, which robustmo imports lazily; a value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
