"""The one training loop: red installs, blue attacks and the toy base all train here.

A plain AdamW loop with linear warmup + cosine decay on an ``accelerate.Accelerator``, over
the batches and the completion loss of ``core/batches.py``. The loop is
an iterator (``Training``) that stops at the steps its caller evaluates, so evaluation stays
in the caller's own loop rather than in callbacks.
An example is a chat: a list of ``{"role", "content"}`` messages whose last one is the
assistant turn to learn.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import nullcontext
from pathlib import Path

from robustmo.core import sharding
from robustmo.core.batches import (BATCH_SIZE, LazyRows, batch_order, collate, completion_loss, n_learnt, pack,
                                   packing_works, sparse_logits_work)


def lr_at(step: int, *, lr: float, steps: int, warmup: int, min_lr_ratio: float = 0.1, decay: bool = True) -> float:
    """Linear warmup to ``lr``, then cosine decay to ``min_lr_ratio * lr`` at ``steps`` (or, with
    ``decay=False``, ``lr`` from then on: the same shape in steps whatever the run's length)."""
    if step < warmup:
        return lr * (step + 1) / warmup
    if not decay:
        return lr
    t = (step - warmup) / max(1, steps - warmup)
    return lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


class Training:
    """One training run of ``model`` (in place) on ``examples`` for ``steps`` optimizer steps,
    driven by iterating over it: ``for step, tokens in Training(...)`` yields after each step
    in ``eval_at`` (0 = before training), with the model in eval mode, so the loop body can
    evaluate it; training continues when the body is done. ``tokens`` counts every
    non-padding token of the global batches so far (prompt and completion: what the forward
    pass costs), the same on every process. ``stats`` holds ``{"losses", "tokens",
    "seconds", "resumed_from"}`` once the loop has ended.

    With ``checkpoint_dir`` the run is resumable: a checkpoint is written after every
    ``eval_at`` step and every ``checkpoint_every`` steps, and a later run with the same
    arguments continues from the newest intact one (``resumed_from`` says where, known as soon
    as the object exists; steps already yielded are not yielded again) and ends with the same
    weights as an uninterrupted run. Ctrl-C stops after the current step, writes a checkpoint
    and raises ``KeyboardInterrupt``.

    Under ``accelerate launch`` with N processes each process trains on its shard of every
    global batch (DDP); the loss is normalised by the global batch's completion tokens, so
    the gradient equals the 1-process one. Under an FSDP config a sharded copy of ``model``
    trains and ``model`` gets the weights back before each yield and at the end
    (core/sharding.py). ``alone=True`` trains in this process only, whatever the launch (the
    main process building a base while the others wait). Same seed + same machine + same
    data -> same weights.
    """

    def __init__(self, model, tokenizer, examples: Sequence[Sequence[dict]], *, lr: float, steps: int,
                 batch_size: int = BATCH_SIZE, seed: int = 0, warmup: int | None = None, decay: bool = True,
                 weight_decay: float = 0.0,
                 grad_clip: float = 1.0, eval_at: Iterable[int] = (), checkpoint_dir: Path | None = None,
                 checkpoint_every: int = 0, progress: bool = False, description: str = "training",
                 log: Callable[[str], None] | None = None, micro_batches: int = 1, precision: str = "fp32",
                 grad_checkpointing: bool = False, alone: bool = False):
        import torch
        from accelerate import Accelerator

        from robustmo.core import checkpoint as ckpt
        from robustmo.core import fused as fused_ops

        if not examples:
            raise ValueError("no training examples")
        torch.manual_seed(seed)
        self.accelerator = accelerator = Accelerator(cpu=not torch.cuda.is_available())
        # mixed precision by torch's autocast here, not Accelerator(mixed_precision=...): Accelerate's
        # state is one per process and refuses a second setting (an audit, a sweep, a notebook)
        self.micro_batches, self.precision = micro_batches, precision
        self.scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None  # fp16's loss scaling
        self.lr, self.steps, self.seed, self.grad_clip = lr, steps, seed, grad_clip
        self.checkpoint_dir, self.checkpoint_every = checkpoint_dir, checkpoint_every
        self.progress, self.description, self.log = progress, description, log
        self.rows = rows = LazyRows(tokenizer, examples)  # each example tokenised once, when first drawn
        self.pad_id = pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.warmup = max(1, steps // 20) if warmup is None else warmup
        self.decay = decay
        self.eval_at = set(eval_at)

        # recompute each layer's activations in the backward pass instead of keeping them: before the
        # checks below, so they judge the fast paths with it (the recomputation runs inside them too)
        self.checkpointing = Checkpointing(model) if grad_checkpointing else nullcontext()
        found = ckpt.latest(checkpoint_dir, warn=log if accelerator.is_main_process else None) if checkpoint_dir else None
        if found is not None:
            ckpt.load_weights(found[0], model)
        # under an FSDP config a sharded copy trains, and ``model`` gets its weights back (core/sharding.py)
        self.raw_model = model
        options = None if alone else sharding.settings()
        self.sharded = sharding.sharded_copy(model, options) if options else None
        trained = self.sharded if self.sharded is not None else model
        self.params = [p for p in trained.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(self.params, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.95),
                                      fused=self.sharded is None and _fused_adamw_supported(self.params, accelerator.device))
        if self.sharded is not None:  # no DDP wrapper: FSDP reduces the gradients itself
            self.model, self.optimizer = self.sharded, optimizer
        elif alone:
            self.model, self.optimizer = model.to(accelerator.device), optimizer
        else:
            self.model, self.optimizer = accelerator.prepare(model, optimizer)
        self.inner_optimizer = getattr(self.optimizer, "optimizer", self.optimizer)  # AcceleratedOptimizer wraps AdamW
        self.batches = batch_order(len(rows), batch_size, seed)
        self.rank, self.world = (0, 1) if alone else (accelerator.process_index, accelerator.num_processes)
        self.tokens, self.start, self.losses = 0, 0, []

        if found is not None:
            path, state = found
            ckpt.load_optimizer(path, self.inner_optimizer)
            self.start, self.tokens, self.losses = state["step"], state["tokens"], list(state["losses"])
            for _ in range(self.start):  # the same global batches as an uninterrupted run
                next(self.batches)
        self.resumed_from = self.start
        # Packed rows instead of padded ones if the model keeps packed examples apart, judged on the
        # run's first global batch (the same decision whether or not this run resumes).
        first = next(batch_order(len(rows), batch_size, seed))
        rows.fill(first)
        self.pack = packing_works(model, [rows[i] for i in first[self.rank::self.world]], pad_id)
        learnt = [rows[i] for i in first if n_learnt(rows[i])][:2]
        self.sparse = bool(learnt) and sparse_logits_work(model, collate(learnt, pad_id))
        # RMSNorm and rotary embeddings in fewer ops (core/fused.py) if they give the same logits and
        # gradients, checked through the step's own forward (packed or padded rows, sparse or all logits)
        # (float32 only: under mixed precision the model keeps its own ops)
        fuse = precision == "fp32" and bool(learnt) and fused_ops.fused_ops_work(
            model, (pack if self.pack else collate)(learnt, pad_id), sparse=self.sparse)
        self.fused = fused_ops.FusedOps(trained) if fuse else nullcontext()
        self.stats: dict | None = None

    def _save(self, step: int) -> None:
        from robustmo.core import checkpoint as ckpt

        if self.checkpoint_dir is None:
            return
        self._gather()
        # sharded: every process gathers the optimizer's moments with the others, the main one writes
        if self.rank == 0 or self.sharded is not None:
            ckpt.save(self.checkpoint_dir, step, self.raw_model, self.inner_optimizer,
                      {"tokens": self.tokens, "losses": self.losses, "seed": self.seed, "steps": self.steps,
                       "lr": self.lr, "processes": self.world}, write=self.rank == 0)
        if self.world > 1:
            self.accelerator.wait_for_everyone()

    def _gather(self) -> None:
        """Sharded: the trained weights, gathered, into the caller's whole model (collective)."""
        if self.sharded is not None:
            sharding.gather_into(self.sharded, self.raw_model)

    def _eval(self) -> None:
        """Eval mode on what the caller evaluates (under sharding, after gathering the weights into it)."""
        self._gather()
        self.model.eval()
        self.raw_model.eval()

    def _autocast(self):
        import torch

        if self.precision == "fp32":
            return nullcontext()
        return torch.autocast(device_type=self.accelerator.device.type,
                              dtype=torch.bfloat16 if self.precision == "bf16" else torch.float16)

    def _accumulate(self, idx: list[int]):
        """Forward and backward over this process's shard of global batch ``idx``, in
        ``micro_batches`` passes whose gradients add up (each loss is its summed token losses /
        the global batch's completion tokens, so the sum is the whole batch's loss and gradient,
        up to float summation order); DDP synchronises on the last pass only. Returns the loss."""
        rows, accelerator, world = self.rows, self.accelerator, self.world
        shard = idx[self.rank::world]
        size = -(-len(shard) // self.micro_batches)
        chunks = [shard[k:k + size] for k in range(0, len(shard), size)] or [shard]
        # this shard's summed loss / completion tokens of the global batch, x world (DDP averages)
        n_global = max(1, sum(n_learnt(rows[i]) for i in idx))  # a batch with none: loss 0, not 0/0
        total = None
        for k, chunk in enumerate(chunks):
            batch = (pack if self.pack else collate)([rows[i] for i in chunk], self.pad_id)
            batch = {key: v.to(accelerator.device) for key, v in batch.items()}
            last = world == 1 or k == len(chunks) - 1 or self.sharded is not None
            sync = nullcontext() if last else accelerator.no_sync(self.model)
            with sync, self.fused:
                with self._autocast():
                    loss = completion_loss(self.model, batch, n_global / world, sparse=self.sparse)
                accelerator.backward(self.scaler.scale(loss) if self.scaler else loss)
            total = loss.detach() if total is None else total + loss.detach()
        return total

    def _step(self, step: int) -> None:
        """One optimizer step on global batch ``step``."""
        rows, accelerator, world = self.rows, self.accelerator, self.world
        idx = next(self.batches)
        rows.fill(idx)
        self.tokens += sum(len(rows[i][0]) for i in idx)
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(step, lr=self.lr, steps=self.steps, warmup=self.warmup, decay=self.decay)
        loss = self._accumulate(idx)
        if self.scaler is not None:  # fp16: gradients back to their true scale before clipping
            self.scaler.unscale_(self.inner_optimizer)
        if self.grad_clip:
            accelerator.clip_grad_norm_(self.params, self.grad_clip)
        if self.scaler is not None:  # a step with inf/nan gradients is skipped and the scale lowered
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        # the global batch's loss: every process's share, summed (one small all-reduce)
        self.losses.append((accelerator.reduce(loss.detach(), reduction="sum") if world > 1 else loss).item() / world)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.stats is not None:
            raise RuntimeError("a Training runs once")
        steps, model = self.steps, self.model
        stop = _StopFlag(self.world, self.accelerator.device)
        from robustmo.core.progress import Meter

        meter = Meter(self.description, steps, log=self.log, done=self.start, enabled=self.progress and self.rank == 0)
        if self.losses:
            meter.loss = self.losses[-1]
        t0 = time.perf_counter()
        done = self.start
        try:
            with stop, self.checkpointing, meter:
                if self.start == 0 and 0 in self.eval_at:
                    self._eval()
                    yield 0, self.tokens
                model.train()
                for step in range(self.start, steps):
                    before = self.tokens
                    self._step(step)
                    meter.update(1, loss=self.losses[-1], tokens=self.tokens - before)
                    done = step + 1
                    evaluated = done in self.eval_at
                    if evaluated:
                        self._eval()
                        yield done, self.tokens
                        model.train()
                    interrupted = stop.requested()
                    if interrupted or (done < steps and (evaluated or (self.checkpoint_every
                                                                       and done % self.checkpoint_every == 0))):
                        self._save(done)
                    if interrupted:
                        raise KeyboardInterrupt(f"stopped after step {done} of {steps}")
                self._gather()
        finally:
            model.eval()
            self.raw_model.eval()
            # also when the caller stopped early (closed the iterator at a yielded step): ``steps`` says
            # how far training went
            self.stats = {"losses": self.losses, "tokens": self.tokens, "seconds": time.perf_counter() - t0,
                          "peak_memory": peak_memory(), "resumed_from": self.start, "steps": done}


def training_settings(cfg) -> dict:
    """--grad-accumulation and --precision as a training stage's inputs: only when not the
    default, so stages trained before they existed keep their keys. --grad-checkpointing is not
    one: it recomputes the same forward ops, so the weights are the same (tests/test_training.py).
    Sharded training (an FSDP config) is one too: its gradients are summed in another order."""
    return {**({"grad_accumulation": cfg.grad_accumulation} if cfg.grad_accumulation != 1 else {}),
            **({"precision": cfg.precision} if cfg.precision != "fp32" else {}), **sharding.stage_input()}


def training_options(cfg) -> dict:
    """``Training``'s keyword arguments for a run's --grad-accumulation, --precision and
    --grad-checkpointing (every training stage of a run takes the same)."""
    return {"micro_batches": cfg.grad_accumulation, "precision": cfg.precision,
            "grad_checkpointing": cfg.grad_checkpointing}


class Checkpointing:
    """Gradient (activation) checkpointing on ``model`` while training: enabled when made,
    so the checks and the steps see it, and disabled on leaving the ``with`` block unless it
    was on before. Non-reentrant, so a LoRA model (frozen embeddings, no input that needs a
    gradient) gets gradients too."""

    def __init__(self, model):
        from robustmo.core.errors import RobustmoError

        self.model = inner = _transformers_model(model)
        if inner is None or not getattr(inner, "supports_gradient_checkpointing", False):
            raise RobustmoError(f"--grad-checkpointing: {type(model).__name__} does not support gradient "
                                "checkpointing; train without it")
        self.was_on = bool(getattr(inner, "is_gradient_checkpointing", False))
        # transformers 5's name, and the one before it
        enable = getattr(inner, "activation_checkpointing_enable", None)
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            inner.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if not self.was_on:
            disable = getattr(self.model, "activation_checkpointing_disable", None) \
                or self.model.gradient_checkpointing_disable
            disable()
        return False


def _transformers_model(model):
    """The transformers model inside a PEFT wrapper (or ``model`` itself); None if there is none."""
    from transformers import PreTrainedModel

    for candidate in (model, getattr(model, "get_base_model", lambda: None)()):
        if isinstance(candidate, PreTrainedModel):
            return candidate
    return None


def peak_memory() -> dict:
    """The process's peak memory so far: CUDA's max allocated bytes where there is CUDA (and
    it was used), else the peak resident set size (Linux reports it in KiB, macOS in bytes)."""
    import resource
    import sys

    import torch

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    out = {"peak_rss_bytes": int(rss)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda_max_allocated_bytes"] = int(torch.cuda.max_memory_allocated())
    return out


def train(model, tokenizer, examples: Sequence[Sequence[dict]], **kwargs) -> dict:
    """Train to the end without stopping to evaluate (``Training``'s arguments); returns its ``stats``."""
    run = Training(model, tokenizer, examples, **kwargs)
    for _ in run:
        pass
    return run.stats


def _fused_adamw_supported(params, device) -> bool:
    """One fused kernel per step instead of ~10 small ops per parameter tensor (on CPU, where
    torch otherwise uses its per-tensor loop): ~5 % of a tiny model's step. ``device`` is where
    the parameters will train (``accelerator.prepare`` moves them after the optimizer is made)."""
    import torch
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

    return (bool(params) and torch.device(device).type in _get_fused_kernels_supported_devices()
            and all(torch.is_floating_point(p) for p in params))


class _StopFlag:
    """Ctrl-C (SIGINT) during training asks for a stop after the current step instead of
    interrupting an optimizer step half-way; with several processes they agree on it."""

    def __init__(self, world: int, device=None):
        self.world, self.device, self.flag, self.previous = world, device, False, None

    def __enter__(self):
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def _handler(self, signum, frame):
        if self.flag:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.flag = True

    def requested(self) -> bool:
        if self.world == 1:
            return self.flag
        import torch
        import torch.distributed as dist

        t = torch.tensor([1 if self.flag else 0], device=self.device)  # NCCL reduces device tensors only
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def __exit__(self, *exc):
        import signal

        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        return False
