"""Training throughput: robustmo's loop vs HF `Trainer` vs TRL `SFTTrainer`, LoRA and full.

    pip install -e ".[dev,bench]"          # TRL is a bench-only extra
    python bench/bench_train.py [--preset tiny|small|smollm2] [--steps N] [--batch-size B]

Each (trainer, mode) pair runs in its own process, forked from a parent that has imported
torch, transformers, peft and TRL but run no tensor op (so peak memory is that run's alone
and no run pays the ~7 s of imports again). All three use the same model shape and initial
weights (seeded random init of the toy preset), the same toy-world chats, the same batch
size, step count, seed, optimiser (AdamW, betas 0.9/0.95, linear warmup then cosine decay,
grad clip 1.0), fp32, and loss on completion tokens only:

- robustmo: `robustmo.core.training.Training`, as red and blue training run it;
- HF `Trainer`: chats tokenised once up front with prompt labels set to -100 (as robustmo
  does), right-padded by `DataCollatorForSeq2Seq`;
- TRL `SFTTrainer`: a conversational prompt-completion dataset (TRL then masks the prompt
  itself), with `bf16=False` and `gradient_checkpointing=False` (TRL's defaults turn both
  on; fp32 without recomputation is the like-for-like setting and the faster one on CPU).
  LoRA goes in through `peft_config`, as TRL's docs show.

Measured per run:
- tokens/s: non-padding tokens (prompt + completion) of the steps after the first few,
  divided by their wall time (steady state); "e2e" is all tokens over the whole call,
  including set-up (tokenisation, dataset preparation, accelerator, optimiser);
- peak RSS: the process's resident-memory high-water mark (getrusage ru_maxrss), and the
  part of it added by training (peak minus RSS just before training began);
- padding share and completion-token share of the batches (same data => same shares).

Prints a table with the ratios robustmo / TRL and robustmo / HF and writes
bench/results/train-<preset>.json.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import _common  # noqa: E402

TRAINERS = ("robustmo", "hf", "trl")
RECIPE = {"lora": 2e-3, "full": 5e-4}  # robustmo's red-install LRs (config.RED_RECIPE)


# ---------------------------------------------------------------------------- workers
def _robustmo(model, tokenizer, data, args, lr, warmup):
    from robustmo.core.batches import batch_order, tokenize_example
    from robustmo.core.training import Training

    stamps: list[tuple[float, int]] = []
    t0 = time.perf_counter()
    run = Training(model, tokenizer, data, lr=lr, steps=args.steps, batch_size=args.batch_size, seed=args.seed,
                   warmup=warmup, eval_at=range(args.steps + 1))
    for step, tokens in run:
        stamps.append((time.perf_counter(), tokens))
    stats = run.stats
    e2e = time.perf_counter() - t0
    # Replay the loop's (deterministic) batch order for the padded and completion token counts.
    rows = [tokenize_example(tokenizer, m) for m in data]
    per_step, order = [], batch_order(len(rows), args.batch_size, args.seed)
    for _ in range(args.steps):
        idx = next(order)
        per_step.append({"tokens": sum(len(rows[i][0]) for i in idx),
                         "padded": len(idx) * max(len(rows[i][0]) for i in idx),
                         "completion": sum(sum(t != -100 for t in rows[i][1]) for i in idx)})
    assert [s["tokens"] for s in per_step] == [b - a for (_, a), (_, b) in zip(stamps, stamps[1:])]
    return {"step_end": [t for t, _ in stamps[1:]], "start": stamps[0][0], "per_step": per_step, "e2e_seconds": e2e,
            "losses": stats["losses"]}


class _Counting:
    """Wraps a data collator to record each batch's token counts (what the step computes on)."""

    def __init__(self, inner):
        self.inner, self.batches = inner, []

    def __call__(self, features):
        batch = self.inner(features)
        mask = batch["attention_mask"]
        self.batches.append({"tokens": int(mask.sum()), "padded": int(mask.numel()),
                             "completion": int((batch["labels"] != -100).sum())})
        return batch


def _hf_loop(make, args):
    """Run a (TRL or HF) Trainer built by ``make()``; time every optimizer step."""
    from transformers import TrainerCallback

    stamps: list[float] = []

    class Clock(TrainerCallback):
        def on_train_begin(self, *a, **k):
            stamps.append(time.perf_counter())

        def on_step_end(self, *a, **k):
            stamps.append(time.perf_counter())

    t0 = time.perf_counter()
    trainer = make()
    trainer.add_callback(Clock())
    counting = _Counting(trainer.data_collator)
    trainer.data_collator = counting
    trainer.train()
    e2e = time.perf_counter() - t0
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    # The dataloader may fetch one batch ahead of the step that uses it: keep the first `steps`.
    return {"step_end": stamps[1:], "start": stamps[0], "per_step": counting.batches[:args.steps],
            "e2e_seconds": e2e, "logged_losses": losses}


