"""The curvature diagnostics on a quadratic, where G, H and tr(H) are known exactly."""

import pytest
import torch

from privacy.diagnostics import curvature_diagnostics


def test_quadratic_gives_exact_values():
    """L(x) = ½ Σ a_i x_i² − b·x: G = a∘x − b, H = diag(a), GᵀHG = Σ a_i G_i², tr(H) = Σ a_i
    (Hutchinson with Rademacher v is exact for a diagonal H: vᵀHv = Σ a_i v_i² = Σ a_i)."""
    a = torch.tensor([1.0, 2.0, 4.0])
    b = torch.tensor([1.0, 0.0, -1.0])
    x = torch.tensor([0.5, 1.0, 1.0], requires_grad=True)
    out = curvature_diagnostics(lambda: 0.5 * (a * x * x).sum() - (b * x).sum(), [x], noise_multiplier=2.0,
                                max_grad_norm=0.5, batch_size=4, probes=3)
    g = torch.tensor([0.5 - 1.0, 2.0, 4.0 + 1.0])  # (−0.5, 2, 5)
    gtg, gthg, tr = float(g @ g), float((a * g * g).sum()), 7.0
    noise = 2.0 ** 2 * 0.5 ** 2 * tr / 4 ** 2
    assert out["gtg"] == pytest.approx(gtg) and out["gthg"] == pytest.approx(gthg)
    assert out["trace_h"] == pytest.approx(tr) and out["noise_term"] == pytest.approx(noise)
    assert out["eta_star"] == pytest.approx(gtg / (gthg + noise))
    assert out["improvement_star"] == pytest.approx(gtg ** 2 / (2 * (gthg + noise)))
