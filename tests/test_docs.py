"""Every hookspec is documented (datasette's habit): adding a hook without docs fails here."""

from pathlib import Path

from robustmo.registry import hookspecs

DOCS = Path(__file__).parent.parent / "docs" / "plugins.md"


def hookspec_names():
    return [name for name in dir(hookspecs) if name.startswith("register_")]


def test_every_hookspec_is_documented():
    text = DOCS.read_text()
    names = hookspec_names()
    assert len(names) == 6
    for name in names:
        arg = "cli" if name == "register_commands" else "register"
        assert f"### {name}({arg})" in text, f"docs/plugins.md lacks a section for {name}"
