"""Run history: find run directories, describe and compare them, and re-score their stored
generations with a metric (``robustmo runs`` and ``robustmo rescore``).

Reading a run directory is record.py's (``load_run``); nothing here writes to a run
directory except ``rescore-<metric>.json``, the re-score's own output.
"""

from __future__ import annotations

import math
import re
import time
from pathlib import Path
from typing import Any

from robustmo.core.errors import RobustmoError
from robustmo.core.record import CorruptRun, NewerFormat, Run, is_run_dir, load_run, read_jsonl

DEFAULT_ROOT = Path("runs")
ROLES = ("auto", "backdoor", "capability", "none")

__all__ = ["CorruptRun", "Run", "load_run", "scan", "resolve_run", "rescore", "write_rescore"]


def scan(root: Path) -> list[Run]:
    """Every run directory directly under ``root`` (or ``root`` itself if it is one), oldest
    first; an unreadable one comes back with status ``corrupt`` (or ``newer format``, written by
    a newer robustmo) and its problem."""
    root = Path(root)
    try:
        candidates = [root] if is_run_dir(root) else sorted(p for p in root.iterdir() if is_run_dir(p))
    except OSError as exc:
        raise RobustmoError(f"cannot list {root}: {exc.strerror or exc}") from None
    runs = []
    for path in candidates:
        try:
            runs.append(load_run(path))
        except NewerFormat as exc:
            runs.append(Run(path, "newer format", {}, problem=f"{exc}; {exc.HINT}"))
        except CorruptRun as exc:
            runs.append(Run(path, "corrupt", {}, problem=str(exc)))
    return sorted(runs, key=lambda r: (r.started or "~", r.id))


def resolve_run(ref: str, root: Path | None = None) -> Path:
    """A run directory from a path, a run id, or a unique prefix of a run id under ``root``."""
    root = Path(root) if root is not None else DEFAULT_ROOT
    if not ref.strip():
        raise RobustmoError("empty run id; pass a run directory or a run id from 'robustmo runs ls'")
    as_path = Path(ref).expanduser()
    looks_like_path = "/" in ref or ref.startswith((".", "~"))
    if as_path.is_dir() and (is_run_dir(as_path) or looks_like_path):
        return as_path
    if looks_like_path:
        raise RobustmoError(f"run directory {ref} does not exist; pass an existing run directory or a run id "
                            "from 'robustmo runs ls'")
    if not root.is_dir():
        raise RobustmoError(f"no run {ref!r}: {ref} is not a directory and there is no runs directory {root}; "
                            "pass a run directory path or --root DIR")
    names = sorted(p.name for p in root.iterdir() if is_run_dir(p))
    if ref in names:
        return root / ref
    matches = [n for n in names if n.startswith(ref)]
    if len(matches) == 1:
        return root / matches[0]
    if matches:
        shown = ", ".join(matches[:4]) + (", ..." if len(matches) > 4 else "")
        raise RobustmoError(f"run id prefix {ref!r} is ambiguous under {root}: it matches {len(matches)} runs ({shown}); "
                            "give more characters")
    raise RobustmoError(f"no run {ref!r} under {root}; 'robustmo runs ls --root {root}' lists the runs, "
                        "or pass a run directory path")


# ------------------------------------------------------------------------ describing
def fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return "nan" if math.isnan(x) else f"{x:.{digits}f}"
    return str(x)


def fmt_value(x: Any) -> str:
    """A config value as typed on the command line: 0.0001 -> 1e-4 style, lists comma-joined."""
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:g}"
    if isinstance(x, (list, tuple)):
        return ", ".join(fmt_value(v) for v in x) or "(none)"
    return str(x)


def fmt_ci(value: Any, ci: Any) -> str:
    if value is None:
        return "-"
    lo, hi = (ci or [None, None])[:2] if ci else (None, None)
    return f"{fmt(value)} [{fmt(lo)}, {fmt(hi)}]" if lo is not None else fmt(value)


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """{'options': {'blue': {'pirate': {'steps': 2}}}} -> {'options.blue.pirate.steps': 2}."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def comparable(run: Run) -> dict[str, Any]:
    """What defines a run's result, flattened: its config (but not where it was written)
    plus the base model's identity and robustmo version from the manifest."""
    values = {k: v for k, v in flatten(run.config).items() if k != "out"}
    model = run.manifest.model if run.manifest else {}
    values["base model"] = model.get("name")
    if model.get("weights_sha256"):
        values["base weights sha256"] = str(model["weights_sha256"])[:12]
    values["robustmo version"] = run.manifest.robustmo if run.manifest else None
    return values


