"""The training loop's fast paths (packed rows, logits only at completion positions, fused
AdamW) train exactly what the plain padded loop trains, and are refused by models they do not suit."""

from __future__ import annotations

import pytest
import torch

from robustmo.core import training
from robustmo.plugins.toy_world.world import ToyWorld


@pytest.fixture(scope="module")
def tokenizer():
    from robustmo.plugins.toy_world.tokenizer import train_tokenizer

    return train_tokenizer(ToyWorld(0).tokenizer_corpus(), 768)


@pytest.fixture(scope="module")
def chats():
    return [e.messages() for e in ToyWorld(3).training_mix(64)]


def small_model(tokenizer, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                        num_attention_heads=2, num_key_value_heads=2, intermediate_size=64,
                                        pad_token_id=tokenizer.pad_token_id))


def rows(tokenizer, chats, n=8):
    return [training.tokenize_example(tokenizer, c) for c in chats[:n]]


def test_completion_loss_equals_the_models_own_loss_with_and_without_sparse_logits(tokenizer, chats):
    model = small_model(tokenizer).eval()
    batch = training._collate(rows(tokenizer, chats), tokenizer.pad_token_id)
    n = int((batch["labels"][:, 1:] != training.IGNORE_INDEX).sum())
    with torch.no_grad():
        reference = model(**batch, use_cache=False).loss
        sparse = training.completion_loss(model, batch, n, sparse=True)
        dense = training.completion_loss(model, batch, n, sparse=False)
    assert torch.isclose(sparse, reference, rtol=1e-5) and torch.isclose(dense, reference, rtol=1e-5)
    # and it really computes fewer logits: only where the next token is a completion token
    keep = torch.nn.functional.pad(batch["labels"][:, 1:], (0, 1), value=-100) != -100
    shapes = []
    hook = model.get_output_embeddings().register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape)))
    with torch.no_grad():
        training.completion_loss(model, batch, n, sparse=True)
    hook.remove()
    assert shapes == [(int(keep.sum()), len(tokenizer))] and keep.sum() < keep.numel() / 2


def test_fast_paths_train_the_same_weights_as_the_plain_padded_loop(tokenizer, chats, monkeypatch):
    def run():
        model = small_model(tokenizer)
        stats = training.train(model, tokenizer, chats, lr=3e-3, steps=6, batch_size=16, seed=2)
        return stats["losses"], torch.cat([p.detach().flatten() for p in model.parameters()])

    fast_losses, fast_weights = run()
    monkeypatch.setattr(training, "packing_works", lambda *a: False)
    monkeypatch.setattr(training, "sparse_logits_work", lambda *a: False)
    monkeypatch.setattr(training, "_fused_adamw_supported", lambda *a: False)
    plain_losses, plain_weights = run()
    assert fast_losses == pytest.approx(plain_losses, rel=1e-5)
    assert torch.allclose(fast_weights, plain_weights, atol=1e-5)
    assert fast_losses[-1] < fast_losses[0]  # it did learn something


class _NoLogitsToKeep(torch.nn.Module):
    """A causal LM whose forward takes no ``logits_to_keep`` (as older or custom models)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=None):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          use_cache=use_cache)


class _IgnoresPositions(_NoLogitsToKeep):
    """Drops position ids: packed examples would then see each other."""

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=None, **kwargs):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        return self.inner(input_ids=input_ids, attention_mask=attention_mask, use_cache=use_cache, **kwargs)


def test_models_without_the_fast_paths_are_detected_and_still_trained(tokenizer, chats):
    llama = small_model(tokenizer)
    batch = training._collate(rows(tokenizer, chats, 4), tokenizer.pad_token_id)
    assert training.sparse_logits_work(llama, batch)
    assert training.packing_works(llama, rows(tokenizer, chats), tokenizer.pad_token_id)

    plain = _NoLogitsToKeep(llama)
    assert not training.sparse_logits_work(plain, batch)
    stats = training.train(plain, tokenizer, chats, lr=3e-3, steps=3, batch_size=8, seed=0)
    assert len(stats["losses"]) == 3 and all(loss == loss for loss in stats["losses"])

    leaky = _IgnoresPositions(small_model(tokenizer))
    assert not training.packing_works(leaky, rows(tokenizer, chats), tokenizer.pad_token_id)


def test_adamw_is_fused_only_where_torch_has_the_kernel():
    assert training._fused_adamw_supported([torch.nn.Parameter(torch.zeros(3))])
    assert not training._fused_adamw_supported([torch.nn.Parameter(torch.zeros(3, device="meta"))])
    assert not training._fused_adamw_supported([])
