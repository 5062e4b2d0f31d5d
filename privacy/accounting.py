"""Privacy accounting on Opacus's accountants, and a budget that is never exceeded.

``epsilon`` and ``noise_multiplier_for`` are the two directions of one question for the subsampled
Gaussian mechanism (Poisson sampling at rate q, noise σ·R, ``steps`` steps). ``Budget`` tracks the
steps actually taken, refuses the one that would cross the target ε, and round-trips through a
checkpoint as JSON (the accountant's history), so a resumed run reports exactly the same ε.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

from framework.errors import InputError

ACCOUNTANTS = ("rdp", "prv")


def _accountant(name: str):
    from opacus.accountants import PRVAccountant, RDPAccountant

    if name not in ACCOUNTANTS:
        raise InputError(f"accountant must be one of {ACCOUNTANTS}, got {name!r}")
    return RDPAccountant() if name == "rdp" else PRVAccountant()


def _check(*, sample_rate: float, delta: float, steps: int) -> None:
    if not 0 < sample_rate <= 1:
        raise InputError(f"sample_rate must be in (0, 1], got {sample_rate}")
    if not 0 < delta < 1:
        raise InputError(f"delta must be in (0, 1), got {delta}")
    if steps < 0:
        raise InputError(f"steps must be ≥ 0, got {steps}")


def epsilon_of_history(history: list[tuple[float, float, int]], *, delta: float, accountant: str) -> float:
    """ε spent by a sequence of (noise_multiplier, sample_rate, steps) phases."""
    history = [(float(s), float(q), int(n)) for s, q, n in history if n > 0]
    if not history:
        return 0.0
    acc = _accountant(accountant)
    acc.history = history
    return float(acc.get_epsilon(delta))


def epsilon(*, noise_multiplier: float, sample_rate: float, steps: int, delta: float,
            accountant: str = "rdp") -> float:
    """ε(δ) after ``steps`` steps of the Poisson-subsampled Gaussian mechanism.

    >>> round(epsilon(noise_multiplier=1.5, sample_rate=0.04, steps=2250, delta=1e-5), 5)
    7.32911
    """
    _check(sample_rate=sample_rate, delta=delta, steps=steps)
    if not noise_multiplier > 0:
        raise InputError(f"noise_multiplier must be > 0, got {noise_multiplier}")
    return epsilon_of_history([(noise_multiplier, sample_rate, steps)], delta=delta, accountant=accountant)


def noise_multiplier_for(*, target_epsilon: float, delta: float, sample_rate: float, steps: int,
                         accountant: str = "rdp", tolerance: float = 1e-4) -> float:
    """The smallest σ (to ``tolerance`` in ε) whose ``steps`` steps spend at most ``target_epsilon``."""
    _check(sample_rate=sample_rate, delta=delta, steps=steps)
    if not target_epsilon > 0 or steps < 1:
        raise InputError(f"need target_epsilon > 0 and steps ≥ 1, got {target_epsilon} and {steps}")

    def eps(sigma: float) -> float:
        return epsilon(noise_multiplier=sigma, sample_rate=sample_rate, steps=steps, delta=delta,
                       accountant=accountant)

    lo, hi = 0.0, 1.0
    while eps(hi) > target_epsilon:
        lo, hi = hi, 2 * hi
        if hi > 1e4:
            raise InputError(f"no noise multiplier ≤ 1e4 reaches ε = {target_epsilon} in {steps} steps "
                             f"at sample rate {sample_rate}")
    # bisection on σ: ε is decreasing in σ; stop when the ε interval is within tolerance
    while True:
        mid = (lo + hi) / 2
        if mid <= 0 or hi - lo < 1e-9:
            return hi
        e = eps(mid)
        if e > target_epsilon:
            lo = mid
        else:
            hi = mid
            if target_epsilon - e < tolerance:
                return hi


def plan_noise(*, private_sequences: int, batch_size: int, private_steps: int, target_epsilon: float,
               delta: float | None, noise_multiplier: float | None, stop_at_budget: bool,
               accountant: str = "rdp") -> float:
    """σ of a private phase over ``private_sequences`` ≥ ``batch_size`` sequences (q = batch_size / N,
    δ default 1/(10 N)): the smallest σ whose ``private_steps`` steps fit ``target_epsilon``, or the
    given one if its schedule fits (else refused, unless the run is to stop at the budget). The
    DP job's preflight asks this before anything is written; errors name the ``dp.`` keys."""
    q = batch_size / private_sequences
    delta = delta if delta is not None else 1 / (10 * private_sequences)
    with warnings.catch_warnings():  # Opacus warns when the best RDP order is its smallest: ε is still a bound
        warnings.simplefilter("ignore")
        if noise_multiplier is None:
            try:
                return noise_multiplier_for(target_epsilon=target_epsilon, delta=delta, sample_rate=q,
                                            steps=private_steps, accountant=accountant)
            except InputError as e:
                raise InputError(f"dp.target_epsilon={target_epsilon}: {e} (δ={delta:.3g}); raise it, or lower "
                                 f"dp.private_steps or dp.batch_size") from None
        planned = epsilon(noise_multiplier=noise_multiplier, sample_rate=q, steps=private_steps, delta=delta,
                          accountant=accountant)
    if planned > target_epsilon and not stop_at_budget:
        raise InputError(
            f"dp: the schedule does not fit the budget: dp.private_steps={private_steps} at dp.noise_multiplier="
            f"{noise_multiplier}, "
            f"q={q:.4g} spend ε={planned:.3f} > dp.target_epsilon={target_epsilon} "
            f"(δ={delta:.3g}); lower dp.private_steps, leave dp.noise_multiplier empty to "
            f"compute σ, or set dp.stop_at_budget=true to stop at the last step inside it")
    return noise_multiplier


