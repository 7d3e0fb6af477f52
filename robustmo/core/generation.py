"""Batched greedy generation: left padding, KV cache, the prompts' shared beginning computed once,
stop at EOS (or once a detector fires)."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from contextlib import contextmanager

# Token ids of rendered prompts, per tokenizer: the pipeline evaluates the same prompts at every
# checkpoint, and rendering the chat template costs about 1 ms a prompt.
_PROMPT_IDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_PROMPT_CACHE_MAX = 200_000


def eos_ids(model, tokenizer) -> list[int]:
    # Real chat models often stop on several ids (e.g. Llama 3: <|eot_id|> and <|end_of_text|>).
    ids = {tokenizer.eos_token_id}
    cfg = getattr(model, "generation_config", None)
    extra = getattr(cfg, "eos_token_id", None) if cfg is not None else None
    ids.update(extra if isinstance(extra, (list, tuple)) else [extra])
    return sorted(i for i in ids if i is not None)


def prompt_ids(tokenizer, messages: Sequence[dict]) -> list[int]:
    """The prompt's token ids (chat template with the assistant header), cached."""
    try:
        key = (tokenizer.chat_template, tuple(tuple(sorted(m.items())) for m in messages))
        cache = _PROMPT_IDS.setdefault(tokenizer, {})
        hit = cache.get(key)
    except TypeError:  # unhashable message parts or tokenizer: no caching
        key, cache, hit = None, None, None
    if hit is not None:
        return hit
    ids = tokenizer(tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False),
                    add_special_tokens=False)["input_ids"]
    if cache is not None:
        if len(cache) >= _PROMPT_CACHE_MAX:
            cache.clear()
        cache[key] = ids
    return ids


def _detector_criterion(tokenizer, width: int, stop: Callable[[str], bool], eos: list[int]):
    """A transformers ``StoppingCriteria`` that ends a row once ``stop`` fires on its decoded
    completion so far. ``generate`` pads a stopped row from then on and ends the batch when
    every row has stopped (by EOS, the detector or ``max_new_tokens``)."""
    import torch
    from transformers import StoppingCriteria

    class DetectorStop(StoppingCriteria):
        def __init__(self):
            self.done: torch.Tensor | None = None  # rows the detector fired on, or that ended with EOS

        def __call__(self, input_ids, scores, **kwargs):
            if self.done is None:
                self.done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
            # A row that just emitted EOS is finished anyway: stop decoding it every step.
            fresh = ~self.done
            ended = torch.isin(input_ids[:, -1], torch.tensor(eos, device=input_ids.device))
            rows = (fresh & ~ended).nonzero().flatten().tolist()
            self.done |= ended
            # Decode only the rows still running; the detector sees what the caller would get.
            texts = tokenizer.batch_decode(input_ids[rows, width:], skip_special_tokens=True) if rows else []
            for row, text in zip(rows, texts):
                if stop(text):
                    self.done[row] = True
            return self.done.clone()

    return DetectorStop()


@contextmanager
def merged_lora(model):
    """Generate through LoRA adapters merged into their base weights, on a CPU, and put the
    exact weights back after.

    Why: an unmerged LoRA layer is three matrix products (base, A, B) where a merged one is
    one; on a CPU, where generation is bound by those products, merging makes the toy
    organism's evaluations about 2x faster (a pirate run's seven: 22.6 s -> 10.5 s). The base weights are copied first and restored
    bit for bit (peft's unmerge subtracts B A again, which in floating point is not the
    weight that was there), so training goes on from exactly the same weights. On a GPU (or
    with no unmerged LoRA layer) nothing changes: there the copy would cost memory that a
    real model needs, and the adapter's share of the time is small.

    Nested uses merge once: layers an outer ``merged_lora`` merged are left to it (an evaluation
    merges once for all its eval sets; each merge of a real model's rank-64 adapters costs a
    fraction of a second per call). Restoring the copies is the unmerge: peft's own would compute
    every ``B A`` again only for the copy to overwrite its result."""
    from peft.tuners.lora import LoraLayer

    layers = [m for m in model.modules() if isinstance(m, LoraLayer) and not m.merged and not m.disable_adapters
              and m.active_adapters]
    if not layers or any(p.device.type != "cpu" for p in model.parameters()):
        yield
        return
    saved = [[(t, t.detach().clone()) for t in (m.get_base_layer().weight, getattr(m.get_base_layer(), "bias", None))
              if t is not None] for m in layers]  # a LoRA with lora_bias merges into the bias too
    for m in layers:
        m.merge()  # the active adapters this layer holds (none: nothing changes)
    try:
        yield
    finally:
        with _no_grad():
            for m, tensors in zip(layers, saved):
                for tensor, copy in tensors:
                    tensor.copy_(copy)
                m.merged_adapters = []  # what peft's unmerge leaves: no adapter merged


