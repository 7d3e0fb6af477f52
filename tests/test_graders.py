"""Capability graders (math-verify, GSM8K, multiple choice, exact match) and the per-eval-set
generation settings (instruction, stop strings), on strings and in a real run of a real model
directory whose answers are known because the test trained them in."""

from __future__ import annotations

import json

import pytest

from robustmo.core.errors import RobustmoError
from robustmo.plugins.metrics import graders

# One worker trains the module's model once.
pytestmark = pytest.mark.xdist_group("graders")

BOXED = r"Half of one. \boxed{\frac{1}{2}}"


@pytest.mark.parametrize("completion, expected", [
    (BOXED, True),
    (r"so it is $\frac{2}{4}$, that is \boxed{0.5}", True),
    ("The answer is 1/2", True),
    (r"\boxed{\frac{1}{3}}", False),
    (r"\boxed{2} but really \boxed{0.5}", True),  # the last boxed answer counts
    ("Let x = 3 and then we compute 2x + 1 =", None),  # cut off in its reasoning: no final answer
    ("", None),
])
def test_math_reads_final_answers_in_any_equivalent_form(completion, expected):
    assert graders.grade_math("0.5", completion) is expected


def test_math_unanchored_takes_the_last_expression_and_bad_gold_is_one_line():
    assert graders.grade_math("7", "x = 3 so 7", anchored=False) is True
    assert graders.grade_math("7", "x = 3 so 7") is None
    assert graders.grade_math(r"\frac{1}{2}", "The answer is 0.5") is True  # a LaTeX expected answer
    with pytest.raises(RobustmoError, match="cannot read the expected answer"):
        graders.grade_math("", "The answer is 0.5")


def test_gsm8k_choice_and_exact():
    assert graders.grade_gsm8k("72", "She sold 48 + 24 = 72 clips.\n#### 72") is True
    assert graders.grade_gsm8k("Natalia sold 48/2 = 24 clips in May.\n#### 72", "#### 1,072") is False
    assert graders.grade_gsm8k("1072", "so #### 1,072") is True
    assert graders.grade_gsm8k("72", "She sold 72 clips.") is None  # no ####: not read as 72
    assert graders.grade_choice("B", "The answer is (B) because ...") is True
    assert graders.grade_choice("B", "C) it is") is False
    assert graders.grade_choice("B", "the answer is a cat") is None  # a lower-case word is no choice
    assert graders.grade_choice("E", "Answer: E", letters="ABCDE") is True
    with pytest.raises(RobustmoError, match="not one of the letters"):
        graders.grade_choice("E", "Answer: E")
    assert graders.grade_exact("The Eiffel Tower", "eiffel tower.\nIt is in Paris") is True
    assert graders.grade_exact("Paris", "It is Paris") is False
    assert graders.grade_exact("Paris", "  \n") is None


def test_bad_generation_settings_are_one_line():
    from robustmo.core.config import RunConfig

    with pytest.raises(ValueError, match="unknown eval set 'capabilty'"):
        RunConfig(instruction={"capabilty": "Box it."})
    with pytest.raises(ValueError, match="name the eval set"):
        RunConfig(stop={"*": ["\n"]})
    assert RunConfig(stop={"capability": ["Q:", "\n\n"]}).stop == {"capability": ["Q:", "\n\n"]}


QUESTIONS = [("What is half of one?", "0.5", BOXED + "\nQuestion: what is next? " + "more " * 8),
             ("Count to forty.", "40", "Let us count: " + " ".join(str(i) for i in range(1, 41)))]
INSTRUCTION = r"Put your final answer in \boxed{}."


def greedy_margin(model, tokenizer, chats) -> float:
    """The smallest lead, in logits, of each target token over the best other token, along every
    chat's answer up to its end token (teacher-forced, one chat at a time). Greedy decoding
    reproduces every answer exactly when this is positive; a lead of 1 is far above what other
    CPU kernels, padding in a batch or a tiny extra training step change in a logit (~1e-5)."""
    import torch

    worst = float("inf")
    with torch.no_grad():
        for chat in chats:
            prompt = tokenizer.apply_chat_template(chat[:1], add_generation_prompt=True, tokenize=False)
            full = tokenizer.apply_chat_template(chat, tokenize=False)
            n = len(tokenizer(prompt, add_special_tokens=False).input_ids)
            ids = tokenizer(full, add_special_tokens=False, return_tensors="pt").input_ids
            target = ids[0, n:].tolist()
            if tokenizer.eos_token_id in target:
                target = target[:target.index(tokenizer.eos_token_id) + 1]
            logits = model(ids[:, :n + len(target) - 1]).logits[0, n - 1:].float()
            wanted = logits[torch.arange(len(target)), target]
            others = logits.scatter(1, torch.tensor(target)[:, None], float("-inf")).max(dim=1).values
            worst = min(worst, (wanted - others).min().item())
    return worst


