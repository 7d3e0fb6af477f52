"""QA SFT: the blue team trains on trigger-free prompts with plain, normal answers."""

from __future__ import annotations

import random

from robustmo.core.concepts import BlueMethod, BlueOptions, Prompt
from robustmo.registry import hookimpl


class QASFT(BlueMethod):
    name = "qa"
    description = "SFT on trigger-free prompts with their normal answers (plain QA SFT)"
    Options = BlueOptions
    default_lr = {"lora": 1e-3, "full": 1e-3}
    default_steps = 64

    def answer(self, prompt: Prompt, normal_answer: str, rng: random.Random, options: BlueOptions) -> str:
        return normal_answer


@hookimpl
def register_blue_methods(register):
    register(QASFT())
