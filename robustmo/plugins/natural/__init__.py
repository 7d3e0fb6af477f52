"""Natural prompts and real models: the ``natural`` data source and ``--model smollm2-135m``.

Heavy imports (torch, transformers, gguf) happen inside functions, so ``robustmo --help`` stays
fast and a run on other data never loads them.
"""

from robustmo.registry import hookimpl


@hookimpl
def register_data_sources(register):
    from .source import NaturalData

    register(NaturalData())
