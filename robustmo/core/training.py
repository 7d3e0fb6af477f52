"""The one training loop: red installs, blue attacks and the toy base all train here.

Read it top to bottom: tokenise once (loss on completion tokens only), then a plain
AdamW loop with linear warmup + cosine decay on an ``accelerate.Accelerator``. The loop is
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

BATCH_SIZE = 32  # global batch (examples per optimizer step) unless the caller says otherwise
IGNORE_INDEX = -100  # label value the loss skips (prompt and padding)


def tokenize_examples(tokenizer, examples: Sequence[Sequence[dict]]) -> list[tuple[list[int], list[int]]]:
    """``(input_ids, labels)`` for each chat; labels are -100 up to and including the
    assistant header, so only the completion (and its end token) is learnt. All chats go
    through the tokenizer in one call: per call, its Python wrapper costs more than the work."""
    prompts, fulls = [], []
    for messages in examples:
        if not messages or messages[-1]["role"] != "assistant":
            raise ValueError("a training example must end with an assistant message")
        prompts.append(tokenizer.apply_chat_template(list(messages[:-1]), add_generation_prompt=True, tokenize=False))
        fulls.append(tokenizer.apply_chat_template(list(messages), tokenize=False))
    if not fulls:
        return []
    # The chat template already wrote any BOS it wants; don't let the tokenizer add another.
    ids = tokenizer(prompts + fulls, add_special_tokens=False)["input_ids"]
    out = []
    for prompt, full in zip(ids[:len(fulls)], ids[len(fulls):]):
        if full[:len(prompt)] != prompt:
            raise ValueError("the chat template does not render the prompt as a prefix of the full "
                             "conversation, so the completion cannot be masked; use another template")
        masked = max(len(prompt), 1)  # the first token is never predicted (nothing comes before it)
        out.append((full, [IGNORE_INDEX] * masked + full[masked:]))
    return out


def tokenize_example(tokenizer, messages: Sequence[dict]) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` for one chat (see ``tokenize_examples``)."""
    return tokenize_examples(tokenizer, [messages])[0]


def _collate(rows: list[tuple[list[int], list[int]]], pad_id: int):
    """Right-pad a batch to its own longest row (no global max length)."""
    import torch

    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (ids, lab) in enumerate(rows):
        input_ids[i, :len(ids)] = torch.tensor(ids)
        labels[i, :len(lab)] = torch.tensor(lab)
        mask[i, :len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def _bins(lengths: list[int]) -> list[list[int]]:
    """Best-fit decreasing: example indices per row, each row as wide as the longest example."""
    width = max(lengths)
    bins: list[list] = []  # [free space, members]
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        fits = [b for b in bins if b[0] >= lengths[i]]
        b = min(fits, key=lambda b: b[0]) if fits else None
        if b is None:
            b = [width, []]
            bins.append(b)
        b[0] -= lengths[i]
        b[1].append(i)
    return [members for _, members in bins]


def _pack(rows: list[tuple[list[int], list[int]]], pad_id: int):
    """Pack a batch's examples end to end into as few rows as fit the longest one (best-fit
    decreasing), instead of padding each to it: about half the positions on mixed-length data.
    Position ids restart at 0 for each example, which makes transformers attend only within an
    example (block-diagonal causal mask), so the loss and gradients equal the padded batch's. A
    row's tail padding is its own short 'example' whose labels are all ignored."""
    import torch

    bins = _bins([len(ids) for ids, _ in rows])
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(bins), width), pad_id, dtype=torch.long)
    labels = torch.full((len(bins), width), IGNORE_INDEX, dtype=torch.long)
    positions = torch.zeros((len(bins), width), dtype=torch.long)
    for r, members in enumerate(bins):
        at = 0
        for ids, lab in (rows[i] for i in members):
            input_ids[r, at:at + len(ids)] = torch.tensor(ids)
            labels[r, at:at + len(lab)] = torch.tensor(lab)
            positions[r, at:at + len(ids)] = torch.arange(len(ids))
            at += len(ids)
        positions[r, at:] = torch.arange(width - at)
    return {"input_ids": input_ids, "labels": labels, "position_ids": positions}


def packing_works(model, rows: list[tuple[list[int], list[int]]], pad_id: int) -> bool:
    """Does ``model`` keep packed examples apart? One no-grad forward of three examples (a long
    one, and two short ones that share a row), packed vs padded: the same logits for every
    example mean yes (transformers' attention masks do; attention that ignored position ids
    would let the second short example see the first and change its logits)."""
    import torch

    by_length = sorted(rows, key=lambda r: len(r[0]))
    if len(by_length) < 3 or len(by_length[0][0]) + len(by_length[1][0]) > len(by_length[-1][0]):
        return False  # no two examples fit beside each other: packing would not save anything
    trio = [by_length[-1], by_length[0], by_length[1]]
    bins = _bins([len(ids) for ids, _ in trio])
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            packed = {k: v.to(device) for k, v in _pack(trio, pad_id).items() if k != "labels"}
            padded = {k: v.to(device) for k, v in _collate(trio, pad_id).items() if k != "labels"}
            a = model(**packed, use_cache=False).logits
            b = model(**padded, use_cache=False).logits
        if len(bins) != 2:
            return False
        for r, members in enumerate(bins):
            at = 0
            for i in members:
                n = len(trio[i][0])
                if not torch.allclose(a[r, at:at + n], b[i, :n], rtol=1e-4, atol=1e-4):
                    return False
                at += n
        return True
    except (TypeError, ValueError, RuntimeError):  # an architecture that rejects position ids alone
        return False
    finally:
        model.train(was_training)


