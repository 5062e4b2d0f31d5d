"""MPO (DESIGN §3): one-step Q (the paper's experimental default), Monte-Carlo or terminal Q.

For each visited state s_h with K sampled answers a¹..a^K, the judge gives P(a^k ≻ a^k'), and

    one_step:     Q̂_k = (1/K) Σ_k' P(a^k ≻ a^k'),   baseline ½   (the self-pair counts ½);
    monte_carlo:  every answer is continued to the end of the conversation with π_t (one answer
                  per later turn) and Q̂_k = Σ_{h' ≥ h} (1/K) Σ_k' P(branch k ≻ branch k' at h'),
                  baseline (H − h + 1)/2;
    terminal:     only the last turn's comparison of the branches counts, baseline ½.

Kept samples (all K, or the best and worst by Q̂ as in the paper) regress ρ_θ onto η (Q̂ − b),
less η β (log π_t − log π_ref) with a KL penalty β toward the starting policy (``algo.kl_coef``).

The self-play family's plan lives here too (``SelfPlay``): every iteration plays the task's
conversations with K answers at each visited state and the judge compares every pair of them.
OMPO, SPPO and the preference-pair methods build on it.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from framework.algorithms.hooks import Algorithm, Source
from framework.batching import collate
from framework.errors import InputError
from framework.losses import mpo_loss, mpo_target
from framework.records import Comparison, GenerationRequest, Pair, Rollout, TrainBatch


@dataclass(frozen=True)
class SelfPlay:
    """The self-play plan: K answers at every visited state, every pair of them judged, the new
    weights published after every update. ``mode`` is how the generators play (records.py)."""

    source: Source
    k: int
    mode: str

    def request(self, iteration: int) -> GenerationRequest:
        return GenerationRequest(k=self.k, episodes=tuple(self.source.episodes(iteration)), mode=self.mode)

    def pairs(self, rollouts: list[Rollout]) -> list[Pair]:
        return state_pairs(rollouts)

    def publishes(self, iteration: int) -> bool:
        return True

    def max_age(self, max_staleness: int) -> int:
        return max_staleness

    def barrier(self, iteration: int) -> bool:
        return False  # async self-play may run ahead of the learner by max_staleness versions


def tree(settings, source: Source) -> SelfPlay:
    """K answers branch at every turn; Monte-Carlo and terminal Q also continue every branch."""
    return SelfPlay(source, settings.k, "tree" if settings.q == "one_step" else "branches")


def state_pairs(rollouts: list[Rollout]) -> list[Pair]:
    """All K(K−1)/2 pairs of answers at every visited state.

    With continued branches (Monte-Carlo Q) the continuations of turn h's answers are also
    compared at each later turn, branch 0 being the main line (its sample 0 there).
    """
    states: dict = {}
    for r in rollouts:
        states.setdefault((r.conversation_id, r.turn, r.branch_of), []).append(r)
    for (cid, turn, branch_of), rs in list(states.items()):
        if branch_of >= 0:
            rs += [r for r in states.get((cid, turn, -1), []) if r.sample == 0]
    pairs = []
    for (cid, turn, branch_of), rs in states.items():
        rs.sort(key=lambda r: r.sample)
        # in tree mode every sample shares the state; whole paths each have theirs (a's is judged)
        pairs += [Pair(cid, turn, a.sample, b.sample, a.messages, a.response, b.response, branch_of=branch_of)
                  for a, b in itertools.combinations(rs, 2)]
    return pairs


def win_matrix(k: int, comparisons: list[Comparison]) -> np.ndarray:
    """(K, K) P(a^i ≻ a^j) from judged pairs; the diagonal is ½ and missing mirrors are 1 − P."""
    W = np.full((k, k), np.nan)
    np.fill_diagonal(W, 0.5)
    for c in comparisons:
        W[c.a, c.b] = c.probability
    mirror = np.isnan(W) & ~np.isnan(W.T)
    W[mirror] = 1.0 - W.T[mirror]
    if np.isnan(W).any():
        i, j = np.argwhere(np.isnan(W))[0]
        raise InputError(f"no comparison between samples {i} and {j} of a state")
    return W


def one_step_q(W: np.ndarray) -> np.ndarray:
    """(K,) Q̂_k = mean_k' P(a^k ≻ a^k')."""
    return W.mean(axis=1)


def select(q_hat: np.ndarray, keep: str) -> list[int]:
    """Indices kept for training: ``all`` or ``best_worst`` (argmax and argmin of Q̂)."""
    if keep == "all":
        return list(range(len(q_hat)))
    if keep == "best_worst":
        best, worst = int(np.argmax(q_hat)), int(np.argmin(q_hat))
        return [best] if best == worst else [best, worst]
    raise InputError(f"algo.keep must be 'all' or 'best_worst', got {keep!r}")


def group(rollouts: list[Rollout], comparisons: list[Comparison]):
    """Answers and same-turn comparisons of each visited state, keyed by (conversation, turn,
    iteration); continuations of branches (``branch_of ≥ 0``) are left out."""
    states: dict = defaultdict(list)
    for r in rollouts:
        if r.branch_of == -1:
            states[(r.conversation_id, r.turn, r.iteration)].append(r)
    judged: dict = defaultdict(list)
    for c in comparisons:
        if c.opponent == "self" and c.branch_of == -1:
            judged[(c.conversation_id, c.turn, c.iteration)].append(c)
    return [(sorted(rs, key=lambda r: r.sample), judged[key]) for key, rs in states.items()]


def branch_q(k: int, h: int, comparisons: list[Comparison], q: str) -> tuple[np.ndarray, float]:
    """(K,) Q̂ and its baseline for the answers of turn h from the comparisons of their
    continuations (``branch_of = h``, one group per later turn) and their own turn's matrix."""
    by_turn: dict = defaultdict(list)
    for c in comparisons:
        by_turn[c.turn].append(c)
    later = sorted(t for t in by_turn if t > h)
    if q == "terminal":
        last = later[-1] if later else h
        return one_step_q(win_matrix(k, by_turn[last])), 0.5
    total = sum(one_step_q(win_matrix(k, by_turn[t])) for t in [h, *later])
    return total, (len(later) + 1) / 2


