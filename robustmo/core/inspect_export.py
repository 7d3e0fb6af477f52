"""A run's stored generations as Inspect eval logs (``pip install -e ".[inspect]"``).

    robustmo export-inspect RUN [--out DIR]

One log per checkpoint and eval set (the base, the organism, every blue step; triggered,
variants, clean, capability, unlocked), written by Inspect itself: each log is an Inspect
evaluation whose solver replays robustmo's stored completion (no model runs; the log's model
is ``mockllm/<model>``, Inspect's name for a model that is not called) and whose scorers give
back robustmo's stored per-prompt scores, one scorer per metric, with Inspect's mean and
standard error. ``inspect view --log-dir DIR`` then shows every prompt, completion and score.
Why an export rather than an Inspect task that generates again: the stored generations are
the ones robustmo's numbers come from, so the logs show exactly what was scored, for any run
(a finished one, or one whose model is gone), at no compute.
"""

from __future__ import annotations

import re
from pathlib import Path

from robustmo.core.errors import RobustmoError

INSTALL = 'pip install -e ".[inspect]"'


def _groups(rows: list[dict]) -> dict[tuple, list[dict]]:
    """Generation rows per (stage, method, lr, step, eval set), each in prompt order; the last
    writing of a prompt wins (a checkpoint written again around a resume)."""
    groups: dict[tuple, dict[int, dict]] = {}
    for row in rows:
        if "harness" in row:  # an lm-eval sample: its own harness's log holds it
            continue
        key = (row["stage"], row["method"], float(row.get("lr", 0.0)), int(row.get("step", 0)), row["eval_set"])
        groups.setdefault(key, {})[row["index"]] = row
    return {key: [rs[i] for i in sorted(rs)] for key, rs in groups.items()}


def export_inspect(run_path: Path, out: Path | None = None, log=print) -> list[Path]:
    """Write the run's Inspect logs into ``out`` (default ``<run>/inspect``); return their paths."""
    try:
        from inspect_ai import Task, eval as inspect_eval
        from inspect_ai.dataset import Sample
        from inspect_ai.model import ModelOutput
        from inspect_ai.scorer import Score, mean, scorer, stderr
        from inspect_ai.solver import solver
    except ImportError:
        raise RobustmoError(f"exporting to Inspect needs inspect_ai: {INSTALL}") from None
    from robustmo.core.record import load_run, read_jsonl

    run = load_run(run_path)
    out = Path(out) if out is not None else run.path / "inspect"
    groups = _groups(read_jsonl(run.path / "generations.jsonl", run.id))
    if not groups:
        raise RobustmoError(f"run {run.id} has no stored generations to export")
    if out.exists() and any(out.iterdir()):
        raise RobustmoError(f"{out} is not empty; pass another --out or remove it")
    model_name = run.manifest.model.get("name", "model") if run.manifest and run.manifest.model else "model"

    @solver
    def replay():
        async def solve(state, generate):  # robustmo's stored completion, as the model's answer
            state.output = ModelOutput.from_content(model=f"robustmo:{model_name}", content=state.metadata["completion"],
                                                    stop_reason="max_tokens" if state.metadata["truncated"] else "stop")
            state.messages.append(state.output.message)
            return state
        return solve

    def stored(metric: str):
        @scorer(metrics=[mean(), stderr()], name=metric)
        def make():
            async def score(state, target):
                value = state.metadata["scores"][metric]
                return Score(value=0.0 if value is None else float(value), answer=state.output.completion,
                             explanation="unparsed: the grader found no answer (counted as not correct)"
                             if value is None else None)
            return score
        return make()

    tasks = []
    for (stage, method, lr, step, eval_set), rows in groups.items():
        metrics = sorted({name for r in rows for name in (r.get("scores") or {})})
        samples = [Sample(id=r["index"], input=r["prompt"], target=str(r.get("content") or ""),
                          metadata={"completion": r["completion"], "scores": r.get("scores") or {},
                                    "truncated": bool(r.get("truncated")), "task": r.get("task")}) for r in rows]
        where = "" if stage in ("base", "organism") else f"-lr{lr:g}-step{step}"
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{method}{where}-{eval_set}")
        tasks.append(Task(dataset=samples, solver=replay(), scorer=[stored(m) for m in metrics], name=name,
                          metadata={"robustmo_run": run.id, "stage": stage, "method": method, "lr": lr, "step": step,
                                    "eval_set": eval_set, "model": model_name}))
    out.mkdir(parents=True, exist_ok=True)
    logs = inspect_eval(tasks, model=f"mockllm/{re.sub(r'[^A-Za-z0-9_.-]+', '_', model_name)}", log_dir=str(out),
                        display="none", log_format="eval", max_tasks=1)
    failed = [lg for lg in logs if lg.status != "success"]
    if failed:
        raise RobustmoError(f"Inspect could not write {len(failed)} of {len(logs)} logs ({failed[0].error}); nothing "
                            "else was changed")
    paths = [Path(lg.location) for lg in logs]
    log(f"wrote {len(paths)} Inspect logs to {out} (inspect view --log-dir {out})")
    return paths
