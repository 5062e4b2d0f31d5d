"""The GPU paths in one short run: a bf16 learner step and the ``hf`` generator on this machine's
accelerator, and — with two or more GPUs — a sharded (FSDP2, NCCL) learner step against the
single-process full-batch step. On a machine without a GPU it runs the same code on the CPU (the
device-less case), which is how it is checked here.

    .venv/bin/python bench/gpu_check.py

Ends with one JSON line: device, the learner's seconds per step (float32 and bfloat16), the
generator's tokens/s, and the FSDP step's largest difference from the single-process step (null
with fewer than two GPUs).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIZES = dict(hidden_size=256, layers=6, heads=4, intermediate_size=768)


def sampled_batch(path: str, task, n: int = 16, k: int = 2):
    """The ``hf`` generator (bf16, on the accelerator) samples K answers to n states: its tokens/s,
    and a training batch of those answers with their sampling log-probs and made-up targets."""
    import torch

    from actors.generator import RolloutGenerator
    from framework.batching import collate

    gen = RolloutGenerator(model_path=path, backend="hf", max_new_tokens=16, dtype="bfloat16")
    states = task.heldout_states(n, seed=1)[:n]
    gen.sample(states[:4], k=k, seed=0)  # warm-up
    start = time.perf_counter()
    samples = [s for group in gen.sample(states, k=k, seed=1) for s in group]
    tokens_per_s = sum(len(s.token_ids) for s in samples) / (time.perf_counter() - start)
    prompts = [gen.encode(state) for state in states for _ in range(k)]
    q_hat = torch.rand(len(samples), generator=torch.Generator().manual_seed(0)).tolist()
    batch = collate(prompts, [s.token_ids for s in samples], pad_id=gen.pad_id(),
                    logp_old=[sum(s.logprobs) for s in samples], q_hat=q_hat, baseline=[0.5] * len(samples))
    return batch, tokens_per_s


def learner_step_s(path: str, batch, dtype: str, steps: int = 5) -> float:
    import torch

    from actors.learner import Learner

    learner = Learner(model_path=path, lr=1e-3, dtype=dtype)
    learner.train(batch, algorithm="mpo", eta=1.0, minibatches=1)  # warm-up
    if learner.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        out = learner.train(batch, algorithm="mpo", eta=1.0, minibatches=1)
    if learner.device.type == "cuda":
        torch.cuda.synchronize()
    assert all(p.device.type == learner.device.type for p in learner.module.parameters())
    assert out["loss"] == out["loss"], "NaN loss"
    return (time.perf_counter() - start) / steps


def _fsdp_rank(rank: int, path: str, batch, address: str, out: str) -> None:
    from actors.learner import Learner

    os.environ["CUDA_VISIBLE_DEVICES"] = str(rank)  # as Ray gives each rank its own GPU
    learner = Learner(model_path=path, rank=rank, world_size=2, init_method=address, lr=1e-3, strategy="fsdp")
    learner.train(batch.shard(2)[rank], algorithm="mpo", eta=1.0, minibatches=1)
    weights = learner.weights()
    if rank == 0:
        from safetensors.torch import save_file

        save_file(weights, out)


def fsdp_max_diff(path: str, batch) -> float | None:
    import torch
    import torch.multiprocessing as mp
    from safetensors.torch import load_file

    from actors.learner import Learner

    if torch.cuda.device_count() < 2:
        return None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    out = os.path.join(tempfile.mkdtemp(), "fsdp.safetensors")
    mp.spawn(_fsdp_rank, args=(path, batch, address, out), nprocs=2, join=True)
    single = Learner(model_path=path, lr=1e-3)
    single.train(batch, algorithm="mpo", eta=1.0, minibatches=1)
    sharded = load_file(out)
    return max(float((sharded[k] - v).abs().max()) for k, v in single.weights().items())


def main() -> dict:
    import torch

    from framework.models import TinyModelSpec, accelerator, build_tiny_model
    from games.tasks import get_task

    task = get_task("running_sum", turns=2)
    path = str(build_tiny_model(TinyModelSpec(**SIZES), task.tokenizer_corpus(0), seed=0,
                                cache_dir=tempfile.mkdtemp(prefix="gpu-check-")))
    device = accelerator()
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    batch, tokens_per_s = sampled_batch(path, task)
    result = {"device": name, "gpus": torch.cuda.device_count(),
              "learner_step_s": {d: round(learner_step_s(path, batch, d), 4) for d in ("float32", "bfloat16")},
              "generator_tokens_per_s": round(tokens_per_s, 1),
              "fsdp_max_abs_diff": fsdp_max_diff(path, batch)}
    print(f"device {name}: learner step {result['learner_step_s']} s, hf generator (bf16) "
          f"{result['generator_tokens_per_s']} tokens/s, FSDP vs single {result['fsdp_max_abs_diff']}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
