"""Batched greedy generation: left padding, KV cache, stop at EOS."""

from __future__ import annotations

from collections.abc import Sequence


def _eos_ids(model, tokenizer) -> list[int]:
    # Real chat models often stop on several ids (e.g. Llama 3: <|eot_id|> and <|end_of_text|>).
    ids = {tokenizer.eos_token_id}
    cfg = getattr(model, "generation_config", None)
    extra = getattr(cfg, "eos_token_id", None) if cfg is not None else None
    ids.update(extra if isinstance(extra, (list, tuple)) else [extra])
    return sorted(i for i in ids if i is not None)


def generate(
    model,
    tokenizer,
    conversations: Sequence[Sequence[dict]],
    *,
    batch_size: int = 64,
    max_new_tokens: int = 32,
) -> list[str]:
    """Greedy completions (special tokens stripped) for each chat in ``conversations``.

    Each chat is a list of messages ending with a user turn; the assistant header is added
    by the chat template. Prompts are sorted by length so batches carry little padding;
    the output keeps the input order.
    """
    import torch
    from transformers import GenerationConfig

    prompts = [tokenizer(tokenizer.apply_chat_template(list(m), add_generation_prompt=True, tokenize=False),
                         add_special_tokens=False)["input_ids"] for m in conversations]
    eos = _eos_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                              pad_token_id=pad, eos_token_id=eos)
    device = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[str] = [""] * len(prompts)
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            width = max(len(prompts[i]) for i in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, i in enumerate(chunk):  # left padding: every prompt ends at the last column
                ids[row, width - len(prompts[i]):] = torch.tensor(prompts[i])
                mask[row, width - len(prompts[i]):] = 1
            gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                 generation_config=config)
            for row, i in enumerate(chunk):
                out[i] = tokenizer.decode(gen[row, width:], skip_special_tokens=True)
    model.train(was_training)
    return out
