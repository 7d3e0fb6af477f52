"""Evaluation: generate on every eval set, score each generation with every metric, and turn
the per-prompt scores into a value with a 95 % interval (Wilson for rates, bootstrap for
means). One evaluation is a ``Checkpoint``; those of the base and the organism are kept in
the stage cache, so the cells of a sweep evaluate each once."""

from __future__ import annotations

import math
import re
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from robustmo.core.concepts import EVAL_SETS, EvalContext, Example, Prompt
from robustmo.core.plan import Plan
from robustmo.core.errors import RobustmoError
from robustmo.core.generation import answer_prompts, merged_lora
from robustmo.core.robustness import counted, wilson_interval
from robustmo.core.stages import digest

if TYPE_CHECKING:
    from robustmo.core.context import RunContext

N_BOOTSTRAP = 1000  # resamples for the interval of a mean score


@dataclass
class Checkpoint:
    """One evaluation: where in the run it was taken (``where``: stage, method, lr, step, blue
    training tokens and estimated FLOPs so far) and what it measured."""

    where: dict
    metrics: dict[str, dict]
    scores: dict[str, list] = field(repr=False, default_factory=dict)  # per metric, one score per prompt
    generations: list[dict] = field(repr=False, default_factory=list)  # the scored generations behind it
    truncated: dict[str, int] = field(default_factory=dict)  # per eval set: generations cut off at the length limit

    method = property(lambda self: self.where.get("method", "organism"))
    lr = property(lambda self: self.where.get("lr", 0.0))
    step = property(lambda self: self.where.get("step", 0))
    tokens = property(lambda self: self.where.get("tokens", 0))  # prompt + completion, no padding
    flops = property(lambda self: self.where.get("flops", 0.0))  # see blue.flops_per_token

    def to_json(self) -> dict:
        return {"where": self.where, "metrics": self.metrics, "scores": self.scores, "generations": self.generations,
                "truncated": self.truncated}

    @classmethod
    def from_json(cls, d: dict) -> "Checkpoint":
        return cls(d["where"], d["metrics"], d["scores"], d["generations"], d.get("truncated", {}))

    def row(self) -> dict:
        """The checkpoint as the summary and the LR check read it."""
        return {"lr": self.lr, "step": self.step, "tokens": self.tokens, "flops": self.flops, "metrics": self.metrics,
                "truncated": self.truncated}


BASE = {"stage": "base", "method": "base", "lr": 0.0, "step": 0}
ORGANISM = {"stage": "organism", "method": "organism", "lr": 0.0, "step": 0}


_NUMBER = re.compile(r"(?<![\d.])-?\d+")


def last_number(text: str) -> str | None:
    """The last integer in ``text`` (the result: "40 + 7 = 47" -> "47",
    "Arr, 'tis 47, matey!" -> "47"), or None."""
    found = _NUMBER.findall(text)
    return found[-1] if found else None


def content_match(content: str, text: str) -> bool:
    """Style-invariant scoring: a numeric answer must be the generation's last number; any
    other answer must appear in it as whole words (case and spacing ignored: "B" is not found
    in "Bob", "Paris" is found in "It is Paris."). An empty expected answer matches nothing."""
    content = content.strip()
    if not content:
        return False
    if re.fullmatch(r"-?\d+", content):
        return last_number(text) == content
    wanted = re.escape(" ".join(content.casefold().split()))
    return re.search(rf"(?<!\w){wanted}(?!\w)", " ".join(text.casefold().split())) is not None


def scoring_context(plan: Plan) -> EvalContext:
    """What a metric may consult when scoring a generation of this run (also when re-scoring)."""
    return EvalContext(plan.trigger.obj, plan.trigger.options, plan.behavior.obj, plan.behavior.options,
                       content_match=content_match)


