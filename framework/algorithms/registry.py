"""The registry: every method the pipeline runs, by its ``algo.name`` (adding a method is its
own module and one entry here)."""

from __future__ import annotations

from framework.algorithms import dpo, mpo, ompo, rft, sft, spin, sppo
from framework.algorithms.hooks import Algorithm
from framework.errors import InputError

ALGORITHMS: dict[str, Algorithm] = {a.name: a for a in (
    mpo.MPO, ompo.OMPO, sppo.SPPO, dpo.DPO, dpo.IPO, dpo.STEP_DPO, spin.SPIN, spin.IRFT, sft.SFT, rft.RFT)}


def algorithm_names() -> list[str]:
    return sorted(ALGORITHMS)


def get_algorithm(name: str) -> Algorithm:
    if name not in ALGORITHMS:
        raise InputError(f"unknown algorithm {name!r}; choose from {algorithm_names()}")
    return ALGORITHMS[name]


def implementing(setting: str) -> list[str]:
    """The methods that implement a method-specific ``algo.*`` setting (``Algorithm.accepts``)."""
    return [name for name in algorithm_names() if setting in ALGORITHMS[name].accepts]
