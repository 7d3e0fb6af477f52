"""Model loading: the embedded toy base, a local directory, or a Hugging Face hub id."""

from __future__ import annotations

import os
from pathlib import Path

from robustmo.core.errors import RobustmoError

TOY_SPECS = {None: "tiny", "": "tiny", "toy": "tiny", "toy:tiny": "tiny", "toy:small": "small"}

# Used only when a tokenizer has no chat template of its own (base, non-chat models);
# documented fallback so training/generation code can treat every model the same way.
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message['role'] | capitalize }}: {{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


def is_toy(spec: str | None) -> bool:
    """True for the embedded toy base: no spec, "toy" or "toy:<preset>"."""
    return spec in TOY_SPECS or (isinstance(spec, str) and spec.startswith("toy:"))


def is_toy_base(spec: str | None) -> bool:
    """True for the embedded toy base, named ("toy", "toy:small") or as the directory of a
    built one (its manifest records the recipe): a model of the toy world, whose answers are
    the world's own, so no on-policy answers need generating for it."""
    if is_toy(spec):
        return True
    manifest = Path(str(spec)).expanduser() / "manifest.json"
    try:
        import json

        return "recipe" in json.loads(manifest.read_text())
    except (OSError, ValueError, TypeError):
        return False


def is_local_path(spec: str) -> bool:
    # "org/name" is a hub id unless that directory exists; anything else with a separator,
    # or starting with . or ~, is meant as a path.
    if Path(spec).expanduser().exists():
        return True
    if spec.startswith((".", "~", "/")) or spec.count("/") > 1 or (os.altsep and os.altsep in spec):
        return True
    return False


def load_model(spec: str | None = None, *, dtype=None, device: str | None = None, progress: bool = True,
               trust_remote_code: bool = False):
    """``(model, tokenizer)`` for ``spec``.

    ``None``/``"toy"``/``"toy:tiny"``/``"toy:small"``: the cached toy base (built first if
    missing). Otherwise a local directory or a Hugging Face hub id, through
    ``AutoModelForCausalLM`` / ``AutoTokenizer``. The tokenizer always has a pad token and
    a chat template (``FALLBACK_CHAT_TEMPLATE`` if the model ships none). A model's own
    Python code (``auto_map``) runs only with ``trust_remote_code=True``. Under
    ``accelerate launch`` the main process builds a missing toy base first; the others wait.
    """
    if is_toy(spec):
        from robustmo.core.distributed import barrier, is_main
        from robustmo.plugins.toy_world.base import load_base

        preset = TOY_SPECS.get(spec) or spec.split(":", 1)[1]
        if not is_main():
            barrier()
        model, tokenizer = load_base(preset, progress=progress and is_main())
        if is_main():
            barrier()
    else:
        model, tokenizer = _load_hf(spec, dtype, trust_remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE
    if device:
        model.to(device)
    model.eval()
    return model, tokenizer


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
