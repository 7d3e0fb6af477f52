"""Sharded training (FSDP2) under ``accelerate launch`` with an FSDP config.

robustmo shards with torch's own ``fully_shard`` (FSDP2): each decoder layer is one unit,
the rest of the model the root unit. It does this itself, not through
``accelerator.prepare``, so that what runs on GPUs is what the 2-process CPU test runs
(Accelerate 1.15 turns FSDP on only for GPU-type devices; docs/scale.md).

What is sharded is the *training*: a ``Training`` trains a sharded copy of its model, so
the weights, gradients and AdamW moments are split across the processes. The model the
caller passed stays whole on every process and gets the trained weights back (gathered)
before each evaluation, each checkpoint and at the end, so saved organisms, evaluation
and blue runs' copies of the organism see an ordinary model. Per process that is the whole
weights (4 bytes per float32 parameter) plus 16 / N bytes per trained parameter for the
shards of the weights, their gradients and AdamW's two moments, against 16 under DDP.
"""

from __future__ import annotations

import copy
import os

from robustmo.core.errors import RobustmoError

# Accelerate's launcher sets these from the config file's ``distributed_type`` and ``fsdp_config``.
_FLAG, _DEEPSPEED = "ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"
_settings: dict | None = None
_read = False


def _true(name: str, default: str = "false") -> bool:
    return os.environ.get(name, default).lower() in ("true", "1", "yes")


def settings() -> dict | None:
    """This launch's FSDP settings (``{"reshard_after_forward": bool, "layers": [class names]}``),
    or None without an FSDP config. Read once; the first call takes Accelerate's FSDP flag out
    of the environment, so Accelerate's own state stays data-parallel and robustmo shards by
    itself. An option robustmo cannot honour stops the run in one line."""
    global _settings, _read
    if _read:
        return _settings
    if _true(_DEEPSPEED):
        raise RobustmoError("the Accelerate config asks for DeepSpeed, which robustmo does not support: use "
                            "FSDP (examples/accelerate/fsdp.yaml) or DDP (examples/accelerate/ddp.yaml); "
                            "docs/scale.md, 'Sharded training'")
    if _true(_FLAG):
        if _true("FSDP_OFFLOAD_PARAMS"):
            raise RobustmoError("the Accelerate config sets fsdp_offload_params: true, which robustmo does not "
                                "support: set it to false (docs/scale.md, 'Sharded training')")
        layers = [c.strip() for c in os.environ.get("FSDP_TRANSFORMER_CLS_TO_WRAP", "").split(",") if c.strip()]
        _settings = {"reshard_after_forward": _true("FSDP_RESHARD_AFTER_FORWARD", "true"), "layers": layers}
        os.environ.pop(_FLAG)
    _read = True
    return _settings


def stage_input() -> dict:
    """What a training stage's key adds under sharding (nothing otherwise, so DDP and
    1-process stages keep their keys): reduce-scatter sums the gradients in another order."""
    return {"sharding": "fsdp2"} if settings() else {}


def _units(model, names: list[str]) -> list:
    """The modules to shard one by one: those of the classes the config names, else those
    of the transformers model's ``_no_split_modules`` (its decoder layers)."""
    inner = getattr(model, "get_base_model", lambda: model)()  # inside a PEFT wrapper
    wanted = set(names) or set(getattr(inner, "_no_split_modules", None) or [])
    units = [m for m in model.modules() if type(m).__name__ in wanted]
    if not units:
        raise RobustmoError(f"FSDP: no module of class {', '.join(sorted(wanted)) or '(none given)'} in "
                            f"{type(model).__name__}; set fsdp_transformer_layer_cls_to_wrap in the Accelerate "
                            "config to its decoder layer's class")
    return units


def check(model) -> None:
    """Under an FSDP config, that ``model`` has the layers to shard: one line before any file
    of the run is written, rather than at its first training."""
    options = settings()
    if options:
        _units(model, options["layers"])


def sharded_copy(model, options: dict):
    """A copy of ``model`` sharded across this launch's processes (``fully_shard`` on each unit,
    then on the whole)."""
    from torch.distributed.fsdp import fully_shard

    work = copy.deepcopy(model)
    for unit in _units(work, options["layers"]):
        fully_shard(unit, reshard_after_forward=options["reshard_after_forward"])
    fully_shard(work, reshard_after_forward=options["reshard_after_forward"])
    return work


def full(tensor):
    """The whole tensor of a shard (collective: every process calls it in the same order); any
    other tensor as it is."""
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def like(whole, param):
    """``whole`` laid out as ``param`` is: this process's shard of it if ``param`` is sharded
    (every process holds ``whole``, so no communication)."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if isinstance(param, DTensor) and tuple(whole.shape) == tuple(param.shape):
        return distribute_tensor(whole.to(param.device), param.device_mesh, param.placements, src_data_rank=None)
    return whole


def gather_into(work, model) -> None:
    """Copy the sharded copy's trainable weights, gathered, into ``model`` (every process)."""
    import torch

    whole = dict(model.named_parameters())
    with torch.no_grad():
        for name, p in work.named_parameters():
            if p.requires_grad:
                whole[name].copy_(full(p.detach()))
