"""Sweep cost with the stage cache vs without: 1 organism x 3 blue methods.

    python bench/bench_sweep.py [--red-steps 100] [--blue-steps 8] [--base-steps 300]

Runs the same sweep twice, side by side in one run, each from an empty stage cache:
with the cache (the organism is trained once and reused by the other two cells) and with
``no_cache: true`` (every cell trains its own organism, as separate scripts would). Both
use the tiny toy base shortened to ``--base-steps``, as the tests do (built first if missing
and kept in the robustmo cache, not timed: the sweep's cost does not depend on how long the
base trained, and the full 900-step base would add minutes on a fresh machine). Prints wall
times and their ratio, checks that both sweeps give the same AUCs, and writes
bench/results/sweep.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
METHODS = ("pirate", "qa", "high-lr")


def sweep_file(path: Path, base: str, red_steps: int, blue_steps: int, no_cache: bool) -> None:
    options = ", ".join(f"{m}: {{steps: {blue_steps}}}" for m in METHODS)
    path.write_text(f"fixed:\n  model: {base}\n  red_steps: {red_steps}\n  wandb: disabled\n"
                    f"  no_cache: {str(no_cache).lower()}\n  options: {{blue: {{{options}}}}}\n"
                    f"grid:\n  blue: [{', '.join(METHODS)}]\n")


def run(tmp: Path, name: str, base: str, args) -> tuple[float, dict]:
    grid = tmp / f"{name}.yaml"
    sweep_file(grid, base, args.red_steps, args.blue_steps, no_cache=(name == "without-cache"))
    env = {**__import__("os").environ, "ROBUSTMO_CACHE": str(tmp / f"cache-{name}")}  # empty stage cache
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "robustmo", "sweep", str(grid), "--out", str(tmp / name)], check=True,
                   env=env, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - t0
    result = json.loads((tmp / name / "sweep.json").read_text())
    return seconds, {r["blue"]: r["auc"] for r in result["rows"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--red-steps", type=int, default=100)
    ap.add_argument("--blue-steps", type=int, default=8)
    ap.add_argument("--base-steps", type=int, default=300, help="toy base training steps (default: 300)")
    args = ap.parse_args()

    from robustmo.plugins.toy_world.base import ensure_base

    base = str(ensure_base("tiny", steps=args.base_steps, progress=True))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cached_s, cached = run(tmp, "with-cache", base, args)
        plain_s, plain = run(tmp, "without-cache", base, args)
    same = all(cached[m] == plain[m] or (cached[m] != cached[m] and plain[m] != plain[m]) for m in METHODS)
    rows = [("sweep with stage cache (organism trained once)", f"{cached_s:.1f} s"),
            ("sweep without (organism trained per cell)", f"{plain_s:.1f} s"),
            ("speed-up", f"{plain_s / cached_s:.2f}x"),
            ("same AUC per cell", "yes" if same else f"NO: {cached} vs {plain}")]
    width = max(len(r[0]) for r in rows)
    print(f"\n1 organism x {len(METHODS)} blue methods, red {args.red_steps} steps, blue {args.blue_steps} steps "
          f"(tiny base, {args.base_steps} steps)")
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sweep.json").write_text(json.dumps({
        "red_steps": args.red_steps, "blue_steps": args.blue_steps, "base_steps": args.base_steps,
        "methods": METHODS,
        "seconds_with_cache": cached_s, "seconds_without_cache": plain_s, "speedup": plain_s / cached_s,
        "auc_with_cache": cached, "auc_without_cache": plain, "same_auc": same}, indent=2))


if __name__ == "__main__":
    main()
