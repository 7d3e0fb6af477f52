"""Sweeps on Ray (the ``ray`` extra): a real local Ray cluster of 2 workers runs each
organism's cells as one task, and the comparison equals the sequential sweep's."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from robustmo.cli.main import cli

pytest.importorskip("ray")

GRID = """
fixed:
  model: {base}
  red_steps: 20
  lora_rank: 8
  eval_prompts: 12
  capability_questions: 12
  wandb: disabled
  options: {{blue: {{pirate: {{steps: 2}}, qa: {{steps: 2}}}}}}
grid:
  blue: [pirate, qa]
  seed: [0, 1]
"""


def _organisms(cache):
    return [p for p in (cache / "stages").glob("organism-*") if (p / "COMPLETE").exists()]


@pytest.mark.slow
def test_a_ray_sweep_runs_each_organism_once_as_a_task_and_compares_as_the_sequential_one(toy_base, tmp_path,
                                                                                          monkeypatch):
    grid = tmp_path / "grid.yaml"
    grid.write_text(GRID.format(base=toy_base))
    results = {}
    for executor in ("local", "ray"):
        cache = tmp_path / f"cache-{executor}"
        monkeypatch.setenv("ROBUSTMO_CACHE", str(cache))  # a worker gets the driver's cache through runtime_env
        out = tmp_path / executor
        result = CliRunner().invoke(cli, ["sweep", str(grid), "--executor", executor, "--out", str(out)],
                                    terminal_width=200)
        assert result.exit_code == 0, result.output + repr(result.exception)
        assert len(_organisms(cache)) == 2  # two seeds -> two organisms, each trained once for two blue methods
        results[executor] = json.loads((out / "sweep.json").read_text())
        if executor == "ray":
            tasks = re.findall(r"organism of (\S+): (\d) cell\(s\) done on worker pid (\d+)", result.output)
            assert len(tasks) == 2 and all(n == "2" for _, n, _ in tasks), result.output  # one task per organism
            assert len({pid for *_, pid in tasks}) == 2  # on the two workers
            assert "2 organism task(s) on a cluster of 2 CPU(s)" in result.output
            for cell in results["ray"]["rows"]:
                assert (out / "cells" / cell["cell"] / "summary.json").exists()

    local, on_ray = results["local"], results["ray"]
    assert on_ray["complete"] == local["complete"] == 4
    rows = {r["cell"]: r for r in local["rows"]}
    for r in on_ray["rows"]:
        mine = rows[r["cell"]]
        for key in ("auc", "removal_at_10", "backdoor_rate", "capability"):
            a, b = mine[key], r[key]
            assert (a != a and b != b) or a == pytest.approx(b, abs=1e-9), (r["cell"], key, a, b)
    assert [(a["blue"], a["n_seeds"]) for a in on_ray["across_seeds"]] == \
        [(a["blue"], a["n_seeds"]) for a in local["across_seeds"]]


def test_ray_options_that_do_not_fit_fail_in_one_line(toy_base, tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text(GRID.format(base=toy_base))
    out = str(tmp_path / "out")
    for args, message in [(["--executor", "ray", "--shard", "1/2"], "leave --shard out"),
                          (["--address", "auto"], "use it with --executor ray"),
                          (["--executor", "ray", "--gpus-per-task", "1"], "asks for 1 GPU(s) but the Ray cluster has 0"),
                          (["--executor", "spark"], "--executor")]:
        result = CliRunner().invoke(cli, ["sweep", str(grid), "--out", out, *args], terminal_width=300)
        assert result.exit_code == 2 and message in result.output, (args, result.output)
        assert result.output.strip().splitlines()[-1].startswith(("Error", "error", "Usage")) or \
            message in result.output.strip().splitlines()[-1]
    assert not (tmp_path / "out" / "cells").exists()  # nothing was run
