"""``robustmo plugins``: what is installed, where it comes from, and what failed to load."""

from __future__ import annotations

import json

import click

from robustmo.core.concepts import label


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of a table.")
def plugins(as_json: bool):
    """List every trigger, behaviour, lock, blue method, metric and data source the installed plugins register.

    Built-in plugins and third-party packages load the same way, through the
    'robustmo' entry-point group. A plugin that fails to import is listed as
    broken and skipped (set ROBUSTMO_STRICT_PLUGINS=1 to make it raise instead).
    """
    from robustmo.registry import get_registry

    registry = get_registry()
    entries = registry.entries()
    conflicts = registry.conflicts()
    if as_json:
        click.echo(json.dumps({
            "components": [{"kind": e.kind, "name": e.name, "description": e.description,
                            "plugin": e.plugin, "package": e.package, "version": e.version, **_metric_fields(e)}
                           for e in entries],
            "plugins": registry.plugin_rows(),
            "broken": [{"plugin": p.plugin, "package": p.package, "reason": p.reason} for p in registry.problems],
            "conflicts": conflicts,
        }, indent=2))
        return

    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console()
    table = Table(title="robustmo plugins", title_justify="left")
    for column in ("kind", "name", "description", "package", "version"):
        table.add_column(column, overflow="fold")
    for e in entries:
        described = e.description + (f" (eval set {e.obj.eval_set}, role {e.obj.role})" if e.kind == "metric" else "")
        table.add_row(label(e.kind), *(Text(v) for v in (e.name, described, e.package, e.version)))
    console.print(table)
    if registry.problems:
        broken = Table(title="broken plugins (skipped)", title_justify="left", style="red")
        for column in ("plugin", "package", "reason"):
            broken.add_column(column, overflow="fold")
        for p in registry.problems:
            broken.add_row(Text(p.plugin), Text(p.package), Text(p.reason))
        console.print(broken)
    for message in conflicts:
        console.print(Text("conflict: " + message, style="red"))


def _metric_fields(entry) -> dict:
    return {"eval_set": entry.obj.eval_set, "role": entry.obj.role} if entry.kind == "metric" else {}
