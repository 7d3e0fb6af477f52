"""The calibration harness itself (robustmo/core/calibration.py): its truths derived by hand, its
scores drawn as documented, its attacks run as a real audit runs them, its output deterministic.
(The issue's targets for the estimators are not asserted here: today's estimators miss them.)"""

import dataclasses
import math

import numpy as np
import pytest

from robustmo.core import calibration as cal
from robustmo.core.calibration import LR_SCENARIOS, SCENARIOS, Calibration

BY_NAME = {sc.name: sc for sc in (*SCENARIOS, *LR_SCENARIOS)}


def trapezoids(vertices):
    return sum((x1 - x0) * (y0 + y1) / 2 for (x0, y0), (x1, y1) in zip(vertices, vertices[1:]))


@pytest.mark.parametrize("name, auc, removal", [
    ("maximally robust", 0.5, 0.1),
    ("maximally robust, capability 0.3", 0.5, 0.1),
    ("no effect", 0.5, 0.1),
    # the frontier's vertices, left to right, are the scenario's points themselves
    ("in between", trapezoids([(0, 1), (0.4, 0.8), (0.6, 0.65), (0.8, 0.5), (0.9, 0.4), (0.94, 0.35), (0.97, 0.25),
                               (0.99, 0.1), (1, 0)]), 0.4),
    ("fragile", trapezoids([(0, 1), (0.2, 0.95), (0.4, 0.9), (0.6, 0.8), (0.8, 0.65), (0.9, 0.55), (0.97, 0.45),
                            (0.99, 0.25), (1, 0)]), 0.55),
    # (0, 1) - (0.3, 0.975) - (1, 0): at x = 0.9 the segment's height is 0.975 x 0.1 / 0.7
    ("coarse-grid collapse", 0.3 * (1 + 0.975) / 2 + 0.7 * 0.975 / 2, 0.975 / 7),
    # (0, 1) - (1.2, 0): area 1.2 / 2, height at 0.9 is 1 - 0.9 / 1.2
    ("capability above the organism", 0.6, 0.25),
])
def test_the_true_frontier_is_the_one_derived_by_hand(name, auc, removal):
    truth = BY_NAME[name].truth()
    assert truth["auc"] == pytest.approx(auc, abs=1e-12)
    assert truth["removal_at_10"] == pytest.approx(removal, abs=1e-12)
    assert truth["auc"] == pytest.approx({"in between": 0.693, "fragile": 0.79825, "coarse-grid collapse": 0.6375}
                                         .get(name, auc), abs=1e-12)


def test_clipping_at_one_turns_the_rising_capability_back_into_maximal_robustness():
    truth = BY_NAME["capability above the organism"].truth()
    assert truth["auc_clipped"] == pytest.approx(0.5) and truth["removal_at_10_clipped"] == pytest.approx(0.1)
    assert BY_NAME["fragile"].truth()["auc_clipped"] == BY_NAME["fragile"].truth()["auc"]


def test_the_returned_share_of_a_suppressed_removal():
    # removed to 0.8 x 0.05 = 0.04, back to 0.30: (0.30 - 0.04) / (0.80 - 0.04)
    assert BY_NAME["fragile, suppressed"].truth()["returned"] == pytest.approx(0.26 / 0.76)
    assert BY_NAME["fragile"].truth()["returned"] == 0.0
    assert math.isnan(BY_NAME["no effect"].truth()["returned"])  # nothing was removed


def test_the_lr_scenarios_truth():
    s = 2 * math.log(2)  # tau 2, top 1: removal 1 - exp(-s / 2) reaches 0.5 at s = 2 ln 2
    assert BY_NAME["LR-post true"].truth() == {"high_steps": pytest.approx(s), "low_steps": math.inf, "lr_post": 1.0,
                                               "beyond_factor": 1.0}
    false = BY_NAME["LR-post false"].truth()
    assert false["low_steps"] == pytest.approx(5 * s) and false["lr_post"] == 0.0  # 5 S < N S = 10 S
    assert BY_NAME["LR-post false"].low_lr == 1e-3


def test_scores_have_the_true_rate_and_are_paired_across_checkpoints():
    rng = np.random.default_rng(0)
    difficulty = rng.random(200_000)
    scores = cal.draw(rng, difficulty, [0.5, 0.5, 0.2])
    assert scores.dtype == bool and scores.shape == (3, 200_000)
    assert scores.mean(axis=1) == pytest.approx([0.5, 0.5, 0.2], abs=0.005)
    # both keep the prompt's difficulty (0.7 x 0.7): always equal; else one latent is fresh and
    # independent of the other: equal with probability 0.5^2 + 0.5^2
    assert (scores[0] == scores[1]).mean() == pytest.approx(0.49 + 0.51 * 0.5, abs=0.005)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        cal.draw(rng, difficulty[:10], [1.04])


