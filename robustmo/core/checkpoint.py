"""Training checkpoints that survive SIGKILL: safetensors only (no pickle), written atomically.

A checkpoint is a directory ``step-000123/`` holding ``trainable.safetensors`` (every
trainable weight: the LoRA adapter, or the whole model), ``optimizer.safetensors`` (AdamW's
moments) and ``state.json`` (step, tokens, losses, the sha256 of both tensor files). It is
written as a temp directory, every file fsynced, then renamed into place: a ``step-*``
directory exists only complete. Loading takes the newest one whose files match their
hashes (a corrupt one is skipped for the one before it); ``latest.json`` only tells a
person which step is newest.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from robustmo.core.runstore import atomic_write_json, fsync_dir
from robustmo.core.sharding import full, like

KEEP = 2  # checkpoints kept per training run (the newest, and one to fall back on)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def weights_sha256(model_dir: Path) -> str:
    """sha256 over every safetensors tensor (name, dtype, shape, bytes) in sorted name order: the
    weights' identity, whatever the files' names, order or metadata."""
    import torch
    from safetensors import safe_open

    h = hashlib.sha256()
    for f in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as st:
            for name in sorted(st.keys()):
                t = st.get_tensor(name).contiguous()
                h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
                h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _trainable(model) -> dict:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def _optimizer_tensors(optimizer) -> dict:
    """AdamW's moments (whole, also when sharded), plus this process's random-number state
    (dropout masks after a resume must be the ones an uninterrupted run draws)."""
    import torch

    out = {"rng.cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        out["rng.cuda"] = torch.cuda.get_rng_state()
    for idx, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            value = full(value) if torch.is_tensor(value) else torch.tensor(value)  # a shard: gathered
            out[f"{idx}.{key}"] = value.detach().contiguous()
    return out


def save(directory: Path, step: int, model, optimizer, state: dict, write: bool = True) -> Path | None:
    """Write checkpoint ``step`` under ``directory``; returns its path. Older ones beyond ``KEEP`` are removed.
    Under sharding every process calls it (the optimizer's moments are gathered, a collective)
    and only the one with ``write`` writes; ``model`` is the whole model."""
    from safetensors.torch import save_file

    files = {"trainable.safetensors": {k: v.detach().contiguous() for k, v in _trainable(model).items()},
             "optimizer.safetensors": _optimizer_tensors(optimizer)}
    if not write:
        return None
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory, prefix=".tmp-step-"))
    try:
        hashes = {}
        for name, tensors in files.items():
            save_file(tensors, str(tmp / name))
            with open(tmp / name, "rb") as f:
                os.fsync(f.fileno())
            hashes[name] = file_sha256(tmp / name)
        atomic_write_json(tmp / "state.json", {**state, "step": step, "sha256": hashes})
        final = directory / f"step-{step:07d}"
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_dir(directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_json(directory / "latest.json", {"step": step, "path": final.name})
    # Keep the one just written and the newest before it; drop older ones and any left from
    # a later step (a corrupt one fallen back from, or a run restarted from scratch).
    others = [p for p in sorted(directory.glob("step-*")) if p != final]
    for old in [p for p in others if p.name > final.name] + [p for p in others if p.name < final.name][:-(KEEP - 1) or None]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _verified(path: Path) -> dict | None:
    """``state.json`` of checkpoint ``path`` if every file matches its hash, else None."""
    try:
        state = json.loads((path / "state.json").read_text())
        for name, digest in state["sha256"].items():
            if file_sha256(path / name) != digest:
                return None
        return state
    except (OSError, ValueError, KeyError, TypeError):
        return None


def latest(directory: Path, warn=None) -> tuple[Path, dict] | None:
    """The newest intact checkpoint under ``directory`` (newest first; a corrupt one is reported
    through ``warn`` and skipped), or None."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    for path in sorted(directory.glob("step-*"), reverse=True):
        state = _verified(path)
        if state is not None:
            return path, state
        if warn:
            warn(f"checkpoint {path} is corrupt (a file is missing or does not match its sha256); "
                 "falling back to an earlier one")
    return None


def load_weights(path: Path, model) -> None:
    """Restore the trainable weights saved by ``save`` into ``model`` (the whole model)."""
    import torch
    from safetensors.torch import load_file

    weights = load_file(str(Path(path) / "trainable.safetensors"))
    params = _trainable(model)
    if set(weights) != set(params):
        raise ValueError(f"checkpoint {path} does not fit this model's trainable weights")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(weights[name])


def load_optimizer(path: Path, optimizer) -> None:
    """Restore AdamW's moments and the random-number state saved by ``save``; a sharded
    optimizer gets its shard of each moment."""
    import torch
    from safetensors.torch import load_file

    saved = load_file(str(Path(path) / "optimizer.safetensors"))
    if "rng.cpu" in saved:
        torch.set_rng_state(saved.pop("rng.cpu"))
    cuda_rng = saved.pop("rng.cuda", None)
    if cuda_rng is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(cuda_rng)
    current = optimizer.state_dict()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state: dict = {}
    for key, value in saved.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = like(value, params[int(idx)])
    optimizer.load_state_dict({"state": state, "param_groups": current["param_groups"]})
