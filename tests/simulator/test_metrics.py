"""Every metric of docs/design.md ("Metrics") on hand-written matrices, values worked out by hand."""

import math

import numpy as np
import pytest

from simulator import metrics

# T = 3 tasks; rows 0..3. Chosen so that every metric has a distinct, hand-checkable value.
R3 = np.array([
    [0.10, 0.20, 0.30],   # untrained
    [0.90, 0.25, 0.35],   # after task 0
    [0.60, 0.80, 0.40],   # after task 1
    [0.50, 0.70, 0.95],   # after task 2
])


def test_final_accuracy_is_mean_of_last_row():
    assert metrics.final_accuracy(R3) == pytest.approx((0.50 + 0.70 + 0.95) / 3)


def test_average_incremental_accuracy_averages_seen_tasks_per_row():
    rows = [0.90, (0.60 + 0.80) / 2, (0.50 + 0.70 + 0.95) / 3]
    assert metrics.average_incremental_accuracy(R3) == pytest.approx(sum(rows) / 3)


def test_learning_accuracy_uses_diagonal_below_row_zero():
    assert metrics.learning_accuracy(R3) == pytest.approx((0.90 + 0.80 + 0.95) / 3)


def test_backward_transfer_sign_and_t_minus_one_divisor():
    # (R[3,0] - R[1,0]) + (R[3,1] - R[2,1]) = -0.40 + -0.10, divided by T-1 = 2 (not T = 3)
    assert metrics.backward_transfer(R3) == pytest.approx(-0.25)
    improved = R3.copy()
    improved[3, :2] = [0.95, 0.90]   # old tasks got better: positive BWT
    assert metrics.backward_transfer(improved) == pytest.approx(((0.95 - 0.90) + (0.90 - 0.80)) / 2)


def test_forgetting_uses_the_max_over_earlier_rows():
    # task 0: max(R[1,0], R[2,0]) = 0.90 -> 0.90 - 0.50 = 0.40
    # task 1: max(R[2,1]) = 0.80      -> 0.80 - 0.70 = 0.10
    assert metrics.forgetting(R3) == pytest.approx(0.25)
    later_peak = R3.copy()
    later_peak[2, 0] = 0.99          # the best score came after task 1, not right after task 0
    assert metrics.forgetting(later_peak) == pytest.approx(((0.99 - 0.50) + 0.10) / 2)
    # BWT does not see the later peak, forgetting does: the two definitions differ here
    assert metrics.backward_transfer(later_peak) == pytest.approx(-0.25)


def test_forgetting_ignores_row_zero_and_the_final_row_in_the_max():
    R = R3.copy()
    R[0, 0] = 5.0                    # untrained row is never a peak
    assert metrics.forgetting(R) == pytest.approx(0.25)


def test_forward_transfer_against_untrained_row():
    # (R[1,1] - R[0,1]) + (R[2,2] - R[0,2]) = 0.05 + 0.10, over T-1 = 2
    assert metrics.forward_transfer(R3) == pytest.approx(0.075)
    worse = R3.copy()
    worse[1, 1], worse[2, 2] = 0.0, 0.0
    assert metrics.forward_transfer(worse) == pytest.approx((-0.20 - 0.30) / 2)


def test_avalanche_variants():
    assert metrics.avalanche_forgetting(R3) == pytest.approx(0.25)
    assert metrics.avalanche_forgetting(R3) == pytest.approx(-metrics.backward_transfer(R3))
    later_peak = R3.copy()
    later_peak[2, 0] = 0.99
    assert metrics.avalanche_forgetting(later_peak) == pytest.approx(0.25)   # not max-based
    assert metrics.avalanche_forward_transfer(R3) == pytest.approx(0.075)


# Adaptation: T = 2, K = 2.
SCORE = np.array([
    [[0.0, 0.5, 1.0], [0.2, 0.2, 0.2]],
    [[0.9, 0.9, 0.9], [0.1, 0.4, 0.7]],
    [[0.3, 0.6, 0.6], [0.8, 0.8, 1.0]],
])


