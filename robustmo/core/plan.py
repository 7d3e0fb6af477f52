"""The plan of a run: its configuration resolved against the registry. Every named component
is looked up and its options validated, the data source and the metric roles chosen, the
blue schedule and red recipe settled; ``resolve_plan`` raises a one-line RobustmoError on any
problem, before anything is loaded, trained or written."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from robustmo.core.concepts import EVAL_SETS, Component, install_label, instruction_prompt, label
from robustmo.core.config import RunConfig, unknown_key_message, components_used, validation_message
from robustmo.core.errors import RobustmoError


def default_lr(method, install: str) -> float:
    """A blue method's LR for an install method; prompted organisms get a fresh LoRA, like LoRA ones."""
    table = method.default_lr
    return table.get(install) or table.get("lora") or 1e-3


def blue_schedule(plan: "Plan", method) -> tuple[int, list[float]]:
    """A blue method's step count and LRs (highest first). ``--lr-check`` with a single LR adds
    one 10x lower."""
    cfg = plan.config
    steps = method.options.steps or method.obj.default_steps
    lrs = sorted(set(cfg.lr or [method.options.lr or default_lr(method.obj, cfg.install)]), reverse=True)
    if cfg.lr_check and len(lrs) == 1:  # exactly a tenth of the LR as written: 3e-4 -> 3e-05, not 2.9999999999999997e-05
        from fractions import Fraction

        lrs.append(float(Fraction(repr(lrs[0])) / 10))
    return steps, lrs


def check_model_spec(spec: str | None) -> None:
    """Fail early, in one line, on a local model path that does not exist (before any work)."""
    from robustmo.core.models import is_local_path

    if spec is None or not is_local_path(spec):
        return
    path = os.path.expanduser(spec)
    if not os.path.exists(path):
        raise RobustmoError(f"--model {spec}: path does not exist; pass an existing model directory "
                            "or a Hugging Face id like org/name")
    if not os.path.isdir(path):
        raise RobustmoError(f"--model {spec}: not a directory; pass a model directory (with config.json) "
                            "or a Hugging Face id")


@dataclass
class Selected:
    """One component chosen for the run, with its validated options."""

    kind: str
    name: str
    obj: Component
    options: BaseModel
    package: str = "-"


@dataclass
class Plan:
    """A validated run: the config plus the components it will use."""

    config: RunConfig
    trigger: Selected
    behavior: Selected
    blue: list[Selected]
    data: Selected
    engine: Selected
    lock: Selected | None = None
    metrics: list[Selected] = field(default_factory=list)
    roles: dict[str, str] = field(default_factory=dict)  # backdoor / capability (/ locked_capability) -> metric name
    stages: list[tuple[str, str]] = field(default_factory=list)

    @property
    def components(self) -> list[Selected]:
        """The chosen trigger, behaviour, lock (if any), blue methods, data source and generation
        engine, in that order."""
        return [self.trigger, self.behavior, *([self.lock] if self.lock else []), *self.blue, self.data, self.engine]

    def eval_sets(self) -> list[str]:
        """The eval sets this run generates on, in order."""
        have = {"triggered", "clean", "capability"}
        if self.trigger.obj.variants(self.trigger.options):
            have.add("variants")
        if self.lock is not None:
            have.add("unlocked")
        return [s for s in EVAL_SETS if s in have]

    def metric(self, name: str) -> Selected:
        return next(m for m in self.metrics if m.name == name)

    def plugin_versions(self) -> dict[str, dict]:
        """The installed version and the source hash of every plugin package the run uses:
        upgrading or editing a metric's or a blue method's code must not reuse results its old
        code computed (an edit does not bump a version)."""
        import importlib.metadata as md

        from robustmo.core.stages import module_source

        out: dict[str, dict] = {}
        for s in [*self.components, *self.metrics]:
            try:
                version = md.version(s.package)
            except (md.PackageNotFoundError, ValueError):
                version = "-"
            entry = out.setdefault(s.package, {"version": version, "sources": {}})
            entry["sources"][type(s.obj).__module__.split(".")[0]] = module_source(s.obj)
        return out


