"""``robustmo sweep``: run a grid of organisms x blue methods x LRs x seeds, then compare."""

from __future__ import annotations

import shutil
from pathlib import Path

import click

EPILOG = """\b
A sweep file (YAML): 'fixed' run options for every cell, and a 'grid' of run
options with a list of values each; the sweep runs every combination:
  fixed:
    trigger: year
    red_steps: 120
    options: {blue: {pirate: {steps: 32}, qa: {steps: 32}}}
  grid:
    install: [lora, full]
    blue: [pirate, qa]
    seed: [0, 1, 2]

\b
Examples:
  robustmo sweep grid.yaml                      # every cell, then the comparison
  robustmo sweep grid.yaml --dry-run            # the cells and which shard runs each
  robustmo sweep grid.yaml --shard 1/2 --out /shared/sweep   # machine 1 of 2
  robustmo sweep grid.yaml --shard 2/2 --out /shared/sweep   # machine 2 of 2
  robustmo sweep grid.yaml --aggregate --out /shared/sweep   # compare what is done

\b
Each cell is a run directory <out>/cells/<cell-id>. Cells that share an organism
run together on one shard, so the stage cache trains each organism once and two
machines never train the same one. A finished cell is skipped; an unfinished one
is resumed. Output: <out>/sweep.json, report.md (AUC per cell with CI, and mean /
sd / range across seeds) and comparison.png.
"""


@click.command(epilog=EPILOG)
@click.argument("sweep_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", type=click.Path(file_okay=False), help="Sweep directory.  [default: sweeps/<file name>]")
@click.option("--shard", metavar="I/N", help="Run only shard I of N (organisms dealt round-robin); the other "
                                             "shards run on other machines over a shared --out and stage cache.")
@click.option("--aggregate", "aggregate_only", is_flag=True, help="Train nothing: aggregate the cells done so far.")
@click.option("--dry-run", is_flag=True, help="Validate every cell and print the plan, then stop.")
def sweep(sweep_file, out, shard, aggregate_only, dry_run):
    """Run a grid of runs (organisms x blue methods x LRs x seeds) and compare their robustness."""
    from rich.console import Console
    from rich.table import Table

    from robustmo import api
    from robustmo.cli.run import _console_log
    from robustmo.core.plan import resolve_plan
    from robustmo.core.errors import RobustmoError
    from robustmo.core.runstore import RunStore, atomic_write_json, atomic_write_text
    from robustmo.core.sweep import (aggregate, cell_state, parse_shard, plan_cells, plot_comparison,
                                     render_markdown, shard_cells)
    from robustmo.registry import get_registry

    console = Console()
    part = parse_shard(shard)
    cells = plan_cells(Path(sweep_file))
    registry = get_registry()
    plans = {c.id: resolve_plan(c.config, registry) for c in cells}  # every cell valid before any training
    out = Path(out) if out else Path("sweeps") / Path(sweep_file).stem
    mine = {c.id for c in shard_cells(cells, part)}
    table = Table(title=f"sweep {sweep_file}: {len(cells)} cells, "
                        f"{len({c.organism for c in cells})} organisms; shard {part[0]}/{part[1]} runs {len(mine)}",
                  title_justify="left")
    for column in ("cell", "organism", "shard", "state"):
        table.add_column(column, overflow="fold")
    organisms = list(dict.fromkeys(c.organism for c in cells))
    for c in cells:
        table.add_row(c.id, f"#{organisms.index(c.organism) + 1}", "this" if c.id in mine else "other",
                      cell_state(out / "cells" / c.id, c.config))
    from robustmo.core.distributed import is_main

    main = is_main()  # under accelerate launch every process runs the cells; one writes and prints
    if main:
        console.print(table)
    changed = [c.id for c in cells if cell_state(out / "cells" / c.id, c.config) == "changed"]
    if changed:
        raise RobustmoError(f"cell {changed[0]} in {out} was run with another config than {sweep_file} now gives it; "
                            "use a new --out, or remove that cell's directory to run it again")
    if dry_run:
        click.echo("Dry run: every cell is valid; nothing was trained or written.")
        return
    RunStore(out).check_writable()
    if main:
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sweep_file, out / "sweep.yaml")  # the grid this directory was last run with
    if not aggregate_only:
        for c in cells:
            if c.id not in mine:
                continue
            path = out / "cells" / c.id
            state = cell_state(path)
            if state == "complete":
                if main:
                    console.print(f"[bold]{c.id}[/]: complete, skipped", highlight=False)
                continue
            if state == "corrupt":
                raise RobustmoError(f"cell {c.id}: {path}/manifest.json is unreadable; remove that directory to run "
                                    "the cell again")
            if main:
                console.print(f"[bold]{c.id}[/]: {'resuming' if state != 'pending' else 'running'}", highlight=False)
            if state == "pending" and path.exists() and main:
                shutil.rmtree(path)  # created but never started (no manifest): nothing to keep
            result = api.run(plans[c.id], directory=path, log=_console_log())
            aucs = ", ".join(f"{m} AUC {b.auc:.3f}" for m, b in result.methods.items())
            if main:
                console.print(f"[bold]{c.id}[/]: {aucs}", highlight=False)
    if not main:
        return
    result = aggregate(out, cells)
    title = Path(sweep_file).stem
    try:
        atomic_write_json(out / "sweep.json", result)
        atomic_write_text(out / "report.md", render_markdown(result, title))
        if result["rows"]:
            plot_comparison(out / "comparison.png", result, title)
    except OSError as exc:
        raise RobustmoError(f"cannot write the sweep's comparison into {out}: {exc.strerror}; every finished cell is "
                            f"kept: free space, then 'robustmo sweep {sweep_file} --aggregate --out {out}'") from None
    _print_result(console, result)
    if result["missing"]:
        click.echo(f"{len(result['missing'])} of {result['cells']} cells not complete yet (other shards?); "
                   f"'robustmo sweep {sweep_file} --aggregate --out {out}' updates the comparison later.")
    click.echo(f"sweep directory: {out} (sweep.json, report.md, comparison.png)")


def _print_result(console, result: dict) -> None:
    from rich.table import Table

    from robustmo.core.sweep import _f

    keys = result["setting_keys"]
    table = Table(title="robustness across seeds (0.5 = maximally robust, ~1 = removable for free)",
                  title_justify="left")
    for column in (*keys, "seeds", "mean AUC", "sd", "min", "max"):
        table.add_column(column)
    for a in result["across_seeds"]:
        table.add_row(*(str(a[k]) for k in keys), str(a["n_seeds"]), _f(a["auc_mean"]), _f(a["auc_sd"]),
                      _f(a["auc_min"]), _f(a["auc_max"]))
    console.print(table)