def test_adaptation_auc_is_mean_over_steps():
    auc = metrics.adaptation_auc(SCORE)
    assert auc.shape == (3, 2)
    np.testing.assert_allclose(auc, [[0.5, 0.2], [0.9, 0.4], [0.5, 0.8 + 0.2 / 3]])


def test_steps_to_threshold_least_k_reaching_ninety_percent():
    steps = metrics.steps_to_threshold(SCORE)
    # [0,0]: 0.9*1.0 -> k=2; [0,1]: 0.18 -> k=0; [1,1]: 0.63 -> k=2; [2,0]: 0.54 -> k=1; [2,1]: 0.9 -> k=2
    np.testing.assert_array_equal(steps, [[2, 0], [0, 2], [1, 2]])
    never = np.array([[[-3.0, -2.0]], [[-3.0, -2.0]]])   # negative final score: threshold -1.8 above it
    assert np.isnan(metrics.steps_to_threshold(never)).all()


def test_new_task_and_recovery_adaptation():
    assert metrics.new_task_adaptation(SCORE) == pytest.approx((0.5 + 0.4) / 2)   # auc[0,0], auc[1,1]
    assert metrics.recovery_adaptation(SCORE) == pytest.approx(0.5)              # auc[2,0]


def test_single_task_transfer_metrics_are_nan():
    R = np.array([[0.1], [0.9]])
    assert metrics.final_accuracy(R) == pytest.approx(0.9)
    for name in ("backward_transfer", "forgetting", "forward_transfer", "avalanche_forgetting"):
        assert math.isnan(getattr(metrics, name)(R))


def test_inputs_are_not_mutated():
    R, score = R3.copy(), SCORE.copy()
    R.flags.writeable = False
    score.flags.writeable = False   # any in-place write would raise
    for name in ("final_accuracy", "average_incremental_accuracy", "learning_accuracy",
                 "backward_transfer", "forgetting", "forward_transfer",
                 "avalanche_forgetting", "avalanche_forward_transfer"):
        getattr(metrics, name)(R)
    metrics.summarize(score, 2)
    np.testing.assert_array_equal(R, R3)
    np.testing.assert_array_equal(score, SCORE)


def test_wrong_shapes_are_rejected():
    with pytest.raises(ValueError, match=r"shape \(T\+1, T\)"):
        metrics.final_accuracy(np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"shape \(T\+1, T, K\+1\)"):
        metrics.adaptation_auc(np.zeros((3, 3)))


def test_summarize_uses_the_chosen_k():
    s0, s2 = metrics.summarize(SCORE, 0), metrics.summarize(SCORE, 2)
    assert s0["final_accuracy"] == pytest.approx((0.3 + 0.8) / 2)
    assert s2["final_accuracy"] == pytest.approx((0.6 + 1.0) / 2)
    assert set(s0) == set(metrics.SCALAR_METRICS) | {"adaptation_auc", "steps_to_threshold"}


def test_aggregate_mean_std_and_t_interval():
    summaries = [{"x": 1.0, "a": np.array([1.0, 2.0])}, {"x": 2.0, "a": np.array([3.0, 2.0])},
                 {"x": 6.0, "a": np.array([5.0, 2.0])}]
    agg = metrics.aggregate(summaries)
    assert agg["x"]["mean"] == pytest.approx(3.0)
    std = math.sqrt(((1 - 3) ** 2 + (2 - 3) ** 2 + (6 - 3) ** 2) / 2)
    assert agg["x"]["std"] == pytest.approx(std)
    assert agg["x"]["ci95"] == pytest.approx(4.302652729911275 * std / math.sqrt(3))  # t(0.975, 2)
    np.testing.assert_allclose(agg["a"]["mean"], [3.0, 2.0])
    np.testing.assert_allclose(agg["a"]["std"], [2.0, 0.0])
    one = metrics.aggregate(summaries[:1])
    assert one["x"]["mean"] == 1.0 and math.isnan(one["x"]["ci95"])
