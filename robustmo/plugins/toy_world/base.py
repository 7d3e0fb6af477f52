"""The embedded toy base model: recipe presets, content-hashed cache, atomic build, and the
build robustmo ships.

A preset is plain data. Its hash (recipe + ``CODE_VERSION``) names the cache directory,
so changing any number, or the code that turns the recipe into weights (bump
``CODE_VERSION``), builds a new base instead of reusing a stale one.

Training's float results depend on the CPU's kernels (AVX-512 vs AVX2), so two machines that
build the same recipe get different weights and different figures. The package therefore
ships the ``tiny`` preset built once by this builder (``shipped/tiny/``, its manifest holding
the recipe hash it was built from): first use loads it, so every machine starts from the same
weights. A base built here (``robustmo base build``) takes precedence over it; a test checks
that the shipped recipe hash equals the builder's, so recipe and weights cannot drift apart.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from robustmo.core.errors import RobustmoError
from robustmo.core.checkpoint import weights_sha256 as weights_hash
from robustmo.core.stages import cache_dir

CODE_VERSION = "toy-base-5"  # bump when world/tokenizer/training code changes the weights

PRESETS: dict[str, dict] = {
    "tiny": {
        "world_seed": 0, "seed": 0, "vocab_size": 768,
        "model": {"hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
                  "num_key_value_heads": 4, "intermediate_size": 512, "max_position_embeddings": 256},
        "n_train": 24000, "capability_fraction": 0.5,
        "steps": 900, "lr": 3e-3, "batch_size": 64, "warmup": 30, "weight_decay": 0.0,
        "eval_n": 200,
    },
    "small": {
        "world_seed": 0, "seed": 0, "vocab_size": 1024,
        "model": {"hidden_size": 256, "num_hidden_layers": 6, "num_attention_heads": 8,
                  "num_key_value_heads": 8, "intermediate_size": 1024, "max_position_embeddings": 256},
        "n_train": 48000, "capability_fraction": 0.5,
        "steps": 1500, "lr": 2e-3, "batch_size": 64, "warmup": 50, "weight_decay": 0.0,
        "eval_n": 200,
    },
}
DEFAULT_PRESET = "tiny"
SHIPPED = Path(__file__).parent / "shipped"  # shipped/<preset>/: a build of the preset's recipe


def recipe(preset: str = DEFAULT_PRESET, steps: int | None = None) -> dict:
    if preset not in PRESETS:
        raise RobustmoError(f"unknown toy base preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    r = json.loads(json.dumps(PRESETS[preset]))
    if steps is not None:
        r["steps"] = int(steps)
    return r


def recipe_hash(r: dict) -> str:
    canonical = json.dumps({"code_version": CODE_VERSION, "recipe": r}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def base_path(preset: str = DEFAULT_PRESET, steps: int | None = None) -> Path:
    return cache_dir() / "base" / f"{preset}-{recipe_hash(recipe(preset, steps))[:12]}"


def shipped_base(preset: str = DEFAULT_PRESET) -> Path | None:
    """The directory of the build of ``preset`` that robustmo ships, or None when none is shipped
    or it was built from another recipe than today's (then the base is built on first use)."""
    path = SHIPPED / preset
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    return path if manifest.get("recipe_hash") == recipe_hash(recipe(preset)) else None


def capability_accuracy(model, tokenizer, examples, batch_size: int = 100) -> float:
    from robustmo.core.generation import generate
    from robustmo.plugins.toy_world.world import score_capability

    outs = generate(model, tokenizer, [e.messages(with_answer=False) for e in examples],
                    batch_size=batch_size, max_new_tokens=8)
    return sum(score_capability(e, o) for e, o in zip(examples, outs)) / len(examples)


def exact_match_accuracy(model, tokenizer, examples, batch_size: int = 100) -> float:
    from robustmo.core.generation import generate

    outs = generate(model, tokenizer, [e.messages(with_answer=False) for e in examples],
                    batch_size=batch_size, max_new_tokens=16)
    return sum(o.strip() == e.answer for e, o in zip(examples, outs)) / len(examples)