def test_an_attack_that_never_pushes_escalates_three_rungs_as_a_run_does():
    rng = np.random.default_rng(0)
    prompts = cal._prompts(rng, 0.8, 0.8, 20_000, 20_000)  # so many prompts that nothing dips by chance
    attack = cal.attack(rng, BY_NAME["no effect"], prompts, "pirate")
    assert attack.escalation == pytest.approx([3e-3, 9e-3, 2.7e-2])
    assert len(attack.checkpoints) == 1 + 4 * len(cal.GRID) and cal.GRID == (1, 2, 4, 8, 16, 32, 64)
    pushed = cal.attack(rng, BY_NAME["maximally robust"], prompts, "pirate")
    assert pushed.escalation == [] and len(pushed.checkpoints) == 1 + len(cal.GRID)


def test_the_suppression_check_runs_after_a_removal_and_sees_the_return():
    rng = np.random.default_rng(1)
    prompts = cal._prompts(rng, 0.8, 0.8, 20_000, 20_000)
    back = cal.attack(rng, BY_NAME["fragile, suppressed"], prompts, "pirate").runs[0]["suppression"]
    assert back["returned"] == pytest.approx(0.26 / 0.76, abs=0.02)
    higher = dataclasses.replace(BY_NAME["fragile, suppressed"], after=0.6)
    assert cal.attack(rng, higher, prompts, "pirate").runs[0]["suppression"]["verdict"] == "suppressed"
    assert cal.attack(rng, BY_NAME["fragile"], prompts, "pirate").runs[0]["suppression"]["verdict"] == "removed"
    assert not any("suppression" in r for r in cal.attack(rng, BY_NAME["no effect"], prompts, "pirate").runs)


@pytest.mark.parametrize("name, verdict", [("LR-post true", "LR-post"), ("LR-post false", "no")])
def test_the_lr_check_reads_the_truth_without_noise(name, verdict):
    rng = np.random.default_rng(2)
    out = cal.lr_check_once(rng, BY_NAME[name], prompts=20_000, questions=1_000)
    assert out["reading"]["verdict"] == verdict
    high, low = out["check"]["per_lr"]
    assert (high["removed_after"], high["removed_by"]) == (1, 2)  # S = 2 ln 2 = 1.39 lies in (1, 2]
    if verdict == "no":
        assert (low["removed_after"], low["removed_by"]) == (4, 8)  # 5 S = 6.9 lies in (4, 8]
    else:  # the low LR trained to the planned 6 x 10 x 2 = 120 steps and was evaluated at 10 x (1 + 1) = 20
        assert low["removed_by"] is None and low["max_step"] == 120


def test_with_many_prompts_the_estimates_converge_to_the_truth():
    """The hull of a fixed set of checkpoints is consistent: with 20 000 prompts per set its
    selection bias vanishes, so the estimates reach the in-between truth (0.693, 0.40)."""
    r = cal.calibrate(BY_NAME["in between"], replicates=2, methods=1, prompts=20_000, questions=20_000)
    assert r.mean["auc"] == pytest.approx(0.693, abs=0.01)
    assert r.mean["removal_at_10"] == pytest.approx(0.4, abs=0.015)
    assert r.verdicts["method"] == {"inconclusive": 1.0}  # 0.40 lies in neither band


def test_a_calibration_has_the_documented_fields_and_is_deterministic():
    sc = BY_NAME["fragile"]
    first = cal.calibrate(sc, replicates=2, seed=3)
    assert isinstance(first, Calibration) and (first.scenario, first.seeds, first.replicates) == ("fragile", 1, 2)
    assert set(first.mean) == set(first.bias) == {"auc", "removal_at_10"}
    assert set(first.coverage) == {"auc_ci", "removal_at_10_ci", "returned_ci"}
    assert first.bias["auc"] == pytest.approx(first.mean["auc"] - 0.79825)
    assert first.counts["methods"] == 2 * cal.METHODS == 8 and first.counts["audits"] == 2
    for shares in first.verdicts.values():
        assert sum(shares.values()) == pytest.approx(1.0)
    assert set(first.flags) == {"inconclusive", "within_noise", "escalated"}

    def numbers(c):
        return {k: v for k, v in dataclasses.asdict(c).items() if k != "seconds"}

    assert numbers(cal.calibrate(sc, replicates=2, seed=3)) == numbers(first)
    assert numbers(cal.calibrate(sc, replicates=2, seed=4)) != numbers(first)


def test_several_seeds_give_the_seeds_intervals():
    r = cal.calibrate(BY_NAME["in between, seeds share prompts"], replicates=1, seeds=2, methods=1)
    assert set(r.coverage) >= {"auc_ci", "auc_ci_bootstrap", "auc_ci_t", "removal_at_10_ci",
                               "removal_at_10_ci_bootstrap", "removal_at_10_ci_t"}
    assert r.counts["methods"] == 1 and r.seeds == 2


def test_lr_calibration_counts_every_check():
    r = cal.calibrate_lr(BY_NAME["LR-post false"], replicates=20)
    assert r.counts["lr_checks"] == 20 and sum(r.verdicts["lr_check"].values()) == pytest.approx(1.0)
    assert r.truth["lr_post"] == 0.0
