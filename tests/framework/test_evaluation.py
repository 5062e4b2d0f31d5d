"""Held-out evaluation maths: the plug-in exploitability's bias and the cross-validated estimate."""

import itertools
import math

import numpy as np
import pytest

from framework.evaluation import exploitability_bias, loo_exploitability
from games.matrix import asymmetric_cycle, rock_paper_scissors
from games.tasks import get_task


def test_loo_exploitability_by_hand_on_rock_paper_scissors():
    P = rock_paper_scissors().P
    # one rock, one paper: rock is met by the best response to paper (scissors: 0), paper by the
    # best response to rock (paper: ½) → (0 + ½)/2 − ½; the plug-in says max(P d) − ½ = ¾ − ½
    assert loo_exploitability(P, np.array([[1.0, 1.0, 0.0]]))[0] == pytest.approx(-0.25)
    # three rocks: the best response to the other two (paper) beats each for sure
    assert loo_exploitability(P, np.array([[3.0, 0.0, 0.0]]))[0] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="2 answers"):
        loo_exploitability(P, np.array([[1.0, 0.0, 0.0]]))


def multinomial_expectation(f, d: np.ndarray, n: int) -> float:
    """E f(counts) over counts ~ Multinomial(n, d), by enumerating every count vector."""
    total = 0.0
    for combo in itertools.combinations_with_replacement(range(len(d)), n):
        counts = np.bincount(combo, minlength=len(d)).astype(float)
        pmf = math.factorial(n) / np.prod([math.factorial(int(c)) for c in counts]) * np.prod(d ** counts)
        total += pmf * f(counts[None])[0]
    return total


@pytest.mark.parametrize("n", [2, 4, 6])
def test_loo_exploitability_is_unbiased_at_the_equilibrium_where_the_plug_in_is_not(n):
    game = asymmetric_cycle()
    x = game.nash()  # (2/7, 4/7, 1/7)
    assert multinomial_expectation(lambda c: loo_exploitability(game.P, c), x, n) == pytest.approx(0.0, abs=1e-12)
    biased = multinomial_expectation(lambda c: np.array([((c[0] / n) @ game.P.T).max() - 0.5]), x, n)
    assert biased > 0.01  # the maximum of the noisy mix overstates a true 0


def test_loo_exploitability_errs_low_and_converges_where_a_strict_best_response_exists():
    game = rock_paper_scissors()
    d = np.array([0.8, 0.1, 0.1])  # paper is the strict best response: P d = (.5, .85, .2)
    truth = game.exploitability(d)
    estimates = [multinomial_expectation(lambda c: loo_exploitability(game.P, c), d, n) for n in (3, 6, 12)]
    assert estimates[0] < estimates[1] < estimates[2] < truth  # a best response fitted on fewer answers
    assert estimates[2] == pytest.approx(truth, abs=0.01)  # with 11 others it is paper almost surely


def test_running_sum_cv_parts_and_the_bias_of_the_plug_in_estimate():
    task = get_task("running_sum", turns=3, correctness_weight=0.7)
    d = np.zeros(8)
    d[4:7] = task.equilibrium_styles()
    small, large = (exploitability_bias(task, d, n, draws=20_000, seed=0) for n in (4, 16))
    assert small > large > 0  # the plug-in's bias falls with samples per state
    counts = np.random.default_rng(1).multinomial(16, d, size=20_000).astype(float)
    assert loo_exploitability(task.class_matrix, counts).mean() == pytest.approx(0.0, abs=2e-3)
