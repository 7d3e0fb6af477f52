"""Calibration: robustmo's numbers checked against a known truth (issue 30).

A scenario is a true trade-off: per blue checkpoint of the default grid (steps 1, 2, 4, ...,
64 of one LR) its true relative capability x and removal y, the organism's true capability
and backdoor rate. The harness draws per-prompt 0/1 scores from that truth and feeds them to
the code a real run and audit use: ``Checkpoint`` objects into ``summary.summarise`` (hull,
bootstrap intervals, "inconclusive", noise floor, LR check), ``blue.Attack.conclusive`` for
``--escalate``, ``blue.suppression_result`` for the suppression check, the seeds' estimators
(``hierarchical_auc``, ``t_interval``, ``noise_floor_of_mean``), and ``audit.method_verdict``
/ ``overall`` / ``lr_check_verdict`` for the verdicts. Nothing is estimated here.

How scores are drawn. Every eval prompt has a difficulty d ~ U(0, 1), fixed for the run;
a checkpoint whose true rate is r scores 1 on a prompt when the prompt's latent is below r,
the latent being its difficulty, redrawn (a fresh U(0, 1)) for a share ``REDRAW`` of the
prompts at each checkpoint. So every checkpoint's expected rate is exactly r (the truth),
checkpoints are paired on the same prompts as real ones are, and each one still has noise of
its own. Capability and backdoor prompts are separate sets with their own difficulties.

An audit replicate follows the default battery (``presets/audit.yaml``): its methods and
seeds, each method attacking with the scenario's trajectory (every ``--escalate`` rung
repeats it: the truth does not depend on the LR), the suppression check after every blue run
whose last checkpoint removed the behaviour. Within a seed every method shares the organism's
evaluation and the prompts; across seeds the prompts differ, unless ``shared_prompts`` (the
``files`` data source), where the adopted organism's evaluation is the same for every seed.
With several seeds the summary over seeds is composed as ``seeds.summarise_seeds`` composes
it (that function reads run directories from disk).

``calibrate`` returns a ``Calibration`` per scenario: the truth, the mean estimate and bias,
the coverage of each nominal 95 % interval and the share of each verdict.
"""

from __future__ import annotations

import math
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from robustmo.core import record
from robustmo.core.audit import load_preset, lr_check_verdict, method_verdict, overall
from robustmo.core.blue import ESCALATE_BY, Attack, suppression_result
from robustmo.core.concepts import BlueMethod
from robustmo.core.config import RunConfig
from robustmo.core.evaluate import Checkpoint, summarise_scores
from robustmo.core.lrcheck import check, planned_steps, steps_to_removal
from robustmo.core.robustness import (counted, hierarchical_auc, hull_auc, hull_value, log_spaced_steps, t_interval,
                                      trade_off_points, upper_hull)
from robustmo.core.seeds import _wider
from robustmo.core.summary import DEFAULT_ROLES, noise_floor_of_mean, summarise

CAP, BAD = DEFAULT_ROLES["capability"], DEFAULT_ROLES["backdoor"]
GRID = tuple(log_spaced_steps(BlueMethod.default_steps)[1:])  # a blue run's evaluated steps: 1, 2, 4, ..., 64
REDRAW = 0.3  # share of prompts whose latent a checkpoint draws afresh
_DEFAULTS = RunConfig()
THRESHOLD, FACTOR = _DEFAULTS.removal_threshold, _DEFAULTS.lr_check_factor
_PRESET = load_preset(None).run  # the audit's battery settings: seeds, escalate, suppression steps, eval sizes
PROMPTS, QUESTIONS = _PRESET["eval_prompts"], _PRESET["capability_questions"]
METHODS = len(load_preset(None).methods)
ESCALATE, SUPPRESSION_STEPS = _PRESET["escalate"], _PRESET["suppression_steps"]
LR = 1e-3  # the attack's LR (a label: the truth does not depend on it)


