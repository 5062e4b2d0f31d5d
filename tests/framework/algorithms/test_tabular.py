"""Tabular MPO/OMPO against hand-worked updates and the paper's convergence claims.

Rates are measured, not assumed: thresholds are the acceptance criteria of the lab
(slope band, OMPO ≤ ½ MPO, last-iterate convergence), and equilibria come from the LP.
"""

import numpy as np
import pytest

from framework.errors import InputError
from framework.algorithms.tabular import DEFAULT_ETA, ETA_BOUND, run_tabular
from framework.jobs.lab import iters_to_eps, loglog_slope
from games.markov import random_markov_game
from games.matrix import MatrixGame, asymmetric_cycle, random_nontransitive, rock_paper_scissors


def test_default_eta_is_inside_the_theory_bound():
    assert 0 < DEFAULT_ETA <= ETA_BOUND


def test_one_mpo_step_by_hand():
    """P = [[.5, .8], [.2, .5]], π₀ = (.25, .75), η = 1.

    Q = P π₀ = (.5·.25 + .8·.75, .2·.25 + .5·.75) = (.725, .425);
    π₁ ∝ (.25·e^.725, .75·e^.425) = (.51618, 1.14719) → (.31032, .68968).
    """
    game = MatrixGame([[0.5, 0.8], [0.2, 0.5]]).as_markov()
    run = run_tabular(game, algo="mpo", eta=1.0, iters=1, init_policy=(np.array([[0.25, 0.75]]),))
    np.testing.assert_allclose(run.last_policy[0][0], [0.31032, 0.68968], atol=1e-5)
    # exploitability of π₁: best response wins max(P π₁) − ½ = .5·.31032 + .8·.68968 − .5
    assert run.last_exploitability[0] == pytest.approx(0.5 * 0.31032 + 0.8 * 0.68968 - 0.5, abs=1e-5)


def test_ompo_uses_the_optimistic_hint_and_starts_as_mpo():
    game = rock_paper_scissors()
    P, eta = game.P, 0.3
    pi0 = np.array([0.6, 0.3, 0.1])
    mpo = run_tabular(game.as_markov(), algo="mpo", eta=eta, iters=1, init_policy=(pi0[None],))
    ompo = run_tabular(game.as_markov(), algo="ompo", eta=eta, iters=2, init_policy=(pi0[None],))
    pi1 = pi0 * np.exp(eta * P @ pi0)
    pi1 /= pi1.sum()
    np.testing.assert_allclose(mpo.last_policy[0][0], pi1, atol=1e-12)
    pi2 = pi1 * np.exp(eta * (2 * P @ pi1 - P @ pi0))
    pi2 /= pi2.sum()
    np.testing.assert_allclose(ompo.last_policy[0][0], pi2, atol=1e-12)


def test_staleness_anchors_each_update_at_the_policy_that_made_its_data():
    """Staleness 1 (an async pipeline whose regression is solved against the sampling policy):
    updates 1 and 2 both come from π₀'s data, so π₂ = π₁; then π₃ ∝ π₁ exp(η P π₁) for MPO and
    π₁ exp(η (2 P π₁ − P π₀)) for OMPO (the hint pairs iterates two apart: not the consecutive
    ones the optimistic analysis assumes)."""
    game = rock_paper_scissors()
    P, eta = game.P, 0.3
    pi0 = np.array([0.6, 0.3, 0.1])

    def step(anchor, q):
        p = anchor * np.exp(eta * q)
        return p / p.sum()

    pi1 = step(pi0, P @ pi0)
    for algo, q3 in (("mpo", P @ pi1), ("ompo", 2 * P @ pi1 - P @ pi0)):
        runs = [run_tabular(game.as_markov(), algo=algo, eta=eta, iters=t, staleness=1, init_policy=(pi0[None],))
                for t in (2, 3)]
        np.testing.assert_allclose(runs[0].last_policy[0][0], pi1, atol=1e-12)
        np.testing.assert_allclose(runs[1].last_policy[0][0], step(pi1, q3), atol=1e-12)
    with pytest.raises(InputError, match="staleness"):
        run_tabular(game.as_markov(), algo="mpo", iters=2, staleness=-1)


