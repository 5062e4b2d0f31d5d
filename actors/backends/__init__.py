"""Generation backends behind one interface (``GenerationBackend``): ``hf`` now, ``vllm`` next."""

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


def make_backend(name: str, **kwargs) -> GenerationBackend:
    from framework.errors import InputError

    if name == "hf":
        from actors.backends.hf import HFBackend

        return HFBackend(**kwargs)
    raise InputError(f"generator.backend: unknown backend {name!r}; choose from ['hf']")
