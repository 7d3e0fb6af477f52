"""Generation engines for evaluations: ``hf`` (transformers' ``generate``, the default) and
``vllm`` (``pip install -e ".[vllm]"``, CUDA only).

    robustmo run --model ./llama-8b --install lora --engine vllm \\
        --opt engine.vllm.gpu_memory_utilization=0.4

The vLLM engine serves the base model from its path and the model's LoRA adapter as a
``LoRARequest``: at each evaluation the adapter, as training left it, is saved in PEFT's format
to a temporary directory and served without merging (the base weights are never touched).
So it evaluates what is a base on disk plus at most one LoRA adapter: LoRA organisms
(``--lora-mode continued``) and prompted ones, with LoRA blue methods. ``check`` refuses the
rest in one line before anything runs. vLLM cannot run on a CPU-only machine, so robustmo's
tests check everything up to the vLLM call (what is served, the exported adapter) but not
vLLM's generations themselves; docs/scale.md says exactly what is untested.
"""

from __future__ import annotations

import importlib.util
import tempfile
from collections.abc import Sequence
from pathlib import Path

from pydantic import Field

from robustmo.core.concepts import GenerationEngine, Options
from robustmo.core.errors import RobustmoError
from robustmo.registry import hookimpl

VLLM_INSTALL = "pip install -e '.[vllm]' (on a machine with CUDA)"


class HFEngine(GenerationEngine):
    name = "hf"
    description = ("transformers' generate: greedy, batched by prompt length, KV cache; LoRA merged for generation "
                   "on a CPU (exact weights restored)")

    def generate(self, model, tokenizer, conversations, *, max_new_tokens, batch_size, stop_strings, truncated,
                 options):
        from robustmo.core.generation import generate

        return generate(model, tokenizer, conversations, max_new_tokens=max_new_tokens, batch_size=batch_size,
                        stop_strings=stop_strings, truncated=truncated)


class VLLMOptions(Options):
    gpu_memory_utilization: float = Field(0.3, gt=0, le=1, description="share of the GPU vLLM reserves (the model "
                                          "being trained shares the GPU)")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs one vLLM engine spans")
    max_lora_rank: int = Field(64, ge=1, description="the largest LoRA rank vLLM will serve (at least --lora-rank)")
    max_model_len: int | None = Field(None, ge=1, description="context length vLLM allocates for (default: the "
                                      "model's)")
    dtype: str = Field("auto", description="vLLM's weight dtype (auto, bfloat16, float16, float32)")
    enforce_eager: bool = Field(False, description="no CUDA graphs (slower, less memory and start-up time)")


def serving_source(model) -> tuple[str, object | None]:
    """What a vLLM engine must serve to generate as ``model`` does: ``(base path or hub id,
    PEFT model whose adapter to serve, or None for the base alone)``. One-line errors for a
    model that is not a base on disk plus at most one unmerged LoRA adapter."""
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    if not isinstance(model, PeftModel):
        return str(model.name_or_path), None
    if len(model.peft_config) != 1:
        raise RobustmoError(f"--engine vllm serves one LoRA adapter; this model has {len(model.peft_config)} "
                            f"({', '.join(model.peft_config)}): use --engine hf")
    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    if any(m.merged for m in layers):
        raise RobustmoError("--engine vllm serves the base weights from disk, but this model's adapter is merged "
                            "into them: use --engine hf")
    active = bool(layers) and not any(m.disable_adapters for m in layers)
    return str(model.get_base_model().name_or_path), model if active else None


def export_adapter(model, directory: Path) -> Path:
    """The model's LoRA adapter, as training left it, in PEFT's format (``adapter_config.json``
    and ``adapter_model.safetensors``) in ``directory``: what vLLM's ``LoRARequest`` loads."""
    model.save_pretrained(str(directory), safe_serialization=True)
    name = next(iter(model.peft_config))
    return directory if name == "default" else directory / name


class VLLMEngine(GenerationEngine):
    name = "vllm"
    description = "vLLM (the vllm extra, CUDA): the base from disk and the LoRA adapter as a LoRARequest, unmerged"
    Options = VLLMOptions

    def __init__(self):
        self._llm, self._served, self._adapters = None, None, 0
        self._tmp: tempfile.TemporaryDirectory | None = None

    def check(self, config, options, blue_adapters) -> None:
        if config.install == "full":
            raise RobustmoError("--engine vllm serves a base model with a LoRA adapter, and --install full changes "
                                "every weight: use --install lora, or --engine hf")
        if config.install == "lora" and config.lora_mode == "merged":
            raise RobustmoError("--engine vllm serves the base weights from disk, and --lora-mode merged changes "
                                "them: use --lora-mode continued, or --engine hf")
        if "full" in blue_adapters:
            raise RobustmoError("--engine vllm serves a LoRA adapter, and a blue method with adapter=full trains "
                                "every weight: use adapter=lora, or --engine hf")
        if config.install == "lora" and config.lora_rank > options.max_lora_rank:
            raise RobustmoError(f"--lora-rank {config.lora_rank} is above vLLM's max_lora_rank "
                                f"{options.max_lora_rank}: pass --opt engine.vllm.max_lora_rank={config.lora_rank}")
        if importlib.util.find_spec("vllm") is None:
            raise RobustmoError(f"--engine vllm needs vLLM: {VLLM_INSTALL}; or use --engine hf")
        import torch

        if not torch.cuda.is_available():
            raise RobustmoError("--engine vllm needs CUDA (vLLM does not run on this machine's CPU); use --engine hf")

    def _engine(self, base: str, options):
        from vllm import LLM

        if self._served != (base, options.model_dump()):
            self._llm = LLM(model=base, tokenizer=base, enable_lora=True, max_lora_rank=options.max_lora_rank,
                            max_loras=1, gpu_memory_utilization=options.gpu_memory_utilization,
                            tensor_parallel_size=options.tensor_parallel_size, max_model_len=options.max_model_len,
                            dtype=options.dtype, enforce_eager=options.enforce_eager, seed=0)
            self._served = (base, options.model_dump())
        return self._llm

    def generate(self, model, tokenizer, conversations: Sequence[Sequence[dict]], *, max_new_tokens, batch_size,
                 stop_strings, truncated, options):
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.lora.request import LoRARequest

        from robustmo.core.generation import eos_ids, prompt_ids

        base, adapted = serving_source(model)
        llm = self._engine(base, options)
        request = None
        if adapted is not None:
            if self._tmp is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="robustmo-vllm-")
            self._adapters += 1  # a new id per export: vLLM caches an adapter by its id
            path = export_adapter(adapted, Path(self._tmp.name) / f"adapter-{self._adapters}")
            request = LoRARequest(f"robustmo-{self._adapters}", self._adapters, str(path))
        params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, stop=list(stop_strings) or None,
                                stop_token_ids=eos_ids(model, tokenizer), skip_special_tokens=True)
        outputs = llm.generate([TokensPrompt(prompt_token_ids=prompt_ids(tokenizer, c)) for c in conversations],
                               params, lora_request=request, use_tqdm=False)
        truncated[:] = [o.outputs[0].finish_reason == "length" for o in outputs]
        return [o.outputs[0].text for o in outputs]


@hookimpl
def register_engines(register):
    register(HFEngine())
    register(VLLMEngine())