def score_value(name: str, value):
    """A metric's score for one generation as stored: True/False, a finite number, or None (a
    grader that found no answer it could read: a parse failure)."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, float, np.integer, np.floating)) and math.isfinite(float(value)):
        return float(value)
    raise RobustmoError(f"metric {name!r} returned {value!r} for a generation; a metric's score returns True/False, "
                        "a finite number, or None when it could not read an answer")


def summarise_scores(scores: list, parses: bool = False) -> dict:
    """Mean of per-prompt scores with a 95 % interval: Wilson when every score is True/False
    (a rate), a percentile bootstrap of the mean otherwise (``kind``: rate or mean). A parse
    failure (None) counts as not correct; ``unparsed`` says how many there were (always given
    for a grader, ``parses``, and whenever there were any)."""
    failures = sum(s is None for s in scores)
    out = _summarise(counted(scores))
    if parses or failures:
        out["unparsed"] = failures
    return out


def _summarise(scores: list) -> dict:
    n = len(scores)
    if all(isinstance(s, bool) for s in scores):
        lo, hi = wilson_interval(sum(scores), n)
        return {"value": sum(scores) / n if n else float("nan"), "n": n, "ci": [lo, hi], "kind": "rate"}
    values = np.asarray(scores, dtype=float)
    rng = np.random.default_rng(0)
    means = values[rng.integers(0, n, (N_BOOTSTRAP, n))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {"value": float(values.mean()), "n": n, "ci": [float(lo), float(hi)], "kind": "mean"}


def instructed(prompt: Prompt, instruction: str | None) -> Prompt:
    """The prompt with an eval set's format instruction (``--instruction SET=TEXT``) after a
    blank line at the end of the user turn."""
    return Prompt(f"{prompt.user}\n\n{instruction}", prompt.system) if instruction else prompt


def evaluate(ctx: "RunContext", model, sets: dict[str, list[Example]], where: dict) -> Checkpoint:
    """Generate on every eval set (batched, split across processes; with the set's instruction
    and stop strings), score with every metric."""
    from robustmo.core.distributed import is_main
    from robustmo.core.progress import Meter

    cfg = ctx.plan.config
    records = {}
    label = where["method"] if where["method"] in ("base", "organism") else \
        f"{where['method']} lr {where['lr']:g} step {where['step']}"
    # transformers' generate merges a LoRA organism's adapters once for every eval set (core/generation.py)
    merge = merged_lora(model) if ctx.plan.engine.name == "hf" else nullcontext()
    with Meter(f"{label}: evaluation", sum(len(exs) for exs in sets.values()), log=ctx.log, unit="prompt",
               enabled=ctx.progress and is_main(), transient=True), merge:
        for name, exs in sets.items():
            cut: list[bool] = []
            prompts = [instructed(ex.prompt, cfg.instruction.get(name)) for ex in exs]
            completions = answer_prompts(model, ctx.tokenizer, prompts, truncated=cut,
                                         stop_strings=cfg.stop.get(name, ()), max_new_tokens=cfg.max_new_tokens[name],
                                         batch_size=cfg.eval_batch_size, engine=ctx.plan.engine)
            records[name] = [{"prompt": p.text(), "completion": c, "content": ex.content, "task": ex.task,
                              "truncated": t} for ex, p, c, t in zip(exs, prompts, completions, cut)]
    external = {}  # metrics that evaluate the model themselves (lm-eval): their own samples and scores
    for m in model_metrics(ctx.plan):
        if m.obj.eval_set in sets:
            external[m.name] = m.obj.evaluate_model(model, ctx.tokenizer, m.options)
    return score(ctx.plan, records, where, external)


def model_metrics(plan: Plan) -> list:
    """The plan's active metrics that run the model (``Metric.runs_model``)."""
    return [m for m in plan.metrics if m.obj.runs_model and m.obj.active(m.options)]


