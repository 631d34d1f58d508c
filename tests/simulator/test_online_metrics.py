"""Every online metric of docs/design.md ("The online loop") on hand-written sequences, values
worked out by hand."""

import json
import math

import numpy as np
import pytest

from simulator import metrics
from simulator.files import to_json
from simulator.online_metrics import (anytime_forgetting, batches_since_switch, cumulative_accuracy, flat_summary,
                                      out_of_distribution_drop, recovery_auc, recovery_curve, reference_pool,
                                      summarize_online)

NAN = math.nan
# Five batches, two tasks: the first from batch 0 (pool 0), the second from batch 3 (pool 1).
SCORES = np.array([1.0, 0.0, 1.0, 1.0, 0.5])
SWITCH = np.array([True, False, False, True, False])
POOLS = np.array([0, 0, 0, 1, 1])


def same(actual, expected):
    """Equal as float lists, NaN equal to NaN."""
    np.testing.assert_allclose(np.asarray(actual, dtype=float), np.asarray(expected, dtype=float), rtol=0, atol=1e-12)


def test_cumulative_accuracy_in_total_and_per_pool():
    result = cumulative_accuracy(SCORES, POOLS, ("omniglot", "mnist"))
    assert result["total"] == pytest.approx(3.5 / 5)
    assert result["by_pool"] == {"omniglot": pytest.approx(2 / 3), "mnist": pytest.approx(0.75)}
    # every batch weighs the same, whatever pool it is in: the total is not the mean of the pools
    assert result["total"] != pytest.approx((2 / 3 + 0.75) / 2)


def test_a_pool_never_visited_is_nan_and_the_others_are_unaffected():
    result = cumulative_accuracy(SCORES, POOLS, ("omniglot", "mnist", "fashion-mnist"))
    assert math.isnan(result["by_pool"]["fashion-mnist"])
    assert result["by_pool"]["mnist"] == pytest.approx(0.75) and result["total"] == pytest.approx(0.7)
    empty = cumulative_accuracy([], [], ("omniglot",))
    assert math.isnan(empty["total"]) and math.isnan(empty["by_pool"]["omniglot"])


def test_recovery_curve_by_batches_since_the_last_switch():
    # distances 0, 1, 2, 0, 1: s = 0 -> (1 + 1) / 2, s = 1 -> (0 + 0.5) / 2, s = 2 -> 1
    assert batches_since_switch(SWITCH).tolist() == [0, 1, 2, 0, 1]
    same(recovery_curve(SCORES, SWITCH, 3), [1.0, 0.25, 1.0])
    # no task lasted 4 or 5 batches: NaN there, and the area skips them
    same(recovery_curve(SCORES, SWITCH, 5), [1.0, 0.25, 1.0, NAN, NAN])
    assert recovery_auc(recovery_curve(SCORES, SWITCH, 3)) == pytest.approx(0.75)
    assert recovery_auc(recovery_curve(SCORES, SWITCH, 5)) == pytest.approx(0.75)
    assert recovery_auc(recovery_curve(SCORES, SWITCH, 1)) == pytest.approx(1.0)


def test_recovery_curve_with_no_switch_after_the_first():
    scores = np.array([0.2, 0.4, 0.6, 0.8])
    switch = np.array([True, False, False, False])
    same(recovery_curve(scores, switch, 3), [0.2, 0.4, 0.6])  # one task: the curve is its learning curve
    assert recovery_auc(recovery_curve(scores, switch, 3)) == pytest.approx(0.4)


def test_recovery_curve_when_every_batch_switches_or_batch_zero_does_not():
    same(recovery_curve([0.5, 1.0, 0.0], [True, True, True], 2), [0.5, NAN])
    # batches before the first switch have no known distance and are left out
    assert batches_since_switch([False, True, False]).tolist() == [-1, 0, 1]
    same(recovery_curve([9.0, 1.0, 0.0], [False, True, False], 2), [1.0, 0.0])
    assert math.isnan(recovery_auc([NAN, NAN])) and math.isnan(recovery_auc([]))


