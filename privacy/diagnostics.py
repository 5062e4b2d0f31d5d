"""The one-step loss-improvement analysis of a DP-Adam step, measured on held-out data.

Setting. n held-out examples (never private data; they stand in for the private population)
with per-sample losses ℓ_i: L = (1/n) Σ ℓ_i, G = ∇L, H = ∇²L, per-sample gradients g_i, clip
factors c_i = clip_factors(‖g_i‖, R, clipping) (privacy/engine/clipping.py), clipped gradients
u_i = c_i g_i with mean G_c = (1/n) Σ u_i and sample covariance Σ_c = 1/(n−1) Σ (u_i − G_c)(u_i − G_c)ᵀ.

The step. w ← w − η P G̃ with G̃ = (1/B) Σ_{i∈S} u_i + z, z ~ N(0, σ²R²/B² I), S a Poisson
sample of expected size B, P = diag(p) Adam's preconditioner 1/(√v̂ + ε) of that step (the DP
learner passes a function of G_c: v̂ after the step in expectation, see ``preconditioner``), held fixed over the
step (momentum ignored: this is the step of one fresh noisy gradient). P = I is DP-SGD.

Moments. E[G̃] = G_c exactly (each example enters S with probability q = B/N, so
E[Σ_{i∈S} u_i] / B = (q/B) Σ u_i = G_c). For the covariance we use

    Cov[G̃] ≈ Σ_c / B + σ²R²/B² I,

the covariance of a mean of B i.i.d. draws from the u_i. This is an approximation: Poisson
sampling's exact covariance is (1−q)/(NB) Σ u_i u_iᵀ = (1−q)(Σ_c + G_c G_cᵀ)/B (population Σ_c);
we drop the factor (1−q) (q ≪ 1 for private data) and the G_c G_cᵀ/B from the random batch size
(a 1/B relative correction to (PG_c)ᵀH(PG_c) below).

Expansion. L(w − ηPG̃) ≈ L(w) − η GᵀPG̃ + η²/2 G̃ᵀPHPG̃; with E[xᵀMx] = E[x]ᵀM E[x] + tr(M Cov[x]),

    E[ΔL(η)] ≈ η GᵀPG_c − η²/2 [(PG_c)ᵀH(PG_c) + tr(PHPΣ_c)/B + σ²R² tr(PHP)/B²]  =:  η s − η²/2 c,

maximised at η* = s/c with ΔL* = s²/(2c) (nan if c ≤ 0). Keys: P = I gives ``signal`` (GᵀG_c),
``clipped_gthg``, ``minibatch_term``, ``noise_term`` (σ²R² tr H/B², the "decelerator", large early
where tr H is large); the ``pre_`` keys are the same with P. The old unclipped analysis
ΔL = η GᵀG − η²/2 (GᵀHG + σ²R² tr H/B²) survives as ``gtg``, ``gthg``. Noise-to-signal:
E‖z‖ ≈ σR√d/B against ‖G_c‖ (d parameters); after preconditioning ‖Pz‖ ≈ σR√(Σ p_j²)/B against ‖PG_c‖.

Estimators. tr H = E[vᵀHv] and tr(PHP) = E[(Pv)ᵀH(Pv)] with Rademacher v (the same v for both;
exact for diagonal H and P). tr(HΣ_c): on the subset S_k = first k of torch.randperm(n, generator)
(k = covariance_samples, drawn before the probes), with the subset's own mean ū,

    1/(k−1) Σ_{i∈S_k} (u_i − ū)ᵀ H (u_i − ū),

unbiased for tr(HΣ_c) (the sample covariance of a sample drawn without replacement is unbiased for
the finite population's (n−1)-divisor covariance), equal to it when k = n; tr(PHPΣ_c) likewise with
P(u_i − ū).

Cost. n per-sample backward passes, one forward and create_graph backward of the mean loss, then
Hessian-vector products (one backward each through the retained graph): 2 + probes + k without
P, 3 + 2·probes + 2k with P. Memory: k + O(1) parameter-sized vectors.
"""

from __future__ import annotations

import math

import torch

from privacy.engine.clipping import clip_factors

Vec = list[torch.Tensor]


def _dot(a: Vec, b: Vec) -> float:
    return float(sum((x * y).sum() for x, y in zip(a, b)))


def _grad(out: torch.Tensor, params: Vec, **kw) -> Vec:
    """d out / d params, zeros for parameters ``out`` does not depend on."""
    if not out.requires_grad:
        return [torch.zeros_like(p) for p in params]
    gs = torch.autograd.grad(out, params, allow_unused=True, **kw)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(gs, params)]


def _hvp(loss_fn, params: Vec):
    """(gradient, v ↦ Hv) of loss_fn at params, by double backward: one forward and one
    create_graph backward, shared by every product (each one more backward)."""
    grads = _grad(loss_fn(), params, create_graph=True)

    def hvp(vec: Vec) -> Vec:
        dot = sum((g * v).sum() for g, v in zip(grads, vec))
        return [h.detach() for h in _grad(dot, params, retain_graph=True)]

    return [g.detach() for g in grads], hvp


