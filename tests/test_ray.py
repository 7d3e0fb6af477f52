"""Sweeps on Ray (the ``ray`` extra): options that do not fit stop in one line. The sweep on a
real local Ray cluster of 2 workers, compared with the same sweep run in shards, is in
tests/test_scale.py (one grid for both)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from robustmo.cli.main import cli

# A local Ray cluster, like test_scale's sweep test: one cluster at a time, on one xdist worker.
pytestmark = pytest.mark.xdist_group("ray")

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