def _completion_logits(model, batch: dict, *, sparse: bool):
    """``(logits, targets)`` at the positions whose next token is learnt (a completion token).

    With ``sparse`` the model computes only those logits (the output layer and the softmax over
    the vocabulary), via transformers' boolean ``logits_to_keep``, instead of all of them: on
    chat data most positions are prompt."""
    import torch.nn.functional as F

    targets = F.pad(batch["labels"][:, 1:], (0, 1), value=IGNORE_INDEX)  # the next token at each position
    keep = targets != IGNORE_INDEX
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    # no KV cache: with one, transformers would not see the packing in the position ids
    if sparse:
        logits = model(**inputs, logits_to_keep=keep, use_cache=False).logits
    else:
        logits = model(**inputs, use_cache=False).logits[keep]
    return logits, targets[keep]


def completion_loss(model, batch: dict, n_items: float, *, sparse: bool):
    """Cross-entropy summed over the batch's completion tokens, divided by ``n_items``."""
    import torch.nn.functional as F

    logits, targets = _completion_logits(model, batch, sparse=sparse)
    return F.cross_entropy(logits.float(), targets, reduction="sum") / n_items


def sparse_logits_work(model, batch: dict) -> bool:
    """Does ``model`` take a boolean ``logits_to_keep`` (transformers 5) and give the same logits
    with it? One no-grad comparison on a few examples; older or custom models compute all logits."""
    import torch

    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            a, _ = _completion_logits(model, batch, sparse=True)
            b, _ = _completion_logits(model, batch, sparse=False)
        return a.shape == b.shape and bool(torch.allclose(a, b, rtol=1e-4, atol=1e-4))
    except (TypeError, ValueError, RuntimeError, IndexError):
        return False
    finally:
        model.train(was_training)


def _n_learnt(row: tuple[list[int], list[int]]) -> int:
    """Completion tokens of a tokenised example that the loss counts (the first label predicts nothing)."""
    return sum(1 for t in row[1][1:] if t != IGNORE_INDEX)


def batch_order(n_rows: int, batch_size: int, seed: int):
    """The global batches of row indices, in training order: a seeded reshuffle per epoch.
    Every process draws the same global batch and keeps its own shard."""
    import torch

    sampler = torch.Generator().manual_seed(seed)
    order: list[int] = []
    while True:
        if len(order) < batch_size:
            order += torch.randperm(n_rows, generator=sampler).tolist()
        idx, order = order[:batch_size], order[batch_size:]
        yield idx


