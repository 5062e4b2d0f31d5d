"""Per-sample clipping engines for a causal LM, behind one interface (``gradient``, ``step``,
``per_sample_norms``, ``zero_grad``, ``paused``, ``detach``):

    checks.py       what must hold first (no BatchNorm, untied parameters, no summed gradients)
    bookkeeping.py  alignplay's one-backward book-keeping clipping (``BookKeepingEngine``)
    opacus.py       Opacus's ghost clipping or per-sample hooks (``PrivateEngine``)
    factory.py      ``make_engine`` for ``dp.grad_sample_mode``, and the per-layer report
"""

from privacy.engine.bookkeeping import BookKeepingEngine
from privacy.engine.factory import MODES, layer_report, make_engine, resolve_mode
from privacy.engine.opacus import PrivateEngine

__all__ = ["MODES", "BookKeepingEngine", "PrivateEngine", "layer_report", "make_engine", "resolve_mode"]