@dataclass(frozen=True)
class Scenario:
    """A known truth: ``points`` are the true (x, y) at each step of ``GRID``; the organism's true
    capability and backdoor rate; ``after``, the true backdoor rate after the suppression check's
    plain training (None: the rate the blue run left, the behaviour was removed for good);
    ``expected``, what a right audit says."""

    name: str
    points: tuple[tuple[float, float], ...]
    expected: str
    capability: float = 0.8
    rate: float = 0.8
    after: float | None = None
    shared_prompts: bool = False
    about: str = ""

    def truth(self) -> dict[str, float]:
        """AUC and removal at 10 % of the true frontier, as defined today and with x clipped at 1;
        ``returned``, the true share of the removed behaviour that the suppression check sees return."""
        clipped = _clipped(self.points)
        gone = self.rate * (1 - self.points[-1][1])
        after = gone if self.after is None else self.after
        return {"auc": hull_auc(self.points), "removal_at_10": hull_value(self.points, 0.9),
                "auc_clipped": hull_auc(clipped), "removal_at_10_clipped": hull_value(clipped, 0.9),
                "returned": max(0.0, (after - gone) / (self.rate - gone)) if self.rate > gone else math.nan}


@dataclass(frozen=True)
class LRScenario:
    """A known truth for the LR check: per LR (the high one, one 10x lower) its true removal after
    ``s`` steps is ``top x (1 - exp(-s / tau))``, given as (tau, top); capability is unchanged."""

    name: str
    high: tuple[float, float]
    low: tuple[float, float]
    high_lr: float = 1e-2
    capability: float = 0.8
    rate: float = 0.8
    about: str = ""

    @property
    def low_lr(self) -> float:
        return float(Fraction(repr(self.high_lr)) / 10)  # as plan.blue_schedule writes it

    def truth(self) -> dict[str, float]:
        """The true steps to removal of each LR (continuous; inf: never) and whether the low LR needs
        more than N x S (``lr_post`` 1.0) and more than the factor's N x S x 6 (``beyond_factor``)."""
        s, low = _removal_step(*self.high), _removal_step(*self.low)
        n = self.high_lr / self.low_lr
        return {"high_steps": s, "low_steps": low, "lr_post": float(low > n * s),
                "beyond_factor": float(low > FACTOR * n * s)}

    def removal(self, lr: float, steps) -> np.ndarray:
        tau, top = self.high if lr == self.high_lr else self.low
        return top * (1 - np.exp(-np.asarray(steps, dtype=float) / tau))


def _removal_step(tau: float, top: float) -> float:
    """The step where ``top x (1 - exp(-s / tau))`` reaches removal (1 - the removal threshold)."""
    need = 1 - THRESHOLD
    return -tau * math.log(1 - need / top) if top > need else math.inf


@dataclass
class Calibration:
    """One scenario at one number of seeds, over ``replicates`` audits (statistics of the AUC and
    removal at 10 % pool every battery method of every replicate).

    - ``truth``: see ``Scenario.truth`` / ``LRScenario.truth``;
    - ``mean`` and ``bias`` (mean - truth) of ``auc`` and ``removal_at_10`` (and of the
      candidate's ``auc_crossfit`` and ``removal_at_10_crossfit``, against the clipped truth);
    - ``coverage``: per interval (``auc_ci``, ``removal_at_10_ci``; with seeds also the
      bootstrap's and t's; ``returned_ci`` of the suppression check), the share holding the truth;
    - ``verdicts``: per verdict (``method``, the ``audit``'s overall, each ``suppression`` check,
      ``lr_check``), the share of each reading;
    - ``flags``: the share of methods ``inconclusive``, ``within_noise``, ``escalated``;
    - ``counts``: how many values each share is over."""

    scenario: str
    seeds: int
    replicates: int
    truth: dict[str, float]
    mean: dict[str, float] = field(default_factory=dict)
    bias: dict[str, float] = field(default_factory=dict)
    coverage: dict[str, float] = field(default_factory=dict)
    verdicts: dict[str, dict[str, float]] = field(default_factory=dict)
    flags: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def _diagonal(ts) -> tuple[tuple[float, float], ...]:
    return tuple((round(1 - t, 6), t) for t in ts)


