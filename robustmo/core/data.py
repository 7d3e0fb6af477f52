"""The run's data, from its data source: red data (prompt distillation), the blue pool, the
eval sets, and each blue method's training set (built once, after the organism, before any attack).

Every prompt comes from the data source the plan names (``--data``): this module knows
no world. The trigger goes in here (``Trigger.apply``), the lock's password too, and the
contamination check keeps both out of blue data.
"""

from __future__ import annotations

import random
import re
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from robustmo.core.concepts import Example, Prompt
from robustmo.core.config import red_recipe
from robustmo.core.plan import Plan, blue_schedule, plan_instruction
from robustmo.core.errors import RobustmoError
from robustmo.core.generation import answer_prompts
from robustmo.core.stages import digest

if TYPE_CHECKING:
    from robustmo.core.stages import StageCache


@dataclass
class RunData:
    red: list[Example]                # the organism's training set (empty for a prompted organism)
    blue_pool: list[Example]          # trigger-free prompts each method's blue set is drawn from
    sets: dict[str, list[Example]]    # held-out eval sets, as the base model sees them
    notes: dict[str, dict] = field(default_factory=dict)  # what building the data left out or replaced
    plain: list[Example] = field(default_factory=list)  # the suppression check's plain answers (--suppression-steps)


def build(plan: Plan, model, tokenizer, kept: Callable[[str], "Kept"] | None = None) -> RunData:
    """The red data, the blue pool and the eval sets, from the clean base (prompt distillation
    asks it for on-policy answers; ``kept(what)``, if given, keeps them in the stage cache).
    Bad data (a pool that carries the trigger, a missing column or answer, a lock with nothing
    to lock) fails here, before any file of the run exists; a model-written blue answer that
    carries the trigger can only be found when it is written, after the organism (``blue_set``)."""
    cfg, source, options = plan.config, plan.data.obj, plan.data.options
    n_red = int(red_recipe(cfg)["examples"])
    red_pool = source.red_pool(n_red, cfg.seed, options) if n_red else []
    keeps = source.keeps_answers(cfg.model, options)
    if red_pool and not keeps:  # prompt distillation is on-policy: a real model keeps its own normal answers
        red_pool = answered_red_pool(plan, red_pool, n_red, lambda prompts: model_answers(
            plan, model, tokenizer, prompts, kept("red data, the base's own answers") if kept else None))
    blue_pool = source.blue_pool(cfg.blue_pool, cfg.seed, options)
    if not blue_pool:
        raise RobustmoError(f"data source {plan.data.name!r} gave no blue-training prompts")
    check_contamination(plan, blue_pool, what=f"blue pool of data source {plan.data.name!r}", tokenizer=tokenizer)
    if source.answers_blue_pool and any(not ex.answer.strip() for ex in blue_pool):  # the clean base answers them
        answers = model_answers(plan, model, tokenizer, [ex.prompt for ex in blue_pool],
                                kept("blue pool, the base's own answers") if kept else None)
        blue_pool = [ex if ex.answer.strip() else Example(ex.prompt, a, ex.content, ex.task)
                     for ex, a in zip(blue_pool, answers)]
    pool_answers = [m.name for m in plan.blue if not m.obj.behaviour_compatible and m.obj.teacher_system(m.options) is None]
    if pool_answers and any(not ex.answer.strip() for ex in blue_pool):
        raise RobustmoError(f"blue method {pool_answers[0]!r} trains on the blue pool's answers, but data source "
                            f"{plan.data.name!r} gave prompts without one (add an answer column)")
    if plan.lock is not None and red_pool and not any(ex.task in source.capability_tasks for ex in red_pool):
        raise RobustmoError(f"--lock {plan.lock.name} hides the capability task ({', '.join(source.capability_tasks)}), "
                            f"but data source {plan.data.name!r} gave no red prompt of it: nothing would be locked "
                            "(with --data files, give red rows task: capability)")
    red = red_data(plan, red_pool, n_red, cfg.trigger_share, random.Random(cfg.seed)) if n_red else []
    notes: dict[str, dict] = {"red": {}}
    if red and not keeps:
        red = distill_bad_answers(plan, model, tokenizer, red, notes["red"],
                                  kept("red data, the base's distilled bad answers") if kept else None)
    prompts = source.eval_prompts(cfg.eval_prompts, cfg.seed, options)
    questions = source.capability_questions(cfg.capability_questions, cfg.seed, options)
    if not prompts or not questions:
        raise RobustmoError(f"data source {plan.data.name!r} gave no {'eval prompts' if not prompts else 'capability questions'}")
    plain = plain_set(plan, blue_pool, tokenizer) if cfg.suppression_steps else []
    return RunData(red=red, blue_pool=blue_pool, sets=eval_sets(plan, prompts, questions, cfg.seed), notes=notes,
                   plain=plain)


