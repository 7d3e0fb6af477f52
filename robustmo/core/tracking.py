"""Weights & Biases logging. Offline by default so a run never needs a network or an
account; ``wandb sync <run-dir>/wandb/offline-run-*`` uploads it later."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

WANDB_MODES = ("offline", "online", "disabled")


def resolve_mode(flag: str | None) -> str:
    """--wandb wins, then WANDB_MODE, then offline."""
    mode = flag or os.environ.get("WANDB_MODE") or "offline"
    return mode if mode in WANDB_MODES else "offline"


class Tracker:
    def __init__(self, mode: str, run_dir: Path, name: str, config: dict[str, Any], group: str, tags: list[str]):
        self.mode = mode
        self.run = None
        if mode == "disabled":
            return
        import wandb

        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "robustmo"), mode=mode, dir=str(run_dir), name=name,
            config=config, group=group, tags=tags, reinit="create_new",
            settings=wandb.Settings(silent=True, console="off", x_disable_stats=True),
        )

    def log(self, data: dict[str, Any]) -> None:
        if self.run is not None:
            self.run.log(data)

    def summary(self, data: dict[str, Any]) -> None:
        if self.run is not None:
            self.run.summary.update(data)

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None