def test_a_nan_score_propagates_into_every_mean_that_includes_it():
    scores = np.array([1.0, NAN, 1.0, 1.0, 0.5])  # a diverged regression step at batch 1
    result = cumulative_accuracy(scores, POOLS, ("omniglot", "mnist"))
    assert math.isnan(result["total"]) and math.isnan(result["by_pool"]["omniglot"])
    assert result["by_pool"]["mnist"] == pytest.approx(0.75)
    same(recovery_curve(scores, SWITCH, 3), [1.0, NAN, 1.0])


# H = 3 evaluations, J = 2 columns, K = 1
A = np.array([
    [[0.2, 0.3], [0.5, 0.6]],
    [[0.9, 0.95], [0.4, 0.7]],
    [[0.6, 0.9], [0.8, 0.8]],
])


def test_anytime_forgetting_from_the_best_earlier_evaluation():
    # k = 0: column 0: max(0.2, 0.9) - 0.6 = 0.3; column 1: max(0.5, 0.4) - 0.8 = -0.3
    assert anytime_forgetting(A, 0) == pytest.approx(0.0)
    # k = 1: column 0: 0.95 - 0.9 = 0.05; column 1: 0.7 - 0.8 = -0.1
    assert anytime_forgetting(A, 1) == pytest.approx(-0.025)
    forgot = A.copy()
    forgot[2, 1, 0] = 0.1  # column 1 falls to 0.1: 0.5 - 0.1 = 0.4
    assert anytime_forgetting(forgot, 0) == pytest.approx((0.3 + 0.4) / 2)


def test_anytime_forgetting_needs_a_column_evaluated_twice():
    assert math.isnan(anytime_forgetting(A[:1]))  # H = 1: no earlier evaluation
    assert math.isnan(anytime_forgetting(A[:0]))  # H = 0: never evaluated
    partial = A.copy()
    partial[:2, 0, 0] = NAN  # column 0 evaluated only at the end: left out
    assert anytime_forgetting(partial, 0) == pytest.approx(-0.3)
    partial[2, 1, 0] = NAN  # column 1 not evaluated at the end: nothing left
    assert math.isnan(anytime_forgetting(partial, 0))
    gap = A.copy()
    gap[1, 0, 0] = NAN  # a gap before the end: the max skips it (0.2 - 0.6 = -0.4)
    assert anytime_forgetting(gap, 0) == pytest.approx((-0.4 - 0.3) / 2)


def test_anytime_forgetting_on_a_task_tensor_is_not_chaudhry_forgetting():
    R = np.array([[0.10, 0.20, 0.30], [0.90, 0.25, 0.35], [0.60, 0.80, 0.40], [0.50, 0.70, 0.95]])
    # every earlier row and every column count: (0.9 - 0.5) + (0.8 - 0.7) + (0.4 - 0.95), over 3
    assert anytime_forgetting(R[:, :, None]) == pytest.approx(-0.05 / 3)
    assert metrics.forgetting(R) == pytest.approx(0.25)


def test_out_of_distribution_drop():
    assert out_of_distribution_drop({"omniglot": 0.9, "mnist": 0.6, "fashion": 0.4}, "omniglot") == pytest.approx(0.4)
    assert out_of_distribution_drop({"omniglot": 0.9, "mnist": 0.6, "fashion": NAN}, "omniglot") == pytest.approx(0.3)
    assert math.isnan(out_of_distribution_drop({"omniglot": NAN, "mnist": 0.6}, "omniglot"))
    assert math.isnan(out_of_distribution_drop({"omniglot": 0.9}, "omniglot"))
    assert math.isnan(out_of_distribution_drop({"mnist": 0.6, "fashion": 0.4}, "omniglot"))


def record(**changes):
    """The online loop's record (``RunResult.online``) of the five-batch stream above."""
    return {"correct": SCORES, "pool": POOLS, "switch": SWITCH, "task": np.array([0, 0, 0, 1, 1]),
            "eval_batches": [0, 3, 5], "pools": ["omniglot", "mnist"], "columns": ["omniglot", "mnist"],
            "recovery_window": 4, "online_seconds": 1.0} | changes