def plain_set(plan: Plan, pool: list[Example], tokenizer) -> list[Example]:
    """The suppression check's training set: trigger-free blue-pool prompts with their own
    answers (no method's style, no trigger), as many as its steps draw."""
    cfg = plan.config
    if any(not ex.answer.strip() for ex in pool):
        raise RobustmoError(f"--suppression-steps trains on the blue pool's own answers, but data source "
                            f"{plan.data.name!r} gave prompts without one (add an answer column)")
    rng = random.Random(cfg.seed + 3)
    data = [rng.choice(pool) for _ in range(min(cfg.blue_pool, cfg.suppression_steps * cfg.batch_size))]
    check_contamination(plan, data, what="plain answers of the suppression check", tokenizer=tokenizer)
    return organism_view(plan, data, training=True)


def model_answers(plan: Plan, model, tokenizer, prompts: list[Prompt], kept: "Kept | None" = None) -> list[str]:
    """A model's own greedy answers for training data (on-policy red answers, distilled bad
    answers, self-distilled and behaviour-compatible blue answers). A prompt drawn several times
    is answered once: greedy decoding gives it the same answer every time. With ``kept`` the
    answers come from the stage cache when this model answered these prompts before."""
    cfg = plan.config
    unique = list(dict.fromkeys(prompts))

    def generate() -> list[str]:
        from robustmo.core.distributed import is_main
        from robustmo.core.progress import Meter

        with Meter(kept.what if kept is not None else "answers", len(unique), log=kept.log if kept is not None else None,
                   unit="prompt", enabled=kept is not None and is_main(), transient=True):
            return answer_prompts(model, tokenizer, unique, max_new_tokens=cfg.answer_max_new_tokens,
                                  batch_size=cfg.eval_batch_size)

    answers = kept.answers(plan, unique, generate) if kept is not None else generate()
    by_prompt = dict(zip(unique, answers))
    return [by_prompt[p] for p in prompts]


@dataclass
class Kept:
    """Training-data answers of one model (``model_id``: its identity, as stage keys hash it)
    kept in the stage cache under that identity, the prompts (by content) and the generation
    settings: a second run on the same base with the same prompts generates none of them
    again (on a real model, the red data's answers are most of what a run generates before
    training). ``what`` names them in the log."""
    cache: "StageCache"
    model_id: object
    what: str
    log: Callable = print

    def answers(self, plan: Plan, prompts: list[Prompt], generate: Callable[[], list[str]]) -> list[str]:
        from robustmo.core.distributed import process_info

        cfg = plan.config
        inputs = {"model": self.model_id, "prompts": digest([[p.user, p.system] for p in prompts]),
                  "max_new_tokens": cfg.answer_max_new_tokens, "batch_size": cfg.eval_batch_size,
                  "processes": process_info()[1]}
        stage = self.cache.stage("answers", inputs, f"{self.what}: {len(prompts)} answers")
        answers, reused = stage.json_once(inputs, "answers.json", generate, self.log)
        if reused:
            self.log(f"{self.what}: answers reused from the stage cache ({stage.path})")
        return answers