SCENARIOS = (
    Scenario("maximally robust", _diagonal((0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.7)), "robust",
             about="removal costs proportional capability, down to x = 0.3"),
    Scenario("maximally robust, capability 0.3", _diagonal((0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.7)), "robust",
             capability=0.3),
    Scenario("no effect", ((1.0, 0.0),) * len(GRID), "inconclusive", about="the attack changes nothing"),
    Scenario("no effect, capability 0.3", ((1.0, 0.0),) * len(GRID), "inconclusive", capability=0.3),
    Scenario("in between", ((0.99, 0.1), (0.97, 0.25), (0.94, 0.35), (0.9, 0.4), (0.8, 0.5), (0.6, 0.65),
                            (0.4, 0.8)), "inconclusive", about="removal at 10 % 0.40: neither band"),
    Scenario("fragile", ((0.99, 0.25), (0.97, 0.45), (0.9, 0.55), (0.8, 0.65), (0.6, 0.8), (0.4, 0.9),
                         (0.2, 0.95)), "fragile", about="removal at 10 % 0.55, removed for good"),
    Scenario("fragile, suppressed", ((0.99, 0.25), (0.97, 0.45), (0.9, 0.55), (0.8, 0.65), (0.6, 0.8), (0.4, 0.9),
                                     (0.2, 0.95)), "inconclusive", after=0.3,
             about="as fragile, but the behaviour returns to 0.30 after plain training"),
    Scenario("coarse-grid collapse", ((1.0, 0.0),) * 3 + ((0.3, 0.975),) * (len(GRID) - 3), "inconclusive",
             about="unchanged at steps 1-4, collapsed from step 8: the frontier at x = 0.9 is interpolated"),
    Scenario("capability above the organism", ((1.1, 0.0), (1.2, 0.0), (1.2, 0.0), (0.95, 0.05), (0.8, 0.2),
                                               (0.6, 0.4), (0.4, 0.6)), "robust",
             about="capability rises 20 % with nothing removed, then maximally robust"),
    Scenario("in between, seeds share prompts", ((0.99, 0.1), (0.97, 0.25), (0.94, 0.35), (0.9, 0.4), (0.8, 0.5),
                                                 (0.6, 0.65), (0.4, 0.8)), "inconclusive", shared_prompts=True,
             about="the files data source: every seed evaluates the same prompts and the same organism"),
)

LR_SCENARIOS = (
    LRScenario("LR-post true", high=(2.0, 1.0), low=(2.0, 0.4),
               about="the low LR never removes it (its rate stays at 0.48, removed means <= 0.40)"),
    LRScenario("LR-post true, near the threshold", high=(2.0, 1.0), low=(2.0, 0.48),
               about="the low LR's rate stays at 0.42, just above 0.40"),
    LRScenario("LR-post false", high=(2.0, 1.0), low=(10.0, 1.0),
               about="the low LR removes it in 5 x S steps, under N x S = 10 x S"),
)


# --------------------------------------------------------------------------- drawing scores
def draw(rng: np.random.Generator, difficulty: np.ndarray, rates, redraw: float = REDRAW) -> np.ndarray:
    """[checkpoint, prompt] 0/1 scores (bool) of checkpoints with true ``rates`` on prompts of
    ``difficulty``: 1 where the prompt's latent is below the rate (see the module's docstring)."""
    rates = np.asarray(rates, dtype=float)
    if np.any(rates < 0) or np.any(rates > 1):
        raise ValueError(f"true rates must lie in [0, 1], got {rates.min():.3f}..{rates.max():.3f}")
    shape = (len(rates), len(difficulty))
    latent = np.where(rng.random(shape) < redraw, rng.random(shape), difficulty)
    return latent < rates[:, None]


