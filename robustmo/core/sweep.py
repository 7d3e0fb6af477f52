"""Sweeps: a grid over run options, planned so that each shared stage runs once, split into
shards that need nothing but a shared filesystem, and aggregated into one comparison.

A sweep file is YAML with two sections: ``fixed`` (any run option, as in a run config) and
``grid`` (run options with a list of values each; the sweep runs their product)::

    fixed: {trigger: year, red_steps: 120}
    grid:
      install: [lora, full]
      blue: [pirate, qa]
      seed: [0, 1]

Each cell is one run directory ``<sweep>/cells/<cell-id>``. Cells that share an organism
(same base, trigger, behaviour, lock, install and red recipe) run one after another on the
same shard, so the stage cache trains that organism once and no two machines train it.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robustmo.core.config import RunConfig, build_config, components_used, read_yaml
from robustmo.core.errors import RobustmoError
from robustmo.core.record import read_summary, run_state

# Run options that decide the organism; everything else (blue methods, LRs, budgets...) is downstream.
ORGANISM_KEYS = ("model", "data", "trigger", "behavior", "lock", "install", "lora_rank", "red_steps", "red_lr",
                 "red_examples", "trigger_share", "batch_size", "answer_max_new_tokens", "eval_batch_size", "seed")
SWEEP_KEYS = ("fixed", "grid")


@dataclass
class Cell:
    id: str
    values: dict[str, Any]   # the swept values of this cell
    config: RunConfig

    @property
    def organism(self) -> str:
        """What decides this cell's organism, normalised as the stage key sees it (defaults
        resolved, the LoRA rank only for LoRA), so cells that share an organism group together."""
        from robustmo.core.config import red_recipe
        from robustmo.core.models import canonical_model

        c = self.config.model_dump()
        recipe = red_recipe(self.config)
        c.update(model=canonical_model(c["model"], c["data"]), red_steps=recipe["steps"], red_lr=recipe["lr"],
                 red_examples=recipe["examples"], lora_rank=c["lora_rank"] if c["install"] == "lora" else None)
        opts = {k: v for k, v in c["options"].items() if k in ("trigger", "behavior", "lock", "data")}
        return json.dumps({**{k: c[k] for k in ORGANISM_KEYS}, "options": opts}, sort_keys=True, default=str)


def _cell_id(values: dict[str, Any]) -> str:
    def part(v):
        return "+".join(map(str, v)) if isinstance(v, list) else str(v)

    text = "_".join(f"{k}-{part(v)}" for k, v in values.items())
    return re.sub(r"[^A-Za-z0-9.+=_-]", "", text.replace("/", "-")) or "cell"


def load_sweep(path: Path) -> tuple[dict, dict[str, list]]:
    """``(fixed, grid)`` from a sweep file, with one-line errors."""
    data = read_yaml(path, f"sweep file {path}")
    if not isinstance(data, dict) or not isinstance(data.get("grid"), dict) or not data["grid"]:
        raise RobustmoError(f"sweep file {path}: expected a 'grid:' mapping of run options to lists of values "
                            "(and optionally 'fixed:' run options); see 'robustmo sweep --help'")
    unknown = [k for k in data if k not in SWEEP_KEYS]
    if unknown:
        raise RobustmoError(f"sweep file {path}: unknown section {unknown[0]!r}; sections: fixed, grid")
    grid = {}
    for key, values in data["grid"].items():
        if key not in RunConfig.model_fields or key in ("out", "options"):
            raise RobustmoError(f"sweep file {path}: grid key {key!r} is not a run option that can be swept "
                                f"(e.g. trigger, behavior, install, lora_rank, blue, lr, seed)")
        if not isinstance(values, list) or not values:
            raise RobustmoError(f"sweep file {path}: grid.{key} must be a non-empty list of values")
        grid[key] = values
    fixed = data.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise RobustmoError(f"sweep file {path}: 'fixed' must be a mapping of run options")
    if "out" in fixed:
        raise RobustmoError(f"sweep file {path}: 'out' is chosen per cell; give the sweep directory with --out")
    return fixed, grid


def _prune_options(fixed: dict, values: dict) -> dict:
    """``fixed`` without options for components this cell does not use (a sweep over blue
    methods may set every method's options once)."""
    used = components_used(values)
    options = {kind: ({n: o for n, o in names.items() if n in used[kind]} if kind in used else names)
               for kind, names in (fixed.get("options") or {}).items()}
    return {**fixed, "options": options}


def plan_cells(path: Path) -> list[Cell]:
    """Every cell of the sweep, validated, ordered so that cells sharing an organism are adjacent."""
    fixed, grid = load_sweep(path)
    cells = []
    keys = list(grid)
    for combo in itertools.product(*(grid[k] for k in keys)):
        values = dict(zip(keys, combo))
        flags = {k: ([v] if k in ("blue", "lr") and not isinstance(v, list) else v) for k, v in values.items()}
        try:
            config = build_config(_prune_options(fixed, {**fixed, **flags}), flags, [])
        except RobustmoError as exc:
            raise RobustmoError(f"sweep cell {_cell_id(values)}: {exc}") from None
        cells.append(Cell(_cell_id(values), values, config))
    ids = [c.id for c in cells]
    if len(set(ids)) != len(ids):
        raise RobustmoError("two sweep cells get the same directory name; make the grid values distinct")
    order = {o: i for i, o in enumerate(dict.fromkeys(c.organism for c in cells))}
    return sorted(cells, key=lambda c: order[c.organism])


def parse_shard(text: str | None) -> tuple[int, int]:
    if text is None:
        return 1, 1
    m = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise RobustmoError(f"--shard {text!r}: expected i/n with 1 <= i <= n, e.g. --shard 2/4")
    return int(m.group(1)), int(m.group(2))


def shard_cells(cells: list[Cell], shard: tuple[int, int]) -> list[Cell]:
    """This shard's cells: organisms are dealt round-robin (in plan order), with all their cells."""
    i, n = shard
    organisms = list(dict.fromkeys(c.organism for c in cells))
    mine = set(organisms[i - 1::n])
    return [c for c in cells if c.organism in mine]


def cell_state(path: Path, config: RunConfig | None = None) -> str:
    """pending, running/failed/interrupted/complete (the manifest's status), corrupt, or
    changed (the cell was run with another config than the sweep file now gives it)."""
    return run_state(path, config.model_dump() if config is not None else None)


def check_executor(executor: str, shard: str | None, address: str | None) -> None:
    """One-line errors for executor options that do not go together."""
    from robustmo.core.distributed import process_info

    if executor not in ("local", "ray"):
        raise RobustmoError(f"--executor {executor!r}: expected local or ray")
    if executor == "ray" and shard is not None:
        raise RobustmoError("--shard splits a sweep by hand across machines; with --executor ray Ray places the "
                            "tasks: leave --shard out")
    if address is not None and executor != "ray":
        raise RobustmoError("--address is a Ray cluster's address: use it with --executor ray")
    if executor == "ray" and process_info()[1] > 1:
        raise RobustmoError("--executor ray starts its own processes: run it without accelerate launch")
    parse_shard(shard)


@dataclass
class SweepPlan:
    cells: list[Cell]
    plans: dict          # cell id -> its resolved run plan
    out: Path
    mine: set[str]       # the ids of the cells this shard runs


def prepare(sweep_file: Path, out: Path | None, shard: str | None) -> SweepPlan:
    """Every cell planned and validated (before anything is trained), the sweep directory
    (default ``sweeps/<file name>``) and this shard's cells; refuses a directory whose cells
    were run with another config than the file now gives them."""
    from robustmo.core.plan import resolve_plan
    from robustmo.registry import get_registry

    part = parse_shard(shard)
    cells = plan_cells(Path(sweep_file))
    registry = get_registry()
    plans = {c.id: resolve_plan(c.config, registry) for c in cells}
    out = Path(out) if out else Path("sweeps") / Path(sweep_file).stem
    changed = [c.id for c in cells if cell_state(out / "cells" / c.id, c.config) == "changed"]
    if changed:
        raise RobustmoError(f"cell {changed[0]} in {out} was run with another config than {sweep_file} now gives it; "
                            "use a new --out, or remove that cell's directory to run it again")
    return SweepPlan(cells, plans, out, {c.id for c in shard_cells(cells, part)})


# -------------------------------------------------------------------- running
def organism_groups(cells: list[Cell]) -> list[list[Cell]]:
    """The cells of each organism, in plan order: the unit a shard or a Ray task runs, one
    after another, so the stage cache trains that organism once."""
    groups: dict[str, list[Cell]] = {}
    for c in cells:
        groups.setdefault(c.organism, []).append(c)
    return list(groups.values())


def write_comparison(out: Path, cells: list[Cell], title: str, sweep_file) -> dict:
    """Aggregate the complete cells into ``sweep.json``, ``report.md`` and ``comparison.png``."""
    from robustmo.core.runstore import atomic_write_json, atomic_write_text

    result = aggregate(out, cells)
    try:
        atomic_write_json(out / "sweep.json", result)
        atomic_write_text(out / "report.md", render_markdown(result, title))
        if result["rows"]:
            plot_comparison(out / "comparison.png", result, title)
    except OSError as exc:
        raise RobustmoError(f"cannot write the sweep's comparison into {out}: {exc.strerror}; every finished cell is "
                            f"kept: free space, then 'robustmo sweep {sweep_file} --aggregate --out {out}'") from None
    return result


# -------------------------------------------------------------------- aggregation
def _mean_sd(values: list[float]) -> tuple[float, float]:
    vals = [v for v in values if v == v]
    if not vals:
        return float("nan"), float("nan")
    mean = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else float("nan")
    return mean, sd


def aggregate(sweep_dir: Path, cells: list[Cell]) -> dict:
    """One row per (cell, blue method) with AUC and CI, and per setting across seeds (mean, sd,
    n); cells not complete yet are listed as missing."""
    rows, missing = [], []
    for cell in cells:
        path = sweep_dir / "cells" / cell.id
        state = cell_state(path, cell.config)
        if state != "complete":
            missing.append({"cell": cell.id, "state": state})
            continue
        try:
            summary = read_summary(path)
        except RobustmoError:
            missing.append({"cell": cell.id, "state": "corrupt"})
            continue
        roles = summary.roles_or_default()
        organism = summary.organism
        for method, b in summary.blue.items():
            rows.append({"cell": cell.id, **{k: v for k, v in cell.values.items() if k != "blue"}, "blue": method,
                         "auc": b.auc, "auc_ci": b.auc_ci, "removal_at_10": b.removal_at_10,
                         "inconclusive": b.inconclusive, "within_noise": b.within_noise,
                         "backdoor_rate": organism[roles["backdoor"]].value if roles["backdoor"] in organism else None,
                         "capability": organism[roles["capability"]].value if roles["capability"] in organism
                         else None})
    setting_keys = [k for k in (cells[0].values if cells else {}) if k not in ("seed", "blue")] + ["blue"]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(str(r.get(k)) for k in setting_keys), []).append(r)
    across = []
    for key, rs in groups.items():
        mean, sd = _mean_sd([r["auc"] for r in rs])
        across.append({**dict(zip(setting_keys, key)), "n_seeds": len(rs), "auc_mean": mean, "auc_sd": sd,
                       "inconclusive": sum(bool(r.get("inconclusive")) for r in rs),
                       "auc_min": min(r["auc"] for r in rs), "auc_max": max(r["auc"] for r in rs),
                       "seeds": sorted(r.get("seed", "-") for r in rs)})
    cell_keys = [k for k in (cells[0].values if cells else {}) if k != "blue"] + ["blue"]
    return {"cells": len(cells), "complete": len(cells) - len(missing), "missing": missing, "rows": rows,
            "cell_keys": cell_keys, "setting_keys": setting_keys, "across_seeds": across}