def test_on_the_style_cycle_ompo_converges_where_mpo_circles_and_staleness_undoes_it():
    """The running_sum class game at correctness weight 0 (the pure style cycle), η = 5 and 100
    iterations from uniform: OMPO's last iterate is near-unexploitable, MPO's is not; one version
    of staleness costs OMPO its edge."""
    from games.matrix import running_sum_classes

    game = running_sum_classes(0.0).as_markov()
    last = {(algo, s): run_tabular(game, algo=algo, eta=5.0, iters=100, staleness=s).last_exploitability
            for algo in ("mpo", "ompo") for s in (0, 1)}
    assert last["ompo", 0][-1] < 1e-3 and last["mpo", 0][-1] > 0.05
    assert (last["mpo", 0][50:] > 0.02).all()  # MPO's last iterate never settles
    assert last["ompo", 1][-1] > 10 * last["ompo", 0][-1]


def test_markov_mpo_step_is_natural_actor_critic_with_exact_q():
    """One MPO step on a Markov game equals π·exp(η Q^π) with Q from a plain-loop evaluation."""
    game = random_markov_game(2)
    pi = game.random_policy(0)
    eta = 0.4
    rbar = game.induced_reward(game.occupancy(pi))
    # plain backward recursion for Q^π under r̄^π
    Q = [None] * game.horizon
    v_next = None
    for h in reversed(range(game.horizon)):
        S, A = game.action_mask[h].shape
        q = np.array(rbar[h], copy=True)
        if v_next is not None:
            for s in range(S):
                for a in range(A):
                    q[s, a] += sum(game.transitions[h][s, a, t] * v_next[t] for t in range(len(v_next)))
        Q[h] = q
        v_next = np.array([sum(pi[h][s, a] * q[s, a] for a in range(A)) for s in range(S)])
    run = run_tabular(game, algo="mpo", eta=eta, iters=1, init_policy=pi)
    for h in range(game.horizon):
        expected = pi[h] * np.exp(eta * Q[h])
        expected /= expected.sum(axis=1, keepdims=True)
        np.testing.assert_allclose(run.last_policy[h], expected, atol=1e-12)


def test_sppo_is_mpo_on_single_step_games_only():
    game = asymmetric_cycle().as_markov()
    init = game.random_policy(0)
    a = run_tabular(game, algo="sppo", iters=50, init_policy=init)
    b = run_tabular(game, algo="mpo", iters=50, init_policy=init)
    np.testing.assert_array_equal(a.avg_exploitability, b.avg_exploitability)
    with pytest.raises(InputError, match="single-step"):
        run_tabular(random_markov_game(0), algo="sppo", iters=5)


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(algo="pg", iters=5), "unknown algorithm 'pg'; choose from"),
    (dict(algo="mpo", iters=5, eta=0.0), "eta must be > 0"),
    (dict(algo="mpo", iters=0), "iters must be ≥ 1"),
    (dict(algo="ompo", iters=5, kl_coef=0.1), "kl_coef is MPO's on single-step games"),
    (dict(algo="mpo", iters=5, eta=0.7, kl_coef=2.0), "η·β = 1.4"),
])
def test_bad_arguments(kwargs, fragment):
    with pytest.raises(InputError) as err:
        run_tabular(rock_paper_scissors().as_markov(), **kwargs)
    assert fragment in str(err.value)


@pytest.mark.parametrize("game", [rock_paper_scissors(), asymmetric_cycle()], ids=lambda g: g.name)
def test_ompo_reaches_the_lp_equilibrium_in_5000_iterations(game):
    """Acceptance 2: last iterate within 1e-3 (L1) of the LP equilibrium, average ≤ 1e-3."""
    markov = game.as_markov()
    run = run_tabular(markov, algo="ompo", iters=5000, init_policy=markov.random_policy(0))
    nash = game.nash()
    assert np.abs(run.last_policy[0][0] - nash).sum() <= 1e-3
    assert run.avg_exploitability[-1] <= 1e-3
    # and it did not start there
    assert np.abs(markov.random_policy(0)[0][0] - nash).sum() > 0.1