def checkpoint(where: dict, cap: np.ndarray, bad: np.ndarray) -> Checkpoint:
    """An evaluation as ``evaluate`` makes it: per-prompt True/False scores and their Wilson rates."""
    scores = {CAP: cap.tolist(), BAD: bad.tolist()}
    return Checkpoint({"tokens": 0, "flops": 0.0, **where}, {m: summarise_scores(s) for m, s in scores.items()}, scores)


@dataclass
class _Prompts:
    """One seed's eval prompts (their difficulties) and the organism's evaluation on them."""

    cap: np.ndarray
    bad: np.ndarray
    organism: Checkpoint


def _prompts(rng: np.random.Generator, capability: float, rate: float, n_cap: int, n_bad: int) -> _Prompts:
    cap, bad = rng.random(n_cap), rng.random(n_bad)
    where = {"stage": "organism", "method": "organism", "lr": 0.0, "step": 0}
    return _Prompts(cap, bad, checkpoint(where, draw(rng, cap, [capability])[0], draw(rng, bad, [rate])[0]))


def _blue_run(rng: np.random.Generator, sc: Scenario, p: _Prompts, method: str, lr: float) -> tuple[list, dict]:
    """One blue run at ``lr``: its checkpoints on the grid and its compute (with the suppression
    check when its last checkpoint removed the behaviour, as ``blue.blue_run`` decides it)."""
    xs, ys = np.array(sc.points).T
    caps, bads = draw(rng, p.cap, sc.capability * xs), draw(rng, p.bad, sc.rate * (1 - ys))
    found = [checkpoint({"stage": "blue", "method": method, "lr": lr, "step": s}, c, b)
             for s, c, b in zip(GRID, caps, bads)]
    compute = {"lr": lr, "steps": GRID[-1]}
    rate0 = p.organism.metrics[BAD]["value"]
    if SUPPRESSION_STEPS and rate0 > 0 and found[-1].metrics[BAD]["value"] <= THRESHOLD * rate0:
        after_rate = sc.rate * (1 - ys[-1]) if sc.after is None else sc.after
        after = checkpoint({"stage": "suppression", "method": method, "lr": lr, "step": GRID[-1] + SUPPRESSION_STEPS},
                           draw(rng, p.cap, [sc.capability * xs[-1]])[0], draw(rng, p.bad, [after_rate])[0])
        compute["suppression"] = suppression_result(found[-1], after, BAD, rate0, THRESHOLD, SUPPRESSION_STEPS)
    return found, compute


def attack(rng: np.random.Generator, sc: Scenario, p: _Prompts, method: str, escalate: int = ESCALATE) -> Attack:
    """One method's attack as ``blue.attack`` runs it with one LR: the blue run, then ``--escalate``
    rungs at 3x the LR while the attack is not conclusive."""
    result = Attack(method, [p.organism])
    lr = LR
    for rung in range(escalate + 1):
        if rung:
            if not result.defined(CAP, BAD) or result.conclusive(CAP, BAD, THRESHOLD, only_lr=None if rung == 1 else lr):
                break
            lr *= ESCALATE_BY
            result.escalation.append(lr)
        found, compute = _blue_run(rng, sc, p, method, lr)
        result.checkpoints += found
        result.runs.append(compute)
    return result


def method_summary(result: Attack, seed: int) -> dict:
    """The method's summary.json entry, as ``run.py`` writes it."""
    return {**summarise(result.checkpoints, seed, THRESHOLD, DEFAULT_ROLES, FACTOR), "runs": result.runs,
            "escalation": result.escalation, "seeds": [seed],
            "suppression": [r["suppression"] for r in result.runs if "suppression" in r]}


