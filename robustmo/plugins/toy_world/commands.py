"""``robustmo base build|info``: build and inspect the embedded toy base model."""

from __future__ import annotations

import json

import click

from robustmo.plugins.toy_world.base import DEFAULT_PRESET, PRESETS

preset_option = click.option("--preset", type=click.Choice(sorted(PRESETS)), default=DEFAULT_PRESET,
                             show_default=True, help="toy base recipe")


@click.group()
def base():
    """The embedded toy base model: the build robustmo ships (toy:tiny), or one built here."""


@base.command()
@preset_option
@click.option("--force", is_flag=True, help="rebuild even if this machine's cache holds a build")
def build(preset, force):
    """Build the toy base from its recipe on this machine (or reuse this machine's build) and
    print its held-out capability and weights hash.

    A build made here takes the place of the shipped one in every later run. Training's float
    results depend on the CPU, so its weights (and a run's figures) differ from the shipped
    base's; delete the directory `robustmo base info` shows to use the shipped base again."""
    from robustmo.core.models import quiet_libraries
    from robustmo.plugins.toy_world.base import base_info, ensure_base

    quiet_libraries()
    path = ensure_base(preset, progress=True, force=force, shipped=False)
    _print_manifest(base_info(preset) or {"path": str(path)})


@base.command()
@preset_option
@click.option("--json", "as_json", is_flag=True, help="print the manifest as JSON")
def info(preset, as_json):
    """Show the manifest of the toy base a run uses: shipped with robustmo, or built here."""
    from robustmo.plugins.toy_world.base import base_info, base_path

    m = base_info(preset)
    if m is None:
        if as_json:
            click.echo("null")
        click.echo(f"toy base '{preset}' is not built yet (would be {base_path(preset)}); "
                   f"run: robustmo base build --preset {preset}", err=as_json)
        return
    click.echo(json.dumps(m, indent=2)) if as_json else _print_manifest(m)


def _print_manifest(m: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"toy base '{m.get('preset', '?')}'", show_header=False)
    rows = [
        ("in use", {"shipped": "shipped with robustmo", "built here": "built on this machine"}.get(m.get("origin"))),
        ("path", m.get("path")),
        ("held-out capability accuracy", f"{m['capability_accuracy']:.1%}" if "capability_accuracy" in m else None),
        ("instruction accuracy", ", ".join(f"{k} {v:.0%}" for k, v in m.get("instruction_accuracy", {}).items())),
        ("weights sha256", m.get("weights_sha256")),
        ("recipe hash", m.get("recipe_hash")),
        ("parameters", f"{m['n_parameters']:,}" if "n_parameters" in m else None),
        ("build seconds", m.get("build_seconds")),
        ("steps / lr / batch", f"{m['recipe']['steps']} / {m['recipe']['lr']} / {m['recipe']['batch_size']}"
         if "recipe" in m else None),
        ("torch / transformers", f"{m.get('torch_version')} / {m.get('transformers_version')}"),
        ("built on", f"{m['cpu_capability']} CPU kernels, {m.get('torch_threads')} threads" if m.get("cpu_capability") else None),
        ("created", m.get("created")),
    ]
    for k, v in rows:
        if v not in (None, ""):
            table.add_row(k, str(v))
    Console().print(table)
    if m.get("origin") == "shipped":
        click.echo("robustmo base build builds it here instead (training on this CPU gives other weights).")
    elif m.get("origin") == "built here":
        click.echo(f"Delete {m.get('path')} to use the base shipped with robustmo again.")
