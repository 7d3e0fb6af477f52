"""LoRA continued vs merged, and full-weight organisms: what the blue team really trains."""

import pytest
import torch

from robustmo.core.config import RunConfig

from robustmo.core.plan import resolve_plan
from robustmo.core.organism import add_lora, blue_model
from robustmo.registry import get_registry


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                        num_key_value_heads=2, intermediate_size=64))


def red_lora_organism():
    organism = add_lora(tiny_llama(), rank=4)
    with torch.no_grad():  # stand-in for red training: a non-zero adapter
        for name, p in organism.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    return organism


def plan(**kw):
    return resolve_plan(RunConfig(**kw), get_registry())


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_continued_mode_trains_the_red_adapter():
    organism = red_lora_organism()
    model = blue_model(plan(install="lora", lora_mode="continued"), organism, adapter="lora", rank=8)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    red_b = dict(organism.named_parameters())
    for n, p in model.named_parameters():
        if "lora_B" in n:  # the red adapter's (non-zero) weights, not a fresh zero adapter
            assert torch.equal(p, red_b[n]) and p.abs().sum() > 0


def test_merged_mode_merges_the_red_adapter_and_adds_a_fresh_one():
    organism = red_lora_organism()
    ids = torch.randint(0, 64, (2, 7))
    model = blue_model(plan(install="lora", lora_mode="merged"), organism, adapter="lora", rank=8)
    # A fresh adapter (lora_B starts at zero) on a base that already contains the red update:
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and all(torch.count_nonzero(p) == 0 for p in lora_b)
    assert {p.shape[0] for n, p in model.named_parameters() if "lora_A" in n} == {8}
    assert torch.allclose(logits(model, ids), logits(organism, ids), atol=1e-5)
    base_weights = [p for n, p in model.named_parameters() if "base_layer" in n and "q_proj" in n]
    untouched = tiny_llama().model.layers[0].self_attn.q_proj.weight
    assert not torch.allclose(base_weights[0], untouched)  # the red update is in the weights now
    assert all(not p.requires_grad for p in base_weights)


def test_full_organism_gets_a_fresh_adapter_and_adapter_full_trains_everything():
    organism = tiny_llama()
    model = blue_model(plan(install="full"), organism, adapter="lora", rank=4)
    assert hasattr(model, "peft_config")
    assert all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    everything = blue_model(plan(install="full"), organism, adapter="full", rank=4)
    assert all(p.requires_grad for p in everything.parameters())


def test_qa_blue_method_keeps_normal_answers():
    qa = get_registry().get("blue", "qa").obj
    assert qa.answer(None, "dog cat", None, qa.Options()) == "dog cat"


@pytest.mark.parametrize("mode", ["merged", "sideways"])
def test_lora_mode_is_validated(mode):
    from robustmo.core.config import build_config
    from robustmo.core.errors import RobustmoError

    if mode == "merged":
        assert build_config({}, {"lora_mode": mode}, []).lora_mode == "merged"
    else:
        with pytest.raises(RobustmoError, match="lora_mode"):
            build_config({}, {"lora_mode": mode}, [])
