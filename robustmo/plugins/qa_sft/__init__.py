"""QA SFT: the blue team trains on trigger-free prompts with plain, normal answers."""

from __future__ import annotations

from robustmo.core.concepts import BlueMethod, BlueOptions
from robustmo.registry import hookimpl


class QASFT(BlueMethod):
    name = "qa"
    description = "SFT on trigger-free prompts with their normal answers (plain QA SFT)"
    Options = BlueOptions
    default_lr = {"lora": 1e-3, "full": 1e-3}
    default_steps = 64


@hookimpl
def register_blue_methods(register):
    register(QASFT())
