import numpy as np
import pytest

from framework.errors import InputError
from games.matrix import (MatrixGame, asymmetric_cycle, builtin_game, load_payoff,
                          random_nontransitive, rock_paper_scissors)


@pytest.mark.parametrize("P, fragment", [
    (np.full((2, 3), 0.5), "square"),
    ([[0.5]], "n ≥ 2"),
    ([[0.5, 1.2], [-0.2, 0.5]], "P[0,1] = 1.2 is not a probability"),
    ([[0.5, -0.1], [1.1, 0.5]], "P[0,1] = -0.1 is not a probability"),
    ([[0.5, 0.7], [0.7, 0.5]], "not constant-sum: P[0,1] + P[1,0] = 1.4"),
    ([[0.4, 0.5], [0.5, 0.5]], "P[0,0] + P[0,0] = 0.8"),
    ([[0.5, np.nan], [0.5, 0.5]], "P[0,1] = nan is not finite"),
    ("abc", "not a numeric matrix"),
])
def test_bad_matrices_are_rejected_with_the_offending_entry(P, fragment):
    with pytest.raises(InputError, match=None) as err:
        MatrixGame(P)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_lp_equilibrium_of_the_asymmetric_cycle_solves_A_x_equals_0():
    """The 3-cycle with margins m has equilibrium x ∝ (m₁, m₂, m₀) (A x = 0, worked in the docstring)."""
    m = (0.15, 0.25, 0.35)
    game = asymmetric_cycle(m)
    x = game.nash()
    expected = np.array([m[1], m[2], m[0]]) / sum(m)
    np.testing.assert_allclose(x, expected, atol=1e-9)
    assert game.exploitability(x) == pytest.approx(0.0, abs=1e-12)
    assert np.abs(x - 1 / 3).max() > 0.05  # not uniform


def test_rps_equilibrium_is_uniform_and_pure_policies_lose_half():
    game = rock_paper_scissors()
    np.testing.assert_allclose(game.nash(), np.full(3, 1 / 3), atol=1e-9)
    # Against pure rock, paper wins for sure: exploitability 1 − ½.
    assert game.exploitability(np.array([1.0, 0.0, 0.0])) == pytest.approx(0.5)


@pytest.mark.parametrize("n, seed", [(3, 0), (5, 1), (7, 2), (9, 3)])
def test_random_nontransitive_games_have_a_unique_interior_equilibrium(n, seed):
    game = random_nontransitive(n, seed)
    A = game.P - 0.5
    x = game.nash()
    assert x.min() > 0.01  # full support: no Condorcet winner
    np.testing.assert_allclose(A @ x, 0.0, atol=1e-7)
    assert np.linalg.matrix_rank(A, tol=1e-9) == n - 1  # null space is x alone → unique
    # every pure policy is exploitable
    assert min(game.exploitability(np.eye(n)[a]) for a in range(n)) > 0.05
    assert random_nontransitive(n, seed).P.tolist() == game.P.tolist()  # deterministic


def test_random_nontransitive_refuses_even_sizes():
    with pytest.raises(InputError, match="odd"):
        random_nontransitive(4, 0)


def test_builtin_lookup_and_npy_loading(tmp_path):
    with pytest.raises(InputError, match="choose from"):
        builtin_game("chess")
    path = tmp_path / "p.npy"
    np.save(path, rock_paper_scissors().P)
    assert load_payoff(str(path)).P.tolist() == rock_paper_scissors().P.tolist()
    with pytest.raises(InputError, match="no such file"):
        load_payoff(str(tmp_path / "missing.npy"))


def test_matrix_game_as_markov_game_has_the_same_exploitability():
    game = asymmetric_cycle()
    markov = game.as_markov()
    pi = np.array([0.6, 0.3, 0.1])
    assert markov.exploitability((pi[None, :],)) == pytest.approx(game.exploitability(pi), abs=1e-12)
