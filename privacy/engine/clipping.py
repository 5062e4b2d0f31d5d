"""Per-sample clip factors: the one place the clipping rule lives (the engines and the
diagnostics use it).

    flat       c_i = min(1, R / (‖g_i‖ + 1e-6))     Abadi et al. 2016 (Opacus's ``flat``)
    automatic  c_i = R / (‖g_i‖ + γ), γ = 0.01      Bu et al., "Automatic clipping", NeurIPS 2023
                                                    (normalised: every example counts about R)
    none       c_i = 1                              no clipping (σ must be 0: nothing is bounded)

Under ``flat`` and ``automatic`` every clipped per-sample gradient has norm < R, so the sum's
sensitivity to one example is R and the accountant's ε for noise σR is unchanged.
"""

from __future__ import annotations

import torch

CLIPPINGS = ("flat", "automatic")
AUTOMATIC_GAMMA = 0.01


def clip_factors(norms: torch.Tensor, max_grad_norm: float, clipping: str) -> torch.Tensor:
    """c_i for per-sample gradient norms (B,)."""
    if clipping == "flat":
        return (max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
    if clipping == "automatic":
        return max_grad_norm / (norms + AUTOMATIC_GAMMA)
    if clipping == "none":
        return torch.ones_like(norms)
    raise ValueError(f"clipping must be one of {CLIPPINGS + ('none',)}, got {clipping!r}")
