"""robustmo's fused RMSNorm and rotary embedding compute what transformers' ops compute, forward
and backward; they are swapped in only inside ``FusedOps`` and only where the model keeps the
same logits and gradients."""

from __future__ import annotations

import pytest
import torch
from transformers.models.llama import modeling_llama

from robustmo.core import batches, fused, training
from robustmo.plugins.toy_world.world import ToyWorld


def llama(tokenizer, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                        num_attention_heads=2, num_key_value_heads=2, intermediate_size=64,
                                        pad_token_id=tokenizer.pad_token_id))


@pytest.fixture(scope="module")
def batch(tokenizer):
    rows = batches.tokenize_examples(tokenizer, [e.messages() for e in ToyWorld(5).training_mix(4)])
    return batches.collate(rows, tokenizer.pad_token_id)


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


def fused_rotary(q, k, cos, sin):
    return fused._rotary_forward(modeling_llama.apply_rotary_pos_emb, q, k, cos, sin)


def test_rotary_matches_transformers_forward_and_backward():
    torch.manual_seed(0)
    # queries and keys as the attention makes them: a transposed view, not contiguous
    q = torch.randn(2, 5, 3, 16).transpose(1, 2).requires_grad_()
    k = torch.randn(2, 5, 3, 16).transpose(1, 2).requires_grad_()
    cos, sin = torch.randn(2, 5, 16), torch.randn(2, 5, 16)  # halves differ: checks which half meets which
    grads = torch.randn(2, 3, 5, 16), torch.randn(2, 3, 5, 16)
    own = modeling_llama.apply_rotary_pos_emb(q, k, cos, sin)
    calls = []
    with pytest.MonkeyPatch.context() as mp:
        spy = fused._Rotary.apply
        mp.setattr(fused._Rotary, "apply", lambda *a: calls.append(1) or spy(*a))
        ours = fused_rotary(q, k, cos, sin)
    assert calls == [1]  # the fused function ran
    for a, b in zip(ours, own):
        assert torch.allclose(a, b, atol=1e-6)
    for a, b in zip(torch.autograd.grad(ours, [q, k], grads), torch.autograd.grad(own, [q, k], grads)):
        assert torch.allclose(a, b, atol=1e-5)
    q64, k64 = (torch.randn(1, 2, 4, 8, dtype=torch.float64, requires_grad=True) for _ in range(2))
    cos64, sin64 = torch.randn(1, 1, 4, 8, dtype=torch.float64), torch.randn(1, 1, 4, 8, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda q, k: fused._Rotary.apply(q, k, cos64, sin64), (q64, k64))


def test_other_dtypes_and_learnt_rotary_inputs_keep_the_models_own_ops():
    calls = []
    own = lambda *args: calls.append(args) or modeling_llama.apply_rotary_pos_emb(*args)  # noqa: E731
    q, k = torch.randn(1, 2, 4, 8, dtype=torch.bfloat16), torch.randn(1, 2, 4, 8, dtype=torch.bfloat16)
    cos, sin = torch.randn(1, 4, 8, dtype=torch.bfloat16), torch.randn(1, 4, 8, dtype=torch.bfloat16)
    fused._rotary_forward(own, q, k, cos, sin)
    q, k, cos = q.float(), k.float(), cos.float().requires_grad_()
    fused._rotary_forward(own, q, k, cos, sin.float())
    assert len(calls) == 2
    norm = modeling_llama.LlamaRMSNorm(8).to(torch.bfloat16)
    x = torch.randn(3, 8, dtype=torch.bfloat16)
    assert torch.equal(fused._rms_norm_forward(norm, x), norm(x))


def logits(model, batch):
    with torch.no_grad():
        return model(**{k: v for k, v in batch.items() if k != "labels"}).logits