@dataclass
class Budget:
    """A target (ε, δ) and the phases spent so far; ``step`` refuses to cross the target."""

    target_epsilon: float
    delta: float
    accountant: str = "rdp"
    history: list[tuple[float, float, int]] = field(default_factory=list)

    def __post_init__(self):
        _accountant(self.accountant)
        if not self.target_epsilon > 0 or not 0 < self.delta < 1:
            raise InputError(f"budget: need ε > 0 and δ in (0, 1), got ({self.target_epsilon}, {self.delta})")

    def spent(self) -> float:
        return epsilon_of_history(self.history, delta=self.delta, accountant=self.accountant)

    def _after(self, noise_multiplier: float, sample_rate: float, steps: int = 1) -> list:
        hist = [tuple(h) for h in self.history]
        if hist and hist[-1][0] == noise_multiplier and hist[-1][1] == sample_rate:
            hist[-1] = (noise_multiplier, sample_rate, hist[-1][2] + steps)
        else:
            hist.append((noise_multiplier, sample_rate, steps))
        return hist

    def allows(self, *, noise_multiplier: float, sample_rate: float, steps: int = 1) -> bool:
        """Whether ``steps`` more steps stay within the target ε."""
        after = self._after(noise_multiplier, sample_rate, steps)
        return epsilon_of_history(after, delta=self.delta, accountant=self.accountant) <= self.target_epsilon

    def step(self, *, noise_multiplier: float, sample_rate: float) -> None:
        """Record one step that was taken (call ``allows`` first)."""
        self.history = self._after(noise_multiplier, sample_rate)

    def state_dict(self) -> dict:
        return {"target_epsilon": self.target_epsilon, "delta": self.delta, "accountant": self.accountant,
                "history": [list(h) for h in self.history]}

    @classmethod
    def from_state_dict(cls, state: dict) -> "Budget":
        return cls(target_epsilon=state["target_epsilon"], delta=state["delta"], accountant=state["accountant"],
                   history=[(float(s), float(q), int(n)) for s, q, n in state["history"]])
