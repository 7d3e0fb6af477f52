"""Run history: find run directories, read them with one-line errors, and re-score their
stored generations with a metric (``robustmo runs`` and ``robustmo rescore``).

A run directory is what ``robustmo run`` writes (see runstore.py and pipeline.execute):
``config.json`` first, then ``manifest.json`` (its ``status`` is running, complete,
failed or interrupted), and ``summary.json`` once the run is complete. Nothing here
writes to a run directory except ``rescore-<metric>.json``, the re-score's own output.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robustmo.core.errors import RobustmoError

DEFAULT_ROOT = Path("runs")
RUN_FILES = ("config.json", "manifest.json", "summary.json", "metrics.jsonl")
ROLES = ("auto", "backdoor", "capability", "none")


class CorruptRun(RobustmoError):
    """A run directory whose files cannot be read; ``runs ls`` lists it as corrupt."""

    HINT = "the run directory is damaged: restore the file, or delete the directory and run again"


@dataclass
class Run:
    path: Path
    status: str                      # running | complete | failed | interrupted | corrupt
    config: dict = field(default_factory=dict)
    manifest: dict = field(default_factory=dict)
    summary: dict | None = None
    problem: str | None = None       # why the run is corrupt

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def started(self) -> str:
        return str(self.manifest.get("started") or "")

    def organism_metrics(self) -> tuple[dict, dict]:
        """(base, organism) metrics: from summary.json, else from metrics.jsonl (an unfinished run)."""
        if self.summary:
            return self.summary.get("base") or {}, self.summary.get("organism") or {}
        found = {}
        for row in _jsonl(self.path / "metrics.jsonl", self.id) if (self.path / "metrics.jsonl").exists() else []:
            if row.get("method") in ("base", "organism"):
                found[row["method"]] = row.get("metrics") or {}
        return found.get("base", {}), found.get("organism", {})


# --------------------------------------------------------------------------- reading
def is_run_dir(path: Path) -> bool:
    try:
        return path.is_dir() and any((path / name).exists() for name in RUN_FILES)
    except OSError:  # unreadable: let load_run say why, rather than skip it silently
        return True


def _json(path: Path, run_id: str) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CorruptRun(f"run {run_id}: {path.name} is missing") from None
    except json.JSONDecodeError as exc:
        raise CorruptRun(f"run {run_id}: {path.name} is not valid JSON (line {exc.lineno}, column {exc.colno})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CorruptRun(f"run {run_id}: cannot read {path.name}: {getattr(exc, 'strerror', None) or exc}") from None


def _jsonl(path: Path, run_id: str) -> list[dict]:
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise CorruptRun(f"run {run_id}: {path.name} is missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CorruptRun(f"run {run_id}: cannot read {path.name}: {getattr(exc, 'strerror', None) or exc}") from None
    rows = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if not isinstance(row, dict):
            raise CorruptRun(f"run {run_id}: {path.name}, line {i} is not a JSON object")
        rows.append(row)
    return rows


def _check(ok: bool, run_id: str, what: str) -> None:
    if not ok:
        raise CorruptRun(f"run {run_id}: {what}")


def load_run(path: Path) -> Run:
    """Read one run directory; raise CorruptRun (one line: which file, what is wrong) if it cannot be read."""
    path = Path(path)
    rid = path.name
    if not is_run_dir(path):
        raise RobustmoError(f"{path} is not a run directory (it holds none of {', '.join(RUN_FILES)}); pass a run "
                            "directory or a run id from 'robustmo runs ls'")
    config = _json(path / "config.json", rid)
    _check(isinstance(config, dict) and all(isinstance(config.get(k), str) for k in ("trigger", "behavior", "install"))
           and isinstance(config.get("blue"), list) and all(isinstance(m, str) for m in config["blue"]), rid,
           "config.json lacks trigger, behavior, install or blue")
    manifest = _json(path / "manifest.json", rid)
    _check(isinstance(manifest, dict) and isinstance(manifest.get("status"), str), rid,
           "manifest.json has no status")
    summary = None
    if (path / "summary.json").exists() or manifest["status"] == "complete":
        summary = _json(path / "summary.json", rid)
        _check(isinstance(summary, dict) and isinstance(summary.get("blue"), dict)
               and all(isinstance(b, dict) and "auc" in b and len(b.get("auc_ci") or []) == 2
                       for b in summary["blue"].values()), rid, "summary.json has no per-method AUC")
    return Run(path, manifest["status"], config, manifest, summary)


def scan(root: Path) -> list[Run]:
    """Every run directory directly under ``root`` (or ``root`` itself if it is one), oldest
    first; an unreadable one comes back with status ``corrupt`` and its problem."""
    root = Path(root)
    try:
        candidates = [root] if is_run_dir(root) else sorted(p for p in root.iterdir() if is_run_dir(p))
    except OSError as exc:
        raise RobustmoError(f"cannot list {root}: {exc.strerror or exc}") from None
    runs = []
    for path in candidates:
        try:
            runs.append(load_run(path))
        except CorruptRun as exc:
            runs.append(Run(path, "corrupt", problem=str(exc)))
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
def install_text(cfg: dict) -> str:
    """Install method with LoRA rank (and mode when merged), e.g. 'lora r64' or 'full'."""
    if cfg.get("install") == "lora":
        return f"lora r{cfg.get('lora_rank')}" + (" merged" if cfg.get("lora_mode") == "merged" else "")
    return str(cfg.get("install", "-"))


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
    model = run.manifest.get("model") or {}
    values["base model"] = model.get("name")
    if model.get("weights_sha256"):
        values["base weights sha256"] = str(model["weights_sha256"])[:12]
    values["robustmo version"] = run.manifest.get("robustmo")
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
    from robustmo.core.config import build_config, parse_opt, resolve_plan

    for text in opts:
        kind = parse_opt(text)[0]
        if kind not in ("metric", "behavior", "trigger"):
            raise RobustmoError(f"--opt {text!r}: rescore takes metric, behavior or trigger options only "
                                f"(scoring a stored generation does not depend on the {kind})")
    values = {k: v for k, v in run.config.items() if k != "options"}
    values["model"] = None  # scoring needs no model: do not require the run's base to still exist
    try:
        config = build_config({**values, "options": run.config.get("options") or {}}, {}, list(opts))
        return resolve_plan(config, registry)
    except RobustmoError as exc:
        raise RobustmoError(f"cannot rescore run {run.id}: {exc}") from None


def checkpoint_key(row: dict) -> tuple:
    return (row.get("stage"), row.get("method"), float(row.get("lr") or 0.0), int(row.get("step") or 0))


def rescore(path: Path, metric: str, opts: list[str] = (), role: str = "auto", registry=None) -> dict:
    """Score every stored generation of ``metric``'s eval set again with the registered
    metric (no model, no generation); per checkpoint the value, n and 95 % Wilson CI next to
    the stored value, and, when the metric plays the backdoor or capability role, each blue
    method's robustness AUC recomputed exactly as the run computed it (same seed)."""
    import numpy as np

    from robustmo.core.pipeline import eval_context, undefined_robustness
    from robustmo.core.robustness import robustness, wilson_interval
    from robustmo.registry import get_registry

    if role not in ROLES:
        raise RobustmoError(f"--role {role!r}: expected one of {', '.join(ROLES)}")
    registry = registry or get_registry()
    registry.get("metric", metric)  # unknown name -> one line listing the available metrics
    run = load_run(path)
    plan = _plan_for(run, list(opts), registry)
    selected = next(m for m in plan.metrics if m.name == metric)
    eval_set = selected.obj.eval_set
    ctx = eval_context(plan)

    rows = _jsonl(path / "generations.jsonl", run.id)
    by_index: dict[tuple, dict[str, dict[int, dict]]] = {}
    for i, row in enumerate(rows, 1):
        _check(all(k in row for k in ("stage", "method", "eval_set", "index", "completion"))
               and isinstance(row["index"], int), run.id,
               f"generations.jsonl, line {i} lacks stage, method, eval_set, index or completion")
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
                stored_scores[key][name] = [bool((r.get("scores") or {}).get(name)) for r in rs]
        records = sets.get(eval_set, [])
        if not records:
            continue
        s = [bool(selected.obj.score({k: r.get(k) for k in ("prompt", "completion", "content", "task")}, ctx,
                                     selected.options)) for r in records]
        old = [(r.get("scores") or {}).get(metric) for r in records]
        stored = None if any(o is None for o in old) else [bool(o) for o in old]
        lo, hi = wilson_interval(sum(s), len(s))
        stage, method, lr, step = key
        checkpoints.append({
            "stage": stage, "method": method, "lr": lr, "step": step, "value": sum(s) / len(s), "n": len(s),
            "ci": [lo, hi], "stored_value": sum(stored) / len(stored) if stored is not None else None,
            "changed": sum(a != b for a, b in zip(s, stored)) if stored is not None else None})
        new_scores[key] = s

    organism = next((k for k in by_checkpoint if k[0] == "organism"), None)
    # As pipeline.summarise: with a lock, capability lost means the hidden (unlocked) capability.
    cap_metric = ("unlocked_capability" if organism and "unlocked_capability" in stored_scores[organism]
                  else "capability")
    if role == "auto":
        role = "backdoor" if metric == "backdoor_rate" else "capability" if metric == cap_metric else "none"
    other_metric = cap_metric if role == "backdoor" else "backdoor_rate"

    blue: dict[str, dict] = {}
    for method in run.config.get("blue", []) if role != "none" and organism is not None else []:
        keys = [organism, *(k for k in by_checkpoint if k[0] == "blue" and k[1] == method)]
        entry = {"stored_auc": ((run.summary or {}).get("blue") or {}).get(method, {}).get("auc"),
                 "checkpoints": len(keys)}
        blue[method] = entry
        mine = [new_scores.get(k) for k in keys]
        theirs = [stored_scores[k].get(other_metric) for k in keys]
        if any(x is None for x in mine + theirs):
            entry.update(auc=None, note=f"some checkpoints lack {eval_set!r} generations or stored {other_metric!r} "
                                        "scores")
            continue
        if len({len(x) for x in mine}) > 1 or len({len(x) for x in theirs}) > 1:
            entry.update(auc=None, note="checkpoints were scored on different numbers of prompts")
            continue
        cap, bad = (theirs, mine) if role == "backdoor" else (mine, theirs)
        try:
            r = robustness(np.array(cap, dtype=float), np.array(bad, dtype=float), seed=int(run.config.get("seed") or 0))
            entry.update(auc=r.auc, auc_ci=list(r.auc_ci), removal_at_10=r.removal_at_10,
                         removal_at_10_ci=list(r.removal_at_10_ci))
        except ValueError:  # as in pipeline.summarise: nothing to remove before blue training
            entry.update(undefined_robustness())

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
