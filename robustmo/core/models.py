"""Model loading: a base model a data source builds itself (the toy world's), a local
directory, or a Hugging Face hub id; and the base's identity for the run record."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

from robustmo.core.errors import RobustmoError

# Used only when a tokenizer has no chat template of its own (base, non-chat models);
# documented fallback so training/generation code can treat every model the same way.
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message['role'] | capitalize }}: {{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


def is_local_path(spec: str) -> bool:
    # "org/name" is a hub id unless that directory exists; anything else with a separator,
    # or starting with . or ~, is meant as a path.
    if Path(spec).expanduser().exists():
        return True
    if spec.startswith((".", "~", "/")) or spec.count("/") > 1 or (os.altsep and os.altsep in spec):
        return True
    return False


def model_provider(spec: str | None, registry=None, data: str | None = None) -> tuple[str, str | None] | None:
    """``(data source, preset)`` when ``spec`` names a base model that a data source builds from
    its own data or brings: ``None`` (the run's data source's, or else the one that owns the default
    model: the toy world), ``NAME`` or ``NAME:PRESET`` (``toy``, ``toy:small``), or a preset by its own
    name where one data source has it (``smollm2-135m``, the ``natural`` data source's). None for a
    local directory or hub id. The toy base's builder lives with the toy world
    (plugins/toy_world), reached through the registry like any plugin: core knows no world."""
    if registry is None:
        from robustmo.registry import get_registry

        registry = get_registry()
    sources = {e.name: e.obj for e in registry.entries("data") if e.obj.base_models}
    if spec is None:
        if data is not None:
            return (data, None) if data in sources else None
        owners = [name for name, obj in sources.items() if obj.own_model(None)]
        return (owners[0], None) if owners else None
    name, _, preset = spec.partition(":")
    if name not in sources and not preset and not Path(spec).expanduser().exists():  # a base model by its own name
        owners = [source for source, obj in sources.items() if name in obj.base_models]
        if len(owners) == 1:
            return owners[0], name
    if name in sources and (not preset or preset in sources[name].base_models):
        if not preset and Path(spec).expanduser().is_dir():
            return None  # a local directory that happens to share the name
        return name, preset or None
    if name in sources and preset:
        raise RobustmoError(f"--model {spec}: data source {name!r} builds base models "
                            f"{', '.join(sources[name].base_models)}, not {preset!r}")
    return None


def load_model(spec: str | None = None, **kwargs):
    """``(model, tokenizer)`` for ``spec`` (see ``load_base``)."""
    model, tokenizer, _ = load_base(spec, **kwargs)
    return model, tokenizer


def load_base(spec: str | None = None, *, data: str | None = None, registry=None, dtype=None, device: str | None = None,
              progress: bool = True, trust_remote_code: bool = False, log=None):
    """``(model, tokenizer, info)`` for ``spec``; ``info`` is the base's identity (``describe_model``).

    A base that a data source builds (``model_provider``: the toy world's, by default) is built
    on first use and cached; under ``accelerate launch`` the main process builds it first while
    the others wait. Otherwise a local directory or a Hugging Face hub id, through
    ``AutoModelForCausalLM`` / ``AutoTokenizer``. The tokenizer always has a pad token and a chat
    template (``FALLBACK_CHAT_TEMPLATE`` if the model ships none). A model's own Python code
    (``auto_map``) runs only with ``trust_remote_code=True``. A ``.gguf`` file is converted once
    into a standard directory in the cache (``core/gguf.py``; ``log`` tells when) and loaded from it.
    """
    from robustmo.core import gguf

    provider = None if gguf.is_gguf(spec) else model_provider(spec, registry, data)
    name = spec
    if gguf.is_gguf(spec):
        from robustmo.core.distributed import barrier, is_main

        if not is_main():
            barrier()
        path = gguf.ensure_converted(spec, log=log if is_main() else None)
        if is_main():
            barrier()
        model, tokenizer = _load_hf(str(path), dtype, False)
        name = str(Path(spec).expanduser().resolve())
    elif provider is not None:
        from robustmo.core.distributed import barrier, is_main

        source, preset = provider
        if registry is None:
            from robustmo.registry import get_registry

            registry = get_registry()
        obj = registry.get("data", source).obj
        preset = preset or obj.base_models[0]
        if not is_main():
            barrier()
        path = obj.base_model(preset, progress=progress and is_main())
        if is_main():
            barrier()
        model, tokenizer = _load_hf(str(path), dtype, False)
        name = f"{source}:{preset}"
    else:
        model, tokenizer = _load_hf(spec, dtype, trust_remote_code)
        path = Path(spec).expanduser() if is_local_path(spec) else None
    complete_tokenizer(tokenizer)
    if device:
        model.to(device)
    model.eval()
    info = describe_model(name, path, model)
    if gguf.is_gguf(spec):
        info["name"] = name  # the file the user named, not the cache directory it was converted into
    info["tokenizer_sha256"] = tokenizer_digest(tokenizer)
    config = getattr(model, "generation_config", None)  # its end-token ids decide where a generation stops
    info["generation"] = {k: getattr(config, k, None) for k in ("eos_token_id", "pad_token_id", "bos_token_id")}
    return model, tokenizer, info


def complete_tokenizer(tokenizer):
    """A pad token (the end token) and a chat template (``FALLBACK_CHAT_TEMPLATE``) where the
    tokenizer ships none, so training and generation treat every model the same way."""
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE
    return tokenizer


def tokenizer_digest(tokenizer) -> str:
    """What the model is shown, as a hash: the tokenizer's whole definition (vocabulary, merges,
    normalisation, special tokens) and its chat template, which can put text into every prompt."""
    from robustmo.core.stages import digest

    backend = getattr(tokenizer, "backend_tokenizer", None)
    definition = backend.to_str() if backend is not None else sorted(tokenizer.get_vocab().items())
    return digest({"class": type(tokenizer).__name__, "definition": definition,
                   "chat_template": tokenizer.chat_template, "special": tokenizer.special_tokens_map})


def _load_hf(spec: str, dtype, trust_remote_code: bool = False):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # safetensors only: a pickled checkpoint (pytorch_model.bin) can run code when loaded
    kwargs = {"dtype": dtype} if dtype is not None else {}
    kwargs.update(trust_remote_code=trust_remote_code, use_safetensors=True)
    tok = {"trust_remote_code": trust_remote_code}
    if is_local_path(spec):
        path = Path(spec).expanduser()
        if not path.is_dir():
            raise RobustmoError(f"model path '{spec}' does not exist; pass an existing directory "
                                "or a Hugging Face model id")
        try:
            return (AutoModelForCausalLM.from_pretrained(path, **kwargs), AutoTokenizer.from_pretrained(path, **tok))
        except (OSError, ValueError) as e:
            raise RobustmoError(f"cannot load a causal LM from '{spec}': {str(e).splitlines()[0]}") from e
    try:
        return (AutoModelForCausalLM.from_pretrained(spec, **kwargs), AutoTokenizer.from_pretrained(spec, **tok))
    except Exception as e:  # offline, unknown id, gated repo: all surface as one clear line
        raise RobustmoError(
            f"cannot load model '{spec}': the Hugging Face hub is unreachable or the id is unknown "
            f"({type(e).__name__}); pass a local model directory instead") from e


def describe_model(name: str, path: Path | None, model) -> dict:
    """Name and weights identity of the base, for the manifest: a local model is identified by
    its weights' sha256 where its manifest records one (the toy base's), else by its absolute
    path and its weight files (size, mtime); a hub model by id and revision."""
    info = {"name": name, "revision": getattr(model.config, "_commit_hash", None),
            "n_parameters": sum(p.numel() for p in model.parameters())}
    if path is not None and path.is_dir():
        if ":" not in str(name):
            info["name"] = str(path.resolve())
        info["path"] = str(path.resolve())
        try:
            manifest = json.loads((path / "manifest.json").read_text())
            info["weights_sha256"] = manifest.get("weights_sha256") if isinstance(manifest, dict) else None
        except (OSError, ValueError):
            pass
        if not info.get("weights_sha256"):
            info["files"] = [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in sorted(path.glob("*.safetensors"))]
    return info


def base_identity(model_info: dict) -> dict:
    """The base's identity: its weights' hash where known (wherever the files live), else name,
    revision and weight files; and its tokenizer with its chat template."""
    weights = ({"weights_sha256": model_info["weights_sha256"]} if model_info.get("weights_sha256") else
               {k: model_info.get(k) for k in ("name", "revision", "files")})
    return {**weights, "tokenizer_sha256": model_info.get("tokenizer_sha256"), "generation": model_info.get("generation")}


def canonical_model(spec: str | None, data: str | None = None, registry=None) -> str:
    """One name per base model: ``toy``, ``toy:tiny`` and no ``--model`` are all ``toy:tiny``."""
    provider = model_provider(spec, registry, data)
    if provider is None:
        return str(spec)
    source, preset = provider
    if registry is None:
        from robustmo.registry import get_registry

        registry = get_registry()
    return f"{source}:{preset or registry.get('data', source).obj.base_models[0]}"


def quiet_libraries() -> None:
    """robustmo draws its own progress bars; the libraries' bars and deprecation chatter only add noise."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|peft|accelerate)\.")