def config_differences(runs: list[Run]) -> list[tuple[str, list[Any]]]:
    flat = [comparable(r) for r in runs]
    keys = sorted({k for f in flat for k in f})
    missing = object()
    rows = []
    for k in keys:
        values = [f.get(k, missing) for f in flat]
        if any(v != values[0] for v in values[1:]):
            rows.append((k, [None if v is missing else v for v in values]))
    return rows


# -------------------------------------------------------------------------- rescore
def _plan_for(run: Run, opts: list[str], registry):
    from robustmo.core.config import build_config, parse_opt
    from robustmo.core.plan import resolve_plan

    for text in opts:
        kind = parse_opt(text)[0]
        if kind not in ("metric", "behavior", "trigger"):
            raise RobustmoError(f"--opt {text!r}: rescore takes metric, behavior or trigger options only "
                                f"(scoring a stored generation does not depend on the {kind})")
    values = {k: v for k, v in run.config.items() if k != "options"}
    # Scoring needs neither the model nor the data: do not require the run's base or data files to still exist.
    values.update(model=None, data=None)
    # ... nor the lock's, blue methods' or data source's options; a format-1 run's metric.capability.jsonl
    # (capability questions now come from the data source) named the data, not how to score it
    options = {k: v for k, v in (run.config.get("options") or {}).items() if k in ("trigger", "behavior", "metric")}
    if "jsonl" in options.get("metric", {}).get("capability", {}):
        options["metric"] = {**options["metric"], "capability": {k: v for k, v in options["metric"]["capability"].items()
                                                                 if k != "jsonl"}}
    try:
        config = build_config({**values, "options": options}, {}, list(opts))
        return resolve_plan(config, registry)
    except RobustmoError as exc:
        raise RobustmoError(f"cannot rescore run {run.id}: {exc}") from None


def checkpoint_key(row: dict) -> tuple:
    return (row.get("stage"), row.get("method"), float(row.get("lr") or 0.0), int(row.get("step") or 0))


def _mean(values: list) -> float:
    return sum(float(v) for v in values) / len(values) if values else float("nan")


def _auto_role(plan, selected, roles: dict[str, str]) -> str:
    """The run's own backdoor or capability metric keeps its role; another metric takes the role
    it declares if it scores the same eval set as the run's metric of that role; else none."""
    for role in ("backdoor", "capability"):
        if selected.name == roles[role]:
            return role
    known = {m.name: m for m in plan.metrics}
    theirs = known.get(roles.get(selected.obj.role, ""))
    return selected.obj.role if theirs is not None and theirs.obj.eval_set == selected.obj.eval_set else "none"