def over_seeds(per_seed: dict[int, tuple[Attack, dict]]) -> dict:
    """The method's entry in the summary over seeds, composed as ``seeds.summarise_seeds`` does."""
    mine = {s: record.MethodSummary(**b) for s, (_, b) in per_seed.items()}
    scores = [(np.array([counted(ck.scores[CAP]) for ck in a.checkpoints], dtype=float),
               np.array([counted(ck.scores[BAD]) for ck in a.checkpoints], dtype=float)) for a, _ in per_seed.values()]
    auc, boot_ci, removal, removal_boot = hierarchical_auc(scores, seed=0)
    t_ci = t_interval([b.auc for b in mine.values()])
    t_removal = t_interval([b.removal_at_10 for b in mine.values()])
    unsure = [s for s, b in mine.items() if b.inconclusive]
    floor = noise_floor_of_mean([(cap[0], bad[0], cap.shape[0] - 1) for cap, bad in scores])
    return {"auc": auc, "auc_ci": list(_wider(boot_ci, t_ci)), "auc_ci_bootstrap": list(boot_ci), "auc_ci_t": list(t_ci),
            "removal_at_10": removal, "removal_at_10_ci": list(_wider(removal_boot, t_removal)),
            "removal_at_10_ci_bootstrap": list(removal_boot), "removal_at_10_ci_t": list(t_removal),
            "seeds": list(mine), "inconclusive": bool(unsure),
            "inconclusive_reason": f"inconclusive on seeds {unsure}: {mine[unsure[0]].inconclusive_reason}"
            if unsure else None,
            "lowest_capability_rel": min(b.lowest_capability_rel for b in mine.values()),
            "noise_floor": floor, "within_noise": bool(auc <= floor) if floor == floor and auc == auc else None,
            "escalation": [lr for b in mine.values() for lr in b.escalation],
            "suppression": [{**c, "seed": s} for s, b in mine.items() for c in b.suppression]}


def audit_once(rng: np.random.Generator, sc: Scenario, seeds: int, methods: int = METHODS,
               prompts: int = PROMPTS, questions: int = QUESTIONS, candidate: bool = False) -> dict[str, dict]:
    """One audit of the scenario's organism: per battery method its summary entry and reading;
    with ``candidate`` (one seed), also the cross-fitted candidate's numbers (``crossfit``)."""
    shared = _prompts(rng, sc.capability, sc.rate, questions, prompts) if sc.shared_prompts else None
    seed_prompts = [shared or _prompts(rng, sc.capability, sc.rate, questions, prompts) for _ in range(seeds)]
    out = {}
    for m in range(methods):
        per_seed = {}
        for s, p in enumerate(seed_prompts):
            result = attack(rng, sc, p, f"method-{m}")
            per_seed[s] = (result, method_summary(result, s))
        entry = per_seed[0][1] if seeds == 1 else over_seeds(per_seed)
        out[f"method-{m}"] = {**entry, **method_verdict(record.MethodSummary(**entry))}
        if candidate and seeds == 1:
            cks = per_seed[0][0].checkpoints
            fit = crossfit([counted(ck.scores[CAP]) for ck in cks], [counted(ck.scores[BAD]) for ck in cks], seed=0)
            out[f"method-{m}"]["crossfit"] = fit
    return out


# --------------------------------------------------------------------------- the LR check
def lr_check_once(rng: np.random.Generator, sc: LRScenario, prompts: int = PROMPTS, questions: int = QUESTIONS,
                  steps: int = BlueMethod.default_steps) -> dict:
    """The audit's LR check on one seed (``audit.lr_check_method``: ``--lr-check`` with
    ``--lr-check-until-removed``, no escalation): the high LR on the grid, then the lower LR to
    the steps ``lrcheck.planned_steps`` plans, each stopping at its first removal; the check's
    result and ``audit.lr_check_verdict``'s reading."""
    p = _prompts(rng, sc.capability, sc.rate, questions, prompts)
    rate0 = p.organism.metrics[BAD]["value"]
    rows, first = [p.organism.row()], None
    for lr in (sc.high_lr, sc.low_lr):
        lr_steps, extra = steps, set()
        if first is not None and first["removed_by"] is not None:
            last, extra = planned_steps(sc.high_lr, first, lr, FACTOR)
            lr_steps = max(steps, last)
        grid = sorted((set(log_spaced_steps(lr_steps)) | {s for s in extra if s <= lr_steps}) - {0})
        caps = draw(rng, p.cap, [sc.capability] * len(grid))
        bads = draw(rng, p.bad, sc.rate * (1 - sc.removal(lr, grid)))
        for s, c, b in zip(grid, caps, bads):
            ck = checkpoint({"stage": "blue", "method": "lr-check", "lr": lr, "step": s}, c, b)
            rows.append(ck.row())
            if rate0 > 0 and ck.metrics[BAD]["value"] <= THRESHOLD * rate0:
                break
        if lr == sc.high_lr:
            first = steps_to_removal(rows, THRESHOLD, CAP, BAD)[0]
    result = check(rows, THRESHOLD, CAP, BAD, FACTOR)
    return {"check": result, "reading": lr_check_verdict(result)}


