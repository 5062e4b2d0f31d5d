"""RLlib's ``MultiAgentEnv`` face of a tabular Markov game, so RLlib users can run their own
algorithms on the exact games (and compare against the exact exploitability).

Two agents, ``player_0`` and ``player_1``, start at the same state and roll out independently;
at each step both act at once and receive the pair reward r_h(s, a, s', a') and its complement.
Observations follow RLlib's action-masking convention: ``{"observations": one-hot of (h, s),
"action_mask": 1 for the valid actions of that state}``; the episode ends after H steps. An
algorithm that ignores the mask may send a padded action ``a``: it is played as the
``a mod |A(s)|``-th valid action, so every action of the space is legal, as RLlib expects.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from ray.rllib.env.multi_agent_env import MultiAgentEnv

from framework.errors import InputError
from games.markov import MarkovGame, random_markov_game

AGENTS = ("player_0", "player_1")


class MarkovGameEnv(MultiAgentEnv):
    """RLlib env over a ``MarkovGame``; ``config`` may hold ``game`` or ``seed`` (random game)."""

    def __init__(self, config: dict | None = None):
        super().__init__()
        config = dict(config or {})
        self.game: MarkovGame = config.get("game") or random_markov_game(int(config.get("seed", 0)))
        self._offsets = np.cumsum((0,) + self.game.num_states)  # global index of (h, s)
        n_obs = int(self._offsets[-1]) + 1  # + one terminal observation
        A = self.game.num_actions
        space = gym.spaces.Dict({
            "observations": gym.spaces.Box(0.0, 1.0, (n_obs,), np.float32),
            "action_mask": gym.spaces.Box(0.0, 1.0, (A,), np.float32),
        })
        self.possible_agents = list(AGENTS)
        self.agents = list(AGENTS)
        self.observation_spaces = {a: space for a in AGENTS}
        self.action_spaces = {a: gym.spaces.Discrete(A) for a in AGENTS}
        self._rng = np.random.default_rng(config.get("seed", 0))
        self._h, self._states = 0, [0, 0]

    def _obs(self, h: int, s: int) -> dict:
        one_hot = np.zeros(self.observation_spaces[AGENTS[0]]["observations"].shape, np.float32)
        if h < self.game.horizon:
            one_hot[self._offsets[h] + s] = 1.0
            mask = self.game.action_mask[h][s].astype(np.float32)
        else:
            one_hot[-1] = 1.0
            mask = np.zeros(self.game.num_actions, np.float32)
        return {"observations": one_hot, "action_mask": mask}

    def _valid_action(self, h: int, s: int, a: int) -> int:
        # Algorithms that ignore the mask may pick a padded action; it wraps onto the valid ones.
        valid = np.flatnonzero(self.game.action_mask[h][s])
        return int(a) if a in valid else int(valid[a % len(valid)])

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self._h, self._states = 0, [0, 0]
        self.agents = list(AGENTS)
        return {a: self._obs(0, 0) for a in AGENTS}, {a: {} for a in AGENTS}

    def step(self, action_dict):
        h, game = self._h, self.game
        missing = [a for a in AGENTS if a not in action_dict]
        if missing:
            raise InputError(f"step needs an action for every agent; missing {missing}")
        acts = [self._valid_action(h, s, int(action_dict[a])) for a, s in zip(AGENTS, self._states)]
        (s0, s1), (a0, a1) = self._states, acts
        r = float(game.rewards[h][s0, a0, s1, a1])
        rewards = {AGENTS[0]: r, AGENTS[1]: 1.0 - r}
        if h < game.horizon - 1:
            f = game.transitions[h]
            self._states = [int(self._rng.choice(f.shape[2], p=f[s, a])) for s, a in zip(self._states, acts)]
        self._h = h + 1
        done = self._h == game.horizon
        obs = {a: self._obs(self._h, s) for a, s in zip(AGENTS, self._states)}
        flags = {a: done for a in AGENTS} | {"__all__": done}
        if done:
            self.agents = []
        return obs, rewards, flags, {a: False for a in AGENTS} | {"__all__": False}, {a: {} for a in AGENTS}