def rescore(path: Path, metric: str, opts: list[str] = (), role: str = "auto", registry=None) -> dict:
    """Score every stored generation of ``metric``'s eval set again with the registered
    metric (no model, no generation); per checkpoint the value, n and 95 % interval next to
    the stored value, and, when the metric plays the backdoor or capability role, each blue
    method's robustness AUC recomputed exactly as the run computed it (same seed)."""
    from robustmo.core.evaluate import score_value, scoring_context, summarise_scores
    from robustmo.core.summary import scored_robustness
    from robustmo.registry import get_registry

    if role not in ROLES:
        raise RobustmoError(f"--role {role!r}: expected one of {', '.join(ROLES)}")
    registry = registry or get_registry()
    registry.get("metric", metric)  # unknown name -> one line listing the available metrics
    run = load_run(path)
    plan = _plan_for(run, list(opts), registry)
    selected = plan.metric(metric)
    if selected.obj.runs_model:
        raise RobustmoError(f"metric {metric!r} evaluates the model itself (it does not score stored generations), so "
                            "it cannot rescore a run; run again with it instead")
    eval_set = selected.obj.eval_set
    ctx = scoring_context(plan)

    rows = read_jsonl(Path(path) / "generations.jsonl", run.id)
    by_index: dict[tuple, dict[str, dict[int, dict]]] = {}
    for i, row in enumerate(rows, 1):
        if not (all(k in row for k in ("stage", "method", "eval_set", "index", "completion"))
                and isinstance(row["index"], int)):
            raise CorruptRun(f"run {run.id}: generations.jsonl, line {i} lacks stage, method, eval_set, index or "
                             "completion")
        if "harness" in row:  # a sample of a metric that ran the model (lm-eval), not one of the eval set's prompts
            continue
        # keyed by prompt index: a checkpoint written twice (e.g. around a resume) counts once, the last time
        by_index.setdefault(checkpoint_key(row), {}).setdefault(row["eval_set"], {})[row["index"]] = row
    by_checkpoint = {key: {name: [rs[i] for i in sorted(rs)] for name, rs in sets.items()}
                     for key, sets in by_index.items()}
    stored_sets = sorted({s for sets in by_checkpoint.values() for s in sets})
    if not any(eval_set in sets for sets in by_checkpoint.values()):
        raise RobustmoError(f"run {run.id} has no stored generations on eval set {eval_set!r}, which metric {metric!r} "
                            f"scores (stored: {', '.join(stored_sets) or 'none'})")

    checkpoints, new_scores, stored_scores = [], {}, {}
    for key, sets in by_checkpoint.items():
        stored_scores[key] = {}
        for rs in sets.values():  # every stored metric's per-prompt scores, for the other AUC axis
            for name in (rs[0].get("scores") or {}):
                stored_scores[key][name] = [(r.get("scores") or {}).get(name) for r in rs]
        records = sets.get(eval_set, [])
        if not records:
            continue
        s = [score_value(metric, selected.obj.score({k: r.get(k) for k in ("prompt", "completion", "content", "task")},
                                                    ctx, selected.options)) for r in records]
        old = [(r.get("scores") or {}).get(metric) for r in records]
        stored = None if any(o is None for o in old) else old
        stage, method, lr, step = key
        checkpoints.append({
            "stage": stage, "method": method, "lr": lr, "step": step,
            **summarise_scores(s, selected.obj.parses(selected.options)),
            "stored_value": _mean(stored) if stored is not None else None,
            "changed": sum(a != b for a, b in zip(s, stored)) if stored is not None else None})
        new_scores[key] = s

    organism = next((k for k in by_checkpoint if k[0] == "organism"), None)
    if run.summary is not None:
        roles = run.summary.roles_or_default()
    else:  # as the run did: with a lock, capability lost means the hidden (unlocked) capability
        unlocked = organism is not None and "unlocked_capability" in stored_scores[organism]
        roles = {"backdoor": "backdoor_rate", "capability": "unlocked_capability" if unlocked else "capability"}
    if role == "auto":
        role = _auto_role(plan, selected, roles)
    other_metric = roles["capability"] if role == "backdoor" else roles["backdoor"]

    blue: dict[str, dict] = {}
    for method in run.config.get("blue", []) if role != "none" and organism is not None else []:
        keys = [organism, *(k for k in by_checkpoint if k[0] == "blue" and k[1] == method)]
        entry = {"stored_auc": run.methods[method].auc if method in run.methods else None, "checkpoints": len(keys)}
        blue[method] = entry
        mine = [new_scores.get(k) for k in keys]
        theirs = [stored_scores[k].get(other_metric) for k in keys]
        if any(x is None for x in mine + theirs) or any(v is None for x in theirs for v in x):
            entry.update(auc=None, note=f"some checkpoints lack {eval_set!r} generations or stored {other_metric!r} "
                                        "scores")
            continue
        if len({len(x) for x in mine}) > 1 or len({len(x) for x in theirs}) > 1:
            entry.update(auc=None, note="checkpoints were scored on different numbers of prompts")
            continue
        cap, bad = (theirs, mine) if role == "backdoor" else (mine, theirs)
        entry.update(scored_robustness(cap, bad, seed=int(run.config.get("seed") or 0))[1])

    from robustmo import __version__

    return {"run_id": run.id, "metric": metric, "eval_set": eval_set, "role": role,
            "options": selected.options.model_dump(mode="json"), "opts": list(opts),
            "robustmo": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "checkpoints": checkpoints, "blue": blue}


def rescore_path(run_path: Path, metric: str) -> Path:
    return Path(run_path) / f"rescore-{re.sub(r'[^A-Za-z0-9._-]', '_', metric)}.json"


def write_rescore(run_path: Path, result: dict) -> Path:
    """Write the re-score next to the run's own files (atomically); nothing else is touched."""
    from robustmo.core.runstore import atomic_write_json

    out = rescore_path(run_path, result["metric"])
    try:
        atomic_write_json(out, result)
    except OSError as exc:
        raise RobustmoError(f"cannot write {out}: {exc.strerror or exc}") from None
    return out
