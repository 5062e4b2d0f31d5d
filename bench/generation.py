"""Generation benchmark: tokens/s of the ``hf`` and ``vllm`` backends on the same weights.

Two randomly initialised Llamas — ``tiny`` (the quickstart's sizes: hidden 64, 4 layers, 2 heads)
and ``small`` (hidden 256, 6 layers, 4 heads of dim 64) — sample K answers to the same
running_sum prompts at temperature 1, as the self-play generators do. Each backend gets every
core of this machine. Each backend makes one untimed call with the whole workload first (the
first calls at new shapes are several times slower, in torch and in vLLM alike), then the median
of three timed calls is reported, the steady state that a long self-play run sees. Engine start
is reported apart.
Needs vLLM (`make test-vllm` builds .venv-vllm):

    .venv-vllm/bin/python bench/generation.py [quick=true]

Ends with one JSON line: vllm_over_hf (throughput ratio per model), tokens_per_s, engine_start_s.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

MODELS = {
    "tiny": dict(hidden_size=64, layers=4, heads=2, intermediate_size=192),
    "small": dict(hidden_size=256, layers=6, heads=4, intermediate_size=768),
}


def timed_generate(backend, prompts, *, k: int, repeats: int = 3) -> tuple[float, int]:
    """Median seconds of a generate call over the whole workload, and the tokens it sampled."""
    backend.generate(prompts, k=k, seed=repeats)  # warm-up at the workload's shapes
    seconds, tokens = [], []
    for seed in range(repeats):
        start = time.perf_counter()
        groups = backend.generate(prompts, k=k, seed=seed)
        seconds.append(time.perf_counter() - start)
        tokens.append(sum(len(s.token_ids) for g in groups for s in g))
    middle = sorted(range(repeats), key=seconds.__getitem__)[repeats // 2]
    return seconds[middle], tokens[middle]


def bench_model(name: str, path, prompts, *, k: int, max_new_tokens: int) -> dict:
    import torch

    from actors.backends import make_backend
    from framework.models import load_policy

    model, tok = load_policy(path)
    params = sum(p.numel() for p in model.parameters())
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    hf = make_backend("hf", model_path=str(path), model=model, tokenizer=tok, max_new_tokens=max_new_tokens)
    hf_s, hf_tokens = timed_generate(hf, prompts, k=k)
    start = time.perf_counter()
    vllm = make_backend("vllm", model_path=str(path), model=model, tokenizer=tok, max_new_tokens=max_new_tokens)
    engine_s = time.perf_counter() - start
    vllm_s, vllm_tokens = timed_generate(vllm, prompts, k=k)
    vllm.llm.llm_engine.engine_core.shutdown()
    return {"model": name, "params": params, "engine_start_s": engine_s,
            "hf": {"seconds": hf_s, "tokens": hf_tokens, "tokens_per_s": hf_tokens / hf_s},
            "vllm": {"seconds": vllm_s, "tokens": vllm_tokens, "tokens_per_s": vllm_tokens / vllm_s}}


def main(quick: bool) -> dict:
    from framework.models import TinyModelSpec, build_tiny_model
    from games.tasks import get_task

    n_prompts, k, max_new_tokens = (16, 4, 16) if quick else (64, 4, 32)
    scratch = tempfile.mkdtemp(prefix="bench-generation-")
    os.environ.setdefault("VLLM_CACHE_ROOT", os.path.join(scratch, "vllm"))
    task = get_task("running_sum", turns=3)
    results = []
    for name, sizes in MODELS.items():
        path = build_tiny_model(TinyModelSpec(**sizes), task.tokenizer_corpus(0), seed=0, cache_dir=scratch)
        from framework.models import load_policy

        tok = load_policy(path)[1]
        prompts = [list(tok.apply_chat_template(s, add_generation_prompt=True, tokenize=True)["input_ids"])
                   for s in task.heldout_states(n_prompts // task.turns + 1, seed=0)][:n_prompts]
        results.append(bench_model(name, path, prompts, k=k, max_new_tokens=max_new_tokens))

    # other processes' load skews both backends (OpenMP threads spin-wait for a busy core)
    load = os.getloadavg()[0]
    print(f"\n{n_prompts} prompts × K={k}, ≤{max_new_tokens} new tokens, temperature 1, "
          f"{len(os.sched_getaffinity(0))} cores, load average {load:.1f} at the end\n")
    print(f"{'model':<6} {'params':>8} {'backend':<7} {'seconds':>8} {'tokens':>7} {'tokens/s':>9}")
    for r in results:
        for backend in ("hf", "vllm"):
            b = r[backend]
            print(f"{r['model']:<6} {r['params'] / 1e6:>7.2f}M {backend:<7} {b['seconds']:>8.2f} "
                  f"{b['tokens']:>7} {b['tokens_per_s']:>9.0f}")
    print("vLLM engine start: " + ", ".join(f"{r['model']} {r['engine_start_s']:.0f} s" for r in results))
    summary = {
        "vllm_over_hf": {r["model"]: round(r["vllm"]["tokens_per_s"] / r["hf"]["tokens_per_s"], 3) for r in results},
        "tokens_per_s": {r["model"]: {b: round(r[b]["tokens_per_s"], 1) for b in ("hf", "vllm")} for r in results},
        "engine_start_s": {r["model"]: round(r["engine_start_s"], 1) for r in results},
        "params": {r["model"]: r["params"] for r in results},
        "workload": {"prompts": n_prompts, "k": k, "max_new_tokens": max_new_tokens},
        "load_average": round(load, 2),
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":  # vLLM spawns its engine processes: they re-import this module
    main(quick="quick=true" in sys.argv[1:])
