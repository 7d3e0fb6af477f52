"""What a run is: base -> data -> organism -> blue attacks (evaluated at log-spaced steps) ->
summary -> report. ``execute`` calls one stage after the other; each stage is a module of
its own (models, data, evaluate, organism, blue, summary, report) and what a stage produces
is written to the run directory as soon as it exists (record.py)."""

from __future__ import annotations

import shutil
import time
from contextlib import contextmanager
from pathlib import Path

from robustmo.core import record, sharding
from robustmo.core.blue import attack
from robustmo.core.plan import Plan
from robustmo.core.context import RunContext
from robustmo.core.data import Kept, blue_set, organism_view, records
from robustmo.core.data import build as build_data
from robustmo.core.errors import RobustmoError, RunInterrupted
from robustmo.core.evaluate import BASE, ORGANISM, Checkpoint, evaluate_once
from robustmo.core.training import peak_memory
from robustmo.core.models import base_identity, load_base
from robustmo.core.organism import clean_base, install, organism_tokenizer
from robustmo.core.runstore import RunStore
from robustmo.core.stages import StageCache
from robustmo.core.summary import summarise, truncation


def _metrics_line(who: str, ck: Checkpoint) -> str:
    return f"{who}: " + ", ".join(f"{k} {v['value']:.3f}" for k, v in ck.metrics.items())


def execute(plan: Plan, store: RunStore, *, progress: bool = False, log=print, make_tracker=None,
            cache: StageCache | None = None, resume: bool = False) -> record.Summary:
    """Run every stage and write the run directory; return the summary.

    The run directory is created only once the model has loaded and the data are built, so
    bad input leaves nothing behind; a failure later marks the manifest as failed or
    interrupted, and every completed stage stays in the stage cache. ``resume`` continues an
    unfinished run directory: complete stages are reused and the stage that was cut off
    continues from its last checkpoint. Under ``accelerate launch`` every process runs this;
    only the main one writes files and logs.
    """
    from robustmo.core.distributed import is_main

    cfg = plan.config
    log = log if is_main() else (lambda *a, **k: None)
    cache = cache or StageCache(store.path / "stages" if cfg.no_cache else None)
    # input errors surface before any file of the run exists (--no-cache: its stages live in the run directory)
    model, tokenizer, model_info, data, has_base = prepare(plan, None if cfg.no_cache else cache, log)
    with run_directory(plan, store, model_info, str(cache.root), resume,
                       make_tracker if is_main() else None) as (tracker, _):
        ctx = RunContext(plan, tokenizer, store, cache, tracker, log, progress)
        started = time.time()

        base = None
        if has_base:
            base = evaluate_once(ctx, model, data.sets, BASE, base_identity(model_info))
            ctx.record(base)
            log(_metrics_line("base", base))

        organism = install(ctx, model, model_info, data.red, has_base)
        del model  # an existing organism may be a model of its own: the base is not kept beside it
        sets = {name: organism_view(plan, exs) for name, exs in data.sets.items()}
        before = evaluate_once(ctx, organism.model, sets, ORGANISM, organism.key)
        ctx.record(before)
        tracker.log({f"organism/{k}": v["value"] for k, v in before.metrics.items()})
        log(_metrics_line("organism", before))

        answerers = {"organism": organism.key, "teacher": base_identity(organism.base_info)}

        def kept(who: str, what: str) -> Kept:
            return Kept(cache, answerers[who], what, log)

        training_sets = {}
        for method in plan.blue:  # every blue set, once, before any attack: a data error stops the run here
            notes = data.notes.setdefault(method.name, {})
            try:
                training_sets[method.name] = blue_set(plan, method, data.blue_pool, tokenizer=tokenizer,
                                                      organism=organism.model, notes=notes,
                                                      clean_base=lambda: clean_base(plan, organism), kept=kept)
            except RobustmoError as exc:
                raise BlueDataError(str(exc)) from None
            if notes.get("dropped_false_triggers"):
                log(f"{method.name}: left out {notes['dropped_false_triggers']} clean prompts on which the organism "
                    "showed the behaviour anyway (not behaviour-compatible)")
        blue, attacks = {}, {}
        if data.plain:
            store.append("plain-data.jsonl", records(data.plain))
        for method in plan.blue:
            notes = data.notes[method.name]
            training_set = training_sets[method.name]
            store.append(f"blue-data-{method.name}.jsonl", records(training_set))
            result = attacks[method.name] = attack(ctx, organism, method, training_set, sets, before, data.plain)
            b = blue[method.name] = {**summarise(result.checkpoints, cfg.seed, cfg.removal_threshold, plan.roles,
                                                 cfg.lr_check_factor),
                                     "runs": result.runs, "data": notes, "escalation": result.escalation,
                                     "seeds": [cfg.seed],
                                     "suppression": [r["suppression"] for r in result.runs if "suppression" in r]}
            if b["inconclusive"]:
                log(f"{method.name}: inconclusive: {b['inconclusive_reason']}")
            tracker.log({f"{method.name}/auc": b["auc"], f"{method.name}/removal_at_10": b["removal_at_10"]})
            log(f"{method.name}: AUC {b['auc']:.3f} [{b['auc_ci'][0]:.3f}, {b['auc_ci'][1]:.3f}]")

        truncated = {**({"base": truncation([base])} if base else {}), "organism": truncation([before]),
                     **{name: truncation(a.checkpoints[1:]) for name, a in attacks.items()}}
        summary = record.write_summary(store, {
            "run_id": store.path.name, "config": cfg.model_dump(), "model": model_info["name"], "base": base.metrics if base else {},
            "organism": before.metrics, "red_data": data.notes.get("red", {}), "roles": plan.roles, "blue": blue,
            "truncated": truncated, "seconds": round(time.time() - started, 1), "peak_memory": peak_memory()})
        if store.enabled:  # not the main process: it wrote nothing above either
            from robustmo.core.report import write_report

            write_report(store, summary.model_dump())
            tracker.summary({f"{m}/auc": b["auc"] for m, b in blue.items()})
        return summary