def _clipped_gradients(losses_fn, params: Vec, n: int, subset: set[int], max_grad_norm: float,
                       clipping: str) -> tuple[Vec, list[Vec], list[float]]:
    """(G_c, the u_i of ``subset``, every c_i): one backward per example, only the subset's kept."""
    sum_u = [torch.zeros_like(p) for p in params]
    kept, factors = [], []
    for i in range(n):
        g = [t.detach() for t in _grad(losses_fn(torch.tensor([i])).sum(), params)]
        c = clip_factors(torch.sqrt(sum((t * t).sum() for t in g)).reshape(1), max_grad_norm, clipping)
        factors.append(float(c))
        u = [t * c.to(t.dtype) for t in g]
        for s, t in zip(sum_u, u):
            s += t
        if i in subset:
            kept.append(u)
    return [s / n for s in sum_u], kept, factors


def _covariance_quad(hvp, kept: list[Vec], transform) -> float:
    """1/(k−1) Σ_i (T d_i)ᵀ H (T d_i), d_i = u_i − ū over the subset: tr(T H T Σ_c)."""
    mean = [sum(t) / len(kept) for t in zip(*kept)]
    total = 0.0
    for u in kept:
        d = transform([a - m for a, m in zip(u, mean)])
        total += _dot(d, hvp(d))
    return total / (len(kept) - 1)


def _star(s: float, curv: float) -> tuple[float, float]:
    """(η*, ΔL*) of ΔL(η) = η s − η²/2 curv; nan when curv ≤ 0."""
    return (s / curv, s ** 2 / (2 * curv)) if curv > 0 else (float("nan"), float("nan"))


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("nan")


def curvature_diagnostics(losses_fn, params: Vec, *, n: int, noise_multiplier: float, max_grad_norm: float,
                          batch_size: float, clipping: str = "flat", preconditioner=None,
                          probes: int = 4, covariance_samples: int = 8,
                          generator: torch.Generator | None = None) -> dict:
    """The analysis above on n held-out examples. ``losses_fn(rows)``: per-sample losses (len(rows),)
    of the examples ``rows`` (int64 CPU indices into 0..n−1), differentiable in ``params``;
    ``preconditioner``: p per parameter (P = diag(p)), or a function of G_c giving it (the step's
    own second moment depends on its gradient), identity when None; ``batch_size``: the
    expected (Poisson) batch size B. Returns floats (see the module docstring for each key)."""
    params = list(params)
    k = min(covariance_samples, n)
    if k < 2 or probes < 1:
        raise ValueError(f"need ≥ 2 examples for the covariance term and ≥ 1 probe, got n={n}, "
                         f"covariance_samples={covariance_samples}, probes={probes}")
    sigma_r, b = noise_multiplier * max_grad_norm, float(batch_size)
    subset = set(torch.randperm(n, generator=generator)[:k].tolist())
    gc, kept, factors = _clipped_gradients(losses_fn, params, n, subset, max_grad_norm, clipping)
    if callable(preconditioner):
        preconditioner = preconditioner(gc)
    if preconditioner is not None and (len(preconditioner) != len(params) or
                                       any(q.shape != p.shape for q, p in zip(preconditioner, params))):
        raise ValueError("preconditioner must be one tensor per parameter, of the parameter's shape")
    grads, hvp = _hvp(lambda: losses_fn(torch.arange(n)).mean(), params)
    probes_v = [[(torch.randint(0, 2, p.shape, generator=generator) * 2 - 1).to(device=p.device, dtype=p.dtype)
                 for p in params] for _ in range(probes)]

    tr_h = sum(_dot(v, hvp(v)) for v in probes_v) / probes

    def analysis(pre, trace: float | None = None) -> dict:
        """The terms of the step with preconditioner ``pre`` (a map on parameter vectors);
        ``trace``: tr(PHP) when known (tr H for P = I)."""
        pgc = pre(gc)
        signal, curv = _dot(grads, pgc), _dot(pgc, hvp(pgc))
        minibatch = _covariance_quad(hvp, kept, pre) / b
        if trace is None:
            trace = sum(_dot(pre(v), hvp(pre(v))) for v in probes_v) / probes
        noise = sigma_r ** 2 * trace / b ** 2
        eta, imp = _star(signal, curv + minibatch + noise)
        p_sq = sum(float((x * x).sum()) for x in pre([torch.ones_like(p) for p in params]))
        return {"signal": signal, "gthg": curv, "minibatch_term": minibatch, "noise_term": noise, "eta_star": eta,
                "improvement_star": imp, "noise_to_signal": _ratio(sigma_r * math.sqrt(p_sq) / b,
                                                                   math.sqrt(_dot(pgc, pgc)))}

    plain = analysis(lambda vec: vec, tr_h)
    pre = plain if preconditioner is None else analysis(lambda vec: [q * t for q, t in zip(preconditioner, vec)])
    return {"gtg": _dot(grads, grads), "gthg": _dot(grads, hvp(grads)),
            "trace_h": tr_h, "clip_mean": sum(factors) / n,
            **{("clipped_gthg" if key == "gthg" else key): value for key, value in plain.items()},
            **{f"pre_{key}": value for key, value in pre.items()}}
