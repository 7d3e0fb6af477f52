"""Training throughput and memory per precision, with and without gradient checkpointing.

    python bench/bench_precision.py [--preset tiny|small] [--mode lora|full] [--steps N]
                                    [--batch-size B] [--grad-accumulation N]

Four settings of robustmo's own loop (`robustmo.core.training.Training`, as red and blue
training run it): fp32 and bf16 (`--precision`), each with and without
`--grad-checkpointing`. Each runs in its own process, forked from a parent that has imported
torch, transformers and peft but run no tensor op, so its peak memory is its own. Same model
shape and initial weights (seeded random init of the toy preset), the same toy-world chats,
batch size, steps and seed.

Measured per setting:
- tokens/s: non-padding tokens (prompt + completion) of the steps after the first 3, over
  their wall time (steady state), and the ratio to fp32 without checkpointing;
- saved for backward: the largest step's bytes of tensors autograd keeps for the backward
  pass (activations; parameters themselves not counted), seen through
  `torch.autograd.graph.saved_tensors_hooks`. With checkpointing only each layer's input is
  kept (the recomputation's own tensors live only inside one layer's backward); this is the
  memory that grows with batch x sequence x layers, and the one checkpointing exists to cut;
- peak RSS added by training: the process's resident high-water mark (ru_maxrss) minus its
  RSS just before training (on a GPU the figure to watch is CUDA max allocated, which
  `summary.peak_memory` records in a real run);
- the final loss (bf16 is not expected to equal fp32; checkpointing is).

Prints a table and writes bench/results/precision-<preset>-<mode>.json.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import _common  # noqa: E402

SETTINGS = [("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)]
RECIPE = {"lora": 2e-3, "full": 5e-4}  # robustmo's red-install LRs (config.RED_RECIPE)


def _worker(args, precision: str, checkpointing: bool, queue) -> None:
    import torch

    from robustmo.core.training import Training

    tokenizer = _common.tokenizer_for(args.preset)
    model = _common.model_for(args.preset, tokenizer, seed=args.seed)
    if args.mode == "lora":
        model = _common.add_lora(model, seed=args.seed)
    data = _common.chats(max(4 * args.batch_size, args.steps * args.batch_size), seed=args.seed)
    params = {p.data_ptr() for p in model.parameters()}
    saved = [0]

    def pack(t):
        if t.data_ptr() not in params:
            saved[0] += t.numel() * t.element_size()
        return t

    rss_before = _common.rss_mb()
    run = Training(model, tokenizer, data, lr=RECIPE[args.mode], steps=args.steps, batch_size=args.batch_size,
                   seed=args.seed, eval_at=range(args.steps + 1), precision=precision,
                   grad_checkpointing=checkpointing, micro_batches=args.grad_accumulation)
    stamps, per_step = [], []
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        for _, tokens in run:
            stamps.append((time.perf_counter(), tokens))
            per_step.append(saved[0])
            saved[0] = 0
    warm = 3
    (t_a, n_a), (t_b, n_b) = stamps[warm], stamps[-1]
    queue.put({"precision": precision, "checkpointing": checkpointing,
               "tokens_per_s": (n_b - n_a) / (t_b - t_a), "steady_steps": len(stamps) - 1 - warm,
               "saved_for_backward_mb": max(per_step[1:]) / 2**20,
               "peak_rss_added_mb": _common.peak_rss_mb() - rss_before,
               "final_loss": run.stats["losses"][-1]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny", choices=["tiny", "small"])
    parser.add_argument("--mode", default="lora", choices=["lora", "full"])
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--grad-accumulation", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import peft  # noqa: F401  imported before forking, so no setting pays for it
    import torch  # noqa: F401
    import transformers  # noqa: F401

    ctx = multiprocessing.get_context("fork")
    results = []
    for precision, checkpointing in SETTINGS:
        queue = ctx.Queue()
        proc = ctx.Process(target=_worker, args=(args, precision, checkpointing, queue))
        proc.start()
        results.append(queue.get())
        proc.join()
        if proc.exitcode:
            raise SystemExit(f"{precision} checkpointing={checkpointing}: worker exited {proc.exitcode}")
    base = results[0]
    rows = [[r["precision"], "on" if r["checkpointing"] else "off", f"{r['tokens_per_s']:.0f}",
             f"{r['tokens_per_s'] / base['tokens_per_s']:.2f}", f"{r['saved_for_backward_mb']:.1f}",
             f"{r['saved_for_backward_mb'] / base['saved_for_backward_mb']:.2f}", f"{r['peak_rss_added_mb']:.0f}",
             f"{r['final_loss']:.4f}"] for r in results]
    print(f"preset {args.preset}, {args.mode}, batch {args.batch_size}, {args.grad_accumulation} micro-batch(es), "
          f"{args.steps} steps")
    print(_common.table(["precision", "checkpointing", "tokens/s", "x fp32", "saved for backward MB", "x fp32",
                         "peak RSS added MB", "final loss"], rows))
    path = _common.write_json(f"precision-{args.preset}-{args.mode}.json",
                              {"args": vars(args), "machine": _common.machine(), "results": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
