"""The methods: what a method is to the pipeline (``hooks.py``), the registry of every method
the pipeline runs by its ``algo.name`` (``registry.py``), and one module per family holding all of
its specifics:

    mpo.py    MPO, and the self-play plan the family shares      (mpo)
    ompo.py   OMPO: the previous iterate's answers as its memory (ompo)
    sppo.py   SPPO, and the whole-conversation plan               (sppo)
    dpo.py    preference pairs on self-play data                  (dpo, ipo, step_dpo)
    spin.py   the contrast with demonstrations, IRFT's rounds     (spin, irft)
    sft.py    maximum likelihood on demonstrations                (sft)
    rft.py    an explicit reward model and a policy step on it    (rft)

``tabular.py`` is the exact (tabular) lab, apart from the pipeline.
"""