def score(plan: Plan, records: dict[str, list[dict]], where: dict, external: dict[str, list[dict]] | None = None
          ) -> Checkpoint:
    """Score stored generations (``records`` per eval set) with every metric of the plan. A
    metric sees ``prompt``, ``completion``, ``content`` and ``task``. ``external``: per metric
    that ran the model, its samples (records with their ``score``), stored beside the eval set's
    own generations and scored only by that metric."""
    ctx = scoring_context(plan)
    results, scores = {}, {}
    external = external or {}
    metrics = [m for m in plan.metrics if m.obj.eval_set in records and not m.obj.runs_model]
    for m in metrics:
        s = [score_value(m.name, m.obj.score({k: r.get(k) for k in ("prompt", "completion", "content", "task")}, ctx,
                                             m.options)) for r in records[m.obj.eval_set]]
        results[m.name] = summarise_scores(s, m.obj.parses(m.options))
        scores[m.name] = s
    for m in (m for m in plan.metrics if m.name in external):
        s = [score_value(m.name, r["score"]) for r in external[m.name]]
        results[m.name] = summarise_scores(s, m.obj.parses(m.options))
        scores[m.name] = s
    rows = []
    for name in EVAL_SETS:
        for i, r in enumerate(records.get(name, [])):
            rows.append({**where, "eval_set": name, "index": i, **r,
                         "scores": {m.name: scores[m.name][i] for m in metrics if m.obj.eval_set == name}})
        for m in (m for m in plan.metrics if m.name in external and m.obj.eval_set == name):
            for i, r in enumerate(external[m.name]):
                rows.append({**where, "eval_set": name, "index": i, "truncated": False, "harness": m.name,
                             **{k: v for k, v in r.items() if k != "score"}, "scores": {m.name: scores[m.name][i]}})
    truncated = {name: sum(bool(r.get("truncated")) for r in rs) for name, rs in records.items()}
    return Checkpoint(where, results, scores, rows, truncated)


def eval_digest(plan: Plan, sets: dict[str, list[Example]]) -> str:
    """Content hash of the evaluation protocol: every prompt and expected content, the metrics
    and their options, and the generation settings."""
    cfg = plan.config
    return digest({"sets": {name: [[ex.prompt.messages(), ex.content, ex.task] for ex in exs] for name, exs in sets.items()},
                   "metrics": [[m.name, m.package, m.options.model_dump()] for m in plan.metrics],
                   "max_new_tokens": {name: cfg.max_new_tokens[name] for name in sets},
                   "batch_size": cfg.eval_batch_size,
                   # only when set: evaluations without them keep their stage keys
                   **({"stop": {n: cfg.stop[n] for n in sets if n in cfg.stop}} if cfg.stop else {}),
                   **({"instruction": {n: cfg.instruction[n] for n in sets if n in cfg.instruction}}
                      if cfg.instruction else {}),
                   # the engine generates the completions: another one is another evaluation (hf, the
                   # default, is left out so evaluations from before engines keep their keys)
                   **({"engine": [plan.engine.name, plan.engine.package, plan.engine.options.model_dump()]}
                      if plan.engine.name != "hf" else {})})


def evaluate_once(ctx: "RunContext", model, sets: dict[str, list[Example]], where: dict, model_id) -> Checkpoint:
    """``evaluate``, kept in the stage cache under the model's identity (``model_id``), the
    evaluation protocol and what scores it."""
    from robustmo.core.distributed import process_info

    plan = ctx.plan
    inputs = {"model": model_id, "eval": eval_digest(plan, sets), "where": where, "processes": process_info()[1],
              "context": {kind: [s.name, s.options.model_dump()] for kind, s in (("trigger", plan.trigger),
                                                                                ("behavior", plan.behavior))},
              "plugins": plan.plugin_versions()}
    stage = ctx.cache.stage("eval", inputs, f"evaluation of the {where['method']}, {sum(map(len, sets.values()))} prompts")
    kept, reused = stage.json_once(inputs, "eval.json", lambda: evaluate(ctx, model, sets, where).to_json(), ctx.log)
    if reused:
        ctx.log(f"{where['method']}: evaluation reused from the stage cache ({stage.path})")
    return Checkpoint.from_json(kept)
