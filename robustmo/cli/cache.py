"""``robustmo cache``: the stage cache (organisms, blue runs and evaluations stored by the hash of their inputs)."""

from __future__ import annotations

import json

import click


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


@click.group()
def cache():
    """The stage cache: each organism, blue run and evaluation of the base or organism,
    stored under the hash of its inputs.

    \b
    A run reuses any stage whose inputs (upstream stage, options, data, code versions)
    match one already computed, and continues a partial one from its last checkpoint.
    Location: $ROBUSTMO_CACHE/stages (default ~/.cache/robustmo/stages).
    'robustmo run --no-cache' neither reads nor writes it.
    """


@cache.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of a table.")
def ls(as_json: bool):
    """List cached stages: id, kind, what it is, state (complete/partial), size."""
    from rich.console import Console
    from rich.table import Table

    from robustmo.core.stages import StageCache

    store = StageCache()
    entries = store.entries()
    if as_json:
        click.echo(json.dumps({"root": str(store.root), "stages": entries}, indent=2))
        return
    if not entries:
        click.echo(f"The stage cache at {store.root} is empty.")
        return
    table = Table(title=f"stage cache: {store.root}", title_justify="left")
    for column in ("id", "kind", "stage", "state", "size", "created"):
        table.add_column(column, overflow="fold")
    for e in entries:
        table.add_row(e["id"], e["kind"], e["label"], e["state"], _human(e["bytes"]), e["created"])
    Console().print(table)
    total = sum(e["bytes"] for e in entries)
    click.echo(f"{len(entries)} stages, {_human(total)}")


@cache.command("rm")
@click.argument("ids", nargs=-1)
@click.option("--all", "remove_all", is_flag=True, help="Remove every cached stage.")
@click.option("--partial", is_flag=True, help="Remove only unfinished (partial) stages and set-aside corrupt ones; stages a running "
                                         "process is computing are kept.")
def rm(ids, remove_all: bool, partial: bool):
    """Remove cached stages by id (or unique id prefix, as 'robustmo cache ls' shows them).

    Run directories keep their own copy of the organism, so removing a stage loses no
    result; a later run that needs it trains it again.
    """
    from robustmo.core.errors import RobustmoError
    from robustmo.core.stages import StageCache

    store = StageCache()
    if sum(map(bool, (ids, remove_all, partial))) != 1:
        raise RobustmoError("give stage ids, or --all, or --partial (one of them); 'robustmo cache ls' lists ids")
    if remove_all:
        ids = [e["id"] for e in store.entries() if e["state"] != "running"]
    elif partial:
        ids = [e["id"] for e in store.entries() if e["state"] not in ("complete", "running")]
    removed = store.remove(list(ids))
    click.echo(f"removed {len(removed)} stage(s) from {store.root}")
