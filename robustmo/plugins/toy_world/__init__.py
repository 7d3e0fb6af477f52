"""The toy world: the embedded data source and base model ``robustmo run`` uses when
neither ``--data`` nor ``--model`` is given.

Heavy imports (torch, transformers) and the world itself happen inside functions, so
``robustmo --help`` stays fast and a run on other data never loads it.
"""

from robustmo.registry import hookimpl


@hookimpl
def register_data_sources(register):
    from .source import ToyData

    register(ToyData())


@hookimpl
def register_commands(cli):
    from .commands import base

    cli.add_command(base)
