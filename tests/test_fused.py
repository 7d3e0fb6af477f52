"""robustmo's fused RMSNorm and rotary embedding compute what transformers' ops compute, forward
and backward; they are swapped in only inside ``FusedOps`` and only where the model keeps the
same logits and gradients."""

from __future__ import annotations

import pytest
import torch
from transformers.models.llama import modeling_llama

from robustmo.core import fused, training
from robustmo.plugins.toy_world.world import ToyWorld


def llama(tokenizer, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                        num_attention_heads=2, num_key_value_heads=2, intermediate_size=64,
                                        pad_token_id=tokenizer.pad_token_id))


@pytest.fixture(scope="module")
def batch(tokenizer):
    rows = training.tokenize_examples(tokenizer, [e.messages() for e in ToyWorld(5).training_mix(4)])
    return training._collate(rows, tokenizer.pad_token_id)


def test_rms_norm_matches_transformers_forward_and_backward():
    torch.manual_seed(0)
    norm = modeling_llama.LlamaRMSNorm(48, eps=1e-5)
    with torch.no_grad():
        norm.weight.normal_()
    x = torch.randn(3, 7, 48, requires_grad=True)
    grad = torch.randn(3, 7, 48)
    own = norm(x)
    own_grads = torch.autograd.grad(own, [x, norm.weight], grad)
    ours = fused._RMSNorm.apply(x, norm.weight, 1e-5)
    our_grads = torch.autograd.grad(ours, [x, norm.weight], grad)
    assert torch.allclose(ours, own, atol=1e-5)
    for a, b in zip(our_grads, own_grads):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
    # and exactly, in float64, against finite differences; a frozen weight gets no gradient
    x64 = torch.randn(2, 3, 8, dtype=torch.float64, requires_grad=True)
    w64 = torch.randn(8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w: fused._RMSNorm.apply(x, w, 1e-6), (x64, w64))
    frozen = w64.detach()
    assert torch.autograd.gradcheck(lambda x: fused._RMSNorm.apply(x, frozen, 1e-6), (x64,))


def test_rotary_matches_transformers_forward_and_backward():
    torch.manual_seed(0)
    # queries and keys as the attention makes them: a transposed view, not contiguous
    q = torch.randn(2, 5, 3, 16).transpose(1, 2).requires_grad_()
    k = torch.randn(2, 5, 3, 16).transpose(1, 2).requires_grad_()
    cos, sin = torch.randn(2, 5, 16), torch.randn(2, 5, 16)  # halves differ: checks which half meets which
    grads = torch.randn(2, 3, 5, 16), torch.randn(2, 3, 5, 16)
    own = modeling_llama.apply_rotary_pos_emb(q, k, cos, sin)
    ours = fused.apply_rotary_pos_emb(q, k, cos, sin)
    for a, b in zip(ours, own):
        assert torch.allclose(a, b, atol=1e-6)
    for a, b in zip(torch.autograd.grad(ours, [q, k], grads), torch.autograd.grad(own, [q, k], grads)):
        assert torch.allclose(a, b, atol=1e-5)
    q64, k64 = (torch.randn(1, 2, 4, 8, dtype=torch.float64, requires_grad=True) for _ in range(2))
    cos64, sin64 = torch.randn(1, 4, 8, dtype=torch.float64), torch.randn(1, 4, 8, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda q, k: fused.apply_rotary_pos_emb(q, k, cos64, sin64), (q64, k64))


def test_fused_ops_are_swapped_in_only_inside_the_block(tokenizer, batch):
    model = llama(tokenizer)
    ops = fused.FusedOps(model)
    norms = [m for m in model.modules() if isinstance(m, modeling_llama.LlamaRMSNorm)]
    assert ops and ops.norms == norms and ops.modelling == [modeling_llama]
    own_rotary = modeling_llama.apply_rotary_pos_emb
    calls = []
    spy = fused._RMSNorm.apply
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fused._RMSNorm, "apply", lambda *a: calls.append(1) or spy(*a))
        with ops:
            assert modeling_llama.apply_rotary_pos_emb is fused.apply_rotary_pos_emb
            with torch.no_grad():
                inside = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
            assert len(calls) == len(norms)
            # a float64 input keeps the model's own RMSNorm
            x = torch.randn(2, 32, dtype=torch.float64)
            assert torch.equal(norms[0](x), modeling_llama.LlamaRMSNorm.forward(norms[0], x))
            assert len(calls) == len(norms)
        with pytest.raises(RuntimeError), ops:
            raise RuntimeError("a failing step")
    assert modeling_llama.apply_rotary_pos_emb is own_rotary
    assert all("forward" not in m.__dict__ for m in norms)
    with torch.no_grad():
        outside = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    assert torch.allclose(inside, outside, atol=1e-5)


def test_the_guard_accepts_llama_with_and_without_lora(tokenizer, batch):
    from peft import LoraConfig, get_peft_model

    model = llama(tokenizer)
    assert fused.fused_ops_work(model, batch)
    assert all(p.grad is None for p in model.parameters())  # the check left no gradients behind
    assert model.training  # and the mode as it found it
    lora = get_peft_model(llama(tokenizer), LoraConfig(r=4, lora_alpha=4, target_modules="all-linear"))
    assert fused.fused_ops_work(lora, batch)


class ShiftedRMSNorm(modeling_llama.LlamaRMSNorm):
    """Looks like transformers' RMSNorm but scales by (1 + weight), as Gemma's does."""

    def forward(self, hidden_states):
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        return (1 + self.weight) * hidden_states * torch.rsqrt(variance + self.variance_epsilon)


def test_the_guard_refuses_a_model_that_computes_differently_and_training_still_works(tokenizer, batch):
    model = llama(tokenizer)
    shifted = ShiftedRMSNorm(32)
    shifted.load_state_dict(model.model.norm.state_dict())
    model.model.norm = shifted
    assert fused.FusedOps(model)  # it looks fusable ...
    assert not fused.fused_ops_work(model, batch)  # ... but the check sees different logits
    chats = [e.messages() for e in ToyWorld(5).training_mix(16)]
    stats = training.train(model, tokenizer, chats, lr=3e-3, steps=2, batch_size=8, seed=0)
    assert len(stats["losses"]) == 2 and all(loss == loss for loss in stats["losses"])


def test_nothing_to_fuse_in_a_model_without_rmsnorm_or_rotary(tokenizer, batch):
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=2))
    assert not fused.FusedOps(gpt2)
    assert not fused.fused_ops_work(gpt2, batch)