def _select(registry, kind: str, name: str, options: dict[str, dict[str, dict[str, Any]]]) -> Selected:
    entry = registry.get(kind, name)
    raw = options.get(kind, {}).get(name, {})
    model = entry.obj.Options
    unknown = [k for k in raw if k not in model.model_fields]
    where = f"options for {label(kind)} {name!r}"
    if unknown:
        valid = list(model.model_fields)
        if not valid:
            raise RobustmoError(f"{where}: {label(kind)} {name!r} takes no options (got {unknown[0]!r})")
        raise RobustmoError(unknown_key_message(where, unknown[0], valid))
    try:
        parsed = model(**raw)
    except ValidationError as exc:
        raise RobustmoError(validation_message(exc, where)) from None
    return Selected(kind, name, entry.obj, parsed, entry.package)


def plan_instruction(plan: Plan) -> str | None:
    """The system prompt that states the run's backdoor (see ``instruction_prompt``)."""
    t, b = plan.trigger, plan.behavior
    return instruction_prompt(t.obj, t.options, b.obj, b.options)


def data_source_name(config: RunConfig, registry) -> str:
    """``--data``, or the data source whose own base ``--model`` is (the toy world for the
    embedded model). Any other model must name its data: nothing falls back to toy prompts."""
    if config.data:
        return config.data
    from robustmo.core.models import existing_organism, model_provider

    files = " --data files --opt data.files.red=red.jsonl --opt data.files.blue=blue.jsonl " \
            "--opt data.files.eval=eval.jsonl --opt data.files.capability=questions.jsonl"
    if config.organism and config.model is None:  # a full organism with no base: what it was built with, if known
        recorded = existing_organism(config.organism)["data"]
        if recorded in registry.names("data") and registry.get("data", recorded).obj.base_models:
            return recorded
        owners = [e.name for e in registry.entries("data") if e.obj.base_models and e.obj.own_model(config.organism)]
        if owners:
            return owners[0]
        no_red = files.replace(" --opt data.files.red=red.jsonl", "")  # nothing is red-trained
        raise RobustmoError(f"--organism {config.organism} needs data for its prompts: pass{no_red} "
                            "(docs/data.md), or --data toy for the toy world's prompts")
    found = model_provider(config.model, registry)
    if found is not None:
        return found[0]
    owners = [e.name for e in registry.entries("data") if e.obj.own_model(config.model)]
    if owners:
        return owners[0]
    raise RobustmoError(f"--model {config.model} needs data for its prompts: pass{files} (docs/data.md), or "
                        "--data toy for the toy world's prompts")


def with_source_defaults(config: RunConfig, defaults: dict[str, Any]) -> RunConfig:
    """``config`` with a data source's settings for the fields it does not set itself (a flag, a
    YAML key or a keyword argument sets a field; a run read back from config.json sets them all).
    Component options (``--opt kind.name.key=value``) are filled key by key, for the components the
    run uses: ``--opt blue.pirate.lr=3e-4`` keeps a source's ``blue.pirate.steps``."""
    skip = {"options", *(RED_TRAINING if config.organism else ())}  # an adopted organism is not red-trained
    unset = {k: v for k, v in defaults.items() if k not in config.model_fields_set and k not in skip}
    if defaults.get("options"):  # kind.name.key, key by key, for the components this run uses
        used = components_used(config.model_dump())
        options = {kind: {name: dict(keys) for name, keys in names.items()} for kind, names in config.options.items()}
        for kind, names in defaults["options"].items():
            for name, keys in names.items():
                if name in used.get(kind, []):
                    mine = options.setdefault(kind, {}).setdefault(name, {})
                    mine.update({k: v for k, v in keys.items() if k not in mine})
        if options != config.options:
            unset["options"] = options
    if not unset:
        return config
    try:
        return RunConfig.model_validate({**config.model_dump(exclude_unset=True), **unset})
    except ValueError as exc:
        raise RobustmoError(f"the data source's run settings are invalid: {str(exc).splitlines()[0]}") from None