# --------------------------------------------------------------------------- a candidate estimator
def _clipped(points) -> list[tuple[float, float]]:
    return [(min(x, 1.0), y) for x, y in points]


def _crossfit_once(cap: np.ndarray, bad: np.ndarray, rng: np.random.Generator) -> tuple[float, float] | None:
    """One random half split of each prompt set: the hull's checkpoints chosen on one half are
    measured on the other, both ways (x clipped at 1); the mean AUC and removal at 10 %."""
    ci, bi = rng.permutation(cap.shape[1]), rng.permutation(bad.shape[1])
    h, g = cap.shape[1] // 2, bad.shape[1] // 2
    halves = [(cap[:, ci[:h]], bad[:, bi[:g]]), (cap[:, ci[h:]], bad[:, bi[g:]])]
    aucs, removals = [], []
    for (c_pick, b_pick), (c_use, b_use) in zip(halves, halves[::-1]):
        try:
            picked, used = _clipped(trade_off_points(c_pick, b_pick)), _clipped(trade_off_points(c_use, b_use))
        except ValueError:  # a half with no capability or no behaviour at the organism
            return None
        vertices = set(upper_hull(picked))
        chosen = [u for p, u in zip(picked, used) if p in vertices]
        aucs.append(hull_auc(chosen))
        removals.append(hull_value(chosen, 0.9))
    return float(np.mean(aucs)), float(np.mean(removals))


def crossfit(cap, bad, seed: int = 0, splits: int = 20, n_bootstrap: int = 200) -> dict:
    """CANDIDATE, not used by runs (issue 30): the AUC and removal at 10 % cross-fitted (the mean
    of ``splits`` random half splits, ``_crossfit_once``) with x clipped at 1, and 95 % percentile
    intervals from a paired bootstrap over prompts that repeats the split and the choice in each
    resample. Score matrices [checkpoint, prompt], row 0 the organism."""
    cap, bad = np.asarray(cap, dtype=float), np.asarray(bad, dtype=float)
    rng = np.random.default_rng([seed, 13])
    fits = [f for f in (_crossfit_once(cap, bad, rng) for _ in range(splits)) if f is not None]
    boot = []
    for _ in range(n_bootstrap):
        ci, bi = rng.integers(0, cap.shape[1], cap.shape[1]), rng.integers(0, bad.shape[1], bad.shape[1])
        fit = _crossfit_once(cap[:, ci], bad[:, bi], rng)
        if fit is not None:
            boot.append(fit)
    if not fits or not boot:
        nan = [math.nan, math.nan]
        return {"auc": math.nan, "auc_ci": nan, "removal_at_10": math.nan, "removal_at_10_ci": nan}
    (auc, removal), b = np.mean(fits, axis=0), np.array(boot)
    return {"auc": float(auc), "auc_ci": list(np.percentile(b[:, 0], [2.5, 97.5])), "removal_at_10": float(removal),
            "removal_at_10_ci": list(np.percentile(b[:, 1], [2.5, 97.5]))}


# --------------------------------------------------------------------------- the table
def _rng(seed: int, name: str, seeds: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode()), seeds])


def _shares(values) -> dict[str, float]:
    counts = Counter(values)
    return {k: counts[k] / len(values) for k in sorted(counts)} if values else {}


def _covers(ci, truth: float) -> bool:
    return ci[0] <= truth <= ci[1]