def test_summarize_online_gives_the_contract_object():
    online = summarize_online(record(), A)
    assert set(online) == {"cumulative_accuracy", "recovery_curve", "recovery_auc", "forgetting", "batches",
                           "switches", "eval_batches", "pools", "columns", "recovery_window"}
    assert online["cumulative_accuracy"]["total"] == pytest.approx(0.7)
    same(online["recovery_curve"], [1.0, 0.25, 1.0, NAN])
    assert online["recovery_auc"] == pytest.approx(0.75) and online["forgetting"] == pytest.approx(0.0)
    assert (online["batches"], online["switches"], online["eval_batches"]) == (5, 2, [0, 3, 5])
    assert online["pools"] == ["omniglot", "mnist"] and online["columns"] == ["omniglot", "mnist"]
    assert online["recovery_window"] == 4
    written = json.loads(json.dumps(to_json(online), allow_nan=False))
    assert written["recovery_curve"][3] is None  # NaN -> null in results.json
    with pytest.raises(ValueError, match="anytime tensor"):
        summarize_online(record(eval_batches=[0, 5]), A)


def test_flat_summary_gives_scalars_per_adaptation_step():
    flat = flat_summary(record(), A, 1)
    # final_accuracy: the last row of A at k = 1, over the columns: (0.9 + 0.8) / 2
    assert flat == {"final_accuracy": pytest.approx(0.85), "online_accuracy": pytest.approx(0.7), "online_accuracy/omniglot": pytest.approx(2 / 3),
                    "online_accuracy/mnist": pytest.approx(0.75), "recovery_auc": pytest.approx(0.75),
                    "forgetting": pytest.approx(-0.025), "ood_drop": pytest.approx(2 / 3 - 0.75)}
    assert flat_summary(record(), A, 0)["forgetting"] == pytest.approx(0.0)
    aggregated = metrics.aggregate([flat, flat_summary(record(correct=SCORES * 0.5), A, 1)])
    assert aggregated["online_accuracy"]["mean"] == pytest.approx(0.525) and aggregated["online_accuracy"]["n"] == 2
    one_pool = flat_summary(record(pool=np.zeros(5, dtype=np.int64), pools=["tasks"]), A, 0)
    assert math.isnan(one_pool["ood_drop"]) and one_pool["online_accuracy/tasks"] == pytest.approx(0.7)


def test_the_reference_pool_is_the_pretraining_distribution_or_the_first():
    assert reference_pool(("mnist", "omniglot")) == "omniglot"
    assert reference_pool(("rotation-0", "rotation-1")) == "rotation-0"


def test_no_function_modifies_its_input():
    scores, pools, switch, tensor = SCORES.copy(), POOLS.copy(), SWITCH.copy(), A.copy()
    for array in (scores, pools, switch, tensor):
        array.setflags(write=False)  # any write raises
    by_pool = {"omniglot": 0.9, "mnist": NAN}
    run = record(correct=scores, pool=pools, switch=switch)
    saved = dict(run)
    summarize_online(run, tensor)
    flat_summary(run, tensor, 1)
    recovery_auc(recovery_curve(scores, switch, 6))
    out_of_distribution_drop(by_pool, "omniglot")
    assert np.array_equal(scores, SCORES) and np.array_equal(pools, POOLS) and np.array_equal(switch, SWITCH)
    assert np.array_equal(tensor, A) and by_pool.keys() == {"omniglot", "mnist"}
    assert run.keys() == saved.keys() and all(run[key] is saved[key] for key in run)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="one length"):
        recovery_curve(SCORES, SWITCH[:4], 3)
    with pytest.raises(ValueError, match="n >= 1"):
        recovery_curve(SCORES, SWITCH, 0)
    with pytest.raises(ValueError, match="pool indices"):
        cumulative_accuracy(SCORES, POOLS, ("omniglot",))
    with pytest.raises(ValueError, match=r"\(H, J, K\+1\)"):
        anytime_forgetting(A[:, :, 0])
    with pytest.raises(ValueError, match="out of range"):
        anytime_forgetting(A, 2)
