"""Several DP workers under Ray: each clips its own examples, the noise is added once."""

import json

import pytest
import torch

from tests.privacy.engine.test_opacus import V, batch, plain_grads, tiny_llama


class Worker:
    """One rank of a gloo group holding a tiny Llama behind a distributed PrivateEngine."""

    def __init__(self, *, rank: int, world: int, init_method: str, sigma: float, R: float, B: int, mode: str):
        import torch.distributed as dist

        from privacy.engine import make_engine

        torch.set_num_threads(1)
        dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world)
        self.model = tiny_llama()
        self.engine = make_engine(self.model, torch.optim.SGD(self.model.parameters(), lr=0.0),
                                  noise_multiplier=sigma, max_grad_norm=R, expected_batch_size=B / world,
                                  mode=mode, distributed=True, generator=torch.Generator().manual_seed(100 + rank))

    def gradient(self, rows: torch.Tensor) -> torch.Tensor:
        self.engine.gradient(rows)
        out = torch.cat([p.grad.flatten() for p in self.model.parameters()])
        self.engine.zero_grad()
        return out


def _workers(ray, **kwargs):
    from actors.remote import RayCluster

    cluster = RayCluster(modules=(__name__, "tests"))  # the actors import this module (Worker) and its helpers
    init = cluster.init_method()
    return cluster, [cluster.spawn(Worker, rank=r, world=2, init_method=init, **kwargs) for r in range(2)]


@pytest.mark.parametrize("mode", ["ghost", "bookkeeping"])
def test_two_workers_sum_their_clipped_gradients_and_add_the_noise_once(ray_session, mode):
    x = batch(6)
    cluster, workers = _workers(ray_session, sigma=0.0, R=1e6, B=6, mode=mode)
    try:
        # no noise, no clipping: the all-reduced gradient is the full batch's mean gradient
        g0, g1 = cluster.get([w.call(Worker.gradient, x[r::2]) for r, w in enumerate(workers)])
        torch.testing.assert_close(g0, g1)
        expected = torch.cat([g.flatten() for g in plain_grads(tiny_llama(), x)])
        torch.testing.assert_close(g0, expected, rtol=1e-4, atol=1e-6)
    finally:
        cluster.shutdown()
    sigma, R, B = 1.3, 0.7, 4
    cluster, workers = _workers(ray_session, sigma=sigma, R=R, B=B, mode=mode)
    try:
        empty = x[:0]
        n0, n1 = cluster.get([w.call(Worker.gradient, empty) for w in workers])
        torch.testing.assert_close(n0, n1)  # the same update on every worker
        # once: std σR/B (noise from both ranks would give √2 σR/B)
        assert float(n0.std()) == pytest.approx(sigma * R / B, rel=0.02)
    finally:
        cluster.shutdown()


def test_a_dp_run_with_two_workers(ray_session, dp_config, dp_model, tmp_path):
    from framework.jobs.dp import run as run_dp

    cfg = dp_config("dp.method=dp_continual", "dp.workers=2", "dp.threads=1")
    summary = run_dp(cfg, tmp_path, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in rows] == ["public"] * 4 + ["private"] * 4
    assert summary["final"]["epsilon"] == pytest.approx(cfg.dp.target_epsilon, rel=1e-3)
    assert summary["final"]["eval_loss"] < summary["start"]["eval_loss"]
    assert sorted(p.name for p in (tmp_path / "checkpoints" / "final").glob("rng-*")) == \
        ["rng-0.safetensors", "rng-1.safetensors"]
