"""The password-locked toy organism: capability gap with and without the password, and how
much of it untargeted blue training recovers, for lock fractions 0.5 (50/50) and 0.17 (17/83).

    python bench/bench_lock.py [--blue pirate] [--fraction 0.5 --fraction 0.17] [-- extra run flags]

Each fraction is one real `robustmo run --lock password` on the default toy base (built
first if needed). Prints the gap (target: >= 0.50) and the recovery per step, and writes
bench/results/lock.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--blue", default="pirate")
    ap.add_argument("--fraction", type=float, action="append", default=None)
    ap.add_argument("extra", nargs="*")
    args = ap.parse_args()
    from robustmo.plugins.toy_world.base import ensure_base

    ensure_base("tiny", progress=True)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for fraction in args.fraction or [0.5, 0.17]:
            run_dir = Path(tmp) / f"lock-{fraction}"
            subprocess.run([sys.executable, "-m", "robustmo", "run", "--lock", "password", "--blue", args.blue,
                            "--opt", f"lock.password.lock_fraction={fraction}", "--out", str(run_dir),
                            "--wandb", "disabled", *args.extra], check=True, stdout=subprocess.DEVNULL)
            s = json.loads((run_dir / "summary.json").read_text())
            o = s["organism"]
            gap = o["unlocked_capability"]["value"] - o["capability"]["value"]
            b = s["blue"][args.blue]
            out[fraction] = {"locked": o["capability"]["value"], "unlocked": o["unlocked_capability"]["value"],
                             "gap": gap, "backdoor": o["backdoor_rate"]["value"], "auc": b["auc"],
                             "elicitation": b["elicitation"]}
            print(f"\nlock_fraction {fraction}: capability without password {o['capability']['value']:.2f}, with "
                  f"{o['unlocked_capability']['value']:.2f}, gap {gap:.2f} (target >= 0.50); {args.blue} AUC {b['auc']:.3f}")
            print("  step  lr       without  with   recovered")
            for e in b["elicitation"]:
                print(f"  {e['step']:>4}  {e['lr']:<7.2g}  {e['locked']:.2f}     {e['unlocked']:.2f}   {e['recovered']:+.2f}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "lock.json").write_text(json.dumps(out, indent=2))
    print(f"\nwrote {RESULTS / 'lock.json'}")


if __name__ == "__main__":
    main()
