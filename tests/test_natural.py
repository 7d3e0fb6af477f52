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


@pytest.mark.slow
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
