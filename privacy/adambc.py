"""DP-AdamBC: Adam with the DP-noise bias removed from its second moment.

Tang, Shpilevskiy & Lécuyer, "DP-AdamBC: Your DP-Adam Is Actually DP-SGD (Unless You Apply Bias
Correction)", AAAI 2024 (arXiv:2312.14334).

Why. The privatised gradient is g = ḡ + z with z ~ N(0, Φ·I), Φ = (σ·R/B)² (σ the noise
multiplier, R the clipping bound, B the expected batch size). Adam's second-moment estimate then
has E[v̂] ≈ E[ḡ²] + Φ: the noise adds the same Φ to every coordinate. Under DP, Φ usually dwarfs
E[ḡ²], so sqrt(v̂) ≈ sqrt(Φ) everywhere and DP-Adam is DP-SGD with momentum and step lr/sqrt(Φ);
the per-coordinate scaling that makes Adam Adam is lost. Subtracting Φ makes v̂ − Φ an estimate
of E[ḡ²] without that bias and restores the scaling.

Update, per parameter, with g = p.grad (already privatised) and t the step count:

    m ← β1·m + (1−β1)·g            m̂ = m / (1 − β1^t)
    v ← β2·v + (1−β2)·g²           v̂ = v / (1 − β2^t)
    p ← p − lr·wd·p                (decoupled weight decay, as AdamW, applied first)
    p ← p − lr · m̂ / sqrt(max(v̂ − Φ, γ'))

γ' (``eps``) floors the corrected estimate, which can be ≤ 0 because v̂ is noisy. As in the paper
the floor is inside the square root (max before sqrt) and nothing is added outside it (no Adam
ε in sqrt(v̂) + ε). Sources checked:
  - the update: the paper's DP-AdamBC rule (as its abstract and a transcription of its algorithm,
    junaidaliop.github.io/zij/math/dpadambc/, give it) and the authors' code,
    github.com/ubc-systopia/DP-AdamBC: jax_implementation/trainer/dp_adambc.py
    (``m / jnp.sqrt(jnp.maximum(nu_hat - noise_err, eps_root))``) and
    pytorch_implementation/adam_corr.py (the same with ``torch.maximum``);
  - γ' = 1e-8, the default of ``--eps_root`` in that code (jax_implementation/trainer/dp_adambc.py,
    pytorch_implementation/opacus_text_classification.py), hence ``eps=1e-8``. The runs tune it per
    task (README: 1e-9 CIFAR-10, 7e-9 QNLI; GNN/configs/dpgcn.py: 4.3e-9). The paper's experiment
    section could not be consulted when this was written: the default is the code's;
  - weight decay: the paper has none and the authors' torch code adds coupled L2 (g + wd·p); the
    decoupled form here is this module's choice (identical when wd = 0).

With Φ = 0 and v̂ ≥ γ' this is AdamW with ε = 0.

Privacy: the optimizer only post-processes the privatised gradient (and Φ, a public constant
derived from σ, R and B), so the mechanism's guarantee and its accountant are unchanged.

State per parameter, as torch's Adam: ``step`` (0-dim float tensor), ``exp_avg`` (m),
``exp_avg_sq`` (v). ``noise_variance`` (Φ) is a param-group hyper-parameter, so a learner can
set it and it is saved with ``state_dict()``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch


class DPAdamBC(torch.optim.Optimizer):
    """Adam whose second moment has the DP noise variance ``noise_variance`` (Φ) subtracted,
    floored at ``eps`` (γ') inside the square root; decoupled ``weight_decay`` as AdamW."""

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, noise_variance: float = 0.0):
        if not lr >= 0.0:
            raise ValueError(f"invalid learning rate: {lr}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"invalid betas: {betas}")
        if not eps > 0.0:  # the floor is all that keeps the denominator away from 0
            raise ValueError(f"invalid eps (the floor γ' must be > 0): {eps}")
        if not weight_decay >= 0.0:
            raise ValueError(f"invalid weight_decay: {weight_decay}")
        if not noise_variance >= 0.0:
            raise ValueError(f"invalid noise_variance: {noise_variance}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      noise_variance=noise_variance))

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, wd, floor, phi = group["lr"], group["weight_decay"], group["eps"], group["noise_variance"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if g.is_sparse:
                    raise RuntimeError("DPAdamBC does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                t = state["step"].item()
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(beta1).add_(g, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                if wd != 0:
                    p.mul_(1 - lr * wd)
                denom = (v / (1 - beta2 ** t)).sub_(phi).clamp_(min=floor).sqrt_()
                p.addcdiv_(m, denom, value=-lr / (1 - beta1 ** t))
        return loss
