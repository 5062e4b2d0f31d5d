"""Finite-horizon two-player constant-sum Markov games, solved exactly (DESIGN §2.1).

States are conversation prefixes laid out by step h = 0..H−1; step 0 has the single start state.
Both players start there and roll out *independently* (each in its own conversation); at every
step they are compared by the pair reward ``r_h(s, a, s', a')`` with ``r + rᵀ = 1``. Because the
trajectories are independent, the opponent enters only through the induced reward

    r̄_h^σ(s, a) = Σ_{s',a'} d_h^σ(s', a') r_h(s, a, s', a'),

which is linear in the opponent's occupancy measure d^σ. Self-play is worth H/2, so
``exploitability(π) = V_BR(π) − H/2`` where the best response solves a single-agent backward
dynamic program with reward r̄^π.

Arrays are padded to the largest action set ``A``; ``action_mask[h][s, a]`` says which actions
exist. A policy is a tuple over steps of (S_h, A) arrays whose rows are distributions on the
valid actions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from framework.errors import InputError

Policy = tuple[np.ndarray, ...]  # per step h: (S_h, A) π_h(a | s)
Occupancy = tuple[np.ndarray, ...]  # per step h: (S_h, A) d_h(s, a), sums to 1 per step
StepReward = tuple[np.ndarray, ...]  # per step h: (S_h, A) a reward for each (s, a)

TOL = 1e-6


@dataclass(frozen=True)
class MarkovGame:
    """A finite-horizon tabular two-player constant-sum Markov game."""

    transitions: tuple[np.ndarray, ...]  # H−1 arrays, step h: (S_h, A, S_{h+1}) f(s' | s, a)
    rewards: tuple[np.ndarray, ...]  # H arrays, step h: (S_h, A, S_h, A) r_h(s, a, s', a')
    action_mask: tuple[np.ndarray, ...]  # H arrays, step h: (S_h, A) bool, valid actions
    name: str = "markov"

    def __post_init__(self):
        rewards = tuple(np.asarray(r, dtype=np.float64) for r in self.rewards)
        masks = tuple(np.asarray(m, dtype=bool) for m in self.action_mask)
        trans = tuple(np.asarray(f, dtype=np.float64) for f in self.transitions)
        H = len(rewards)
        if H < 1 or len(masks) != H or len(trans) != H - 1:
            raise InputError(
                f"{self.name}: need H reward arrays, H action masks and H−1 transition arrays; "
                f"got {len(rewards)}, {len(masks)}, {len(trans)}"
            )
        A = masks[0].shape[1] if masks[0].ndim == 2 else -1
        for h in range(H):
            m, r = masks[h], rewards[h]
            if m.ndim != 2 or m.shape[1] != A:
                raise InputError(f"{self.name}: action_mask[{h}] must be (S_{h}, {A}), got {m.shape}")
            S = m.shape[0]
            if h == 0 and S != 1:
                raise InputError(f"{self.name}: step 0 must have exactly one start state, got {S}")
            empty = np.flatnonzero(~m.any(axis=1))
            if len(empty):
                raise InputError(f"{self.name}: state {empty[0]} at step {h} has no valid action")
            if r.shape != (S, A, S, A):
                raise InputError(f"{self.name}: rewards[{h}] must be {(S, A, S, A)}, got {r.shape}")
            valid = m[:, :, None, None] & m[None, None, :, :]
            bad = np.argwhere(valid & ~((r >= -TOL) & (r <= 1 + TOL)))
            if len(bad):
                raise InputError(
                    f"{self.name}: rewards[{h}][{', '.join(map(str, bad[0]))}] = "
                    f"{r[tuple(bad[0])]:.6g} is not in [0, 1]"
                )
            gap = np.where(valid, np.abs(r + r.transpose(2, 3, 0, 1) - 1.0), 0.0)
            if gap.max() > TOL:
                i = np.unravel_index(np.argmax(gap), gap.shape)
                raise InputError(
                    f"{self.name}: rewards[{h}] is not constant-sum: r{i} + r{(i[2], i[3], i[0], i[1])}"
                    f" = {r[i] + r[i[2], i[3], i[0], i[1]]:.6g}, expected 1"
                )
            if h < H - 1:
                f, S_next = trans[h], masks[h + 1].shape[0]
                if f.shape != (S, A, S_next):
                    raise InputError(
                        f"{self.name}: transitions[{h}] must be {(S, A, S_next)}, got {f.shape}"
                    )
                rows = f[m]
                bad_row = np.flatnonzero((rows < -TOL).any(axis=1) | (np.abs(rows.sum(axis=1) - 1) > TOL))
                if len(bad_row):
                    s, a = np.argwhere(m)[bad_row[0]]
                    raise InputError(
                        f"{self.name}: transitions[{h}][{s}, {a}] is not a probability distribution"
                    )
        # Invalid actions never get probability; give them a neutral reward so sums stay clean.
        rewards = tuple(
            np.where(m[:, :, None, None] & m[None, None, :, :], r, 0.5) for r, m in zip(rewards, masks)
        )
        object.__setattr__(self, "rewards", rewards)
        object.__setattr__(self, "action_mask", masks)
        object.__setattr__(self, "transitions", trans)

    # --- sizes -----------------------------------------------------------------------------
    @property
    def horizon(self) -> int:
        return len(self.rewards)

    @property
    def num_actions(self) -> int:
        return self.action_mask[0].shape[1]

    @property
    def num_states(self) -> tuple[int, ...]:
        return tuple(m.shape[0] for m in self.action_mask)

    # --- policies ---------------------------------------------------------------------------
    def uniform_policy(self) -> Policy:
        return tuple(m / m.sum(axis=1, keepdims=True) for m in self.action_mask)

    def random_policy(self, seed: int) -> Policy:
        """Each state's action distribution drawn from a flat Dirichlet (a generic start point)."""
        rng = np.random.default_rng(seed)
        out = []
        for m in self.action_mask:
            p = rng.dirichlet(np.ones(m.shape[1]), size=m.shape[0]) * m
            out.append(p / p.sum(axis=1, keepdims=True))
        return tuple(out)

    def check_policy(self, pi: Policy) -> Policy:
        if len(pi) != self.horizon:
            raise InputError(f"policy has {len(pi)} steps, the game has {self.horizon}")
        out = []
        for h, (p, m) in enumerate(zip(pi, self.action_mask)):
            p = np.asarray(p, dtype=np.float64)
            if p.shape != m.shape:
                raise InputError(f"policy[{h}] must be {m.shape}, got {p.shape}")
            if (p < -TOL).any() or (p[~m] > TOL).any() or (np.abs(p.sum(axis=1) - 1) > TOL).any():
                raise InputError(f"policy[{h}] rows must be distributions over the valid actions")
            out.append(p)
        return tuple(out)

    # --- exact quantities -------------------------------------------------------------------
    def occupancy(self, pi: Policy) -> Occupancy:
        """d_h^π(s, a) from the start state: d_{h+1}(s') = Σ_{s,a} d_h(s,a) f_h(s'|s,a)."""
        state = np.ones(1)
        out = []
        for h in range(self.horizon):
            d = state[:, None] * pi[h]
            out.append(d)
            if h < self.horizon - 1:
                state = np.einsum("sa,sat->t", d, self.transitions[h])
        return tuple(out)

    def induced_reward(self, d: Occupancy) -> StepReward:
        """r̄_h(s, a) = Σ_{s',a'} d_h(s', a') r_h(s, a, s', a') against an opponent occupancy d."""
        return tuple(np.einsum("sabc,bc->sa", r, dh) for r, dh in zip(self.rewards, d))

    def evaluate(self, pi: Policy, reward: StepReward) -> tuple[StepReward, tuple[np.ndarray, ...]]:
        """Q_h^π and V_h^π of policy π under a per-step reward, by backward recursion."""
        H = self.horizon
        Q, V = [None] * H, [None] * H
        v_next = None
        for h in reversed(range(H)):
            q = reward[h] if v_next is None else reward[h] + self.transitions[h] @ v_next
            Q[h], V[h] = q, (pi[h] * q).sum(axis=1)
            v_next = V[h]
        return tuple(Q), tuple(V)

    def best_response(self, reward: StepReward) -> tuple[float, Policy]:
        """Optimal value from the start state and a deterministic optimal policy (backward DP)."""
        H = self.horizon
        policy = [None] * H
        v_next = None
        for h in reversed(range(H)):
            q = reward[h] if v_next is None else reward[h] + self.transitions[h] @ v_next
            q = np.where(self.action_mask[h], q, -np.inf)
            best = q.argmax(axis=1)
            policy[h] = np.eye(self.num_actions)[best]
            v_next = q.max(axis=1)
        return float(v_next[0]), tuple(policy)

    def value(self, pi: Policy, opponent: Policy) -> float:
        """Expected total pair reward of π against an independent opponent."""
        rbar = self.induced_reward(self.occupancy(opponent))
        return float(sum((d * r).sum() for d, r in zip(self.occupancy(pi), rbar)))

    def exploitability_of_occupancy(self, d: Occupancy) -> float:
        """V_BR − H/2 against any opponent given by its occupancy measure (a mixture is fine)."""
        return self.best_response(self.induced_reward(d))[0] - self.horizon / 2

    def exploitability(self, pi: Policy) -> float:
        """exploitability(π) = V_best-response(π) − H/2 ≥ 0, zero exactly at a Nash equilibrium."""
        return self.exploitability_of_occupancy(self.occupancy(pi))

    def policy_from_occupancy(self, d: Occupancy) -> Policy:
        """π(a|s) ∝ d(s, a); unreachable states get the uniform policy over valid actions."""
        out = []
        for dh, m in zip(d, self.action_mask):
            mass = dh.sum(axis=1, keepdims=True)
            uniform = m / m.sum(axis=1, keepdims=True)
            out.append(np.where(mass > 0, dh / np.where(mass > 0, mass, 1.0), uniform))
        return tuple(out)


