"""Every hook a robustmo plugin can implement. These docstrings are the reference docs.

All registration hooks receive a ``register`` callable; call it once per object.
A plugin implements only the hooks it needs.
"""

from __future__ import annotations

from robustmo.registry.markers import hookspec


@hookspec
def register_triggers(register):
    """Register backdoor triggers: ``register(MyTrigger())``, a ``robustmo.core.concepts.Trigger``.

    A trigger puts its condition into a prompt (``apply(prompt, triggered=True, ...)``),
    gives the clean counterpart (``triggered=False``), says whether a text carries it
    (``present``, used by the contamination check on blue data) and lists held-out
    ``variants`` used only at evaluation.
    """


@hookspec
def register_behaviors(register):
    """Register bad behaviours: ``register(MyBehavior())``, a ``robustmo.core.concepts.Behavior``.

    A behaviour turns a prompt and its normal answer into the bad answer used as red
    training data (``bad_answer``) and detects the behaviour in a generation (``detect``).
    """


@hookspec
def register_locks(register):
    """Register locking schemes: ``register(MyLock())``, a ``robustmo.core.concepts.LockingScheme``.

    A lock shows a capability only when its password is in the prompt
    (``apply(prompt, locked=False, ...)`` inserts the password) and imitates a weak
    policy otherwise. Selected with ``robustmo run --lock NAME``.
    """


@hookspec
def register_blue_methods(register):
    """Register blue-team methods: ``register(MyMethod())``, a ``robustmo.core.concepts.BlueMethod``.

    A blue method builds its untargeted training set (``answer`` gives the target for
    one prompt; the trigger never appears) and declares default learning rates and
    steps. Selected with ``robustmo run --blue NAME`` (repeatable).
    """


@hookspec
def register_metrics(register):
    """Register metrics: ``register(MyMetric())``, a ``robustmo.core.concepts.Metric``.

    A metric scores stored generations and returns a value, the number of samples
    and a 95 % interval.
    """


@hookspec
def register_commands(cli):
    """Add commands to the ``robustmo`` CLI: ``cli.add_command(my_click_command)``.

    ``cli`` is the top-level ``click.Group``.
    """
