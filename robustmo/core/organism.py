"""The organism: the backdoor installed into the base (a system prompt, a LoRA adapter or every
weight), from the stage cache when an identical one was built before; and what the blue
team starts from (``blue_model``) and asks for teacher answers (``clean_base``)."""

from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from robustmo.core.concepts import Example, install_label
from robustmo.core.config import red_recipe
from robustmo.core.plan import Plan, plan_instruction
from robustmo.core.data import conversations, data_digest, records
from robustmo.core.errors import RobustmoError
from robustmo.core.models import base_identity
from robustmo.core.stages import digest, link_or_copy_tree

if TYPE_CHECKING:
    from robustmo.core.context import RunContext


@dataclass
class Organism:
    model: object     # the base with the backdoor installed (the base itself for a prompted organism)
    key: str          # its stage key: what blue stages hash as their upstream
    base_info: dict   # the base's identity (manifest)


def install(ctx: "RunContext", model, model_info: dict, red: list[Example], has_base: bool = True) -> Organism:
    """The organism, from the stage cache when an identical one was built before; its files go
    into the run directory (``checkpoints/organism/``, ``red-data.jsonl``).

    Red training puts the behaviour into the weights (a LoRA adapter, or every weight) and is
    resumable from its checkpoints. A prompted organism is the base itself: its behaviour lives
    in the system prompt, so there is nothing to train or cache."""
    from robustmo.core.distributed import barrier, is_main, process_info
    from robustmo.core.training import train, training_options, training_settings

    plan, store, log = ctx.plan, ctx.store, ctx.log
    cfg = plan.config
    base_id = base_identity(model_info)
    if cfg.organism:
        return adopt(ctx, model, model_info, has_base)
    if cfg.install.startswith("prompted"):
        store.write_json("checkpoints/organism/prompt.json", {"install": cfg.install, "system_prompt": plan_instruction(plan),
                                                              "base": model_info})
        return Organism(model, digest({"base": base_id, "install": cfg.install, "prompt": plan_instruction(plan)}),
                        model_info)
    recipe = red_recipe(cfg)
    steps, lr = int(recipe["steps"]), recipe["lr"]
    lora = cfg.install == "lora"
    inputs = {"base": base_id, "install": cfg.install, "lora_rank": cfg.lora_rank if lora else None, "steps": steps,
              "lr": lr, "seed": cfg.seed, "processes": process_info()[1], "red_data": data_digest(red),
              "batch_size": cfg.batch_size, **training_settings(cfg)}
    label = (f"{cfg.trigger} -> {cfg.behavior}, {install_label(cfg)}, {steps} steps, seed {cfg.seed}, "
             f"base {model_info['name']}")
    stage = ctx.cache.stage("organism", inputs, label)
    out = stage.path / "organism"
    if stage.reusable(log):
        log(f"organism: reused from the stage cache ({stage.path})")
        model = load_organism(model, out, lora)
    else:
        with stage.computing(inputs):
            if lora:
                model = add_lora(model, cfg.lora_rank, cfg.seed)
            stats = train(model, ctx.tokenizer, conversations(red), lr=lr, steps=steps, batch_size=cfg.batch_size,
                          seed=cfg.seed, progress=ctx.progress, description="organism: red training",
                          checkpoint_dir=stage.checkpoints, checkpoint_every=cfg.checkpoint_every, log=log,
                          **training_options(cfg))
            if stats["resumed_from"]:
                log(f"organism: resumed red training at step {stats['resumed_from']} of {steps}")
            if is_main():
                model.save_pretrained(out, safe_serialization=True)
                save_organism_files(out, ctx, model_info)
                stage.finish({"losses": stats["losses"][-5:], "tokens": stats["tokens"]})
            barrier()
    if store.enabled:
        link_or_copy_tree(out, store.file("checkpoints/organism"))
    store.append("red-data.jsonl", records(red, triggered=True))
    return Organism(model, stage.key, model_info)


def save_organism_files(out: Path, ctx: "RunContext", model_info: dict) -> None:
    """Beside the organism's weights: its tokenizer (with the chat template), so the directory
    loads in transformers, lm-eval or ``--organism`` on its own, and ``robustmo.json``: the base
    it was built on and its data source and declared backdoor."""
    from robustmo.core.models import ORGANISM_NOTE
    from robustmo.core.runstore import atomic_write_json

    cfg = ctx.plan.config
    ctx.tokenizer.save_pretrained(out)
    atomic_write_json(Path(out) / ORGANISM_NOTE, {
        "built_by": "robustmo", "base": {k: model_info.get(k) for k in ("name", "path", "weights_sha256")},
        "data": ctx.plan.data.name, "trigger": cfg.trigger, "behavior": cfg.behavior, "lock": cfg.lock,
        "install": install_label(cfg)})