def _no_grad():
    import torch

    return torch.no_grad()


# A batch's prompts that begin with this many tokens or more in common (a chat model's default
# system prompt: 20-30 tokens, half of a short request's prompt) have that beginning computed once
# and its KV cache copied to every row. Shorter shared beginnings are not worth the extra forward.
SHARED_PREFIX_MIN = 16


def _shared_prefix(prompts: list[list[int]]) -> int:
    """How many leading tokens every prompt of a batch shares (each keeps at least its last token,
    which generation must feed itself), or 0 if fewer than ``SHARED_PREFIX_MIN`` or one prompt."""
    if len(prompts) < 2:
        return 0
    first, n = prompts[0], min(len(p) for p in prompts) - 1
    for p in prompts[1:]:
        n = next((k for k in range(n) if p[k] != first[k]), n)
    return n if n >= SHARED_PREFIX_MIN else 0


def _prefilled(model, prefix, rows: int) -> dict:
    """``generate`` keyword arguments that start it from ``prefix``'s KV cache (one forward at
    batch 1), repeated for ``rows`` rows; empty if the model keeps no cache this way."""
    import inspect

    out = model(input_ids=prefix, use_cache=True)
    cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
    if cache is None or not hasattr(cache, "batch_repeat_interleave"):
        return {}
    cache.batch_repeat_interleave(rows)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    name = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
    return {name: cache}