RED_TRAINING = ("red_steps", "red_lr", "red_examples")  # settings an adopted organism (--organism) refuses


def adopt_organism(config: RunConfig) -> RunConfig:
    """A config with ``--organism``: its install method (lora for an adapter, full otherwise) and
    its base (``--model``, else the adapter's or the one robustmo recorded) filled in from the
    organism's files; red-training options are refused (nothing is trained)."""
    from robustmo.core.models import existing_organism

    if config.install.startswith("prompted"):
        raise RobustmoError(f"--install {config.install} builds an organism from a system prompt, but --organism "
                            "brings one with its behaviour in the weights; give one or the other")
    for name in RED_TRAINING:
        flag, value = f"--{name.replace('_', '-')}", getattr(config, name)
        if value is not None:
            raise RobustmoError(f"{flag} sets red training, but --organism brings a trained organism; drop {flag}")
    found = existing_organism(config.organism, config.model)
    return config.model_copy(update={"install": found["kind"], "model": found["base"]})


def _role_metric(plan: Plan, role: str, eval_set: str, wanted: str | None, flag: str) -> str:
    """The metric that plays ``role`` on ``eval_set``: ``wanted`` if given (checked), else the one
    candidate, preferring robustmo's own when plugins add more (installing a plugin never changes
    a default run's numbers)."""
    candidates = [m for m in plan.metrics if m.obj.role == role and m.obj.eval_set == eval_set
                  and m.obj.active(m.options)]
    if wanted is not None:
        chosen = next((m for m in plan.metrics if m.name == wanted), None)
        if chosen is None:
            from robustmo.registry.manager import unknown_name_message

            raise RobustmoError(f"{flag}: " + unknown_name_message("metric", wanted, [m.name for m in plan.metrics]))
        if not chosen.obj.active(chosen.options):
            raise RobustmoError(f"{flag} {wanted}: metric {wanted!r} has nothing to evaluate with its options; "
                                f"see 'robustmo plugins' (e.g. --opt metric.{wanted}.task=NAME)")
        if chosen not in candidates:
            raise RobustmoError(f"{flag} {wanted}: metric {wanted!r} has role {chosen.obj.role!r} on eval set "
                                f"{chosen.obj.eval_set!r}; this run needs one with role {role!r} on {eval_set!r}"
                                + (f" ({', '.join(m.name for m in candidates)})" if candidates else ""))
        return wanted
    own = [m for m in candidates if m.package == "robustmo"]
    pick = own if len(own) == 1 else candidates
    if len(pick) == 1:
        return pick[0].name
    if not pick:
        raise RobustmoError(f"no installed metric has role {role!r} on eval set {eval_set!r} (see 'robustmo plugins'); "
                            "the robustness AUC needs one")
    raise RobustmoError(f"metrics {', '.join(m.name for m in pick)} all have role {role!r} on {eval_set!r}; "
                        f"choose one with {flag}")


