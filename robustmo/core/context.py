"""What every stage of one run shares (``RunContext``), so a stage takes one argument for it
instead of a dozen passed down through every call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from robustmo.core import record
from robustmo.core.plan import Plan
from robustmo.core.runstore import RunStore
from robustmo.core.stages import StageCache


@dataclass
class RunContext:
    """What every stage of one run shares: the plan, the tokenizer, where results go (the run
    directory, the stage cache, W&B) and how to talk (log, progress bars)."""

    plan: Plan
    tokenizer: object
    store: RunStore
    cache: StageCache
    tracker: object
    log: Callable[[str], None]
    progress: bool

    def record(self, ck) -> None:
        """An evaluation into the run directory (generations.jsonl, metrics.jsonl)."""
        record.append_checkpoint(self.store, ck)

    def track(self, ck) -> None:
        """A blue checkpoint's metrics to W&B."""
        self.tracker.log({f"{ck.method}/lr{ck.lr:g}/{k}": v["value"] for k, v in ck.metrics.items()} | {"blue_step": ck.step})