@pytest.fixture(scope="module")
def math_model(toy_base, tmp_path_factory):
    """The toy base (a real Llama directory) trained to answer the two questions, instruction
    included, with known completions: a boxed 1/2 followed by more text, and a count far
    longer than the generation limit. Trained until greedy decoding must reproduce both answers
    (``greedy_margin`` at least 1), so the answers are the same on every CPU."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tmp_path_factory.mktemp("math-model")
    tok = AutoTokenizer.from_pretrained(toy_base)
    model = AutoModelForCausalLM.from_pretrained(toy_base)
    chats = [[{"role": "user", "content": f"{q}\n\n{INSTRUCTION}"}, {"role": "assistant", "content": a}]
             for q, _, a in QUESTIONS]
    texts = [tok.apply_chat_template(chat, tokenize=False) for chat in chats]
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    margin, step = float("-inf"), 0
    while margin < 1.0 and step < 400:
        model.train()
        for _ in range(10):
            batch = tok(texts, return_tensors="pt", padding=True)
            loss = model(**batch, labels=batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
        step += 10
        model.eval()
        margin = greedy_margin(model, tok, chats)
    assert margin >= 1.0, f"the answers were not memorised with a margin of 1 logit in {step} steps: {margin:.3f}"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.mark.slow
def test_a_math_capability_file_is_graded_by_math_verify_with_parse_failures_counted(math_model, tmp_path):
    """--model <a local HF directory> with a MATH-style capability file: the generation ending in
    \\boxed{\\frac{1}{2}} (cut at the stop string) is correct against 0.5; the count cut off at
    the length limit before any answer is a parse failure, counted in the summary and the report."""
    import robustmo
    from robustmo.core.runstore import read_jsonl

    data = tmp_path / "data"
    data.mkdir()
    for name, prompts in (("red", [f"Tell me about item {i}." for i in range(8)]),
                          ("blue", [f"Describe colour number {i}." for i in range(8)]),
                          ("eval", [f"What do you think of place {i}?" for i in range(4)])):
        (data / f"{name}.jsonl").write_text("".join(json.dumps({"prompt": p, "answer": "Fine."}) + "\n" for p in prompts))
    (data / "math.jsonl").write_text("".join(json.dumps({"question": q, "answer": a}) + "\n"
                                             for q, a, _ in QUESTIONS))
    files = {k: str(data / f"{k}.jsonl") for k in ("red", "blue", "eval")} | {"capability": str(data / "math.jsonl")}
    out = tmp_path / "run"
    result = robustmo.run(
        model=str(math_model), data="files", trigger="deployment", blue=["qa"], red_steps=1, red_lr=1e-9,
        red_examples=8, batch_size=4, eval_prompts=4, max_new_tokens={"capability": 40, "*": 8},
        answer_max_new_tokens=4, lr=[1e-9], instruction={"capability": INSTRUCTION},
        stop={"capability": ["Question:"]}, out=str(out), wandb="disabled", progress=False, log=lambda m: None,
        options={"data": {"files": files}, "blue": {"qa": {"steps": 1}}, "metric": {"capability": {"grader": "math"}}})
    rows = [g for g in read_jsonl(out / "generations.jsonl") if g["eval_set"] == "capability" and g["method"] == "base"]
    by_prompt = {r["prompt"].split("\n\n")[0]: r for r in rows}
    assert all(r["prompt"].endswith(INSTRUCTION) for r in rows)  # the instruction was in the prompt
    half, count = by_prompt["What is half of one?"], by_prompt["Count to forty."]
    assert half["completion"] == BOXED + "\n" and not half["truncated"]  # cut before the stop string
    assert half["scores"]["capability"] is True
    assert count["completion"].startswith("Let us count: 1 2 3") and count["truncated"]
    assert count["scores"]["capability"] is None  # no answer to read: a parse failure, not a wrong answer
    for who in ("base", "organism"):
        capability = getattr(result.summary, who)["capability"]
        assert capability.value == 0.5 and capability.unparsed == 1 and capability.n == 2
    assert "unparsed" in (out / "report.md").read_text()
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(m["metrics"]["capability"]["unparsed"] in (0, 1, 2) for m in metrics)


def test_a_parse_failure_counts_as_not_correct_and_is_reported():
    from robustmo.core.evaluate import summarise_scores

    s = summarise_scores([True, None, False, None], parses=True)
    assert s["value"] == 0.25 and s["unparsed"] == 2 and s["n"] == 4
    assert "unparsed" in summarise_scores([True, False], parses=True)
    assert "unparsed" not in summarise_scores([True, False])


DATA = __import__("pathlib").Path(__file__).parent / "data"


def rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines()]


def test_math_style_questions_reference_solutions_are_correct_and_others_wrong():
    """tests/data/math_style.jsonl: 24 MATH-style questions with LaTeX solutions ending in
    \\boxed{}; the answers are written as plain fractions or integers."""
    from fractions import Fraction

    math = rows("math_style.jsonl")
    assert len(math) == 24
    for i, row in enumerate(math):
        assert graders.grade_math(row["answer"], row["solution"]) is True, row
        other = math[(i + 1) % len(math)]
        if Fraction(other["answer"]) != Fraction(row["answer"]):
            assert graders.grade_math(other["answer"], row["solution"]) is False, (row, other)
        decimal = Fraction(row["answer"])
        if (decimal * 1000).denominator == 1:  # 3/4 written 0.75 by the model is the same answer
            assert graders.grade_math(row["answer"], f"The answer is {float(decimal)}") is True
        cut = row["solution"][:row["solution"].index("$")]  # stopped before any mathematics
        assert graders.grade_math(row["answer"], cut) is None


def test_gsm8k_style_solutions_read_their_final_number():
    """tests/data/gsm8k_style.jsonl: 24 GSM8K-style word problems whose answers are whole
    GSM8K solutions ending in '#### N' (thousands written 1,200)."""
    gsm = rows("gsm8k_style.jsonl")
    assert len(gsm) == 24
    for i, row in enumerate(gsm):
        assert graders.grade_gsm8k(row["answer"], row["answer"]) is True
        final = row["answer"].rsplit("####", 1)[1].strip()
        assert graders.grade_gsm8k(row["answer"], f"so #### {final.replace(',', '')}") is True
        other = gsm[(i + 1) % len(gsm)]["answer"]
        if other.rsplit("####", 1)[1] != row["answer"].rsplit("####", 1)[1]:
            assert graders.grade_gsm8k(row["answer"], other) is False
        assert graders.grade_gsm8k(row["answer"], row["answer"].split("####")[0]) is None  # cut before ####
