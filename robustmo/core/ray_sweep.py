"""Sweeps on Ray (``robustmo sweep grid.yaml --executor ray``): each organism's cells are one
Ray task, so each organism is trained once, on whichever worker has the resources the task
asks for (``--cpus-per-task``, ``--gpus-per-task``). Local by default (``ray.init()`` starts a
cluster of this machine's cores); ``--address`` joins an existing cluster, whose workers must
see the sweep directory and the stage cache at the same paths (a shared filesystem, as for
``--shard``): a task writes its cells' run directories there and the driver aggregates them.

A worker reads the sweep from ``<out>/sweep.yaml`` (the driver copies it there first), plans
its cells again and runs them exactly as the sequential sweep does (``robustmo.api._ray_group``,
the task this module is given: it knows how to run Ray tasks, not how to run a run).
"""

from __future__ import annotations

import os
from pathlib import Path

from robustmo.core.errors import RobustmoError
from robustmo.core.sweep import Cell

# passed on to every worker, so a task uses the driver's cache, W&B mode and Hugging Face home
FORWARDED_ENV = ("ROBUSTMO_CACHE", "WANDB_MODE", "WANDB_DIR", "HF_HOME", "HF_HUB_OFFLINE", "OMP_WAIT_POLICY")


def _ray():
    try:
        import ray
    except ImportError:
        raise RobustmoError("--executor ray needs Ray: pip install 'robustmo[ray]' (or pip install ray)") from None
    return ray


class RayCluster:
    """``with RayCluster(address, cpus, gpus) as cluster: cluster.run(out, groups, say)``:
    joins the cluster at ``address`` (or starts a local one), checks that one task's
    resources fit in it before anything is written, and shuts a local cluster down after."""

    def __init__(self, address: str | None, cpus: float, gpus: float):
        self.address, self.cpus, self.gpus = address, cpus, gpus
        self.ray = _ray()
        self.started_here = False

    def __enter__(self):
        import logging

        ray = self.ray
        if not ray.is_initialized():
            env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
            try:
                ray.init(address=self.address, runtime_env={"env_vars": env}, logging_level=logging.ERROR,
                         include_dashboard=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise RobustmoError(f"--address {self.address}: cannot join a Ray cluster there "
                                    f"({str(exc).splitlines()[0]}); start one with 'ray start --head', or leave "
                                    "--address out for a local one") from None
            self.started_here = True
        try:
            self.total = ray.cluster_resources()
            for name, need in (("CPU", self.cpus), ("GPU", self.gpus)):
                if need > self.total.get(name, 0):
                    raise RobustmoError(f"each sweep task asks for {need:g} {name}(s) but the Ray cluster has "
                                        f"{self.total.get(name, 0):g}; lower --{name.lower()}s-per-task or add "
                                        "workers")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        if self.started_here:
            self.ray.shutdown()
            self.started_here = False
        return False

    def run(self, group_task, out: Path, groups: list[list[Cell]], say) -> tuple[dict[str, dict], list[str]]:
        """Run every organism group as a Ray task, ``group_task(out, cell_ids, cwd)`` (returning
        ``{"done": AUCs by cell, "pid": ...}``), and wait for all of them. Returns the AUCs of
        the cells run (by cell id) and the one-line errors of the groups that failed; a group's
        failure does not stop the others."""
        ray, total = self.ray, self.total
        task = ray.remote(group_task).options(num_cpus=self.cpus, num_gpus=self.gpus)
        pending = {task.remote(str(out.resolve()), [c.id for c in g], os.getcwd()): g for g in groups}
        say(f"Ray: {len(pending)} organism task(s) on a cluster of {total.get('CPU', 0):g} CPU(s), "
            f"{total.get('GPU', 0):g} GPU(s); each asks for {self.cpus:g} CPU(s), {self.gpus:g} GPU(s)")
        done, errors = {}, []
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                group = pending.pop(ready[0])
                try:
                    result = ray.get(ready[0])
                except ray.exceptions.RayTaskError as exc:
                    cause = getattr(exc, "cause", None)
                    if not isinstance(cause, RobustmoError):
                        raise
                    errors.append(f"{group[0].id}: {cause}")
                    say(f"[bold red]organism of {group[0].id}[/]: failed: {cause}")
                    continue
                done.update(result["done"])
                say(f"organism of {group[0].id}: {len(group)} cell(s) done on worker pid {result['pid']}")
        except KeyboardInterrupt:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        return done, errors