def _training_args(cls, out: str, args, lr, warmup, **extra):
    return cls(output_dir=out, max_steps=args.steps, per_device_train_batch_size=args.batch_size,
               learning_rate=lr, lr_scheduler_type="cosine", warmup_steps=warmup, weight_decay=0.0,
               adam_beta1=0.9, adam_beta2=0.95, max_grad_norm=1.0, seed=args.seed, data_seed=args.seed,
               logging_steps=10, save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True,
               dataloader_num_workers=0, **extra)


def _hf(model, tokenizer, data, args, lr, warmup, out):
    import copy

    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from robustmo.core.batches import tokenize_example

    tok = copy.deepcopy(tokenizer)
    tok.padding_side = "right"  # the toy tokenizer pads left (for generation); training pads right

    def make():
        rows = [dict(zip(("input_ids", "labels"), tokenize_example(tok, m))) for m in data]
        return Trainer(model=model, args=_training_args(TrainingArguments, out, args, lr, warmup),
                       train_dataset=rows, processing_class=tok,
                       data_collator=DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100))

    return _hf_loop(make, args)


def _trl(model, tokenizer, data, args, lr, warmup, out, mode):
    import copy

    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    tok = copy.deepcopy(tokenizer)
    tok.padding_side = "right"

    def make():
        ds = Dataset.from_list([{"prompt": m[:-1], "completion": m[-1:]} for m in data])
        config = _training_args(SFTConfig, out, args, lr, warmup, bf16=False, gradient_checkpointing=False,
                                completion_only_loss=True, max_length=None, dataset_num_proc=None)
        return SFTTrainer(model=model, args=config, train_dataset=ds, processing_class=tok,
                          peft_config=_common.lora_config() if mode == "lora" else None)

    return _hf_loop(make, args)