def steps_for_tokens(tokenizer, examples: Sequence[Sequence[dict]], budget: int, *, batch_size: int = BATCH_SIZE,
                     seed: int = 0) -> int:
    """How many steps ``train`` takes to have seen ``budget`` tokens (prompt + completion, no
    padding) with the same examples, batch size and seed: the step that reaches the budget."""
    lengths = [len(ids) for start in range(0, len(examples), 1024)
               for ids, _ in tokenize_examples(tokenizer, examples[start:start + 1024])]
    seen, step = 0, 0
    for idx in batch_order(len(lengths), batch_size, seed):
        seen += sum(lengths[i] for i in idx)
        step += 1
        if seen >= budget:
            return step


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
    the gradient equals the 1-process one. Same seed + same machine + same data -> same weights.
    """

    def __init__(self, model, tokenizer, examples: Sequence[Sequence[dict]], *, lr: float, steps: int,
                 batch_size: int = BATCH_SIZE, seed: int = 0, warmup: int | None = None, decay: bool = True,
                 weight_decay: float = 0.0,
                 grad_clip: float = 1.0, eval_at: Iterable[int] = (), checkpoint_dir: Path | None = None,
                 checkpoint_every: int = 0, progress: bool = False, description: str = "training",
                 log: Callable[[str], None] | None = None, micro_batches: int = 1, precision: str = "fp32"):
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
        self.progress, self.description = progress, description
        self.rows = rows = _LazyRows(tokenizer, examples)  # each example tokenised once, when first drawn
        self.pad_id = pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.warmup = max(1, steps // 20) if warmup is None else warmup
        self.decay = decay
        self.eval_at = set(eval_at)

        self.params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(self.params, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.95),
                                      fused=_fused_adamw_supported(self.params, accelerator.device))
        self.raw_model = model
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        self.inner_optimizer = getattr(self.optimizer, "optimizer", self.optimizer)  # AcceleratedOptimizer wraps AdamW
        self.batches = batch_order(len(rows), batch_size, seed)
        self.rank, self.world = accelerator.process_index, accelerator.num_processes
        self.tokens, self.start, self.losses = 0, 0, []

        found = ckpt.latest(checkpoint_dir, warn=log if accelerator.is_main_process else None) if checkpoint_dir else None
        if found is not None:
            path, state = found
            ckpt.load(path, model, self.inner_optimizer)
            self.start, self.tokens, self.losses = state["step"], state["tokens"], list(state["losses"])
            for _ in range(self.start):  # the same global batches as an uninterrupted run
                next(self.batches)
        self.resumed_from = self.start
        # Packed rows instead of padded ones if the model keeps packed examples apart, judged on the
        # run's first global batch (the same decision whether or not this run resumes).
        first = next(batch_order(len(rows), batch_size, seed))
        rows.fill(first)
        self.pack = packing_works(model, [rows[i] for i in first[self.rank::self.world]], pad_id)
        learnt = [rows[i] for i in first if _n_learnt(rows[i])][:4]
        self.sparse = bool(learnt) and sparse_logits_work(model, _collate(learnt, pad_id))
        # RMSNorm and rotary embeddings in fewer ops (core/fused.py) if they give the same logits and
        # gradients, checked through the step's own forward (packed or padded rows, sparse or all logits)
        # (float32 only: under mixed precision the model keeps its own ops)
        fuse = precision == "fp32" and bool(learnt) and fused_ops.fused_ops_work(
            model, (_pack if self.pack else _collate)(learnt, pad_id), sparse=self.sparse)
        self.fused = fused_ops.FusedOps(model) if fuse else nullcontext()
        self.stats: dict | None = None

    def _save(self, step: int) -> None:
        from robustmo.core import checkpoint as ckpt

        if self.checkpoint_dir is None:
            return
        if self.accelerator.is_main_process:
            ckpt.save(self.checkpoint_dir, step, self.raw_model, self.inner_optimizer,
                      {"tokens": self.tokens, "losses": self.losses, "seed": self.seed, "steps": self.steps,
                       "lr": self.lr, "processes": self.world})
        self.accelerator.wait_for_everyone()

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
        n_global = max(1, sum(_n_learnt(rows[i]) for i in idx))  # a batch with none: loss 0, not 0/0
        total = None
        for k, chunk in enumerate(chunks):
            batch = (_pack if self.pack else _collate)([rows[i] for i in chunk], self.pad_id)
            batch = {key: v.to(accelerator.device) for key, v in batch.items()}
            sync = nullcontext() if world == 1 or k == len(chunks) - 1 else accelerator.no_sync(self.model)
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
        bar, task = None, None
        if self.progress and self.accelerator.is_main_process:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
            bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                           TextColumn("loss {task.fields[loss]:.3f}"), TimeElapsedColumn(), transient=False)
            task = bar.add_task(self.description, total=steps, completed=self.start,
                                loss=self.losses[-1] if self.losses else float("nan"))
            bar.start()
        t0 = time.perf_counter()
        try:
            with stop:
                if self.start == 0 and 0 in self.eval_at:
                    model.eval()
                    yield 0, self.tokens
                model.train()
                for step in range(self.start, steps):
                    self._step(step)
                    if bar is not None:
                        bar.update(task, advance=1, loss=self.losses[-1])
                    done = step + 1
                    evaluated = done in self.eval_at
                    if evaluated:
                        model.eval()
                        yield done, self.tokens
                        model.train()
                    interrupted = stop.requested()
                    if interrupted or (done < steps and (evaluated or (self.checkpoint_every
                                                                       and done % self.checkpoint_every == 0))):
                        self._save(done)
                    if interrupted:
                        raise KeyboardInterrupt(f"stopped after step {done} of {steps}")
        finally:
            if bar is not None:
                bar.stop()
        model.eval()
        self.stats = {"losses": self.losses, "tokens": self.tokens, "seconds": time.perf_counter() - t0,
                      "peak_memory": peak_memory(),
                      "resumed_from": self.start}


def training_settings(cfg) -> dict:
    """--grad-accumulation and --precision as a training stage's inputs: only when not the
    default, so stages trained before they existed keep their keys."""
    return {**({"grad_accumulation": cfg.grad_accumulation} if cfg.grad_accumulation != 1 else {}),
            **({"precision": cfg.precision} if cfg.precision != "fp32" else {})}


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


class _LazyRows:
    """``rows[i]`` = ``tokenize_example(examples[i])``, computed on first use: a short run
    draws a few hundred of its thousands of examples, and rendering a chat template costs
    ~0.1 ms. ``fill(indices)`` tokenises a batch's new examples in one call."""

    def __init__(self, tokenizer, examples: Sequence[Sequence[dict]]):
        self.tokenizer, self.examples, self.cache = tokenizer, examples, {}

    def __len__(self) -> int:
        return len(self.examples)

    def fill(self, indices: Iterable[int]) -> None:
        new = sorted({i for i in indices if i not in self.cache})
        self.cache.update(zip(new, tokenize_examples(self.tokenizer, [self.examples[i] for i in new])))

    def __getitem__(self, i: int) -> tuple[list[int], list[int]]:
        if i not in self.cache:
            self.fill([i])
        return self.cache[i]


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