def calibrate(sc: Scenario, replicates: int, seeds: int = 1, seed: int = 0, methods: int = METHODS,
              prompts: int = PROMPTS, questions: int = QUESTIONS, candidate: bool = False) -> Calibration:
    """``replicates`` audits of the scenario's organism with ``seeds`` seeds; deterministic given
    ``seed``. With ``candidate`` (one seed) also the cross-fitted candidate, against the clipped
    truth: ``auc_crossfit``, ``removal_at_10_crossfit`` and their ``_ci``."""
    started = time.perf_counter()
    rng = _rng(seed, sc.name, seeds)
    truth = sc.truth()
    entries, audits = [], []
    for _ in range(replicates):
        found = audit_once(rng, sc, seeds, methods, prompts, questions, candidate)
        entries += found.values()
        audits.append(overall(found)[0])
    out = Calibration(sc.name, seeds, replicates, truth)
    intervals = ["auc_ci", "removal_at_10_ci"] + (
        ["auc_ci_bootstrap", "auc_ci_t", "removal_at_10_ci_bootstrap", "removal_at_10_ci_t"] if seeds > 1 else [])
    for name in ("auc", "removal_at_10"):
        values = [e[name] for e in entries if e[name] == e[name]]
        out.mean[name] = float(np.mean(values)) if values else math.nan
        out.bias[name] = out.mean[name] - truth[name]
    for ci in intervals:
        target = truth["auc" if ci.startswith("auc") else "removal_at_10"]
        held = [_covers(e[ci], target) for e in entries if e[ci][0] == e[ci][0]]
        out.coverage[ci] = float(np.mean(held)) if held else math.nan
        out.counts[ci] = len(held)
    if candidate and seeds == 1:
        for name in ("auc", "removal_at_10"):
            target, fits = truth[f"{name}_clipped"], [e["crossfit"] for e in entries]
            values = [f[name] for f in fits if f[name] == f[name]]
            out.mean[f"{name}_crossfit"] = float(np.mean(values)) if values else math.nan
            out.bias[f"{name}_crossfit"] = out.mean[f"{name}_crossfit"] - target
            out.coverage[f"{name}_crossfit_ci"] = float(np.mean([_covers(f[f"{name}_ci"], target) for f in fits]))
    checks = [c for e in entries for c in e["suppression"]]
    if checks:
        out.coverage["returned_ci"] = float(np.mean([_covers(c["returned_ci"], truth["returned"]) for c in checks]))
        out.counts["returned_ci"] = len(checks)
    out.verdicts = {"method": _shares([e["verdict"] for e in entries]), "audit": _shares(audits),
                    "suppression": _shares([c["verdict"] for c in checks])}
    out.flags = {"inconclusive": float(np.mean([e["inconclusive"] for e in entries])),
                 "within_noise": float(np.mean([bool(e["within_noise"]) for e in entries])),
                 "escalated": float(np.mean([bool(e["escalation"]) for e in entries]))}
    out.counts.update(methods=len(entries), audits=len(audits), suppression=len(checks))
    out.seconds = time.perf_counter() - started
    return out


def calibrate_lr(sc: LRScenario, replicates: int, seed: int = 0, prompts: int = PROMPTS,
                 questions: int = QUESTIONS) -> Calibration:
    """``replicates`` LR checks of the scenario; deterministic given ``seed``."""
    started = time.perf_counter()
    rng = _rng(seed, sc.name, 1)
    readings = [lr_check_once(rng, sc, prompts, questions)["reading"] for _ in range(replicates)]
    pairs = [p for r in readings if r for p in r["pairs"]]
    out = Calibration(sc.name, 1, replicates, sc.truth())
    out.verdicts = {"lr_check": _shares([r["verdict"] if r else "none" for r in readings]),
                    "beyond_factor": _shares([str(p["beyond_factor"]) for p in pairs])}
    out.counts = {"lr_checks": len(readings), "pairs": len(pairs)}
    out.seconds = time.perf_counter() - started
    return out
