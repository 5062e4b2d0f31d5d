"""Which clipping engine a model gets (``dp.grad_sample_mode``), and how each of its layers'
per-sample gradients is computed under it (the run report's layer table)."""

from __future__ import annotations

import torch
from torch import nn

from framework.errors import InputError
from privacy.engine.bookkeeping import BookKeepingEngine, supports
from privacy.engine.checks import is_rmsnorm, tied_parameters
from privacy.engine.opacus import PrivateEngine

MODES = ("auto", "bookkeeping", "ghost", "hooks")


def resolve_mode(model: nn.Module, mode: str) -> str:
    """``auto``: alignplay's book-keeping clipping when the model allows it, else Opacus's ghost
    clipping unless parameters are tied (which it refuses), else Opacus's hooks."""
    if mode not in MODES:
        raise InputError(f"grad_sample_mode must be one of {MODES}, got {mode!r}")
    if mode == "auto":
        return "bookkeeping" if not supports(model) else "hooks" if tied_parameters(model) else "ghost"
    return mode


def make_engine(model: nn.Module, optimizer: torch.optim.Optimizer, *, mode: str = "auto", **kwargs):
    """The clipping engine for ``mode``: ``BookKeepingEngine`` or Opacus's (``PrivateEngine``)."""
    mode = resolve_mode(model, mode)
    if mode == "bookkeeping":
        return BookKeepingEngine(model, optimizer, **kwargs)
    return PrivateEngine(model, optimizer, mode=mode, **kwargs)


def layer_report(model: nn.Module, mode: str) -> dict[str, list[str]]:
    """Trainable modules by how their per-sample gradients are computed under ``mode``."""
    from opacus.grad_sample import GradSampleModule
    from opacus.grad_sample.grad_sample_module_fast_gradient_clipping import (
        GradSampleModuleFastGradientClipping as Ghost,
    )

    report: dict[str, list[str]] = {"ghost_norm": [], "per_sample_hooks": [], "functorch_fallback": []}
    if mode == "bookkeeping":
        report = {"bookkeeping": [], "rmsnorm": [], "functorch_fallback": []}
    for name, m in model.named_modules():
        if not any(p.requires_grad for p in m.parameters(recurse=False)):
            continue
        if mode == "bookkeeping":
            kind = ("bookkeeping" if type(m) in (nn.Linear, nn.Embedding) else
                    "rmsnorm" if is_rmsnorm(m) else "functorch_fallback")
            report[kind].append(name if kind != "functorch_fallback" else f"{name} ({type(m).__name__})")
        elif mode == "ghost" and type(m) in Ghost.NORM_SAMPLERS:
            report["ghost_norm"].append(name)
        elif type(m) in GradSampleModule.GRAD_SAMPLERS:
            report["per_sample_hooks"].append(name)
        else:
            report["functorch_fallback"].append(f"{name} ({type(m).__name__})")
    return report
