"""DP step benchmark: non-DP, Opacus hooks, Opacus ghost clipping and alignplay's book-keeping
engine, on the same model and batch.

    python bench/dp_step.py [quick=true] [threads=N] [steps=N]

Models: ``tiny`` (hidden 64, 4 layers, vocab 512: the DP example's) and ``small`` (hidden 256,
4 layers, vocab 2048), untied embeddings, batch B = 16 sequences of T ∈ {64, 256} tokens. Each
(model, T, engine) runs in a fresh process: a few warm-up steps, then the median of ``steps``
timed optimizer steps (AdamW; DP engines with σ = 1, R = 1). Memory: on a GPU the peak of
allocated memory during the steps; on a CPU the peak resident memory during the steps minus the
resident memory just before the first step (the step's working set: activations, gradients,
per-sample state, Adam's moments), from ``getrusage``. Ratios are to non-DP.

The last line is one JSON object: ``time_ratio`` and ``mem_ratio`` (engine → ratio to non-DP, for
the tiny model at B = 16, T = 64) and ``results`` (every measurement).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

MODELS = {"tiny": dict(hidden_size=64, layers=4, heads=2, intermediate_size=192, vocab=512),
          "small": dict(hidden_size=256, layers=4, heads=8, intermediate_size=768, vocab=2048)}
ENGINES = ("nondp", "opacus_hooks", "opacus_ghost", "alignplay")
B = 16


def _rss_kb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def measure(model_name: str, seq: int, engine: str, steps: int, threads: int) -> dict:
    """One measurement (run in its own process)."""
    import resource

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from framework.losses import lm_loss
    from privacy.engine import BookKeepingEngine, PrivateEngine

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    m = MODELS[model_name]
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=m["vocab"], hidden_size=m["hidden_size"], intermediate_size=m["intermediate_size"],
        num_hidden_layers=m["layers"], num_attention_heads=m["heads"], num_key_value_heads=m["heads"],
        head_dim=m["hidden_size"] // m["heads"], max_position_embeddings=seq, tie_word_embeddings=False)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(0, m["vocab"], (B, seq), device=device)
    kw = dict(noise_multiplier=1.0, max_grad_norm=1.0, expected_batch_size=B)
    if engine == "nondp":
        def step():
            opt.zero_grad(set_to_none=True)
            lm_loss(logits=model(input_ids=x).logits, input_ids=x).mean().backward()
            opt.step()
    else:
        e = (BookKeepingEngine(model, opt, **kw) if engine == "alignplay" else
             PrivateEngine(model, opt, mode=engine.split("_")[1], **kw))

        def step():
            e.step(x)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_kb() * 1024
    for _ in range(2):
        step()
    times = []
    for _ in range(steps):
        sync()
        t = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t)
    peak = (torch.cuda.max_memory_allocated() if cuda else
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"model": model_name, "seq_len": seq, "engine": engine, "batch": B, "device": device,
            "step_s": statistics.median(times), "mem_bytes": max(peak - base, 1)}


def main(argv: list[str]) -> None:
    opts = dict(a.split("=", 1) for a in argv)
    quick = opts.get("quick", "false") == "true"
    threads = int(opts.get("threads", len(os.sched_getaffinity(0))))
    steps = int(opts.get("steps", 5 if quick else 15))
    grid = [("tiny", 64)] if quick else [("tiny", 64), ("tiny", 256), ("small", 64), ("small", 256)]
    results = []
    for model_name, seq in grid:
        for engine in ENGINES:
            out = subprocess.run([sys.executable, __file__, "--one", model_name, str(seq), engine, str(steps),
                                  str(threads)], capture_output=True, text=True)
            if out.returncode:
                print(out.stderr[-2000:], file=sys.stderr)
                raise SystemExit(f"{model_name} T={seq} {engine}: failed")
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        base = next(r for r in results if (r["model"], r["seq_len"], r["engine"]) == (model_name, seq, "nondp"))
        print(f"\n{model_name} Llama, B={B}, T={seq} ({base['device']}, {threads} threads)")
        print(f"{'engine':<14}{'step ms':>10}{'× time':>9}{'mem MiB':>10}{'× mem':>8}")
        for r in results[-len(ENGINES):]:
            r["time_ratio"], r["mem_ratio"] = r["step_s"] / base["step_s"], r["mem_bytes"] / base["mem_bytes"]
            print(f"{r['engine']:<14}{r['step_s'] * 1e3:>10.1f}{r['time_ratio']:>9.2f}"
                  f"{r['mem_bytes'] / 2**20:>10.1f}{r['mem_ratio']:>8.2f}")
    head = [r for r in results if (r["model"], r["seq_len"]) == ("tiny", 64) and r["engine"] != "nondp"]
    print(json.dumps({"time_ratio": {r["engine"]: round(r["time_ratio"], 3) for r in head},
                      "mem_ratio": {r["engine"]: round(r["mem_ratio"], 3) for r in head},
                      "results": results}))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--one":
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        name, seq, engine, steps, threads = sys.argv[2:7]
        print(json.dumps(measure(name, int(seq), engine, int(steps), int(threads))))
    else:
        main(sys.argv[1:])
