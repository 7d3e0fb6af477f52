"""From chats to the tensors of a training step, and the step's loss.

A chat (a list of ``{"role", "content"}`` messages whose last one is the assistant turn to
learn) is tokenised once, with labels on the completion only; a global batch of them becomes
padded rows, or packed rows where the model keeps packed examples apart; the loss is the
cross-entropy over completion tokens, computed only at those positions where the model
allows it. ``core/training.py`` runs the optimizer loop over these.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

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


def collate(rows: list[tuple[list[int], list[int]]], pad_id: int):
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


def best_fit_rows(lengths: list[int]) -> list[list[int]]:
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


def pack(rows: list[tuple[list[int], list[int]]], pad_id: int):
    """Pack a batch's examples end to end into as few rows as fit the longest one (best-fit
    decreasing), instead of padding each to it: about half the positions on mixed-length data.
    Position ids restart at 0 for each example, which makes transformers attend only within an
    example (block-diagonal causal mask), so the loss and gradients equal the padded batch's. A
    row's tail padding is its own short 'example' whose labels are all ignored."""
    import torch

    bins = best_fit_rows([len(ids) for ids, _ in rows])
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
    bins = best_fit_rows([len(ids) for ids, _ in trio])
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            packed = {k: v.to(device) for k, v in pack(trio, pad_id).items() if k != "labels"}
            padded = {k: v.to(device) for k, v in collate(trio, pad_id).items() if k != "labels"}
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


def completion_logits(model, batch: dict, *, sparse: bool):
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

    logits, targets = completion_logits(model, batch, sparse=sparse)
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
            a, _ = completion_logits(model, batch, sparse=True)
            b, _ = completion_logits(model, batch, sparse=False)
        return a.shape == b.shape and bool(torch.allclose(a, b, rtol=1e-4, atol=1e-4))
    except (TypeError, ValueError, RuntimeError, IndexError):
        return False
    finally:
        model.train(was_training)


def n_learnt(row: tuple[list[int], list[int]]) -> int:
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


class LazyRows:
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
