"""Shared set-up for the performance benchmarks (bench_train, bench_generate, bench_mfu).

Every benchmark uses the toy world's tokenizer and a Llama model with a toy preset's shape,
randomly initialised from a seed (throughput does not depend on what the weights learnt),
and chats from the toy world's training mix: the data robustmo itself trains on.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"

# OpenMP threads that spin while waiting (libgomp's default) collapse when another process
# wants the same cores: on a shared 2-core machine a training step measured 5-10x slower.
# Every benchmark (robustmo and the baselines alike) runs with sleeping waits unless the
# caller chose otherwise. It must be set before torch loads, so this module imports no torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


REAL = {"smollm2": "smollm2-135m"}  # real models robustmo knows by name: their converted weights, not a random init


def tokenizer_for(preset: str):
    if preset in REAL:
        from transformers import AutoTokenizer

        from robustmo.plugins.natural.models import model_dir

        return AutoTokenizer.from_pretrained(model_dir(REAL[preset]))
    from robustmo.plugins.toy_world.base import PRESETS
    from robustmo.plugins.toy_world.tokenizer import train_tokenizer
    from robustmo.plugins.toy_world.world import ToyWorld

    return train_tokenizer(ToyWorld(PRESETS[preset]["world_seed"]).tokenizer_corpus(), PRESETS[preset]["vocab_size"])


def model_for(preset: str, tokenizer, seed: int = 0):
    """A randomly initialised model of the preset's shape (same config as the toy base), or a
    real model's own weights (``REAL``)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if preset in REAL:
        from robustmo.plugins.natural.models import model_dir

        return LlamaForCausalLM.from_pretrained(model_dir(REAL[preset]), dtype=torch.float32)

    from robustmo.plugins.toy_world.base import PRESETS

    config = LlamaConfig(vocab_size=len(tokenizer), tie_word_embeddings=True, bos_token_id=None,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         **PRESETS[preset]["model"])
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def chats(n: int, seed: int = 0, preset: str = "tiny") -> list[list[dict]]:
    """``n`` training chats (system?, user, assistant) from the toy world's training mix; for a
    real model, natural requests (its red pool) with an answer of the length the CPU preset's red
    answers have (up to 24 tokens; throughput depends on lengths, not on what the answer says)."""
    if preset in REAL:
        from robustmo.plugins.natural.source import NaturalData

        pool = NaturalData().red_pool(n, seed, None)
        return [[{"role": "user", "content": ex.prompt.user},
                 {"role": "assistant", "content": f"Sure. Here is a short answer to that: {ex.prompt.user.lower()}"}]
                for ex in (pool * (n // len(pool) + 1))[:n]]
    from robustmo.plugins.toy_world.world import ToyWorld

    return [e.messages() for e in ToyWorld(seed).training_mix(n)]


LORA = {"r": 64, "lora_alpha": 64, "lora_dropout": 0.0, "target_modules": "all-linear"}  # as robustmo's add_lora


def lora_config():
    from peft import LoraConfig

    return LoraConfig(**LORA)


def add_lora(model, seed: int = 0):
    import torch
    from peft import get_peft_model

    torch.manual_seed(seed)
    return get_peft_model(model, lora_config())


def rss_mb() -> float:
    """Current resident set size of this process, in MB."""
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mb() -> float:
    """High-water resident set size of this process since it started (ru_maxrss), in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> dict:
    import torch
    import transformers

    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version(),
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def table(headers: list[str], rows: list[list]) -> str:
    cells = [[str(c) for c in r] for r in [headers, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(r, widths))) for r in cells]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def write_json(name: str, payload: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path
