"""Differentially private training: per-sample clipping engines (``engine``: Opacus's and our
book-keeping one), accounting and the budget (``accounting``), one-run auditing (``audit``), the
stdlib corpus with canaries (``corpus``), the curvature analysis (``diagnostics``) and the DP
learner role (``learner``)."""
