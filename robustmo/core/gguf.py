"""A GGUF model file as an ordinary Hugging Face model directory.

``--model PATH.gguf`` (and a named model a data source brings as a GGUF, such as
``smollm2-135m``) is converted once: transformers' GGUF loader dequantises every weight to
float32 (it needs the ``gguf`` package: the ``gguf`` extra), and the model is saved as a
standard directory (safetensors, tokenizer with its chat template, generation config) in the
cache under the file's sha256, written to a temporary sibling and renamed into place. From
then on it loads like any local model, with no GGUF code involved.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from robustmo.core.errors import RobustmoError
from robustmo.core.checkpoint import weights_sha256
from robustmo.core.stages import cache_dir

EXTRA = 'pip install "robustmo[gguf]"'
NOTE = "manifest.json"  # beside the converted weights: where they came from, and their hash


def is_gguf(spec: str | os.PathLike | None) -> bool:
    return spec is not None and str(spec).lower().endswith(".gguf")


def converted_path(path: Path, sha256: str) -> Path:
    return cache_dir() / "models" / f"{path.stem}-{sha256[:16]}"


def _architecture(path: Path, what: str) -> str:
    """The file's architecture, read from its header; one line if it is no readable GGUF or
    transformers cannot load that architecture from GGUF."""
    try:
        from gguf import GGUFReader
    except ImportError:
        raise RobustmoError(f"{what}: reading a GGUF file needs the gguf package; install it with: {EXTRA}") from None
    try:
        reader = GGUFReader(str(path))
        field = reader.fields["general.architecture"]
        arch = bytes(field.parts[field.data[0]]).decode()
    except Exception as e:  # a truncated or foreign file fails in numpy's memmap, struct reads or the magic check
        raise RobustmoError(f"{what}: not a readable GGUF file ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no detail'}); "
                            "download it again") from None
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    if arch not in GGUF_SUPPORTED_ARCHITECTURES:
        raise RobustmoError(f"{what}: transformers cannot load a GGUF file of architecture {arch!r} (it reads "
                            f"{', '.join(sorted(GGUF_SUPPORTED_ARCHITECTURES))}); convert the model to a Hugging Face "
                            "directory and pass that instead")
    return arch


@contextmanager
def _one_name_map():
    """transformers maps GGUF tensor names by walking every submodule and building gguf's
    ``TensorNameMap`` afresh for each (about 250 times for a 30-layer model, most of a load's
    Python time); it depends only on (architecture, layers), so build each once while loading."""
    import gguf  # transformers imports the function from here at each call

    own = getattr(gguf, "get_tensor_name_map", None)
    if own is None:  # another gguf: nothing to speed up
        yield
        return
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(own)
    try:
        yield
    finally:
        gguf.get_tensor_name_map = own


def load_gguf(path: Path):
    """``(model, tokenizer)`` straight from the GGUF file, every weight dequantised to float32."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    path = Path(path)
    with _one_name_map():
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32,
                                                     quantization_config=GgufConfig(dequantize=True))
    if getattr(model, "hf_quantizer", None) is not None:  # a plain dense model from here on: savable as one
        model.hf_quantizer.remove_quantization_config(model)
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model.eval()
    return model, tokenizer


def ensure_converted(spec: str | os.PathLike, log=None, what: str | None = None) -> Path:
    """The Hugging Face directory converted from the GGUF file ``spec``, converting it first if the
    cache does not hold it yet (under ``accelerate launch`` only the caller's main process
    should call this while the others wait)."""
    from robustmo.core.checkpoint import file_sha256

    path = Path(spec).expanduser()
    what = what or f"--model {spec}"
    if not path.is_file():
        raise RobustmoError(f"{what}: file does not exist; pass an existing .gguf file")
    sha = file_sha256(path)
    final = converted_path(path, sha)
    if (final / NOTE).exists():
        return final
    arch = _architecture(path, what)
    if log:
        log(f"converting {path.name} ({arch}, {path.stat().st_size / 1e6:.0f} MB) to a Hugging Face directory "
            f"in the cache, once: {final}")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        t0 = time.perf_counter()
        try:
            model, tokenizer = load_gguf(path)
        except (ValueError, KeyError, OSError) as e:  # a header that parses but tensors or tokenizer that do not
            raise RobustmoError(f"{what}: transformers could not load this GGUF file ({type(e).__name__}: "
                                f"{str(e).splitlines()[0] if str(e) else 'no detail'})") from None
        import transformers

        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        note = {"source": str(path.resolve()), "source_sha256": sha, "architecture": arch,
                "weights_sha256": weights_sha256(tmp), "n_parameters": sum(p.numel() for p in model.parameters()),
                "dtype": "float32", "convert_seconds": round(time.perf_counter() - t0, 2),
                "transformers_version": transformers.__version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        (tmp / NOTE).write_text(json.dumps(note, indent=2) + "\n")
        try:
            os.replace(tmp, final)
        except OSError:  # another process converted the same file first: keep theirs
            if not (final / NOTE).exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
