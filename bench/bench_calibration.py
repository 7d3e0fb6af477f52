"""robustmo's statistics against a known truth: the calibration table (issue 30).

    python bench/bench_calibration.py [--replicates N] [--replicates-seeds N] [--lr-replicates N]

Every scenario of ``robustmo.core.calibration`` (a true trade-off, scores drawn from it for the
audit's default battery: 4 methods, 100 prompts and 100 capability questions, the default
checkpoint grid 1, 2, 4, ..., 64, escalation and suppression check as the preset sets them) at
1 seed and at 3 seeds, through robustmo's own summary, audit verdicts and LR check; prints as
markdown tables the truth, the mean estimate and its bias, the coverage of every nominal 95 %
interval and how often each verdict is given, then the LR check's scenarios and (1 seed) the
cross-fitted candidate beside today's estimator. Writes bench/results/calibration.json.

The defaults give every coverage to about +-3 % (1.96 standard errors at 95 % coverage over
the methods' intervals: 200 x 4 at 1 seed, 60 x 4 at 3 seeds); numpy only, one process.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time

from _common import write_json

from robustmo.core.calibration import LR_SCENARIOS, SCENARIOS, calibrate, calibrate_lr


def markdown(headers: list[str], rows: list[list]) -> str:
    return "\n".join(["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers),
                      *("| " + " | ".join(str(c) for c in row) + " |" for row in rows)])


def num(v: float, digits: int = 3) -> str:
    return "–" if v is None or v != v else f"{v:.{digits}f}"


def signed(v: float) -> str:
    return "–" if v != v else f"{v:+.3f}"


def shares(d: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in sorted(d.items(), key=lambda kv: -kv[1])) or "–"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--replicates", type=int, default=200, help="audits per scenario at 1 seed (default 200)")
    ap.add_argument("--replicates-seeds", type=int, default=60, help="audits per scenario at 3 seeds (default 60)")
    ap.add_argument("--lr-replicates", type=int, default=1000, help="LR checks per LR scenario (default 1000)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    started = time.perf_counter()
    results = []
    for seeds, replicates in ((1, args.replicates), (3, args.replicates_seeds)):
        for sc in SCENARIOS:
            if sc.shared_prompts and seeds == 1:
                continue  # one seed: the same as its scenario without shared prompts
            r = calibrate(sc, replicates, seeds, args.seed, candidate=seeds == 1)
            results.append(r)
            print(f"  {sc.name}, {seeds} seed{'s' if seeds > 1 else ''}: {replicates} audits in {r.seconds:.0f} s",
                  flush=True)
    lr = [calibrate_lr(sc, args.lr_replicates, args.seed) for sc in LR_SCENARIOS]
    wall = time.perf_counter() - started

    def cov(r, key: str) -> str:
        return num(r.coverage.get(key, math.nan), 2)

    print("\n### Estimates and intervals (today's estimators; truth as defined today, x not clipped)\n")
    print(markdown(
        ["scenario", "seeds", "audits", "true AUC", "mean AUC", "bias", "true removal@10", "mean removal@10", "bias",
         "AUC CI covers", "removal CI covers", "returned CI covers"],
        [[r.scenario, r.seeds, r.replicates, num(r.truth["auc"]), num(r.mean["auc"]), signed(r.bias["auc"]),
          num(r.truth["removal_at_10"]), num(r.mean["removal_at_10"]), signed(r.bias["removal_at_10"]),
          cov(r, "auc_ci"), cov(r, "removal_at_10_ci"), cov(r, "returned_ci")] for r in results]))
    print("\n### The seeds' intervals (3 seeds: the hierarchical bootstrap, the t interval, and their union "
          "that is reported)\n")
    print(markdown(["scenario", "AUC: bootstrap", "t", "union", "removal@10: bootstrap", "t", "union"],
                   [[r.scenario, cov(r, "auc_ci_bootstrap"), cov(r, "auc_ci_t"), cov(r, "auc_ci"),
                     cov(r, "removal_at_10_ci_bootstrap"), cov(r, "removal_at_10_ci_t"), cov(r, "removal_at_10_ci")]
                    for r in results if r.seeds > 1]))
    print("\n### Verdicts (share of methods, of audits, of suppression checks)\n")
    print(markdown(["scenario", "seeds", "expected", "method verdict", "audit verdict", "inconclusive flag",
                    "within noise", "escalated", "suppression check"],
                   [[r.scenario, r.seeds, next(s.expected for s in SCENARIOS if s.name == r.scenario),
                     shares(r.verdicts["method"]), shares(r.verdicts["audit"]), num(r.flags["inconclusive"], 2),
                     num(r.flags["within_noise"], 2), num(r.flags["escalated"], 2),
                     shares(r.verdicts["suppression"])] for r in results]))
    print("\n### The LR check (the audit's: 1 seed, until removed, factor 6)\n")
    print(markdown(["scenario", "checks", "truly LR-post", "verdict", "beyond 6 N S"],
                   [[r.scenario, r.replicates, "yes" if r.truth["lr_post"] else "no", shares(r.verdicts["lr_check"]),
                     shares(r.verdicts["beyond_factor"])] for r in lr]))
    print("\n### CANDIDATE (not used by runs): cross-fitted, x clipped at 1, against the clipped truth (1 seed)\n")
    print(markdown(
        ["scenario", "clipped true AUC", "today: bias", "covers", "candidate: bias", "covers",
         "clipped true removal@10", "today: bias", "covers", "candidate: bias", "covers"],
        [[r.scenario, num(r.truth["auc_clipped"]), signed(r.mean["auc"] - r.truth["auc_clipped"]),
          num(_cover_clipped(r, "auc"), 2), signed(r.bias["auc_crossfit"]), cov(r, "auc_crossfit_ci"),
          num(r.truth["removal_at_10_clipped"]), signed(r.mean["removal_at_10"] - r.truth["removal_at_10_clipped"]),
          num(_cover_clipped(r, "removal_at_10"), 2), signed(r.bias["removal_at_10_crossfit"]),
          cov(r, "removal_at_10_crossfit_ci")] for r in results if r.seeds == 1]))
    print(f"\n{len(results)} scenario x seeds cells ({args.replicates} audits at 1 seed, {args.replicates_seeds} at 3 "
          f"seeds, 4 methods each), {len(lr)} LR scenarios x {args.lr_replicates} checks: {wall / 60:.1f} min")
    write_json("calibration.json", {"wall_seconds": round(wall, 1), "args": vars(args),
                                    "results": [dataclasses.asdict(r) for r in (*results, *lr)]})


def _cover_clipped(r, name: str) -> float:
    """Today's interval against the clipped truth: the same as against the truth unless x > 1 is true."""
    return r.coverage[f"{name}_ci"] if r.truth[f"{name}_clipped"] == r.truth[name] else math.nan


if __name__ == "__main__":
    main()