def test_fused_ops_are_swapped_in_only_inside_the_block(tokenizer, batch):
    model = llama(tokenizer)
    ops = fused.FusedOps(model)
    norms = [m for m in model.modules() if isinstance(m, modeling_llama.LlamaRMSNorm)]
    assert ops and ops.norms == norms and ops.modelling == [modeling_llama]
    own_rotary = modeling_llama.apply_rotary_pos_emb
    calls = []
    with pytest.MonkeyPatch.context() as mp:
        spy = fused._RMSNorm.apply
        mp.setattr(fused._RMSNorm, "apply", lambda *a: calls.append(1) or spy(*a))
        with ops:
            assert fused._ours(modeling_llama.apply_rotary_pos_emb, fused._rotary_forward)
            inside = logits(model, batch)
            assert len(calls) == len(norms)
        with pytest.raises(RuntimeError), ops:
            raise RuntimeError("a failing step")
    assert modeling_llama.apply_rotary_pos_emb is own_rotary
    assert all("forward" not in m.__dict__ for m in norms)
    assert torch.allclose(inside, logits(model, batch), atol=1e-5)


def test_nested_and_overlapping_blocks_restore_every_op_when_the_last_one_ends(tokenizer, batch):
    own_rotary = modeling_llama.apply_rotary_pos_emb
    a, b = llama(tokenizer), llama(tokenizer, seed=1)
    ops_a, ops_b = fused.FusedOps(a), fused.FusedOps(b)
    with ops_a:
        with ops_a:  # the same block twice
            pass
        assert fused._ours(modeling_llama.apply_rotary_pos_emb, fused._rotary_forward)
        assert "forward" in a.model.norm.__dict__
        ops_b.__enter__()  # b's block starts inside a's and ends after it
        assert fused.FusedOps(a).norms == ops_a.norms  # a block made meanwhile finds the same targets
    assert fused._ours(modeling_llama.apply_rotary_pos_emb, fused._rotary_forward)  # b still uses it
    assert "forward" not in a.model.norm.__dict__ and "forward" in b.model.norm.__dict__
    ops_b.__exit__(None, None, None)
    assert modeling_llama.apply_rotary_pos_emb is own_rotary and "forward" not in b.model.norm.__dict__


def test_a_model_copied_or_saved_inside_a_block_stays_itself(tokenizer, batch, tmp_path):
    import copy

    model = llama(tokenizer)
    with fused.FusedOps(model):
        twin = copy.deepcopy(model)
        torch.save(model, tmp_path / "model.pt")
    with torch.no_grad():
        twin.model.norm.weight.mul_(2)  # the copy's norm uses the copy's own weight
    assert not torch.allclose(logits(twin, batch), logits(model, batch))
    assert torch.allclose(logits(torch.load(tmp_path / "model.pt", weights_only=False), batch), logits(model, batch),
                          atol=1e-5)


def test_the_guard_accepts_llama_with_and_without_lora(tokenizer, batch):
    from peft import LoraConfig, get_peft_model

    model = llama(tokenizer).eval()
    assert fused.fused_ops_work(model, batch) and fused.fused_ops_work(model, batch, sparse=True)
    assert all(p.grad is None for p in model.parameters())  # the check left no gradients behind
    assert not model.training  # and the mode as it found it
    lora = get_peft_model(llama(tokenizer), LoraConfig(r=4, lora_alpha=4, target_modules="all-linear"))
    assert fused.fused_ops_work(lora, batch)


def test_training_with_gradient_checkpointing_recomputes_with_the_same_ops(tokenizer, monkeypatch):
    # the backward pass recomputes each layer's forward: it must run inside the block too
    decided = []
    real = fused.fused_ops_work
    monkeypatch.setattr(fused, "fused_ops_work", lambda *a, **k: decided.append(real(*a, **k)) or decided[-1])
    chats = [e.messages() for e in ToyWorld(5).training_mix(16)]
    runs = []
    for checkpointing in (False, True):
        model = llama(tokenizer)
        if checkpointing:  # transformers 5.x's name, and the older one
            (getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable)()
        runs.append(training.train(model, tokenizer, chats, lr=3e-3, steps=3, batch_size=8, seed=0)["losses"])
    assert decided == [True, True]
    assert runs[1] == pytest.approx(runs[0], rel=1e-5)


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