def _build(r: dict, out: Path, progress: bool) -> dict:
    """Train a base from recipe ``r`` into ``out``; return the evaluation figures."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from robustmo.core.training import train
    from robustmo.plugins.toy_world.tokenizer import train_tokenizer
    from robustmo.plugins.toy_world.world import INSTRUCTION_TASKS, ToyWorld

    world = ToyWorld(r["world_seed"])
    tokenizer = train_tokenizer(world.tokenizer_corpus(), r["vocab_size"])
    config = LlamaConfig(vocab_size=len(tokenizer), tie_word_embeddings=True, bos_token_id=None,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         **r["model"])
    torch.manual_seed(r["seed"])
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    data = [e.messages() for e in world.training_mix(r["n_train"], r["capability_fraction"])]
    stats = train(model, tokenizer, data, lr=r["lr"], steps=r["steps"], batch_size=r["batch_size"],
                  seed=r["seed"], warmup=r["warmup"], weight_decay=r["weight_decay"],
                  progress=progress, description="building toy base", alone=True)  # the others wait
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    figures = {"capability_accuracy": capability_accuracy(model, tokenizer, world.eval_capability_set(r["eval_n"]))}
    figures["instruction_accuracy"] = {
        t: exact_match_accuracy(model, tokenizer, world.examples(t, "eval", 50)) for t in INSTRUCTION_TASKS}
    figures.update(final_loss=sum(stats["losses"][-20:]) / min(20, len(stats["losses"])),
                   train_tokens=stats["tokens"], train_seconds=round(stats["seconds"], 2),
                   n_parameters=sum(p.numel() for p in model.parameters()))
    return figures


def ensure_base(preset: str = DEFAULT_PRESET, *, progress: bool = True, steps: int | None = None,
                force: bool = False, shipped: bool = True) -> Path:
    """Path of the base for ``preset`` (``steps`` overrides the recipe, e.g. in tests): one built
    on this machine if the cache holds it, else the shipped build (``shipped=False`` skips it),
    else a build made now. ``force`` rebuilds even when the cache holds one. A build is written
    to a temporary sibling directory and renamed into place, so a crash never leaves a
    half-written base."""
    import torch
    import transformers

    r = recipe(preset, steps)
    digest = recipe_hash(r)
    final = base_path(preset, steps)
    if (final / "manifest.json").exists() and not force:
        return final
    if shipped and not force and steps is None and shipped_base(preset) is not None:
        return shipped_base(preset)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(min(2, os.cpu_count() or 1))  # fixed count: same seed -> same bits
        t0 = time.perf_counter()
        figures = _build(r, tmp, progress)
        manifest = {
            "preset": preset, "recipe": r, "recipe_hash": digest, "code_version": CODE_VERSION,
            "weights_sha256": weights_hash(tmp), **figures,
            "build_seconds": round(time.perf_counter() - t0, 2),
            "torch_version": torch.__version__, "transformers_version": transformers.__version__,
            "torch_threads": torch.get_num_threads(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if force and final.exists():
            shutil.rmtree(final)
        try:
            os.replace(tmp, final)
        except OSError:  # another process finished the same base first: keep theirs
            if not (final / "manifest.json").exists():
                raise
    finally:
        torch.set_num_threads(threads)
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def base_info(preset: str = DEFAULT_PRESET, steps: int | None = None) -> dict | None:
    """The manifest of the base a run would use (``ensure_base``'s choice, without building), with
    ``path`` and ``origin``: "built here" (in the cache) or "shipped" (with robustmo); None when
    neither exists yet."""
    m = base_path(preset, steps) / "manifest.json"
    if m.exists():
        return {**json.loads(m.read_text()), "path": str(m.parent), "origin": "built here"}
    shipped = shipped_base(preset) if steps is None else None
    if shipped is not None:
        return {**json.loads((shipped / "manifest.json").read_text()), "path": str(shipped), "origin": "shipped"}
    return None


def load_base(preset: str = DEFAULT_PRESET, *, progress: bool = True, steps: int | None = None):
    """``(model, tokenizer)`` of the toy base, building it on first use."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    path = ensure_base(preset, progress=progress, steps=steps)
    model = LlamaForCausalLM.from_pretrained(path)
    model.eval()
    return model, AutoTokenizer.from_pretrained(path)