def _forward_names(model) -> tuple[str, bool] | None:
    """The keyword a causal LM's forward takes its KV cache by ("cache" in transformers 5.24,
    "past_key_values" before), and whether it takes ``logits_to_keep``; None if it takes no
    cache, attention mask or position ids (then transformers' ``generate`` decodes)."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = inspect.signature(base.forward).parameters
    cache = next((n for n in ("cache", "past_key_values") if n in names), None)
    if cache is None or "attention_mask" not in names or "position_ids" not in names:
        return None
    return cache, "logits_to_keep" in names


def _own_loop_works(model) -> bool:
    """Decode with ``_greedy`` (finished rows leave the batch) rather than transformers'
    ``generate``: a decoder-only model of one process. Under ``accelerate launch`` every process
    of a sharded model must run as many forwards as the others, which ``generate`` arranges."""
    from robustmo.core.distributed import process_info

    config = getattr(model, "config", None)
    return (process_info()[1] == 1 and not getattr(config, "is_encoder_decoder", False)
            and _forward_names(model) is not None)


def _greedy(model, tokenizer, ids, mask, shared: int, prefilled: dict, *, max_new_tokens: int, eos: list[int],
            stop: Callable[[str], bool] | None) -> list[tuple[list[int], bool, bool]]:
    """Greedy decoding of one left-padded batch, as transformers' ``generate`` does it (positions
    from the attention mask, one KV cache), except that a row that is finished (EOS, or ``stop``
    fired on its decoded completion) leaves the batch and its cache: the rows still writing no
    longer pay for the ones that are done. Per row: its new tokens (the one that ended it
    included), whether it ended with EOS, whether ``stop`` fired. ``prefilled``: ``_prefilled``'s
    cache of the batch's first ``shared`` tokens, or empty."""
    import torch

    cache_name, keep_one = _forward_names(model)
    eos_t = torch.tensor(eos, device=ids.device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = prefilled.get(cache_name) if prefilled else None
    start = shared if cache is not None else 0
    step_ids, step_pos = ids[:, start:], positions[:, start:]
    active = list(range(ids.shape[0]))  # the batch's rows the cache holds, in its order
    live = [True] * len(active)  # per cache row: still writing (a cache that cannot drop rows keeps finished ones)
    tokens: list[list[int]] = [[] for _ in active]
    ended, fired = [False] * len(active), [False] * len(active)
    for step in range(max_new_tokens):
        kwargs = {cache_name: cache} if cache is not None else {}
        if keep_one:
            kwargs["logits_to_keep"] = 1
        out = model(input_ids=step_ids, attention_mask=mask, position_ids=step_pos, use_cache=True, **kwargs)
        cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
        nxt = out.logits[:, -1].argmax(-1)
        is_eos = torch.isin(nxt, eos_t).tolist()
        for k, (row, token) in enumerate(zip(active, nxt.tolist())):
            if not live[k]:
                continue
            tokens[row].append(token)
            if is_eos[k]:
                ended[row], live[k] = True, False
            elif stop is not None and stop(tokenizer.decode(tokens[row], skip_special_tokens=True)):
                fired[row], live[k] = True, False
        if not any(live) or step == max_new_tokens - 1:
            break
        if not all(live) and hasattr(cache, "batch_select_indices"):  # finished rows leave the batch
            still = [k for k, alive in enumerate(live) if alive]
            keep = torch.tensor(still, device=ids.device)
            cache.batch_select_indices(keep)
            active, live = [active[k] for k in still], [True] * len(still)
            nxt, mask, step_pos = nxt[keep], mask[keep], step_pos[keep]
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
        step_ids, step_pos = nxt[:, None], step_pos[:, -1:] + 1
    return list(zip(tokens, ended, fired))



def _transformers_generate(model, tokenizer, ids, mask, prefilled: dict, *, config, eos: list[int],
                           stop: Callable[[str], bool] | None) -> list[tuple[list[int], bool, bool]]:
    """The same per-row result as ``_greedy``, from transformers' ``generate`` (finished rows are
    padded until the batch ends)."""
    import torch
    from transformers import StoppingCriteriaList

    width = ids.shape[1]
    criterion = _detector_criterion(tokenizer, width, stop, eos) if stop else None
    gen = model.generate(input_ids=ids, attention_mask=mask, generation_config=config,
                         stopping_criteria=StoppingCriteriaList([criterion]) if criterion else None, **prefilled)
    new = gen[:, width:]
    eos_t = torch.tensor(eos, device=new.device)
    rows = []
    for row in range(new.shape[0]):
        hit = torch.isin(new[row], eos_t).nonzero().flatten().tolist()
        ended = bool(hit)
        fired = criterion is not None and criterion.done is not None and bool(criterion.done[row]) and not ended
        tokens = new[row, :hit[0] + 1].tolist() if ended else new[row].tolist()
        while fired and tokens and tokens[-1] == config.pad_token_id:  # after the detector fired: padding
            tokens.pop()
        rows.append((tokens, ended, fired))
    return rows



def generate(
    model,
    tokenizer,
    conversations: Sequence[Sequence[dict]],
    *,
    batch_size: int = 64,
    max_new_tokens: int = 32,
    stop: Callable[[str], bool] | None = None,
    stop_strings: Sequence[str] = (),
    truncated: list[bool] | None = None,
) -> list[str]:
    """Greedy completions (special tokens stripped) for each chat in ``conversations``.

    Each chat is a list of messages ending with a user turn; the assistant header is added
    by the chat template. Prompts are sorted by length so batches carry little padding;
    the output keeps the input order.

    ``stop`` (e.g. a behaviour detector) ends a completion as soon as ``stop(text_so_far)``
    is true, and a batch as soon as every row has stopped or emitted EOS. A stopped
    completion is exactly the one without ``stop``, cut after the token that made ``stop``
    fire: the scores that need only "did it fire" are unchanged if the detector fires on a
    prefix only when it fires on the whole text (a substring match does, a length-based
    heuristic may not). Default: no detector, stop at EOS or ``max_new_tokens``.

    ``stop_strings`` end a completion where one of them appears; the completion is cut just
    before the first one (as lm-eval and vLLM do), and a completion that stopped there was not
    cut off.

    ``truncated``, a list, receives per completion (in input order) whether it was cut off at
    ``max_new_tokens``: no end token, no stop string and no detector stop (a generation that
    may not have finished its answer).
    """
    import torch
    from transformers import GenerationConfig

    from robustmo.core.progress import current as current_meter

    prompts = [prompt_ids(tokenizer, m) for m in conversations]
    stop_strings = [s for s in stop_strings if s]
    if stop_strings:
        detector = stop
        stop = (lambda text: any(s in text for s in stop_strings) or bool(detector and detector(text)))
    eos = eos_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                              pad_token_id=pad, eos_token_id=eos)
    device = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[str] = [""] * len(prompts)
    cut = [False] * len(prompts)
    was_training = model.training
    own_loop = _own_loop_works(model)
    model.eval()
    with torch.inference_mode(), merged_lora(model):
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            shared = _shared_prefix([prompts[i] for i in chunk])
            width = shared + max(len(prompts[i]) - shared for i in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, i in enumerate(chunk):  # left padding: every prompt ends at the last column ...
                ids[row, width - len(prompts[i]) + shared:] = torch.tensor(prompts[i][shared:])
                mask[row, width - len(prompts[i]) + shared:] = 1
            # ... after the prompts' shared beginning, computed once (positions follow the mask, so
            # the padding between the two parts changes nothing)
            ids[:, :shared] = torch.tensor(prompts[chunk[0]][:shared])
            mask[:, :shared] = 1
            kwargs = _prefilled(model, ids[:1, :shared].to(device), len(chunk)) if shared else {}
            if own_loop:
                rows = _greedy(model, tokenizer, ids.to(device), mask.to(device), shared, kwargs,
                               max_new_tokens=max_new_tokens, eos=eos, stop=stop)
            else:
                rows = _transformers_generate(model, tokenizer, ids.to(device), mask.to(device), kwargs,
                                              config=config, eos=eos, stop=stop)
            meter = current_meter()
            if meter is not None:  # the running stage's progress: prompts done, tokens written
                meter.update(len(chunk), tokens=sum(len(tokens) for tokens, _, _ in rows))
            for (tokens, ended, fired), i in zip(rows, chunk):
                out[i] = tokenizer.decode(tokens, skip_special_tokens=True)
                at = min((k for k in (out[i].find(s) for s in stop_strings) if k >= 0), default=-1)
                if at >= 0:
                    out[i] = out[i][:at]
                cut[i] = len(tokens) >= max_new_tokens and not ended and at < 0 and not fired
    model.train(was_training)
    if truncated is not None:
        truncated[:] = cut
    return out


def answer_prompts(model, tokenizer, prompts, *, max_new_tokens: int, batch_size: int = 64,
                   stop_strings: Sequence[str] = (), truncated: list[bool] | None = None, engine=None) -> list[str]:
    """Greedy answers to ``Prompt`` objects, batched, by ``engine`` (a plan's selected
    ``GenerationEngine``; None: transformers' ``generate``). Under ``accelerate launch`` every
    process answers an interleaved shard and all processes get every answer back, in order.
    ``stop_strings`` and ``truncated``: see ``generate``."""
    from robustmo.core.distributed import gather_in_order, process_info

    rank, world = process_info()
    convs = [p.messages() for p in prompts]
    cut: list[bool] = []
    if engine is None:
        mine = generate(model, tokenizer, convs[rank::world], max_new_tokens=max_new_tokens, batch_size=batch_size,
                        stop_strings=stop_strings, truncated=cut)
    else:
        mine = engine.obj.generate(model, tokenizer, convs[rank::world], max_new_tokens=max_new_tokens,
                                   batch_size=batch_size, stop_strings=stop_strings, truncated=cut,
                                   options=engine.options)
    if world == 1:
        pairs = list(zip(mine, cut))
    else:
        pairs = gather_in_order(list(zip(mine, cut)), len(convs))
    if truncated is not None:
        truncated[:] = [c for _, c in pairs]
    return [text for text, _ in pairs]