def random_markov_game(
    seed: int,
    *,
    horizon: tuple[int, int] = (2, 3),
    actions: tuple[int, int] = (2, 4),
    replies: tuple[int, int] = (1, 2),
    nontransitive: float = 0.8,
) -> MarkovGame:
    """A random conversation-tree game; sizes are drawn from the seed within the given ranges.

    H ∈ ``horizon``, each state has |A(s)| ∈ ``actions`` responses, and each (s, a) is followed by
    one of ``replies`` user turns (a stochastic transition to a child prefix). The pair reward at
    step h over all (s, a) of that step is

        r = ½ + ½·[w·G + (1 − w)·(q_i − q_j)],  w = ``nontransitive``,

    with G a random antisymmetric matrix (entries in [−1, 1], the non-transitive part) and q a
    random quality in [0, 1] (the transitive, Bradley–Terry-like part); so r + rᵀ = 1, r ∈ [0, 1].
    """
    if not 0.0 <= nontransitive <= 1.0:
        raise InputError(f"nontransitive must be in [0, 1], got {nontransitive}")
    rng = np.random.default_rng(seed)
    H = int(rng.integers(horizon[0], horizon[1] + 1))
    A = actions[1]
    masks, trans, rewards = [], [], []
    n_states = 1
    for h in range(H):
        n_act = rng.integers(actions[0], actions[1] + 1, size=n_states)
        m = np.arange(A)[None, :] < n_act[:, None]
        masks.append(m)
        N = n_states * A
        G = np.triu(rng.uniform(-1, 1, (N, N)), 1)
        G = G - G.T
        q = rng.uniform(0, 1, N)
        r = 0.5 + 0.5 * (nontransitive * G + (1 - nontransitive) * (q[:, None] - q[None, :]))
        rewards.append(r.reshape(n_states, A, n_states, A))
        if h < H - 1:
            # Each valid (s, a) gets its own children (a tree): one per possible user reply.
            n_rep = rng.integers(replies[0], replies[1] + 1, size=(n_states, A)) * m
            n_next = int(n_rep.sum())
            f = np.zeros((n_states, A, n_next))
            child = 0
            for s, a in np.argwhere(m):
                k = n_rep[s, a]
                f[s, a, child : child + k] = rng.dirichlet(np.ones(k))
                child += k
            trans.append(f)
            n_states = n_next
    return MarkovGame(tuple(trans), tuple(rewards), tuple(masks), name=f"random_markov_s{seed}")