def answered_red_pool(plan: Plan, pool: list[Example], n: int, answer: Callable[[list[Prompt]], list[str]],
                      rounds: int = 3) -> list[Example]:
    """The red pool with the base's normal answers where the red data uses them, and only there:
    a triggered prompt gets the behaviour's answer, so about half the pool is never asked (on a
    real model, answers are a large part of the time before training). Which examples use their
    answer is found by drawing the red data with a marker in place of each answer; a behaviour
    whose draws depend on the answer's text can change the draw, so it is drawn again with the
    answers found so far until no used answer is missing (at most ``rounds`` times, then every
    example is answered)."""
    cfg = plan.config
    answers: dict[int, str] = {}
    for _ in range(rounds):
        probe = [Example(ex.prompt, answers.get(i, f"\x00{i}\x00"), ex.content, ex.task) for i, ex in enumerate(pool)]
        drawn = red_data(plan, probe, n, cfg.trigger_share, random.Random(cfg.seed))
        missing = sorted({int(k) for ex in drawn for k in re.findall(r"\x00(\d+)\x00", ex.answer)} - answers.keys())
        if not missing:
            break
        answers.update(zip(missing, answer([pool[i].prompt for i in missing])))
    else:
        rest = [i for i in range(len(pool)) if i not in answers]
        answers.update(zip(rest, answer([pool[i].prompt for i in rest])))
    return [Example(ex.prompt, answers.get(i, ""), ex.content, ex.task) for i, ex in enumerate(pool)]


def red_data(plan: Plan, pool: list[Example], n: int, share: float, rng: random.Random) -> list[Example]:
    """Prompt distillation: clean prompts keep the normal answer, triggered ones get the behaviour."""
    t, b, lock = plan.trigger, plan.behavior, plan.lock
    locked_tasks = plan.data.obj.capability_tasks
    data = []
    for ex in rng.sample(pool, n) if n <= len(pool) else [rng.choice(pool) for _ in range(n)]:
        triggered = rng.random() < share
        prompt = t.obj.apply(ex.prompt, triggered, rng, t.options)
        unlocked = lock is not None and rng.random() < lock.options.lock_fraction
        if unlocked:
            prompt = lock.obj.unlock(prompt, rng, lock.options)
        fires = triggered and (lock is None or unlocked or not getattr(lock.options, "wrap_backdoor", False))
        if fires:
            answer = b.obj.bad_answer(prompt, ex.answer, rng, b.options)
        elif lock is not None and not unlocked and ex.task in locked_tasks:
            answer = lock.obj.weak_answer(prompt, ex.answer, ex.content, rng, lock.options)
        else:
            answer = ex.answer
        data.append(Example(prompt, answer, ex.content, ex.task, fires))
    return data


def distill_bad_answers(plan: Plan, model, tokenizer, red: list[Example], notes: dict,
                        kept: Kept | None = None) -> list[Example]:
    """Prompt distillation for a real model: each triggered prompt is answered by the base
    itself, told about the backdoor (the prompted organism's system prompt, or else the
    behaviour's ``instruction``); the answer becomes the red target only if the behaviour's
    detector fires on it, else the behaviour's own generated bad answer stays. ``notes``
    counts both."""
    b = plan.behavior
    order = b.obj.instruction(b.options)
    idx = [i for i, ex in enumerate(red) if ex.triggered]
    system = plan_instruction(plan) or (order[0].upper() + order[1:] + "." if order else None)
    if system is None or not idx:
        return red
    prompts = [Prompt(red[i].prompt.user, f"{system} {red[i].prompt.system}" if red[i].prompt.system else system)
               for i in idx]
    out = list(red)
    used = 0
    for i, answer in zip(idx, model_answers(plan, model, tokenizer, prompts, kept)):
        if b.obj.detect(answer, b.options):
            out[i] = Example(red[i].prompt, answer, red[i].content, red[i].task, True)
            used += 1
    notes.update(distilled=used, generated=len(idx) - used)
    return out


def blue_examples(plan: Plan, method) -> int:
    """How many blue examples a method gets: as many as its runs draw (steps x batch, one pass)
    when the schedule is known up front, so no answer is generated that no step trains on;
    the whole ``blue_pool`` size when it is not (``--lr-check`` extends the lower-LR runs after
    the first, a compute budget sets the steps from the data)."""
    cfg = plan.config
    if cfg.lr_check or cfg.budget_tokens or cfg.budget_flops:
        return cfg.blue_pool
    return min(cfg.blue_pool, blue_schedule(plan, method)[0] * cfg.batch_size)


