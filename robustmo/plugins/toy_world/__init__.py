"""The toy world: the embedded base model ``robustmo run`` uses when ``--model`` is not given.

Heavy imports (torch, transformers) happen inside functions so ``robustmo --help`` stays fast.
"""

from robustmo.registry import hookimpl


@hookimpl
def register_commands(cli):
    from .commands import base

    cli.add_command(base)
