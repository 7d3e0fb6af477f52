"""``robustmo sweep``: run a grid of organisms x blue methods x LRs x seeds, then compare."""

from __future__ import annotations

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
  robustmo sweep grid.yaml --executor ray                     # organisms as tasks on a local Ray cluster
  robustmo sweep grid.yaml --executor ray --address auto --gpus-per-task 1 --out /shared/sweep

\b
Each cell is a run directory <out>/cells/<cell-id>. Cells that share an organism
run together (on one shard, or as one Ray task), so the stage cache trains each
organism once and two machines never train the same one. A finished cell is
skipped; an unfinished one is resumed. Output: <out>/sweep.json, report.md (AUC
per cell with CI, and mean / sd / range across seeds) and comparison.png.
"""


@click.command(epilog=EPILOG)
@click.argument("sweep_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", type=click.Path(file_okay=False), help="Sweep directory.  [default: sweeps/<file name>]")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: this process runs the cells one after another. ray: each organism's cells are one Ray "
                   "task (pip install 'robustmo[ray]'), on a local Ray cluster of this machine's cores or the one "
                   "at --address.")
@click.option("--address", metavar="ADDR", help="With --executor ray: an existing Ray cluster (e.g. ray://head:10001 "
                                                 "or auto); its workers must see --out and the stage cache.")
@click.option("--cpus-per-task", type=click.FloatRange(min=0), default=1, show_default=True, metavar="N",
              help="With --executor ray: CPUs each organism task reserves (also its torch threads).")
@click.option("--gpus-per-task", type=click.FloatRange(min=0), default=0, show_default=True, metavar="N",
              help="With --executor ray: GPUs each organism task reserves (Ray sets CUDA_VISIBLE_DEVICES).")
@click.option("--shard", metavar="I/N", help="Run only shard I of N (organisms dealt round-robin); the other "
                                             "shards run on other machines over a shared --out and stage cache.")
@click.option("--aggregate", "aggregate_only", is_flag=True, help="Train nothing: aggregate the cells done so far.")
@click.option("--dry-run", is_flag=True, help="Validate every cell and print the plan, then stop.")
def sweep(sweep_file, out, executor, address, cpus_per_task, gpus_per_task, shard, aggregate_only, dry_run):
    """Run a grid of runs (organisms x blue methods x LRs x seeds) and compare their robustness."""
    from rich.console import Console
    from rich.table import Table

    from robustmo import api
    from robustmo.core.distributed import is_main
    from robustmo.core.sweep import cell_state, check_executor, prepare

    check_executor(executor, shard, address)
    console = Console()
    the_plan = prepare(Path(sweep_file), out, shard)
    cells, mine = the_plan.cells, the_plan.mine
    where = "Ray runs all" if executor == "ray" and shard is None else f"shard {shard or '1/1'} runs {len(mine)}"
    table = Table(title=f"sweep {sweep_file}: {len(cells)} cells, {len({c.organism for c in cells})} organisms; "
                        f"{where}", title_justify="left")
    for column in ("cell", "organism", "shard", "state"):
        table.add_column(column, overflow="fold")
    organisms = list(dict.fromkeys(c.organism for c in cells))
    for c in cells:
        table.add_row(c.id, f"#{organisms.index(c.organism) + 1}", "this" if c.id in mine else "other",
                      cell_state(the_plan.out / "cells" / c.id, c.config))
    if is_main():  # under accelerate launch every process runs the cells; one prints
        console.print(table)
    if dry_run:
        click.echo("Dry run: every cell is valid; nothing was trained or written.")
        return
    result = api.sweep(sweep_file, out=the_plan.out, shard=shard, executor=executor, address=address,
                       cpus_per_task=cpus_per_task, gpus_per_task=gpus_per_task, aggregate_only=aggregate_only)
    if not is_main():
        return
    out = the_plan.out
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
