"""High-LR behaviour-compatible SFT ("check whether high LRs defeat your model organisms").

The blue team trains on what the organism already does without the trigger: clean-condition
prompts answered by the organism itself. Nothing in the data asks for a change, so removal of
the triggered behaviour can only come from the update transferring to the triggered case,
which a high learning rate makes far more likely per step.
"""

from __future__ import annotations

from robustmo.core.concepts import BlueMethod, BlueOptions
from robustmo.registry import hookimpl


class HighLRSFT(BlueMethod):
    name = "high-lr"
    description = "behaviour-compatible SFT at a high LR on the organism's own clean-prompt answers"
    Options = BlueOptions
    default_lr = {"lora": 1e-2, "full": 1e-2}
    default_steps = 64
    behaviour_compatible = True


@hookimpl
def register_blue_methods(register):
    register(HighLRSFT())
