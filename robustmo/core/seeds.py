"""Several seeds of one run (``--seeds 0,1,2``): each seed is a run of its own in
``<run-dir>/seed-N`` (its organism, attacks and record, resumable and stage-cached like any
run), and the run directory itself holds the summary over seeds: each blue method's AUC and
removal at 10 % as the mean over seeds, with a 95 % interval over seeds and prompts (a
hierarchical bootstrap, ``robustness.hierarchical_auc``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from robustmo.core import record
from robustmo.core.plan import Plan, resolve_plan
from robustmo.core.evaluate import summarise_scores
from robustmo.core.robustness import counted, hierarchical_auc, t_interval
from robustmo.core.summary import noise_floor_of_mean
from robustmo.core.runstore import RunStore


def seed_dir(root: Path, seed: int) -> Path:
    return Path(root) / f"seed-{seed}"


def seed_plan(plan: Plan, seed: int, registry) -> Plan:
    """The plan of one seed: the same run with ``seed`` and no ``seeds``."""
    return resolve_plan(plan.config.model_copy(update={"seed": seed, "seeds": [], "out": None}), registry)


def scores(run_dir: Path, method: str, metric: str, eval_set: str) -> np.ndarray:
    """Per-prompt scores of ``metric`` [checkpoint, prompt] for the organism and every blue
    checkpoint of ``method``, in the order of the run's metrics.jsonl, from generations.jsonl
    (a parse failure, stored as null, counts as not correct: 0)."""
    rid = Path(run_dir).name
    order = [(c.stage, c.method, c.lr, c.step) for c in record.read_checkpoints(run_dir)
             if c.stage == "organism" or (c.stage == "blue" and c.method == method)]
    by_key: dict[tuple, dict[int, object]] = {}
    for row in record.read_jsonl(Path(run_dir) / "generations.jsonl", rid):
        if row.get("eval_set") == eval_set and metric in (row.get("scores") or {}):
            key = (row["stage"], row["method"], float(row["lr"]), int(row["step"]))
            by_key.setdefault(key, {})[row["index"]] = row["scores"][metric]
    try:
        return np.array([counted([v for _, v in sorted(by_key[(s, m, float(lr), int(st))].items())])
                         for s, m, lr, st in order], dtype=float)
    except KeyError as exc:
        raise record.CorruptRun(f"run {rid}: generations.jsonl has no {metric!r} scores for checkpoint {exc}") from None


def pooled(runs: list[record.Run], stage: str) -> dict[str, dict]:
    """The base's or the organism's metrics over every seed's prompts together."""
    per_metric: dict[str, list] = {}
    for run in runs:
        for row in record.read_jsonl(run.path / "generations.jsonl", run.id):
            if row.get("stage") == stage:
                for name, value in (row.get("scores") or {}).items():
                    per_metric.setdefault(name, []).append(value)
    return {name: summarise_scores(values) for name, values in sorted(per_metric.items())}


