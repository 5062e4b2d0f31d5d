"""The DP-Adam curvature diagnostics against exact computation: on a quadratic (H diagonal, so
Hutchinson is exact) and on a tiny network (per-sample gradients and Hessian by torch.func)."""

import math

import pytest
import torch
from torch.func import functional_call, grad, jacrev, vmap

from privacy.diagnostics import curvature_diagnostics
from privacy.engine.clipping import AUTOMATIC_GAMMA

A = torch.tensor([1.0, 2.0, 4.0])
X0 = torch.tensor([0.5, 1.0, -1.0])
BS = torch.tensor([[1.0, 0.0, -1.0], [0.0, 0.5, 0.5], [2.0, -1.0, 0.0], [-0.5, 3.0, 1.0],
                   [0.2, 2.0, -4.0], [1.5, 1.0, -3.0]])
N = len(BS)
SIGMA, R, BATCH = 2.0, 3.0, 4.0
P = torch.tensor([0.5, 2.0, 1.5])


def quadratic():
    """ℓ_i(x) = ½ Σ_j a_j x_j² − b_i·x: g_i = a∘x − b_i, H = diag(a)."""
    x = X0.clone().requires_grad_(True)
    return x, lambda rows: 0.5 * (A * x * x).sum() - BS[rows] @ x


def expected(c: torch.Tensor, p: torch.Tensor, subset: torch.Tensor) -> dict:
    """Every key by hand, for clip factors c, preconditioner p and the covariance subset."""
    g = A * X0 - BS  # (n, d) per-sample gradients
    gm = g.mean(0)
    u = c[:, None] * g
    gc = u.mean(0)
    us = u[subset]
    dev = us - us.mean(0)  # centred on the subset's own mean
    k = len(subset)
    tr_h, tr_php = float(A.sum()), float((p * p * A).sum())
    out = {"gtg": float(gm @ gm), "gthg": float((A * gm * gm).sum()), "trace_h": tr_h,
           "noise_term": SIGMA ** 2 * R ** 2 * tr_h / BATCH ** 2, "clip_mean": float(c.mean()),
           "signal": float(gm @ gc), "clipped_gthg": float((A * gc * gc).sum()),
           "minibatch_term": float((A * dev * dev).sum()) / (k - 1) / BATCH,
           "noise_to_signal": SIGMA * R * math.sqrt(3) / BATCH / float(gc.norm()),
           "pre_signal": float(gm @ (p * gc)), "pre_gthg": float((A * (p * gc) ** 2).sum()),
           "pre_minibatch_term": float((A * (p * dev) ** 2).sum()) / (k - 1) / BATCH,
           "pre_noise_term": SIGMA ** 2 * R ** 2 * tr_php / BATCH ** 2,
           "pre_noise_to_signal": SIGMA * R * float(p.norm()) / BATCH / float((p * gc).norm())}
    for pre, quad in (("", "clipped_gthg"), ("pre_", "pre_gthg")):
        curv = out[quad] + out[pre + "minibatch_term"] + out[pre + "noise_term"]
        out[pre + "eta_star"] = out[pre + "signal"] / curv
        out[pre + "improvement_star"] = out[pre + "signal"] ** 2 / (2 * curv)
    return out


def run(clipping="flat", preconditioner=True, k=N, seed=0, probes=3):
    x, losses = quadratic()
    return curvature_diagnostics(losses, [x], n=N, noise_multiplier=SIGMA, max_grad_norm=R, batch_size=BATCH,
                                 clipping=clipping, preconditioner=[P] if preconditioner else None, probes=probes,
                                 covariance_samples=k, generator=torch.Generator().manual_seed(seed))


def test_quadratic_gives_exact_values():
    norms = (A * X0 - BS).norm(dim=1)
    c = (R / (norms + 1e-6)).clamp(max=1.0)
    assert (c < 1).any() and (c == 1).any()  # some samples clipped, some not
    out = run()
    want = expected(c, P, torch.arange(N))
    assert set(out) == set(want)
    for key, value in want.items():
        assert out[key] == pytest.approx(value, rel=1e-5), key


def test_covariance_subset_is_the_first_k_of_the_generators_permutation():
    """k < n: the subset's own mean and 1/(k−1), on the first k of randperm(n, generator)."""
    k, seed = 3, 5
    subset = torch.randperm(N, generator=torch.Generator().manual_seed(seed))[:k]
    c = (R / ((A * X0 - BS).norm(dim=1) + 1e-6)).clamp(max=1.0)
    out, want = run(k=k, seed=seed), expected(c, P, subset)
    for key in ("minibatch_term", "pre_minibatch_term", "eta_star", "pre_improvement_star"):
        assert out[key] == pytest.approx(want[key], rel=1e-5), key


@pytest.mark.parametrize("clipping", ["automatic", "none"])
def test_clipping_rule_changes_the_clip_factors(clipping):
    g = A * X0 - BS
    norms = g.norm(dim=1)
    c = R / (norms + AUTOMATIC_GAMMA) if clipping == "automatic" else torch.ones(N)
    out, want = run(clipping=clipping), expected(c, P, torch.arange(N))
    assert out["clip_mean"] == pytest.approx(float(c.mean()), rel=1e-6)
    assert out["signal"] == pytest.approx(want["signal"], rel=1e-5)
    if clipping == "none":
        assert out["signal"] == pytest.approx(out["gtg"], rel=1e-6)
        assert out["clipped_gthg"] == pytest.approx(out["gthg"], rel=1e-6)
    assert out["clip_mean"] != pytest.approx(run()["clip_mean"])