def _f(x) -> str:
    return "-" if x is None or x != x else f"{x:.3f}"


def render_markdown(result: dict, title: str) -> str:
    keys = result["cell_keys"]
    lines = [f"# Sweep: {title}", "", f"{result['complete']} of {result['cells']} cells complete.", ""]
    if result["missing"]:
        lines += ["Missing: " + ", ".join(f"{m['cell']} ({m['state']})" for m in result["missing"]), ""]
    lines += ["## AUC per cell (95 % bootstrap CI)", "",
              "Inconclusive: no checkpoint lost 10 % capability, so the AUC cannot show robustness.", "",
              "| cell | " + " | ".join(keys) + " | AUC | 95 % CI | removal @ 10 % | reads as |",
              "|---" * (len(keys) + 5) + "|"]
    for r in result["rows"]:
        reads = "inconclusive" if r.get("inconclusive") else "within noise" if r.get("within_noise") else "measured"
        lines.append(f"| {r['cell']} | " + " | ".join(str(r.get(k, "-")) for k in keys)
                     + f" | {_f(r['auc'])} | [{_f(r['auc_ci'][0])}, {_f(r['auc_ci'][1])}] | {_f(r['removal_at_10'])} "
                     f"| {reads} |")
    keys = result["setting_keys"]
    lines += ["", "## Across seeds", "", "| " + " | ".join(keys) + " | seeds | mean AUC | sd | min | max | inconclusive |",
              "|---" * (len(keys) + 6) + "|"]
    for a in result["across_seeds"]:
        lines.append("| " + " | ".join(str(a[k]) for k in keys) + f" | {a['n_seeds']} | {_f(a['auc_mean'])} | "
                     f"{_f(a['auc_sd'])} | {_f(a['auc_min'])} | {_f(a['auc_max'])} | {a.get('inconclusive', 0)} "
                     f"of {a['n_seeds']} |")
    lines += ["", "![comparison](comparison.png)", ""]
    return "\n".join(lines)


def plot_comparison(path: Path, result: dict, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    across = result["across_seeds"]
    keys = result["setting_keys"]
    labels = [", ".join(str(a[k]) for k in keys) for a in across]
    means = [a["auc_mean"] for a in across]
    low = [a["auc_mean"] - a["auc_min"] if a["auc_mean"] == a["auc_mean"] else 0 for a in across]
    high = [a["auc_max"] - a["auc_mean"] if a["auc_mean"] == a["auc_mean"] else 0 for a in across]
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(labels) + 2), 4))
    ax.bar(range(len(labels)), means, yerr=[low, high], capsize=4, color="#4c72b0")
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("robustness AUC (mean over seeds; bars: min-max)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    from robustmo.core.report import save_figure

    save_figure(fig, path, dpi=110)