def resolve_plan(config: RunConfig, registry) -> Plan:
    """Look every named component up and validate its options; raise RobustmoError on any problem."""
    from robustmo.core import sharding

    sharding.settings()  # an FSDP option robustmo cannot honour, or DeepSpeed: one line before anything is written
    check_model_spec(config.model)
    if config.organism:
        config = adopt_organism(config)
    if len(set(config.blue)) != len(config.blue):
        raise RobustmoError(f"--blue lists a method twice: {', '.join(config.blue)}")
    data = data_source_name(config, registry)
    config = with_source_defaults(config, registry.get("data", data).obj.run_defaults(config.model))
    chosen = {**components_used({**config.model_dump(), "data": data}), "metric": registry.names("metric")}
    for kind, names in config.options.items():
        for name in names:
            if name not in chosen.get(kind, []):
                registry.get(kind, name)  # unknown name -> error listing the valid ones
                raise RobustmoError(f"options given for {label(kind)} {name!r}, which this run does not use")
    plan = Plan(
        config=config,
        trigger=_select(registry, "trigger", config.trigger, config.options),
        behavior=_select(registry, "behavior", config.behavior, config.options),
        blue=[_select(registry, "blue", b, config.options) for b in config.blue],
        data=_select(registry, "data", data, config.options),
        lock=_select(registry, "lock", config.lock, config.options) if config.lock else None,
        engine=_select(registry, "engine", config.engine, config.options),
        metrics=[_select(registry, "metric", m, config.options) for m in registry.names("metric")],
    )
    plan.trigger.obj = plan.trigger.obj.for_behavior(plan.behavior.obj, plan.behavior.options)
    plan.engine.obj.check(config, plan.engine.options, [getattr(b.options, "adapter", "lora") for b in plan.blue])
    if config.install.startswith("prompted") and plan_instruction(plan) is None:
        raise RobustmoError(f"--install {config.install} needs the backdoor in words, but trigger {config.trigger!r} or "
                            f"behaviour {config.behavior!r} has none (condition()/instruction()); use --install lora or full")
    if config.budget_tokens and config.budget_flops:
        raise RobustmoError("--budget-tokens and --budget-flops are two ways to match compute; give one")
    if config.lr_check and (config.budget_tokens or config.budget_flops):
        flag = "--budget-tokens" if config.budget_tokens else "--budget-flops"
        raise RobustmoError(f"--lr-check trains each lower LR to --lr-check-factor x N x S steps, which {flag} "
                            "would cut short; use one or the other")
    if config.grad_accumulation > config.batch_size:
        raise RobustmoError(f"--grad-accumulation {config.grad_accumulation}: more micro-batches than the "
                            f"{config.batch_size} examples of a step (--batch-size); give at most {config.batch_size}")
    if config.precision == "fp16":
        import torch

        if not torch.cuda.is_available():
            raise RobustmoError("--precision fp16 needs CUDA (its loss scaling is a GPU feature); on a CPU use "
                                "--precision bf16")
    if config.lock and config.install.startswith("prompted"):
        raise RobustmoError(f"--lock {config.lock} is trained into the weights; use it with --install lora or full, "
                            f"not {config.install}")
    if config.model is None and not config.organism and not plan.data.obj.base_models:
        raise RobustmoError(f"data source {data!r} brings no base model of its own; pass --model ID|PATH")
    plan.roles["backdoor"] = _role_metric(plan, "backdoor", "triggered", config.backdoor_metric, "--backdoor-metric")
    plan.roles["capability"] = _role_metric(plan, "capability", "unlocked" if plan.lock else "capability",
                                            config.capability_metric, "--capability-metric")
    if plan.lock:  # the capability users see, beside the hidden one: how much blue training recovers
        plan.roles["locked_capability"] = _role_metric(plan, "capability", "capability", None, "--capability-metric")
    if config.organism:
        model = config.model or "none given (the organism is evaluated alone)"
    elif config.model is None:
        from robustmo.core.models import canonical_model

        model = (f"{canonical_model(None, data, registry)}, the {data} data source's own model "
                 "(shipped with it, or built on first use)")
    else:
        model = config.model
    install = install_label(config, mode=True)
    lock = f", locked by {config.lock}" if config.lock else ""
    plan.stages = [
        ("base", model),
        ("data", f"{data}: red and blue pools; {config.eval_prompts} held-out prompts, each "
                 + "/".join(s for s in plan.eval_sets() if s not in ("capability", "unlocked"))
                 + f"; {config.capability_questions} capability questions"),
        ("organism", f"{config.trigger} -> {config.behavior}{lock}, " + (
            f"the existing organism {config.organism} ({'a LoRA adapter' if config.install == 'lora' else 'every weight'})"
            if config.organism else f"installed by {install}")),
        ("blue", ", ".join(config.blue) + ", evaluated at log-spaced steps 0, 1, 2, 4, 8, ..."),
        ("summary", f"trade-off of {plan.roles['capability']} vs {plan.roles['backdoor']}: convex-hull AUC with "
                    "bootstrap CI, removal at 10 % capability loss"),
    ]
    return plan
