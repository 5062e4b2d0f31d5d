import itertools

import numpy as np
import pytest

from framework.errors import InputError
from games.markov import MarkovGame, random_markov_game


def small_game(seed):
    return random_markov_game(seed, horizon=(2, 2), actions=(2, 3), replies=(1, 2))


def pair_value_reference(game, pi, sigma):
    """Plain-loop reference: expected total pair reward, both players rolling out independently."""
    total, dist_a, dist_b = 0.0, {0: 1.0}, {0: 1.0}
    for h in range(game.horizon):
        for s, p in dist_a.items():
            for s2, p2 in dist_b.items():
                for a in range(game.num_actions):
                    for a2 in range(game.num_actions):
                        total += p * p2 * pi[h][s, a] * sigma[h][s2, a2] * game.rewards[h][s, a, s2, a2]
        if h < game.horizon - 1:
            nxt = []
            for dist, pol in ((dist_a, pi), (dist_b, sigma)):
                new = {}
                for s, p in dist.items():
                    for a in range(game.num_actions):
                        for t in range(game.transitions[h].shape[2]):
                            w = p * pol[h][s, a] * game.transitions[h][s, a, t]
                            if w > 0:
                                new[t] = new.get(t, 0.0) + w
                nxt.append(new)
            dist_a, dist_b = nxt
    return total


def deterministic_policies(game):
    """Every deterministic policy: one valid action per state at every step."""
    choices = [list(np.flatnonzero(m[s])) for m in game.action_mask for s in range(m.shape[0])]
    for pick in itertools.product(*choices):
        pol, i = [], 0
        for m in game.action_mask:
            p = np.zeros(m.shape)
            for s in range(m.shape[0]):
                p[s, pick[i]] = 1.0
                i += 1
            pol.append(p)
        yield tuple(pol)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exploitability_matches_brute_force_enumeration(seed):
    game = small_game(seed)
    policies = list(deterministic_policies(game))
    assert 8 <= len(policies) <= 5000
    for k in range(3):
        pi = game.random_policy(100 + k)
        brute = max(pair_value_reference(game, mu, pi) for mu in policies) - game.horizon / 2
        assert game.exploitability(pi) == pytest.approx(brute, abs=1e-10)
        value, br = game.best_response(game.induced_reward(game.occupancy(pi)))
        assert pair_value_reference(game, br, pi) == pytest.approx(value, abs=1e-10)


@pytest.mark.parametrize("seed", range(4))
def test_self_play_is_worth_half_the_horizon(seed):
    game = random_markov_game(seed)
    for k in range(3):
        pi = game.random_policy(k)
        assert game.value(pi, pi) == pytest.approx(game.horizon / 2, abs=1e-12)
        assert pair_value_reference(game, pi, pi) == pytest.approx(game.horizon / 2, abs=1e-10)
        assert game.exploitability(pi) >= -1e-12


def test_occupancy_is_a_distribution_per_step_and_mixtures_are_exact():
    game = random_markov_game(5)
    pis = [game.random_policy(k) for k in range(4)]
    occs = [game.occupancy(p) for p in pis]
    for d in occs[0]:
        assert d.sum() == pytest.approx(1.0)
        assert (d >= 0).all()
    # The average iterate is the policy whose occupancy is the mean occupancy.
    mean = tuple(np.mean([o[h] for o in occs], axis=0) for h in range(game.horizon))
    mixture = game.policy_from_occupancy(mean)
    for a, b in zip(game.occupancy(mixture), mean):
        np.testing.assert_allclose(a, b, atol=1e-12)
    assert game.exploitability(mixture) == pytest.approx(game.exploitability_of_occupancy(mean), abs=1e-12)


def test_random_games_are_trees_with_nontransitive_rewards():
    game = random_markov_game(7)
    for f in game.transitions:
        # every child state has exactly one parent (s, a): a tree of conversation prefixes
        assert ((f > 0).sum(axis=(0, 1)) == 1).all()
    # no pure policy is an equilibrium of the step-0 game
    assert min(game.exploitability(p) for p in _pure_first_step(game)) > 0.01


def _pure_first_step(game):
    for a in np.flatnonzero(game.action_mask[0][0]):
        pi = list(game.uniform_policy())
        pi[0] = np.eye(game.num_actions)[[a]]
        yield tuple(pi)


def _valid_parts():
    m = [np.ones((1, 2), bool), np.ones((2, 2), bool)]
    r0 = np.full((1, 2, 1, 2), 0.5)
    r0[0, 0, 0, 1], r0[0, 1, 0, 0] = 0.8, 0.2
    r1 = np.full((2, 2, 2, 2), 0.5)
    f = np.zeros((1, 2, 2))
    f[0, 0, 0], f[0, 1, 1] = 1.0, 1.0
    return [f], [r0, r1], m


def test_valid_small_game_builds():
    f, r, m = _valid_parts()
    game = MarkovGame(tuple(f), tuple(r), tuple(m))
    assert game.horizon == 2 and game.num_states == (1, 2)


@pytest.mark.parametrize("edit, fragment", [
    (lambda f, r, m: r[0].__setitem__((0, 0, 0, 1), 0.9), "not constant-sum"),
    (lambda f, r, m: r[1].__setitem__((0, 0, 1, 1), -0.5), "is not in [0, 1]"),
    (lambda f, r, m: f[0].__setitem__((0, 0, 0), 0.5), "transitions[0][0, 0] is not a probability distribution"),
    (lambda f, r, m: m.__setitem__(0, np.ones((2, 2), bool)), "exactly one start state"),
    (lambda f, r, m: m[1].__setitem__((1, slice(None)), False), "state 1 at step 1 has no valid action"),
    (lambda f, r, m: r.pop(), "need H reward arrays"),
])
def test_bad_markov_games_are_rejected(edit, fragment):
    f, r, m = _valid_parts()
    edit(f, r, m)
    with pytest.raises(InputError) as err:
        MarkovGame(tuple(f), tuple(r), tuple(m))
    assert fragment in str(err.value)


def test_policy_checks():
    game = random_markov_game(0)
    with pytest.raises(InputError, match="steps"):
        game.check_policy(game.uniform_policy()[:-1])
    bad = list(game.uniform_policy())
    bad[0] = bad[0] * 2
    with pytest.raises(InputError, match="distributions"):
        game.check_policy(tuple(bad))