def build_batch(rollouts: list[Rollout], comparisons: list[Comparison], *, keep: str = "all",
                pad_id: int, q: str = "one_step", q_prev: dict | None = None) -> TrainBatch:
    """Kept answers with their Q̂ and baseline; ``q_prev`` (OMPO) maps (conversation, turn,
    iteration, sample) to Q̂⁽ᵗ⁻¹⁾, answers it lacks taking their own Q̂."""
    branches: dict = defaultdict(list)  # (conversation, iteration, h) → comparisons of h's branches
    for c in comparisons:
        if c.branch_of >= 0:
            branches[(c.conversation_id, c.iteration, c.branch_of)].append(c)
        elif c.opponent == "self":
            branches[(c.conversation_id, c.iteration, c.turn)].append(c)  # the turn itself
    prompts, responses, logp_old, q_hat, baselines, versions, previous = [], [], [], [], [], [], []
    for rs, cs in group(rollouts, comparisons):
        if q == "one_step":
            qs, b = one_step_q(win_matrix(len(rs), cs)), 0.5
        else:
            r0 = rs[0]
            qs, b = branch_q(len(rs), r0.turn, branches[(r0.conversation_id, r0.iteration, r0.turn)], q)
        for i in select(qs, keep):
            r = rs[i]
            prompts.append(r.prompt_ids)
            responses.append(r.response_ids)
            logp_old.append(r.logprob)
            q_hat.append(float(qs[i]))
            baselines.append(b)
            versions.append(r.policy_version)
            previous.append((q_prev or {}).get((r.conversation_id, r.turn, r.iteration, r.sample), float(qs[i])))
    return collate(prompts, responses, pad_id=pad_id, logp_old=logp_old, q_hat=q_hat,
                   baseline=baselines, policy_version=versions, q_hat_prev=previous)


def loss(*, batch: TrainBatch, logp, eta: float, tau: float = 0.0, link: str = "logistic", kl_coef: float = 0.0):
    return mpo_loss(logp=logp, logp_old=batch.logp_old, q_hat=batch.q_hat, baseline=batch.baseline, eta=eta,
                    kl_coef=kl_coef, logp_ref=batch.logp_ref)


def target(*, batch: TrainBatch, tau: float = 0.0, kl_coef: float = 0.0):
    return batch.first_of_example(mpo_target(q_hat=batch.q_hat, baseline=batch.baseline, kl_coef=kl_coef,
                                             logp_old=batch.logp_old, logp_ref=batch.logp_ref))


MPO = Algorithm(name="mpo", build_batch=build_batch, loss=loss, plan=tree, target=target, options=("q",),
                accepts=("q", "kl_coef", "round_reset"))
