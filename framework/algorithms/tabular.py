"""Exact (tabular) versions of the methods, for the lab and the tests (DESIGN §3): MPO and OMPO
on constant-sum Markov games, and reward learning from demonstrations against SFT on one state.

## MPO and OMPO

MPO is natural actor–critic self-play: with exact Q of the current policy against itself,

    π_{t+1}(·|s) ∝ π_t(·|s) · exp(η · Q_h^{π_t}(s, ·)),   Q under the induced reward r̄^{π_t}.

OMPO is the optimistic version: Q is computed under the hint 2·r̄^{π_t} − r̄^{π_{t−1}} (the
first update is MPO's). A matrix game is the H = 1 case, where MPO is SPPO and OMPO is
optimistic multiplicative weights.

The output is the average iterate (the policy whose occupancy measure is the mean of the
iterates' occupancies; exploitability is linear in it) and the last iterate. Iteration t means
t policy updates have been made; the average at iteration t mixes π_1..π_t.

This part is game-agnostic: it uses only the exact-quantity methods of ``games.markov``.

## Reward learning from demonstrations, one state (a few actions)

Demonstrations all pick action d. SFT maximises log π(d), whose optimum puts all mass on d.
Inverse RL learns a reward r and the KL-regularised policy it induces,

    π_r(a) ∝ π_ref(a) exp(r(a)/β),

by maximising the demonstrations' log-likelihood under π_r minus an L2 penalty on the reward:

    max_r  log π_r(d) − (λ/2) ‖r‖²   ⇔   r = (e_d − π_r) / (β λ)   at the optimum,

so the policy moves towards d only as far as the regularised reward allows: it keeps mass on
the other actions, in proportion to π_ref. SFT's solution is the λ → 0 limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from framework.errors import InputError


@dataclass(frozen=True)
class TabularAlgo:
    """How a tabular self-play method builds its update (variants are configurations)."""

    name: str
    optimistic: bool  # hint 2·r̄_t − r̄_{t−1} instead of r̄_t
    max_horizon: int | None = None  # SPPO is MPO restricted to single-step games


TABULAR_ALGOS = {
    "mpo": TabularAlgo("mpo", optimistic=False),
    "ompo": TabularAlgo("ompo", optimistic=True),
    "sppo": TabularAlgo("sppo", optimistic=False, max_horizon=1),
}

#: η ≤ 1/√2 is the step-size bound of the OMPO analysis; the default sits inside it.
DEFAULT_ETA = 0.7
ETA_BOUND = 1 / np.sqrt(2)


def get_tabular_algo(name: str) -> TabularAlgo:
    if name not in TABULAR_ALGOS:
        raise InputError(f"unknown algorithm {name!r}; choose from {sorted(TABULAR_ALGOS)}")
    return TABULAR_ALGOS[name]


@dataclass(frozen=True)
class TabularRun:
    """The trajectory of one run: exploitability per iteration and the final policies."""

    algo: str
    eta: float
    iters: int
    avg_exploitability: np.ndarray  # (iters,) average iterate after t = 1..iters updates
    last_exploitability: np.ndarray  # (iters,) last iterate π_t
    avg_policy: tuple[np.ndarray, ...]  # per step (S_h, A)
    last_policy: tuple[np.ndarray, ...]  # per step (S_h, A)


def _log_softmax_update(log_pi, q, eta, mask, kl_coef=0.0, log_ref=None):
    """log of π ∝ π_t exp(η q), or π_t^{1−ηβ} π_ref^{ηβ} exp(η q) with a KL penalty β toward π_ref."""
    if kl_coef:
        log_pi = (1 - eta * kl_coef) * log_pi + eta * kl_coef * log_ref
    logits = np.where(mask, log_pi + eta * q, -np.inf)
    top = logits.max(axis=1, keepdims=True)
    return logits - (top + np.log(np.exp(logits - top).sum(axis=1, keepdims=True)))


def run_tabular(
    game,
    *,
    algo: str,
    eta: float = DEFAULT_ETA,
    iters: int,
    init_policy: tuple[np.ndarray, ...] | None = None,
    kl_coef: float = 0.0,
    staleness: int = 0,
    on_iteration: Callable[[int], None] | None = None,
) -> TabularRun:
    """Run tabular MPO/OMPO/SPPO self-play for ``iters`` updates on a ``MarkovGame``.

    Args:
        game: a ``games.markov.MarkovGame`` (a ``MatrixGame`` via ``.as_markov()``).
        algo: a name in ``TABULAR_ALGOS``.
        eta: mirror-descent step size η (many codes call 1/η "β"); must be > 0.
        iters: number of policy updates.
        init_policy: π_0; uniform by default.
        kl_coef: β of a KL penalty toward π_0 (MPO on single-step games, as ``algo.kl_coef``):
            the last iterate then converges to the regularised equilibrium π ∝ π_0 exp(Q/β).
        staleness: s, the pipeline's asynchrony: update t is computed from the data of π_{t−1−s}
            and anchored there (π_t ∝ π_{t−1−s} exp(η Q)), as an async run whose generators lag s
            versions and whose regression is solved against the sampling policy; OMPO's hint is
            then 2 r̄ of that policy − r̄ of the previous update's (the iterates are not consecutive).
        on_iteration: called with t after each update (progress bars).
    """
    spec = get_tabular_algo(algo)
    if not eta > 0:
        raise InputError(f"eta must be > 0, got {eta}")
    if iters < 1:
        raise InputError(f"iters must be ≥ 1, got {iters}")
    if staleness < 0:
        raise InputError(f"staleness must be ≥ 0, got {staleness}")
    if spec.max_horizon is not None and game.horizon > spec.max_horizon:
        raise InputError(
            f"{algo} is MPO on single-step games; this game has horizon {game.horizon} (use mpo/ompo)"
        )
    if kl_coef and (spec.optimistic or game.horizon > 1 or not 0 < eta * kl_coef < 1):
        raise InputError(f"kl_coef is MPO's on single-step games with 0 < η·β < 1; got {algo}, horizon "
                         f"{game.horizon}, η·β = {eta * kl_coef:g}")
    H = game.horizon
    pi = game.check_policy(init_policy) if init_policy is not None else game.uniform_policy()
    with np.errstate(divide="ignore"):
        log_pi = tuple(np.log(p) for p in pi)
    log_ref = log_pi

    avg_expl = np.empty(iters)
    last_expl = np.empty(iters)
    occ_sum = tuple(np.zeros_like(p) for p in pi)
    rbar_sum = tuple(np.zeros_like(p) for p in pi)
    rbar = game.induced_reward(game.occupancy(pi))
    # versions t − 2 − s .. t − 1: (log π, π, r̄^π), the anchor and the optimistic hint's pair
    history = [(log_pi, pi, rbar)] * (staleness + 2)
    for t in range(1, iters + 1):
        anchor_log, anchor, r_now = history[-1 - staleness]
        r_before = history[-2 - staleness][2]
        hint = r_now if not spec.optimistic or t == 1 else tuple(2 * r - rp for r, rp in zip(r_now, r_before))
        q, _ = game.evaluate(anchor, hint)
        log_pi = tuple(
            _log_softmax_update(lp, qh, eta, m, kl_coef, ref)
            for lp, qh, m, ref in zip(anchor_log, q, game.action_mask, log_ref)
        )
        pi = tuple(np.exp(lp) for lp in log_pi)
        d = game.occupancy(pi)
        rbar = game.induced_reward(d)
        history = history[1:] + [(log_pi, pi, rbar)]
        # Exploitability is linear in the opponent's occupancy, so the average iterate's induced
        # reward is the mean of the iterates' induced rewards.
        occ_sum = tuple(a + b for a, b in zip(occ_sum, d))
        rbar_sum = tuple(a + b for a, b in zip(rbar_sum, rbar))
        last_expl[t - 1] = game.best_response(rbar)[0] - H / 2
        avg_expl[t - 1] = game.best_response(tuple(r / t for r in rbar_sum))[0] - H / 2
        if on_iteration is not None:
            on_iteration(t)
    avg_policy = game.policy_from_occupancy(tuple(o / iters for o in occ_sum))
    return TabularRun(algo, float(eta), iters, avg_expl, last_expl, avg_policy, pi)


# --- reward learning from demonstrations vs SFT, one state ----------------------------------
def sft_policy(n_actions: int, demo: int, *, steps: int = 2000, lr: float = 0.5) -> np.ndarray:
    """Gradient ascent on log π(demo) from uniform logits: the mass on ``demo`` tends to 1."""
    logits = np.zeros(n_actions)
    for _ in range(steps):
        pi = np.exp(logits - logits.max())
        pi /= pi.sum()
        logits += lr * (np.eye(n_actions)[demo] - pi)  # ∇ log π(d) = e_d − π
    pi = np.exp(logits - logits.max())
    return pi / pi.sum()


def irl_policy(reference: np.ndarray, demo: int, *, beta: float, lam: float, iters: int = 100_000,
               tol: float = 1e-12) -> tuple[np.ndarray, np.ndarray]:
    """(π_r, r) maximising log π_r(demo) − (λ/2)‖r‖² with π_r ∝ π_ref exp(r/β) (concave in r)."""
    reference = np.asarray(reference, dtype=float)
    r = np.zeros_like(reference)
    for _ in range(iters):
        logits = np.log(reference) + r / beta
        pi = np.exp(logits - logits.max())
        pi /= pi.sum()
        grad = (np.eye(len(reference))[demo] - pi) / beta - lam * r
        r += grad / (lam + 1.0 / beta**2)  # the objective's curvature is at most λ + 1/β²
        if np.abs(grad).max() < tol:
            break
    logits = np.log(reference) + r / beta
    pi = np.exp(logits - logits.max())
    return pi / pi.sum(), r