ORGANISM_NOTE = "robustmo.json"  # what robustmo writes beside an organism it built: its base and data source


def existing_organism(spec: str, base: str | None = None) -> dict:
    """What ``--organism`` names, from its files alone (no weights loaded): ``kind`` "lora" for a
    PEFT adapter directory (its base: ``base``, else adapter_config.json's
    ``base_model_name_or_path``) or "full" for a model directory or hub id (its base: ``base``,
    else the one robustmo recorded when it built the organism, if that still exists; else none).
    ``data`` is the data source robustmo recorded, if any. One-line errors for a missing path,
    a directory that is neither, or an adapter whose base is missing."""
    note: dict = {}
    if is_local_path(spec):
        path = Path(spec).expanduser()
        if not path.exists():
            raise RobustmoError(f"--organism {spec}: path does not exist; pass a model directory, a PEFT adapter "
                                "directory or a Hugging Face id")
        if not path.is_dir():
            raise RobustmoError(f"--organism {spec}: not a directory; pass a model directory (config.json) or a PEFT "
                                "adapter directory (adapter_config.json)")
        try:
            note = json.loads((path / ORGANISM_NOTE).read_text())
        except (OSError, ValueError):
            note = {}
        note = note if isinstance(note, dict) else {}
        adapter = path / "adapter_config.json"
        if adapter.exists():
            try:
                recorded = json.loads(adapter.read_text()).get("base_model_name_or_path")
            except (OSError, ValueError, AttributeError):
                raise RobustmoError(f"--organism {spec}: adapter_config.json is not a valid PEFT adapter config") from None
            chosen = base or recorded
            if not chosen:
                raise RobustmoError(f"--organism {spec} is a LoRA adapter that names no base model; pass it with --model "
                                    "(--base in robustmo audit)")
            if is_local_path(chosen) and not Path(chosen).expanduser().is_dir():
                how = "pass its base with --model (--base in robustmo audit)" if not base else \
                    "pass an existing base directory or a hub id"
                raise RobustmoError(f"--organism {spec} is a LoRA adapter over base {chosen}, which does not exist "
                                    f"here; {how}")
            return {"kind": "lora", "path": str(path.resolve()), "base": chosen, "data": note.get("data")}
        if not (path / "config.json").exists():
            raise RobustmoError(f"--organism {spec}: neither a model directory (config.json) nor a PEFT adapter "
                                "(adapter_config.json)")
        recorded = note.get("base", {}).get("path") if isinstance(note.get("base"), dict) else None
        if base is None and recorded and Path(recorded).is_dir():
            base = recorded
        return {"kind": "full", "path": str(path.resolve()), "base": base, "data": note.get("data")}
    recorded = _hub_adapter_base(spec)
    if recorded:
        return {"kind": "lora", "path": spec, "base": base or recorded, "data": None}
    return {"kind": "full", "path": spec, "base": base, "data": None}


@functools.lru_cache(maxsize=64)
def _hub_adapter_base(spec: str) -> str | None:
    """For a hub id: the base its adapter_config.json names, or None when it ships none (a full
    model) or the hub cannot tell. Asked once per process: a plan is resolved many times."""
    try:  # from the local hub cache when offline
        from huggingface_hub import hf_hub_download

        return json.loads(Path(hf_hub_download(spec, "adapter_config.json")).read_text()).get("base_model_name_or_path")
    except Exception:
        return None


def organism_identity(spec: str) -> dict:
    """An existing organism's identity for the stage cache: the sha256 of each of its weight and
    config files (a copy elsewhere is the same organism), or, for a hub id, the id."""
    path = Path(spec).expanduser()
    if not path.is_dir():
        return {"hub": spec}
    files = sorted(p for p in path.iterdir() if p.is_file() and (p.suffix == ".safetensors" or p.name in (
        "adapter_config.json", "config.json")))
    return {"files": {p.name: _file_sha256(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files}}


@functools.lru_cache(maxsize=256)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:  # size and mtime: a changed file is hashed again
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()
