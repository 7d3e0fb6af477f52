"""A misspelt hook name: pluggy's check_pending makes it an error instead of silence."""

from robustmo.core.concepts import Trigger
from robustmo.registry import hookimpl


class Never(Trigger):
    name = "never"
    description = "never registered: its hook is misspelt"


@hookimpl
def register_trigers(register):
    register(Never())
