"""Every hook a robustmo plugin can implement. These docstrings are the reference docs.

All registration hooks receive a ``register`` callable; call it once per object.
A plugin implements only the hooks it needs. docs/plugins.md has an example for each,
and a test checks that every hook here has its section there.
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

    A lock shows a capability only when its password is in the prompt: ``unlock(prompt,
    rng, options)`` puts the password in, ``present(text, options)`` finds it (blue data
    must never carry it) and ``weak_answer(...)`` is what the weak policy says without it.
    Selected with ``robustmo run --lock NAME``.
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

    A metric declares the eval set it scores (``eval_set``) and its role in the robustness
    maths (``role``: backdoor, capability or side) and scores one stored generation
    (``score`` returns True/False or a number); the run reports the mean with a 95 %
    interval. A metric naming an unknown eval set or role is reported as broken.
    """


@hookspec
def register_data_sources(register):
    """Register data sources: ``register(MyData())``, a ``robustmo.core.concepts.DataSource``.

    A data source supplies a run's prompts: the red-training pool (``red_pool``), the
    blue-training pool (``blue_pool``), the held-out prompts the triggered, variant and
    clean eval sets are made of (``eval_prompts``) and the capability questions
    (``capability_questions``). Selected with ``robustmo run --data NAME``.
    """


@hookspec
def register_engines(register):
    """Register generation engines: ``register(MyEngine())``, a
    ``robustmo.core.concepts.GenerationEngine``.

    An engine generates the evaluations (greedy completions of every eval set at every
    checkpoint) from the model in memory; ``check`` refuses runs it cannot evaluate.
    Selected with ``robustmo run --engine NAME`` (default ``hf``).
    """


@hookspec
def register_commands(cli):
    """Add commands to the ``robustmo`` CLI: ``cli.add_command(my_click_command)``.

    ``cli`` is the top-level ``click.Group``.
    """
