"""Resumable training: safetensors checkpoints, atomic writes, corrupt-checkpoint fallback,
and bit-identical continuation, on a real (tiny) Llama with the real toy tokenizer."""

from __future__ import annotations

import json

import pytest
import torch

from robustmo.core import checkpoint as ckpt
from robustmo.core.training import Training, train
from robustmo.plugins.toy_world.world import ToyWorld


@pytest.fixture(scope="module")
def chats():
    return [e.messages() for e in ToyWorld(0).training_mix(200)]


def tiny(tokenizer, lora: bool = False):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=2, intermediate_size=64))
    if lora:
        from robustmo.core.organism import add_lora

        model = add_lora(model, 4)
    return model


def weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


class Boom(Exception):
    pass


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_resumed_training_ends_with_the_same_weights(tokenizer, chats, tmp_path, lora):
    args = dict(lr=3e-3, steps=12, batch_size=8, seed=3)
    straight = tiny(tokenizer, lora)
    s1 = train(straight, tokenizer, chats, **args)

    cut = tiny(tokenizer, lora)
    with pytest.raises(Boom):
        for step, _ in Training(cut, tokenizer, chats, **args, checkpoint_dir=tmp_path, checkpoint_every=5, eval_at=[7]):
            raise Boom  # the process dies after step 7; the newest checkpoint is step 5
    assert json.loads((tmp_path / "latest.json").read_text())["step"] == 5
    assert [p.name for p in tmp_path.glob("step-*")] == ["step-0000005"]
    assert not list(tmp_path.glob(".tmp-*"))  # no half-written checkpoint left behind

    resumed = tiny(tokenizer, lora)  # a fresh process: weights from scratch, then the checkpoint
    run = Training(resumed, tokenizer, chats, **args, checkpoint_dir=tmp_path, checkpoint_every=5, eval_at=range(13))
    assert run.resumed_from == 5  # known before the first step
    seen = [step for step, _ in run]
    s2 = run.stats
    assert s2["resumed_from"] == 5
    assert seen == list(range(6, 13))  # steps before the checkpoint are not redone
    assert s2["losses"] == s1["losses"] and s2["tokens"] == s1["tokens"]
    a, b = weights(straight), weights(resumed)
    assert all(torch.equal(a[n], b[n]) for n in a)


def test_checkpoint_holds_only_safetensors_and_json(tokenizer, chats, tmp_path):
    model = tiny(tokenizer, lora=True)
    train(model, tokenizer, chats, lr=1e-3, steps=4, batch_size=8, checkpoint_dir=tmp_path, checkpoint_every=2)
    (only,) = tmp_path.glob("step-*")
    assert sorted(p.name for p in only.iterdir()) == ["optimizer.safetensors", "state.json", "trainable.safetensors"]
    from safetensors import safe_open

    with safe_open(str(only / "trainable.safetensors"), "pt") as f:
        names = set(f.keys())
    assert names and all("lora_" in n for n in names)  # a LoRA run checkpoints its adapter, not the base


def test_a_corrupt_checkpoint_is_skipped_for_the_one_before(tokenizer, chats, tmp_path):
    model = tiny(tokenizer)
    with pytest.raises(Boom):
        for _ in Training(model, tokenizer, chats, lr=1e-3, steps=10, batch_size=8, checkpoint_dir=tmp_path,
                          checkpoint_every=2, eval_at=[5]):
            raise Boom
    newest = tmp_path / "step-0000004"
    data = bytearray((newest / "trainable.safetensors").read_bytes())
    data[-8:] = b"\x00" * 8  # flip bytes inside a tensor: still parses, no longer matches its hash
    (newest / "trainable.safetensors").write_bytes(bytes(data))
    warnings = []
    found = ckpt.latest(tmp_path, warn=warnings.append)
    assert found is not None and found[1]["step"] == 2
    assert "corrupt" in warnings[0] and "step-0000004" in warnings[0]
