"""The embedded toy base against issue 3's targets, and batched vs one-at-a-time generation.

    python bench/bench_base.py [--preset tiny] [--skip-rebuild]

Builds the preset twice into fresh temporary caches (build time, held-out capability
accuracy, bit-identical weights for the same seed), times loading it from cache, and
times batched greedy generation against one-prompt-at-a-time `model.generate` on the
same 200 held-out prompts (the ratio is the speed-up). Prints a table and writes
bench/results/base.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from bench_generate import one_at_a_time  # the same one-prompt-at-a-time baseline

RESULTS = Path(__file__).parent / "results"


def build(preset: str, cache: str) -> tuple[float, dict]:
    os.environ["ROBUSTMO_CACHE"] = cache
    from robustmo.plugins.toy_world.base import base_info, ensure_base

    t0 = time.perf_counter()
    ensure_base(preset, progress=True)
    return time.perf_counter() - t0, base_info(preset)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--skip-rebuild", action="store_true", help="build once (no bit-identity check)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as c1, tempfile.TemporaryDirectory() as c2:
        seconds, info = build(args.preset, c1)
        hash2 = None
        if not args.skip_rebuild:
            hash2 = build(args.preset, c2)[1]["weights_sha256"]
        os.environ["ROBUSTMO_CACHE"] = c1
        from robustmo.core.generation import generate
        from robustmo.plugins.toy_world.base import load_base
        from robustmo.plugins.toy_world.world import ToyWorld

        t0 = time.perf_counter()
        model, tokenizer = load_base(args.preset, progress=False)
        load_seconds = time.perf_counter() - t0

        prompts = [e.messages(with_answer=False) for e in ToyWorld(0).eval_capability_set(200)]
        t0 = time.perf_counter()
        batched = generate(model, tokenizer, prompts, max_new_tokens=24)
        batched_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        single = one_at_a_time(model, tokenizer, prompts, max_new_tokens=24)
        single_s = time.perf_counter() - t0
        agree = sum(a.strip() == b.strip() for a, b in zip(batched, single)) / len(prompts)

    rows = [
        ("build seconds", round(seconds, 1), "<= 180"),
        ("held-out capability accuracy (greedy, exact match)", info["capability_accuracy"], ">= 0.90"),
        ("instruction accuracy", info["instruction_accuracy"], ""),
        ("load from cache seconds", round(load_seconds, 2), "<= 2"),
        ("same seed, bit-identical weights", None if hash2 is None else hash2 == info["weights_sha256"], "True"),
        ("generation: one-at-a-time seconds (200 prompts)", round(single_s, 2), "baseline"),
        ("generation: batched seconds (200 prompts)", round(batched_s, 2), ""),
        ("generation speed-up (one-at-a-time / batched)", round(single_s / batched_s, 1), "> 1"),
        ("batched and one-at-a-time outputs agree", round(agree, 3), ""),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value, target in rows:
        print(f"{name:<{width}}  {str(value):>40}  {target}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "base.json").write_text(json.dumps({r[0]: r[1] for r in rows} | {"manifest": info}, indent=2,
                                                  default=str))
    print(f"wrote {RESULTS / 'base.json'}")


if __name__ == "__main__":
    main()