def tiny_model():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 1))
    data, target = torch.randn(16, 4), torch.randn(16, 1)

    def losses(rows):
        return ((model(data[rows]) - target[rows]) ** 2).squeeze(-1)

    return model, data, target, losses


def test_no_preconditioner_gives_plain_keys_and_ones_agree():
    model, _, _, losses = tiny_model()
    params = list(model.parameters())
    kw = dict(n=16, noise_multiplier=1.0, max_grad_norm=0.5, batch_size=8.0, probes=2, covariance_samples=5)
    out = curvature_diagnostics(losses, params, generator=torch.Generator().manual_seed(1), **kw)
    for key in ("signal", "minibatch_term", "noise_term", "eta_star", "improvement_star", "noise_to_signal"):
        assert out["pre_" + key] == out[key], key
    assert out["pre_gthg"] == out["clipped_gthg"]
    # P = 1 through the preconditioned path: the same numbers (same subset, same probes)
    ones = curvature_diagnostics(losses, params, preconditioner=[torch.ones_like(p) for p in params],
                                 generator=torch.Generator().manual_seed(1), **kw)
    for key, value in out.items():
        assert ones[key] == pytest.approx(value, rel=1e-4, abs=1e-7), key


def test_tiny_network_matches_torch_func():
    """Per-sample gradients by vmap(grad), the Hessian by torch.func.jacrev twice: every key but the
    Hutchinson traces checked against an independent computation, H non-diagonal."""
    model, data, target, losses = tiny_model()
    params = list(model.parameters())
    names = [name for name, _ in model.named_parameters()]
    shapes = [p.shape for p in params]
    flat0 = torch.cat([p.detach().reshape(-1) for p in params])

    def unflat(flat):
        out, at = {}, 0
        for name, shape in zip(names, shapes):
            out[name] = flat[at: at + shape.numel()].reshape(shape)
            at += shape.numel()
        return out

    def sample_loss(flat, x, y):
        return ((functional_call(model, unflat(flat), (x[None],)) - y[None]) ** 2).sum()

    g = vmap(grad(sample_loss), in_dims=(None, 0, 0))(flat0, data, target)  # (n, d)
    # reverse over reverse (torch.func.hessian's forward mode warns about torch.jit on import)
    h = jacrev(jacrev(lambda f: vmap(sample_loss, in_dims=(None, 0, 0))(f, data, target).mean()))(flat0)
    norms = g.norm(dim=1)
    r = float(norms.median())
    c = (r / (norms + 1e-6)).clamp(max=1.0)
    assert (c < 1).any() and (c == 1).any()
    gm, gc = g.mean(0), (c[:, None] * g).mean(0)
    dev = c[:, None] * g - gc
    p = torch.rand(flat0.shape, generator=torch.Generator().manual_seed(3)) + 0.5
    b = 8.0

    out = curvature_diagnostics(losses, params, n=16, noise_multiplier=0.7, max_grad_norm=r, batch_size=b,
                                preconditioner=list(unflat(p).values()), probes=2, covariance_samples=16,
                                generator=torch.Generator().manual_seed(2))
    tol = dict(rel=1e-4, abs=1e-7)
    assert out["clip_mean"] == pytest.approx(float(c.mean()), **tol)
    assert out["signal"] == pytest.approx(float(gm @ gc), **tol)
    assert out["gtg"] == pytest.approx(float(gm @ gm), **tol)
    assert out["gthg"] == pytest.approx(float(gm @ h @ gm), **tol)
    assert out["clipped_gthg"] == pytest.approx(float(gc @ h @ gc), **tol)
    assert out["minibatch_term"] == pytest.approx(float(torch.einsum("ni,ij,nj->", dev, h, dev)) / 15 / b, **tol)
    assert out["pre_signal"] == pytest.approx(float(gm @ (p * gc)), **tol)
    assert out["pre_gthg"] == pytest.approx(float((p * gc) @ h @ (p * gc)), **tol)
    pdev = p * dev
    assert out["pre_minibatch_term"] == pytest.approx(float(torch.einsum("ni,ij,nj->", pdev, h, pdev)) / 15 / b, **tol)
    assert out["noise_to_signal"] == pytest.approx(0.7 * r * math.sqrt(len(flat0)) / b / float(gc.norm()), **tol)
    assert out["pre_noise_to_signal"] == pytest.approx(0.7 * r * float(p.norm()) / b / float((p * gc).norm()), **tol)


def test_a_preconditioner_function_gets_the_clipped_mean_gradient():
    """The learner's P depends on the step's own gradient: a function of G_c, called once with it."""
    x, losses = quadratic()
    seen = []

    def precondition(gc):
        seen.append([t.clone() for t in gc])
        return [P]

    out = curvature_diagnostics(losses, [x], n=N, noise_multiplier=SIGMA, max_grad_norm=R, batch_size=BATCH,
                                preconditioner=precondition, probes=3, covariance_samples=N,
                                generator=torch.Generator().manual_seed(0))
    g = A * X0 - BS
    c = (R / (g.norm(dim=1) + 1e-6)).clamp(max=1.0)
    assert len(seen) == 1
    torch.testing.assert_close(seen[0][0], (c[:, None] * g).mean(0))
    want = run()
    for key, value in want.items():
        assert out[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
