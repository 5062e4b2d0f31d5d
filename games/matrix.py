"""Matrix preference games (H = 1): a preference matrix P with P + Pᵀ = 1.

``P[a, b]`` is the probability that response class ``a`` is preferred to ``b``. The game is
symmetric and constant-sum, so the value of self-play is ½ and the exploitability of a mixed
policy π is ``max_a (P π)_a − ½`` (DESIGN §2.1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linprog

from framework.errors import InputError
from games.markov import MarkovGame

TOL = 1e-9


def check_preference_matrix(P) -> np.ndarray:
    """Return ``P`` as a float array, or raise InputError naming the first offending entry."""
    name = "P"
    try:
        P = np.asarray(P, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise InputError(f"{name}: not a numeric matrix ({e})") from None
    if P.ndim != 2 or P.shape[0] != P.shape[1] or P.shape[0] < 2:
        raise InputError(f"{name}: expected a square n×n matrix with n ≥ 2, got shape {P.shape}")
    bad = np.argwhere(~np.isfinite(P))
    if len(bad):
        i, j = bad[0]
        raise InputError(f"{name}[{i},{j}] = {P[i, j]} is not finite")
    bad = np.argwhere((P < -TOL) | (P > 1 + TOL))
    if len(bad):
        i, j = bad[0]
        raise InputError(f"{name}[{i},{j}] = {P[i, j]:.6g} is not a probability in [0, 1]")
    gap = np.abs(P + P.T - 1.0)
    if gap.max() > 1e-6:
        i, j = np.unravel_index(np.argmax(gap), gap.shape)
        raise InputError(
            f"{name} is not constant-sum: {name}[{i},{j}] + {name}[{j},{i}] = "
            f"{P[i, j] + P[j, i]:.6g}, expected 1"
        )
    return np.clip(P, 0.0, 1.0)


@dataclass(frozen=True)
class MatrixGame:
    """A symmetric two-player constant-sum game given by its preference matrix."""

    P: np.ndarray  # (n, n) P[a, b] = P(a ≻ b), P + Pᵀ = 1
    name: str = "matrix"

    def __post_init__(self):
        try:
            object.__setattr__(self, "P", check_preference_matrix(self.P))
        except InputError as e:
            raise InputError(f"{self.name}: {e}") from None

    @property
    def n(self) -> int:
        return self.P.shape[0]

    def win_rates(self, pi: np.ndarray) -> np.ndarray:
        """(n,) P(a ≻ π) for every pure response a."""
        return self.P @ pi

    def exploitability(self, pi: np.ndarray) -> float:
        """``max_a (P π)_a − ½``: what a best response wins above the self-play value."""
        return float(self.win_rates(pi).max() - 0.5)

    def nash(self) -> np.ndarray:
        """A (symmetric) Nash equilibrium by linear program: max_x min_b (xᵀP)_b.

        Variables (x, v): minimise −v s.t. v − (Pᵀx)_b ≤ 0 for all b, Σx = 1, x ≥ 0.
        """
        n = self.n
        c = np.zeros(n + 1)
        c[-1] = -1.0
        A_ub = np.hstack([-self.P.T, np.ones((n, 1))])
        A_eq = np.hstack([np.ones((1, n)), np.zeros((1, 1))])
        res = linprog(
            c, A_ub=A_ub, b_ub=np.zeros(n), A_eq=A_eq, b_eq=[1.0],
            bounds=[(0, None)] * n + [(None, None)], method="highs",
        )
        if not res.success:  # cannot happen for a valid P; kept as a loud guard
            raise RuntimeError(f"Nash LP failed: {res.message}")
        x = np.clip(res.x[:n], 0.0, None)
        return x / x.sum()

    def as_markov(self):
        """The same game as a one-step, one-state Markov game (so MPO/OMPO code is shared)."""
        n = self.n
        return MarkovGame(
            transitions=(),
            rewards=(self.P.reshape(1, n, 1, n),),
            action_mask=(np.ones((1, n), dtype=bool),),
            name=self.name,
        )


def rock_paper_scissors() -> MatrixGame:
    """Rock–paper–scissors: each class beats the next for sure; the equilibrium is uniform."""
    P = np.array([[0.5, 1.0, 0.0], [0.0, 0.5, 1.0], [1.0, 0.0, 0.5]])
    return MatrixGame(P, name="rock_paper_scissors")


def asymmetric_cycle(margins: tuple[float, float, float] = (0.1, 0.2, 0.4)) -> MatrixGame:
    """A 3-cycle with unequal margins: 0 beats 1 by m₀, 1 beats 2 by m₁, 2 beats 0 by m₂.

    P = ½ + A with A antisymmetric; the unique equilibrium solves A x = 0, which gives
    x ∝ (m₁, m₂, m₀): the default margins give (2/7, 4/7, 1/7), far from uniform.
    """
    m0, m1, m2 = margins
    if not all(0 < m <= 0.5 for m in margins):
        raise InputError(f"asymmetric_cycle: margins must lie in (0, 0.5], got {margins}")
    A = np.array([[0.0, m0, -m2], [-m0, 0.0, m1], [m2, -m1, 0.0]])
    return MatrixGame(0.5 + A, name="asymmetric_cycle")


def random_nontransitive(n: int = 5, seed: int = 0) -> MatrixGame:
    """A random game with a unique, full-support equilibrium (no Condorcet winner), from a seed.

    P = ½ + A with A antisymmetric and A x* = 0 for a random interior x*: A = U J Uᵀ, where U is
    a random orthonormal basis of the complement of x* and J is block-diagonal with 2×2 rotation
    blocks [[0, c], [−c, 0]], c ~ U(½, 1). So A has rank n − 1, its null space is x* alone, and
    x* is the only equilibrium (xᵀA ≥ 0 together with x*ᵀA = 0 forces xᵀA = 0). The blocks keep
    the non-zero singular values within a factor 2 of each other, so the game is non-transitive
    in every direction rather than nearly degenerate. n must be odd (an antisymmetric matrix has
    even rank, so for even n the null space, and the equilibrium set, would not be unique).
    """
    if n < 3 or n % 2 == 0:
        raise InputError(f"random_nontransitive: n must be odd and ≥ 3 (unique equilibrium), got {n}")
    rng = np.random.default_rng(seed)
    x = rng.dirichlet(np.ones(n)) * 0.5 + 0.5 / n  # every class well inside the support
    basis, _ = np.linalg.qr(np.column_stack([x, rng.normal(size=(n, n - 1))]))
    U = basis[:, 1:]  # (n, n−1) orthonormal, orthogonal to x
    J = np.zeros((n - 1, n - 1))
    for k in range(0, n - 1, 2):
        c = rng.uniform(0.5, 1.0)
        J[k, k + 1], J[k + 1, k] = c, -c
    A = U @ J @ U.T
    A = 0.5 * (A - A.T)  # exact antisymmetry after floating point
    A *= 0.5 / np.abs(A).max()
    return MatrixGame(0.5 + A, name=f"random_n{n}_s{seed}")


def running_sum_classes(correctness_weight: float = 0.7) -> MatrixGame:
    """The ``running_sum`` task's class game: its 8 answer classes (right/wrong × 3 styles and
    none) under the rule judge at the task's default margins — the exact stand-in of a self-play
    run on the task. ``correctness_weight=0`` leaves the pure style cycle."""
    from games.tasks.running_sum import RunningSumTask

    P = RunningSumTask(correctness_weight=correctness_weight).class_matrix
    return MatrixGame(P, name=f"running_sum_w{correctness_weight:g}")


BUILTIN_GAMES = {
    "rock_paper_scissors": rock_paper_scissors,
    "rps": rock_paper_scissors,
    "asymmetric_cycle": asymmetric_cycle,
    "random": random_nontransitive,
    "running_sum": running_sum_classes,
    "running_sum_style": lambda: running_sum_classes(0.0),
}


def builtin_game(name: str, *, seed: int = 0, size: int = 5) -> MatrixGame:
    """A built-in matrix game by name (``random`` has ``size`` classes drawn from ``seed``)."""
    if name not in BUILTIN_GAMES:
        raise InputError(f"unknown built-in game {name!r}; choose from {sorted(BUILTIN_GAMES)}")
    return BUILTIN_GAMES[name](size, seed) if name == "random" else BUILTIN_GAMES[name]()


def load_payoff(path: str) -> MatrixGame:
    """A matrix game from a ``.npy`` file holding P."""
    try:
        P = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: not a .npy array ({e})") from None
    return MatrixGame(P, name=str(path))