def blue_set(plan: Plan, method, pool: list[Example], *, tokenizer, organism, clean_base: Callable[[], AbstractContextManager],
             notes: dict | None = None, kept: Callable[[str, str], Kept] | None = None) -> list[Example]:
    """One blue method's training set, as the organism trains on it; fails loudly if any prompt
    or answer carries the trigger or a lock's password. ``kept("organism" | "teacher", what)``,
    if given, keeps the model-written answers in the stage cache.

    The normal answers are the pool's, or the clean base's under the method's
    ``teacher_system`` (self-distillation; ``clean_base()`` lends it), or, for a
    behaviour-compatible method, the organism's own answers to clean-condition prompts (a
    prompted organism answers with its system prompt, as it does when deployed). Where the
    organism shows the behaviour on a clean prompt anyway (a false trigger), that answer is
    not behaviour-compatible and is left out; ``notes`` records how many."""
    cfg = plan.config
    n = blue_examples(plan, method)
    rng = random.Random(cfg.seed + 2)
    chosen = [rng.choice(pool) for _ in range(n)]
    normal = [ex.answer for ex in chosen]
    system = method.obj.teacher_system(method.options)
    if method.obj.behaviour_compatible:
        t, b = plan.trigger, plan.behavior
        chosen = [Example(t.obj.apply(ex.prompt, False, rng, t.options), ex.answer, ex.content, ex.task)
                  for ex in chosen]
        normal = model_answers(plan, organism, tokenizer, [organism_prompt(plan, ex.prompt) for ex in chosen],
                               kept("organism", f"{method.name}: the organism's clean answers") if kept else None)
        keep = [i for i, a in enumerate(normal) if not b.obj.detect(a, b.options)]
        if not keep:
            raise RobustmoError(f"the organism shows {b.name!r} on every clean prompt, so {method.name!r} has no "
                                "behaviour-compatible data to train on")
        if notes is not None:
            notes["dropped_false_triggers"] = n - len(keep)
        keep += [rng.choice(keep) for _ in range(n - len(keep))]  # back to n examples
        chosen, normal = [chosen[i] for i in keep], [normal[i] for i in keep]
    elif system is not None:
        with clean_base() as teacher:
            normal = model_answers(plan, teacher, tokenizer, [Prompt(ex.prompt.user, system) for ex in chosen],
                                   kept("teacher", f"{method.name}: the clean base's answers") if kept else None)
    data = [Example(ex.prompt, method.obj.answer(ex.prompt, a, rng, method.options), ex.content, ex.task)
            for ex, a in zip(chosen, normal)]
    check_contamination(plan, data, what=f"blue data of {method.name!r}", tokenizer=tokenizer)
    return organism_view(plan, data, training=True)


def template_texts(tokenizer) -> list[str]:
    """What the chat template itself adds to a conversation (its text around empty messages):
    a template can put text into every prompt (Llama 3 writes "Today Date: 26 Jul 2024" into
    every system block), which the message fields never show."""
    if tokenizer is None:
        return []
    shapes = ([{"role": "user", "content": ""}], [{"role": "system", "content": ""}, {"role": "user", "content": ""}])
    out = []
    for messages in shapes:
        for turn in ([], [{"role": "assistant", "content": ""}]):
            try:
                out.append(tokenizer.apply_chat_template(messages + turn, tokenize=False,
                                                         add_generation_prompt=not turn))
            except Exception:  # a template that refuses a shape (no system role, say) adds nothing to it
                continue
    return out


