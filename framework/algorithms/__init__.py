"""The algorithm registry: every method the pipeline runs, by its ``algo.name``.

One module per family holds all of a method's specifics (``hooks.py`` says what a method is):

    mpo.py    MPO, and the self-play plan the family shares      (mpo)
    ompo.py   OMPO: the previous iterate's answers as its memory (ompo)
    sppo.py   SPPO, and the whole-conversation plan               (sppo)
    dpo.py    preference pairs on self-play data                  (dpo, ipo, step_dpo)
    spin.py   the contrast with demonstrations, IRFT's rounds     (spin, irft)
    sft.py    maximum likelihood on demonstrations                (sft)
    rft.py    an explicit reward model and a policy step on it    (rft)

``tabular.py`` is the exact (tabular) lab, apart from the pipeline.
"""

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