MATRIX_GAMES = [asymmetric_cycle()] + [random_nontransitive(5, s) for s in range(3)] + [random_nontransitive(7, 0)]


@pytest.mark.parametrize("game", MATRIX_GAMES, ids=lambda g: g.name)
def test_rate_claim_on_matrix_games(game):
    """Acceptance 3 (matrix games), same η for both methods, 10,000 iterations."""
    markov = game.as_markov()
    init = markov.random_policy(0)
    ompo = run_tabular(markov, algo="ompo", iters=10_000, init_policy=init)
    mpo = run_tabular(markov, algo="mpo", iters=10_000, init_policy=init)
    assert -1.25 <= loglog_slope(ompo.avg_exploitability) <= -0.8  # (a) O(1/T)
    assert ompo.avg_exploitability[-1] <= 0.5 * mpo.avg_exploitability[-1]  # (b)
    assert ompo.last_exploitability[-1] <= 1e-3  # (c) OMPO's last iterate converges ...
    assert mpo.last_exploitability[-1] > 1e-3  # ... while MPO's cycles
    assert mpo.last_exploitability[-1000:].max() > 1e-2


def test_rate_claim_on_ten_random_markov_games():
    """Acceptance 3 (Markov games): the mean over 10 random non-transitive games."""
    games = [random_markov_game(seed) for seed in range(10)]
    curves = {}
    for algo in ("mpo", "ompo"):
        curves[algo] = np.mean([
            run_tabular(g, algo=algo, iters=10_000, init_policy=g.random_policy([0, i, 1])).avg_exploitability
            for i, g in enumerate(games)
        ], axis=0)
    assert -1.25 <= loglog_slope(curves["ompo"]) <= -0.8
    assert curves["ompo"][-1] <= 0.5 * curves["mpo"][-1]
    assert iters_to_eps(curves["ompo"], 1e-3) is not None


def test_lab_helpers():
    t = np.arange(1, 1001)
    assert loglog_slope(3.0 / t) == pytest.approx(-1.0)
    assert loglog_slope(2.0 / np.sqrt(t)) == pytest.approx(-0.5)
    assert iters_to_eps(1.0 / t, 1e-2) == 100
    assert iters_to_eps(1.0 / t, 1e-4) is None


def test_a_kl_penalty_makes_mpo_settle_at_a_near_equilibrium_where_plain_mpo_circles():
    """With β·KL(π‖π_0) in the game, MPO is magnetic mirror descent: its last iterate converges to
    the regularised equilibrium π ∝ π_0 exp(Pπ/β), which is (β log n)-exploitable: for every y,
    yᵀPπ − β KL(y‖π_0) ≤ πᵀPπ − β KL(π‖π_0) = ½ − β KL(π‖π_0), so yᵀPπ − ½ ≤ β log n for a
    uniform π_0. Plain MPO's last iterate on the same non-transitive game spirals out to a corner."""
    game = asymmetric_cycle()
    beta, n = 0.05, 3
    plain = run_tabular(game.as_markov(), algo="mpo", eta=DEFAULT_ETA, iters=3000)
    reg = run_tabular(game.as_markov(), algo="mpo", eta=DEFAULT_ETA, iters=3000, kl_coef=beta)
    pi = reg.last_policy[0][0]
    fixed = np.exp(game.P @ pi / beta) / np.exp(game.P @ pi / beta).sum()  # π_0 uniform
    np.testing.assert_allclose(pi, fixed, atol=1e-9)
    assert reg.last_exploitability[-1] <= beta * np.log(n)
    assert plain.last_exploitability[-1] > beta * np.log(n)
    assert abs(reg.last_exploitability[-1] - reg.last_exploitability[-500]) < 1e-9  # settled
