"""The ``vllm`` generation backend: one vLLM engine per generator, kept across policy versions.

New weights are loaded in place, with no engine restart: ``LLM.collective_rpc`` calls
``WeightLoader.load_safetensors`` (mixed into vLLM's worker through ``worker_extension_cls``), which
hands the learner's Hugging Face-named tensors to the worker's own in-place ``reload_weights``
(vLLM ≥ 0.32); then the prefix cache is dropped (its KV entries hold the old weights' keys and
values). The state dict travels as one safetensors blob: vLLM's RPC encoding turns tensors inside
untyped arguments into lists.
"""

from __future__ import annotations

import os

from framework.records import Sample

# vLLM's CPU defaults keep one core for its scheduler and size the KV cache from free memory;
# on a small machine use every core this process may run on and a 1 GiB cache. GPU builds
# ignore these variables.
CPU_ENV_DEFAULTS = {
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
}


def _set_cpu_env_defaults() -> None:
    for key, value in CPU_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    # the cores this process may run on (all of them unless it was pinned before the engine started)
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", ",".join(map(str, sorted(os.sched_getaffinity(0)))))


class WeightLoader:
    """Methods added to vLLM's worker class (it runs them in the engine's worker process)."""

    def load_safetensors(self, blob: bytes) -> None:
        from safetensors.torch import load

        self.reload_weights(weights_iterator=load(blob).items(), is_checkpoint_format=True)


class VLLMBackend:
    """Samples with a vLLM engine and reports each sampled token's raw log-probability.

    Args:
        model_path: the policy's directory (or hub id); vLLM loads it itself.
        tokenizer: the policy's tokenizer (end-of-turn token, decoding).
        max_new_tokens: response length cap.
        dtype: weights and activations; float32 keeps log-probs equal to the learner's.
        enforce_eager: no torch.compile or CUDA graphs; default: on CPU only (compiling there
            takes minutes and gains little for small models).
        gpu_memory_utilization: GPU memory fraction for this engine (weights + KV cache); the
            generators, the reference generator and the learner share one GPU by default.
    """

    def __init__(self, *, model_path: str, tokenizer, max_new_tokens: int, dtype: str = "float32",
                 enforce_eager: bool | None = None, gpu_memory_utilization: float = 0.3):
        import torch

        _set_cpu_env_defaults()
        from vllm import LLM

        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.model_path, self.dtype = str(model_path), dtype
        self.buffers: dict | None = None
        on_cpu = not torch.cuda.is_available()
        self.llm = LLM(
            model=str(model_path), dtype=dtype, seed=0, gpu_memory_utilization=gpu_memory_utilization,
            enforce_eager=on_cpu if enforce_eager is None else enforce_eager,
            # vLLM 0.32 on CPU: a seeded request whose prefill is split across steps crashes the
            # engine ("CPU Generator does not use offset"); whole prefills avoid it
            enable_chunked_prefill=not on_cpu,
            # the sampling distribution is exactly softmax(logits): no defaults from
            # generation_config.json, log-probs before any logits processing
            generation_config="vllm", logprobs_mode="raw_logprobs",
            worker_extension_cls=f"{__name__}.WeightLoader",
        )

    def receive_buffers(self) -> tuple[dict, bool]:
        """Hugging Face-named tensors beside the engine (the starting policy until a broadcast
        fills them), handed to ``load_state_dict`` after each broadcast."""
        if self.buffers is None:
            from framework.models import accelerator, load_policy

            model = load_policy(self.model_path, dtype=self.dtype)[0]
            self.buffers = {k: v.detach().to(accelerator()) for k, v in model.state_dict().items()}
        return self.buffers, False

    def load_state_dict(self, state_dict: dict) -> None:
        from safetensors.torch import save

        blob = save({name: t.detach().contiguous() for name, t in state_dict.items()})
        self.llm.collective_rpc("load_safetensors", args=(blob,))
        self.llm.reset_prefix_cache()

    def generate(self, prompts: list[list[int]], *, k: int, seed: int, temperature: float = 1.0) -> list[list[Sample]]:
        """K samples per prompt at ``temperature`` (0: greedy, the argmax); log-probs at temperature 1.

        Row i of the flattened (prompt, sample) list draws from its own generator seeded by
        (seed, i): the result does not depend on how the engine batches or schedules requests.
        """
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        tok = self.tokenizer
        rows = [p for p in prompts for _ in range(k)]
        params = [
            SamplingParams(temperature=temperature, top_k=0, top_p=1.0, min_p=0.0,
                           max_tokens=self.max_new_tokens, logprobs=0, stop_token_ids=[tok.eos_token_id],
                           seed=(seed * 1_000_003 + i) % 2**63, detokenize=False)
            for i in range(len(rows))
        ]
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in rows], params,
                                    use_tqdm=False)
        samples = []
        for out in outputs:
            c = out.outputs[0]
            ids = list(c.token_ids)  # the end-of-turn token is included when it was sampled
            logprobs = [c.logprobs[t][tid].logprob for t, tid in enumerate(ids)]
            samples.append(Sample(ids, logprobs, tok.decode(ids, skip_special_tokens=True)))
        return [samples[j * k:(j + 1) * k] for j in range(len(prompts))]