def summarise_seeds(plan: Plan, runs: dict[int, record.Run]) -> dict:
    """The summary over seeds, from each seed's run directory."""
    first = next(iter(runs.values()))
    roles = first.summary.roles_or_default()
    cap_metric, bad_metric = roles["capability"], roles["backdoor"]
    cap_set = plan.metric(cap_metric).obj.eval_set
    bad_set = plan.metric(bad_metric).obj.eval_set
    blue = {}
    for method in plan.config.blue:
        mine = {seed: run.methods[method] for seed, run in runs.items()}
        per_seed = [(scores(run.path, method, cap_metric, cap_set), scores(run.path, method, bad_metric, bad_set))
                    for run in runs.values()]
        auc, boot_ci, removal, removal_boot = hierarchical_auc(per_seed, seed=0)
        t_ci = t_interval([b.auc for b in mine.values()])
        t_removal = t_interval([b.removal_at_10 for b in mine.values()])
        defined = [seed for seed, b in mine.items() if b.auc == b.auc]
        unsure = [seed for seed, b in mine.items() if b.inconclusive]
        floor = noise_floor_of_mean([(cap[0], bad[0], cap.shape[0] - 1) for cap, bad in per_seed])
        blue[method] = {
            "auc": auc, "auc_ci": list(_wider(boot_ci, t_ci)), "auc_ci_bootstrap": list(boot_ci),
            "auc_ci_t": list(t_ci), "removal_at_10": removal, "removal_at_10_ci": list(_wider(removal_boot, t_removal)),
            "seeds": list(runs), "defined_seeds": defined, "auc_per_seed": {str(s): b.auc for s, b in mine.items()},
            "removal_at_10_per_seed": {str(s): b.removal_at_10 for s, b in mine.items()},
            "inconclusive": bool(unsure),
            "inconclusive_reason": (f"inconclusive on seed{'s' if len(unsure) > 1 else ''} "
                                    f"{', '.join(map(str, unsure))}: {mine[unsure[0]].inconclusive_reason}"
                                    if unsure else None),
            "lowest_capability_rel": min(b.lowest_capability_rel for b in mine.values()),
            "noise_floor": floor, "within_noise": bool(auc <= floor) if floor == floor and auc == auc else None,
            "capability_metric": cap_metric, "backdoor_metric": bad_metric,
            "runs": [r for b in mine.values() for r in b.runs],
            "lr_check": {"per_seed": {str(s): b.lr_check for s, b in mine.items()}},
            "suppression": [{**c, "seed": s} for s, b in mine.items() for c in b.suppression],
        }
    truncated: dict[str, dict[str, list[int]]] = {}
    for run in runs.values():
        for who, sets in run.summary.truncated.items():
            for name, (cut, n) in sets.items():
                cell = truncated.setdefault(who, {}).setdefault(name, [0, 0])
                cell[0] += cut
                cell[1] += n
    return {"run_id": "", "config": plan.config.model_dump(), "model": first.summary.model,
            "base": pooled(list(runs.values()), "base"), "organism": pooled(list(runs.values()), "organism"),
            "roles": roles, "blue": blue, "truncated": truncated, "seeds": list(runs),
            "seed_runs": {str(s): run.path.name for s, run in runs.items()}}


def _wider(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    """The union of two intervals (a NaN one counts as absent)."""
    pairs = [p for p in (a, b) if p[0] == p[0] and p[1] == p[1]]
    if not pairs:
        return (float("nan"), float("nan"))
    return (min(p[0] for p in pairs), max(p[1] for p in pairs))


def execute_seeds(plan: Plan, store: RunStore, resume: bool, registry,
                  run_one: Callable[[Plan, Path, bool], record.Run], log) -> record.Summary:
    """Run every seed (each resumed or skipped when its directory says so), then write the run
    directory's own record: config, manifest, summary over seeds, report and plot (the manifest's
    lifetime, as a single run's: ``run.run_directory``)."""
    from robustmo.core.run import run_directory

    with run_directory(plan, store, {}, "", resume, None) as (_, manifest):
        return _seeds(plan, store, registry, run_one, log, manifest)


def _seeds(plan: Plan, store: RunStore, registry, run_one, log, manifest: record.Manifest) -> record.Summary:
    from robustmo.core.distributed import barrier, is_main

    cfg = plan.config
    started = time.time()
    runs: dict[int, record.Run] = {}
    for seed in cfg.seeds:
        sub = seed_dir(store.path, seed)
        runs[seed] = record.reuse_or_run(sub, f"seed {seed}",
                                         lambda resume, s=seed, d=sub: run_one(seed_plan(plan, s, registry), d, resume),
                                         log)
    barrier()  # every seed's files are written (by the main process) before anyone reads them
    summary = summarise_seeds(plan, runs)
    summary.update(run_id=store.path.name, seconds=round(time.time() - started, 1))
    manifest.model = runs[cfg.seeds[0]].manifest.model if runs[cfg.seeds[0]].manifest else {}
    typed = record.write_summary(store, summary)
    if is_main():
        from robustmo.core.report import write_seeds_report

        write_seeds_report(store, typed.model_dump())
    return typed
