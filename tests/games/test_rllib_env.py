import numpy as np
import pytest
from ray.rllib.utils.pre_checks.env import check_multiagent_environments

from games.markov import random_markov_game
from games.rllib_env import AGENTS, MarkovGameEnv


def test_rllib_checks_pass_and_episodes_follow_the_game():
    game = random_markov_game(3)
    env = MarkovGameEnv({"game": game})
    check_multiagent_environments(env)  # RLlib's own API checks (reset/step/spaces)

    rng = np.random.default_rng(0)
    for episode in range(5):
        obs, infos = env.reset(seed=episode)
        assert set(obs) == set(AGENTS)
        for h in range(game.horizon):
            actions = {}
            for a in AGENTS:
                assert env.observation_spaces[a].contains(obs[a])
                valid = np.flatnonzero(obs[a]["action_mask"])
                actions[a] = int(rng.choice(valid))
            obs, rewards, terminated, truncated, infos = env.step(actions)
            # constant-sum pair reward at every step
            assert rewards[AGENTS[0]] + rewards[AGENTS[1]] == pytest.approx(1.0)
            assert terminated["__all__"] == (h == game.horizon - 1)
            assert not truncated["__all__"]


def test_returns_estimate_the_exact_best_response_value():
    """Player 0 plays the exact best response to uniform play: its mean return is V_BR."""
    game = random_markov_game(1)
    uniform = game.uniform_policy()
    v_br, br = game.best_response(game.induced_reward(game.occupancy(uniform)))
    env = MarkovGameEnv({"game": game})
    offsets = np.cumsum((0,) + game.num_states)
    rng = np.random.default_rng(1)
    returns = []
    for episode in range(1500):
        obs, _ = env.reset(seed=episode)
        total, h, done = 0.0, 0, False
        while not done:
            s0 = int(np.argmax(obs[AGENTS[0]]["observations"])) - offsets[h]
            act = {AGENTS[0]: int(np.argmax(br[h][s0])),
                   AGENTS[1]: int(rng.choice(np.flatnonzero(obs[AGENTS[1]]["action_mask"])))}
            obs, rew, term, _, _ = env.step(act)
            total += rew[AGENTS[0]]
            h, done = h + 1, term["__all__"]
        returns.append(total)
    se = np.std(returns) / np.sqrt(len(returns))
    assert abs(np.mean(returns) - v_br) < 4 * se
    assert v_br > game.horizon / 2 + 4 * se  # the best response really wins more than half