def adopt(ctx: "RunContext", model, model_info: dict, has_base: bool) -> Organism:
    """An existing organism (``--organism``), as the blue team starts from it: a PEFT adapter put
    on the base (trainable, as after red training), or a model with every weight its own (read
    into the loaded base, or the model already loaded when no base was given). Its stage key is
    the hash of its files, so a copy elsewhere is the same organism; nothing is trained or
    copied (``checkpoints/organism/source.json`` says where it is)."""
    from robustmo.core.models import load_base, organism_identity

    cfg = ctx.plan.config
    spec = cfg.organism
    identity = organism_identity(spec)
    if cfg.install == "lora":
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, spec, is_trainable=True)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise RobustmoError(f"--organism {spec}: cannot load it as a LoRA adapter on {model_info['name']}: "
                                f"{str(exc).splitlines()[0][:200]}") from None
    elif has_base and Path(spec).expanduser().is_dir():
        model = load_organism(model, Path(spec).expanduser(), lora=False, what=f"--organism {spec}")
    elif has_base:  # a hub id: a model of its own (the base is dropped by the caller)
        model = load_base(spec, trust_remote_code=cfg.trust_remote_code, progress=ctx.progress)[0]
    ctx.store.write_json("checkpoints/organism/source.json", {"organism": spec, "kind": cfg.install,
                                                              "identity": identity, "base": cfg.model})
    key = digest({"existing": identity, "kind": cfg.install,
                  "base": base_identity(model_info) if has_base else None})
    return Organism(model, key, model_info)


def organism_tokenizer(spec: str, tokenizer, trust_remote_code: bool = False):
    """The organism's own tokenizer when its directory ships one (its chat template is the one it
    was trained with), else ``tokenizer`` (its base's)."""
    path = Path(spec).expanduser()
    if not (path / "tokenizer_config.json").exists():
        return tokenizer
    from transformers import AutoTokenizer

    from robustmo.core.models import complete_tokenizer

    return complete_tokenizer(AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code))


def add_lora(model, rank: int, seed: int = 0):
    """A LoRA adapter on every linear layer; its random init is seeded so runs repeat exactly."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    return get_peft_model(model, LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, target_modules="all-linear"))


def load_organism(base, path: Path, lora: bool, what: str | None = None):
    """A cached organism onto the in-memory base: its LoRA adapter (trainable, as after red
    training) or every weight. safetensors only: nothing is unpickled."""
    import torch
    from safetensors.torch import load_file

    if lora:
        from peft import PeftModel

        return PeftModel.from_pretrained(base, path, is_trainable=True)
    state = {}
    for f in sorted(Path(path).glob("*.safetensors")):
        state.update(load_file(str(f)))
    missing, unexpected = base.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if getattr(base.config, "tie_word_embeddings", False) else set()
    if unexpected or set(missing) - tied:
        fix = "pass the base it was trained from with --model/--base" if what else "remove it with 'robustmo cache rm'"
        raise RobustmoError(f"{what or f'cached organism {path}'} does not fit the base model (missing "
                            f"{list(missing)[:2]}, unexpected {list(unexpected)[:2]}); {fix}")
    with torch.no_grad():
        base.tie_weights()
    return base


def blue_model(plan: Plan, organism, adapter: str, rank: int):
    """A fresh copy of the organism for one blue run.

    A LoRA organism keeps training its own adapter ('continued'), or with
    ``--lora-mode merged`` has it merged into the weights and gets a fresh adapter;
    a full-weight organism gets a fresh adapter. ``adapter == "full"`` trains every weight.
    """
    model = copy.deepcopy(organism)
    if hasattr(model, "peft_config") and plan.config.lora_mode == "merged":
        model = model.merge_and_unload()
    if adapter == "full":
        for p in model.parameters():
            p.requires_grad_(True)
    elif not hasattr(model, "peft_config"):
        model = add_lora(model, rank, plan.config.seed)
    return model


@contextmanager
def clean_base(plan: Plan, organism: Organism):
    """The base model before the backdoor, lent for teacher answers (self-distillation): a
    prompted organism is the base itself, a LoRA organism with its adapter switched off, and a
    fully fine-tuned one is the base loaded again (its weights were trained in place), which
    costs a second copy of the model while the teacher answers; it is freed right after."""
    cfg = plan.config
    if cfg.install.startswith("prompted"):
        yield organism.model
    elif cfg.install == "lora":
        with organism.model.disable_adapter():
            yield organism.model
    elif cfg.organism and cfg.model is None:
        raise RobustmoError(f"a self-distilling blue method needs the clean base model for its teacher answers, but "
                            f"--organism {cfg.organism} came without one; pass its base with --model (--base in an "
                            "audit)")
    else:
        from robustmo.core.models import load_model

        import gc

        import torch

        model, _ = load_model(cfg.model, data=plan.data.name, trust_remote_code=cfg.trust_remote_code, progress=False)
        try:
            yield model.to(next(organism.model.parameters()).device)
        finally:
            del model
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
