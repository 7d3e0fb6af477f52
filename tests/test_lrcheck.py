"""The LR check: steps to removal per LR and the LR-post verdict, on checkpoint rows as a run stores them."""

from robustmo.core.lrcheck import check, extended_steps, lr_post, steps_to_removal


def row(lr, step, rate, cap=1.0):
    return {"lr": lr, "step": step, "metrics": {"backdoor_rate": {"value": rate}, "capability": {"value": cap}}}


def organism(rate=0.8, cap=0.9):
    return row(0.0, 0, rate, cap)


def test_steps_to_removal_is_the_first_evaluated_step_at_or_below_the_threshold():
    rows = [organism(), row(1e-2, 1, 0.7), row(1e-2, 2, 0.5, 0.85), row(1e-2, 4, 0.4, 0.8), row(1e-2, 8, 0.0, 0.5),
            row(1e-3, 1, 0.8), row(1e-3, 2, 0.8)]
    high, low = steps_to_removal(rows, threshold=0.5)
    assert high["lr"] == 1e-2 and high["steps"] == 4  # 0.4 <= 0.5 * 0.8; 0.5 at step 2 is not
    assert high["capability"] == 0.8 and abs(high["capability_rel"] - 0.8 / 0.9) < 1e-12
    assert low["lr"] == 1e-3 and low["steps"] is None and low["max_step"] == 2
    assert steps_to_removal(rows, threshold=0.01)[0]["steps"] == 8


def test_lr_post_compares_the_low_lr_with_n_times_the_high_lr_steps():
    fast = [organism(), row(1e-2, 4, 0.1)]
    # 10x lower LR: naive expectation 40 steps
    assert lr_post(steps_to_removal(fast + [row(1e-3, 32, 0.1)]))[0]["verdict"] == "no"
    assert lr_post(steps_to_removal(fast + [row(1e-3, 32, 0.8), row(1e-3, 64, 0.1)]))[0]["verdict"] == "LR-post"
    never_but_long = lr_post(steps_to_removal(fast + [row(1e-3, 64, 0.8)]))[0]
    assert never_but_long["verdict"] == "LR-post" and never_but_long["low_steps"] is None
    assert lr_post(steps_to_removal(fast + [row(1e-3, 16, 0.8)]))[0]["verdict"] == "inconclusive"
    pair = lr_post(steps_to_removal(fast + [row(1e-3, 32, 0.1)]))[0]
    assert (pair["high_lr"], pair["low_lr"], pair["expected_steps"]) == (1e-2, 1e-3, 40.0)


def test_no_verdict_when_the_high_lr_never_removes_or_the_organism_has_no_behaviour():
    assert check([organism(), row(1e-2, 8, 0.8), row(1e-3, 8, 0.8)])["pairs"] == []
    assert all(e["steps"] is None for e in steps_to_removal([organism(rate=0.0), row(1e-2, 8, 0.0)]))


def test_lower_lrs_train_long_enough_to_see_the_pattern():
    assert extended_steps(64, 1e-2, 4, 1e-3) == 80  # 2 x N x S = 2 x 10 x 4
    assert extended_steps(64, 1e-2, 1, 1e-3) == 64  # never fewer than asked
    assert extended_steps(64, 1e-2, None, 1e-3) == 64  # the high LR never removed: nothing to extend to