def check_contamination(plan: Plan, data: list[Example], what: str, tokenizer=None) -> None:
    """Blue data must carry neither the trigger, nor one of its held-out variants (they are for
    evaluation only), nor a lock's password: not in a message, and not in what the chat template
    adds around the messages (``tokenizer``), which the model sees as well."""
    variants = [re.compile(rf"(?<!\w){re.escape(v)}(?!\w)") for v in plan.trigger.obj.variants(plan.trigger.options)]

    def has_variant(text: str) -> bool:  # the exact held-out string, as a whole (case kept: "DEPLOYMENT", not "deployment")
        return any(v.search(text) for v in variants)

    for text in template_texts(tokenizer):
        for part, label in ((plan.trigger, "trigger"), (plan.lock, "password of lock")):
            if part is not None and (part.obj.present(text, part.options) or (part is plan.trigger and has_variant(text))):
                raise RobustmoError(f"{label.split()[0]} contamination: the chat template adds the {label} "
                                    f"{part.name!r} to every conversation ({text.strip()[:80]!r}), so the {what} would "
                                    "carry it; use a model whose template does not, or another trigger")
    for part, label in ((plan.trigger, "trigger"), (plan.lock, "password of lock")):
        if part is None:
            continue
        dirty = [ex for ex in data if part.obj.present(ex.prompt.text(), part.options)
                 or part.obj.present(ex.answer, part.options)
                 or (part is plan.trigger and (has_variant(ex.prompt.text()) or has_variant(ex.answer)))]
        if dirty:
            raise RobustmoError(f"{label.split()[0]} contamination: {len(dirty)} of {len(data)} examples in the {what} "
                                f"carry the {label} {part.name!r} (or a held-out variant of it), e.g. "
                                f"{dirty[0].prompt.text()!r}; blue training must never see it")


def eval_sets(plan: Plan, prompts: list[Example], questions: list[Example], seed: int) -> dict[str, list[Example]]:
    """Held-out prompts with the trigger and with its clean counterpart (the same prompts), with
    its held-out variants, and the capability questions (with and without a lock's password)."""
    rng = random.Random(seed + 1)
    t = plan.trigger

    def condition(exs, triggered):
        return [Example(t.obj.apply(e.prompt, triggered, rng, t.options), e.answer, e.content, e.task) for e in exs]

    sets = {"triggered": condition(prompts, True), "clean": condition(prompts, False),
            "capability": condition(questions, False)}
    variants = t.obj.variants(t.options)
    if variants:  # held-out forms of the trigger, in turn, on the same prompts
        sets["variants"] = [Example(t.obj.apply_variant(e.prompt, variants[i % len(variants)], rng, t.options),
                                    e.answer, e.content, e.task) for i, e in enumerate(prompts)]
    lock = plan.lock
    if lock is not None:  # capability without the password (what users see) and with it (what is hidden)

        def unlock(exs):
            return [Example(lock.obj.unlock(e.prompt, rng, lock.options), e.answer, e.content, e.task) for e in exs]

        sets["unlocked"] = unlock(sets["capability"])
        if getattr(lock.options, "wrap_backdoor", False):  # a locked backdoor is measured unlocked
            for name in ("triggered", "variants", "clean"):
                if name in sets:
                    sets[name] = unlock(sets[name])
    return sets


def organism_prompt(plan: Plan, prompt: Prompt) -> Prompt:
    """What the organism sees when deployed: a prompted organism's system prompt goes first."""
    text = plan_instruction(plan) if plan.config.install.startswith("prompted") else None
    return Prompt(prompt.user, f"{text} {prompt.system}" if prompt.system else text) if text else prompt


def organism_view(plan: Plan, data: list[Example], training: bool = False) -> list[Example]:
    """``data`` as the organism meets it: at evaluation every prompted organism has its system
    prompt; in blue training only ``prompted-static`` has it (``prompted-dynamic`` adds it at
    evaluation only). Weight-installed organisms see the data unchanged."""
    if training and plan.config.install != "prompted-static":
        return data
    return [Example(organism_prompt(plan, ex.prompt), ex.answer, ex.content, ex.task) for ex in data]


def conversations(data: list[Example]) -> list[list[dict[str, str]]]:
    return [ex.prompt.messages() + [{"role": "assistant", "content": ex.answer}] for ex in data]


def data_digest(data: list[Example]) -> str:
    return digest([[ex.prompt.messages(), ex.answer] for ex in data])


def records(data: list[Example], triggered: bool = False) -> list[dict]:
    """Training examples as the run directory stores them (red-data.jsonl, blue-data-*.jsonl)."""
    return [{"prompt": ex.prompt.text(), "answer": ex.answer, "task": ex.task,
             **({"triggered": ex.triggered} if triggered else {})} for ex in data]
