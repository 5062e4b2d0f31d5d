"""The loss-improvement analysis of DP pre-training, measured on a model.

For an update w ← w − η g with g = G + noise (noise std σR/B per coordinate), a second-order
expansion gives the expected one-step improvement

    ΔL(η) = η GᵀG − η²/2 (GᵀHG + σ²R² tr(H) / B²),

maximised at η* = GᵀG / (GᵀHG + σ²R² tr(H)/B²) with ΔL* = (GᵀG)² / (2 (GᵀHG + σ²R² tr(H)/B²)).
The noise term σ²R² tr(H)/B² is the "decelerator": large early in training, where tr(H) is
large, which is why a short public phase first pays off. G is the full-batch gradient (estimated
on a held-out batch, never on private data), H the Hessian, tr(H) by Hutchinson's estimator
E[vᵀHv] with Rademacher v.
"""

from __future__ import annotations

import torch


def _hvp(loss_fn, params: list[torch.Tensor], vec: list[torch.Tensor]) -> tuple[list, list]:
    """(gradient, Hessian-vector product) of loss_fn at params, by double backward."""
    loss = loss_fn()
    grads = torch.autograd.grad(loss, params, create_graph=True)
    dot = sum((g * v).sum() for g, v in zip(grads, vec))
    hv = torch.autograd.grad(dot, params)
    return [g.detach() for g in grads], list(hv)


def curvature_diagnostics(loss_fn, params: list[torch.Tensor], *, noise_multiplier: float,
                          max_grad_norm: float, batch_size: int, probes: int = 4,
                          generator: torch.Generator | None = None) -> dict:
    """GᵀG, GᵀHG, tr(H) (Hutchinson, ``probes`` vectors), the noise term and η*, ΔL*."""
    loss = loss_fn()
    grads = [g.detach() for g in torch.autograd.grad(loss, params)]
    _, hg = _hvp(loss_fn, params, grads)
    gtg = float(sum((g * g).sum() for g in grads))
    gthg = float(sum((g * h).sum() for g, h in zip(grads, hg)))
    traces = []
    for _ in range(probes):
        v = [(torch.randint(0, 2, p.shape, generator=generator, dtype=p.dtype) * 2 - 1).to(p.device) for p in params]
        _, hv = _hvp(loss_fn, params, v)
        traces.append(float(sum((a * b).sum() for a, b in zip(v, hv))))
    tr_h = sum(traces) / len(traces)
    noise = noise_multiplier ** 2 * max_grad_norm ** 2 * tr_h / batch_size ** 2
    curv = gthg + noise
    return {"gtg": gtg, "gthg": gthg, "trace_h": tr_h, "noise_term": noise,
            "eta_star": gtg / curv if curv > 0 else float("nan"),
            "improvement_star": gtg ** 2 / (2 * curv) if curv > 0 else float("nan")}