def prepare(plan: Plan, cache: StageCache | None = None, log=print):
    """The base model (or, for an existing full organism given without its base, the organism
    itself), the tokenizer (an existing organism's own, if it ships one), the base's identity,
    the run's data, and whether a base model was loaded. Contamination and input errors are
    raised here, before anything is written (but the base's answers for the red data, kept in
    ``cache`` if given)."""
    cfg = plan.config
    has_base = not (cfg.organism and cfg.model is None)  # an existing full organism may come without its base
    model, tokenizer, model_info = load_base(cfg.model if has_base else cfg.organism, data=plan.data.name,
                                             trust_remote_code=cfg.trust_remote_code, log=log)
    if cfg.organism and has_base:
        tokenizer = organism_tokenizer(cfg.organism, tokenizer, cfg.trust_remote_code)
    sharding.check(model)
    kept = (lambda what: Kept(cache, base_identity(model_info), what, log)) if cache is not None else None
    return model, tokenizer, model_info, build_data(plan, model, tokenizer, kept), has_base


def probe_organism(plan: Plan, cache: StageCache, log=print, progress: bool = False) -> Checkpoint:
    """The organism's evaluation before any blue training, without a run directory (kept in the
    stage cache, where the run that follows finds it): what an audit checks first."""
    model, tokenizer, model_info, data, has_base = prepare(plan, cache, log)
    ctx = RunContext(plan, tokenizer, RunStore(Path("."), enabled=False), cache, _NoTracker(), log, progress)
    organism = install(ctx, model, model_info, data.red, has_base)
    sets = {name: organism_view(plan, exs) for name, exs in data.sets.items()}
    return evaluate_once(ctx, organism.model, sets, ORGANISM, organism.key)


class BlueDataError(RobustmoError):
    """A blue set that cannot be built for this organism (no behaviour-compatible answer, a
    model-written answer that carries the trigger): found before any attack."""


class _NoTracker:
    def log(self, data):
        pass

    def summary(self, data):
        pass

    def finish(self, exit_code: int = 0):
        pass


@contextmanager
def run_directory(plan: Plan, store: RunStore, model_info: dict, stage_cache: str, resume: bool, make_tracker):
    """Create (or reopen, to resume) the run directory and hold it: config and manifest first,
    the manifest's status kept true to what happened (complete, failed, interrupted), W&B
    opened and closed with it. Yields the tracker and the manifest (a caller may fill in what
    it learns, e.g. the base model, before it is written complete)."""
    previous = record.resume_manifest(store.path, plan.config.model_dump()) if resume else None
    if not resume:
        store.create()
    with store.held():  # one process at a time writes this run directory
        record.write_config(store, plan.config)
        manifest = record.new_manifest(plan, model_info, stage_cache, previous)
        manifest.run_id = store.path.name
        record.write_manifest(store, manifest)
        try:
            tracker = make_tracker(store.path) if make_tracker else _NoTracker()
        except Exception as exc:  # W&B could not start: nothing has run yet
            reason = " ".join(str(exc).split())[:200] or type(exc).__name__
            if previous is None:
                shutil.rmtree(store.path, ignore_errors=True)  # a new directory: leave nothing behind
            else:
                manifest.status, manifest.error = "failed", f"W&B could not start: {reason}"
                record.write_manifest(store, manifest)
            raise RobustmoError(f"W&B could not start ({reason}); nothing was run: pass --wandb disabled, or fix "
                                "W&B and run again") from None
        started = time.time()
        try:
            yield tracker, manifest
        except BlueDataError as exc:  # nothing was attacked: leave no run directory behind (the stages stay cached)
            tracker.finish(exit_code=1)
            if previous is None and not plan.config.no_cache:
                if store.enabled:
                    shutil.rmtree(store.path, ignore_errors=True)
                raise RobustmoError(f"{exc}; nothing was written (the organism and its evaluation are kept in the "
                                    "stage cache)") from None
            manifest.status, manifest.error = "failed", f"RobustmoError: {exc}"
            record.write_manifest(store, manifest)
            raise
        except BaseException as exc:
            manifest.status = "interrupted" if isinstance(exc, (KeyboardInterrupt, RunInterrupted)) else "failed"
            manifest.error = f"{type(exc).__name__}: {exc}"
            try:
                record.write_manifest(store, manifest)
            except OSError:
                pass  # the disk that failed the run may refuse this too; the error itself is reported
            tracker.finish(exit_code=1)
            raise
        manifest.status, manifest.seconds = "complete", round(time.time() - started, 1)
        record.write_manifest(store, manifest)
        tracker.finish()


def run_id_for(plan: Plan) -> str:
    from robustmo.core.stages import digest

    c = plan.config
    short = digest(c.model_dump())[:6]
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{c.trigger}-{c.behavior}-{c.install}-{short}"
