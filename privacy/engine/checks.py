"""What must hold before a model is trained privately: no layer that mixes examples, untied
parameters where an engine needs them, no gradients from an ordinary backward."""

from __future__ import annotations

import torch
from torch import nn

from framework.errors import InputError


def tied_parameters(model: nn.Module) -> list[str]:
    """Names of parameters that appear under more than one name (e.g. tied embeddings)."""
    seen: dict[int, str] = {}
    tied = []
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            tied.append(f"{name} (= {seen[id(p)]})")
        else:
            seen[id(p)] = name
    return tied


def is_rmsnorm(module: nn.Module) -> bool:
    """Hugging Face's RMSNorms: one ``weight`` of the feature size and ``variance_epsilon``."""
    names = [n for n, _ in module.named_parameters(recurse=False)]
    return type(module).__name__.endswith("RMSNorm") and names == ["weight"] and hasattr(module, "variance_epsilon")


def check_model(model: nn.Module, mode: str) -> None:
    """Errors, naming the modules, for what cannot be trained privately under ``mode``."""
    from opacus.validators import ModuleValidator

    was_training = model.training
    model.train()  # the validator inspects the training-mode model
    errors = ModuleValidator.validate(model, strict=False)
    model.train(was_training)
    if errors:
        names = "; ".join(str(e).splitlines()[0] for e in errors[:5])
        raise InputError(f"the model has layers that per-sample clipping cannot handle: {names} "
                         f"(e.g. BatchNorm mixes examples; use GroupNorm/LayerNorm)")
    if mode in ("ghost", "bookkeeping") and (tied := tied_parameters(model)):
        raise InputError(f"ghost clipping needs untied parameters, but these are tied: {', '.join(tied)} "
                         f"(untie them, e.g. tie_word_embeddings=False, or use grad_sample_mode=hooks)")


def refuse_aggregated(params: list[torch.Tensor]) -> None:
    """Per-sample clipping needs gradients per example: summed ones from an ordinary backward are misuse."""
    if any(p.grad is not None and p.grad.abs().sum() > 0 for p in params):
        raise InputError("the model already holds aggregated gradients (a backward outside the private "
                         "engine?): per-sample clipping needs them per example; zero them first")