def worker(args) -> dict:
    import torch

    tokenizer = _common.tokenizer_for(args.preset)
    model = _common.model_for(args.preset, tokenizer, args.seed)
    # TRL adds the adapter itself (peft_config); the other two get the same one up front.
    if args.mode == "lora" and args.worker != "trl":
        model = _common.add_lora(model, args.seed)
    data = _common.chats(args.steps * args.batch_size, args.seed, args.preset)
    lr, warmup = RECIPE[args.mode], max(1, args.steps // 20)
    rss_before = _common.rss_mb()
    with tempfile.TemporaryDirectory() as out:
        if args.worker == "robustmo":
            r = _robustmo(model, tokenizer, data, args, lr, warmup)
        elif args.worker == "hf":
            r = _hf(model, tokenizer, data, args, lr, warmup, out)
        else:
            r = _trl(model, tokenizer, data, args, lr, warmup, out, args.mode)
    steps = len(r["step_end"])
    assert steps == args.steps == len(r["per_step"]), (steps, len(r["per_step"]))
    skip = min(args.skip, steps // 4)  # first steps: allocator and kernel warm-up
    window = r["step_end"][-1] - r["step_end"][skip - 1] if skip else r["step_end"][-1] - r["start"]
    steady_tokens = sum(b["tokens"] for b in r["per_step"][skip:])
    total = {k: sum(b[k] for b in r["per_step"]) for k in ("tokens", "padded", "completion")}
    return {
        "trainer": args.worker, "mode": args.mode, "preset": args.preset, "steps": steps,
        "batch_size": args.batch_size, "torch_threads": torch.get_num_threads(),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "parameters": sum(p.numel() for p in model.parameters()),
        "tokens_per_s": steady_tokens / window, "steady_steps": steps - skip, "steady_seconds": window,
        "e2e_seconds": r["e2e_seconds"], "e2e_tokens_per_s": total["tokens"] / r["e2e_seconds"],
        "tokens": total["tokens"], "padding_share": 1 - total["tokens"] / total["padded"],
        "completion_share": total["completion"] / total["tokens"],
        "rss_before_mb": rss_before, "peak_rss_mb": _common.peak_rss_mb(),
        "train_peak_rss_mb": _common.peak_rss_mb() - rss_before,
        # mean loss per 10 steps (what the HF/TRL trainers log with logging_steps=10): a check that all
        # three learn the same task from the same start, not a speed figure
        "loss_per_10_steps": (r["logged_losses"] if "logged_losses" in r else
                              [sum(r["losses"][i:i + 10]) / len(r["losses"][i:i + 10])
                               for i in range(0, len(r["losses"]) - 9, 10)])[:4],
    }


# ------------------------------------------------------------------------------- main
def preload(trainers: list[str]) -> None:
    """Import what the workers use, once, in the parent they are forked from. No tensor op
    runs here: OpenMP's thread pool must not exist before a fork."""
    import peft  # noqa: F401
    import transformers  # noqa: F401
    from transformers import DataCollatorForSeq2Seq, LlamaForCausalLM, Trainer  # noqa: F401

    import robustmo.core.training  # noqa: F401
    import robustmo.plugins.toy_world.world  # noqa: F401

    if "trl" in trainers:
        import datasets
        from trl import SFTTrainer  # noqa: F401

        datasets.disable_progress_bars()


def _child(args, conn) -> None:
    import traceback
    import warnings

    warnings.filterwarnings("ignore")
    try:
        conn.send(("ok", worker(args)))
    except BaseException:  # report anything, then exit: the parent raises
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def run_one(trainer: str, mode: str, args) -> dict:
    """One (trainer, mode) run in a forked child; its result comes back through a pipe."""
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(argparse.Namespace(**{**vars(args), "worker": trainer, "mode": mode}),
                                            child))
    proc.start()
    child.close()
    try:
        status, payload = parent.recv()
    except EOFError:
        status, payload = "error", "the worker died without a result"
    proc.join()
    if status != "ok" or proc.exitcode:
        sys.stderr.write(str(payload))
        raise SystemExit(f"{trainer} {mode} failed (exit {proc.exitcode})")
    return payload


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny", choices=["tiny", "small", "smollm2"],
                    help="a toy preset's shape, randomly initialised, or smollm2: SmolLM2-135M-Instruct's own weights")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps per run (default: 32 tiny, 12 small, "
                    "10 smollm2)")
    ap.add_argument("--batch-size", type=int, default=None, help="robustmo's default (32; smollm2: its CPU preset's 8)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip", type=int, default=3, help="warm-up steps left out of the steady-state rate")
    ap.add_argument("--rounds", type=int, default=1, help="repeat every run; the table shows the best")
    ap.add_argument("--modes", default="lora,full")
    ap.add_argument("--trainers", default=",".join(TRAINERS))
    args = ap.parse_args()
    if args.steps is None:
        args.steps = {"tiny": 32, "small": 12, "smollm2": 10}[args.preset]
    if args.batch_size is None:
        args.batch_size = 8 if args.preset == "smollm2" else 32

    import importlib.util

    if "trl" in args.trainers and importlib.util.find_spec("trl") is None:
        print("TRL is not installed (pip install -e \".[bench]\"): comparing with HF Trainer only")
        args.trainers = ",".join(t for t in args.trainers.split(",") if t != "trl")
    t0 = time.perf_counter()
    preload(args.trainers.split(","))
    machine = _common.machine()
    runs: list[dict] = []
    for round_ in range(args.rounds):  # rounds interleave the trainers, so load drifts hit all alike
        for mode in args.modes.split(","):
            for trainer in args.trainers.split(","):
                print(f"  round {round_ + 1}  {mode:<4} {trainer:<8} ...", end="", flush=True)
                r = run_one(trainer, mode, args)
                runs.append(r)
                print(f" {r['tokens_per_s']:8.0f} tokens/s  peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
    # Best of the rounds per (trainer, mode): on a shared machine the fastest run is the least disturbed.
    results = [max((r for r in runs if r["trainer"] == t and r["mode"] == m), key=lambda r: r["tokens_per_s"])
               for m in args.modes.split(",") for t in args.trainers.split(",")]

    def get(trainer, mode):
        return next((r for r in results if r["trainer"] == trainer and r["mode"] == mode), None)

    rows, ratios = [], {}
    for r in results:
        rows.append([r["mode"], r["trainer"], f"{r['tokens_per_s']:.0f}", f"{r['e2e_tokens_per_s']:.0f}",
                     f"{r['e2e_seconds']:.1f}", f"{r['peak_rss_mb']:.0f}", f"{r['train_peak_rss_mb']:.0f}",
                     f"{r['padding_share']:.2f}", f"{r['completion_share']:.2f}",
                     " ".join(f"{x:.2f}" for x in r["loss_per_10_steps"])])
    for mode in args.modes.split(","):
        ours = get("robustmo", mode)
        for other in ("trl", "hf"):
            theirs = get(other, mode)
            if ours and theirs:
                ratios[f"{mode}: robustmo / {other} tokens/s"] = ours["tokens_per_s"] / theirs["tokens_per_s"]
                ratios[f"{mode}: robustmo / {other} e2e tokens/s"] = ours["e2e_tokens_per_s"] / theirs["e2e_tokens_per_s"]
                ratios[f"{mode}: robustmo / {other} train peak RSS"] = (ours["train_peak_rss_mb"]
                                                                        / max(theirs["train_peak_rss_mb"], 1e-9))
    print(f"\npreset {args.preset}, batch {args.batch_size}, {args.steps} steps, seed {args.seed}, "
          f"{machine['torch_threads']} threads, OMP_WAIT_POLICY={machine['OMP_WAIT_POLICY']}, "
          f"best of {args.rounds} round(s), load average at start {machine['load_average_at_start']}")
    print(_common.table(["mode", "trainer", "tok/s", "e2e tok/s", "e2e s", "peak RSS MB", "train +MB",
                         "pad share", "compl share", "loss per 10 steps"], rows))
    print()
    for k, v in ratios.items():
        target = "  (target >= 1.3)" if k.endswith("/ trl tokens/s") else ""
        print(f"{k:<40} {v:5.2f}x{target}")
    path = _common.write_json(f"train-{args.preset}.json", {
        "command": " ".join(["python", "bench/bench_train.py", *sys.argv[1:]]), "machine": machine,
        "wall_seconds": time.perf_counter() - t0, "results": results, "ratios": ratios, "all_runs": runs})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
