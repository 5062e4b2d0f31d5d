"""Per-sample clipping and Gaussian noise for a causal LM, with Opacus underneath.

``PrivateEngine`` wraps the user's own model and optimizer (Opacus's ``GradSampleModule`` /
ghost-clipping module and ``DPOptimizer``); ``step`` takes one *logical* batch of sequences —
split into physical chunks the way Opacus's ``BatchMemoryManager`` does (clip and accumulate,
skip the update until the last chunk) — and makes one noisy update. Sampling and accounting are
the caller's (the DP learner owns its Poisson sampler and its budget).

``check_model`` runs before anything trains: layers Opacus cannot make private (BatchNorm, …)
and tied parameters under ghost clipping are errors naming the modules; ``layer_report`` says per
module how its per-sample gradient is computed (ghost norm, per-sample hooks, functorch fallback).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from framework.errors import InputError

MODES = ("auto", "bookkeeping", "ghost", "hooks")


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


def resolve_mode(model: nn.Module, mode: str) -> str:
    """``auto``: alignplay's book-keeping clipping (``privacy.fastclip``) when the model allows it,
    else Opacus's ghost clipping unless parameters are tied (which it refuses), else Opacus's hooks."""
    from privacy.fastclip import supports

    if mode not in MODES:
        raise InputError(f"grad_sample_mode must be one of {MODES}, got {mode!r}")
    if mode == "auto":
        return "bookkeeping" if not supports(model) else "hooks" if tied_parameters(model) else "ghost"
    return mode


def make_engine(model: nn.Module, optimizer: torch.optim.Optimizer, *, mode: str = "auto", **kwargs):
    """The clipping engine for ``mode``: ``BookKeepingEngine`` or Opacus's (``PrivateEngine``)."""
    mode = resolve_mode(model, mode)
    if mode == "bookkeeping":
        from privacy.fastclip import BookKeepingEngine

        return BookKeepingEngine(model, optimizer, **kwargs)
    return PrivateEngine(model, optimizer, mode=mode, **kwargs)


def layer_report(model: nn.Module, mode: str) -> dict[str, list[str]]:
    """Trainable modules by how their per-sample gradients are computed under ``mode``."""
    from opacus.grad_sample import GradSampleModule
    from opacus.grad_sample.grad_sample_module_fast_gradient_clipping import (
        GradSampleModuleFastGradientClipping as Ghost,
    )

    from privacy.fastclip import _is_rmsnorm

    report: dict[str, list[str]] = {"ghost_norm": [], "per_sample_hooks": [], "functorch_fallback": []}
    if mode == "bookkeeping":
        report = {"bookkeeping": [], "rmsnorm": [], "functorch_fallback": []}
    for name, m in model.named_modules():
        if not any(p.requires_grad for p in m.parameters(recurse=False)):
            continue
        if mode == "bookkeeping":
            kind = ("bookkeeping" if type(m) in (nn.Linear, nn.Embedding) else
                    "rmsnorm" if _is_rmsnorm(m) else "functorch_fallback")
            report[kind].append(name if kind != "functorch_fallback" else f"{name} ({type(m).__name__})")
        elif mode == "ghost" and type(m) in Ghost.NORM_SAMPLERS:
            report["ghost_norm"].append(name)
        elif type(m) in GradSampleModule.GRAD_SAMPLERS:
            report["per_sample_hooks"].append(name)
        else:
            report["functorch_fallback"].append(f"{name} ({type(m).__name__})")
    return report


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


def lm_loss(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """Per-sequence mean next-token loss, (B,)."""
    b, t, v = logits.shape
    per_token = F.cross_entropy(logits[:, :-1].reshape(-1, v), input_ids[:, 1:].reshape(-1), reduction="none")
    return per_token.view(b, t - 1).mean(dim=1)


class PrivateEngine:
    """Opacus's per-sample clipping (ghost or hooks) and noise around a model and its optimizer.

    Args:
        model: the causal LM (left as is; ``self.module`` wraps it, parameters shared).
        optimizer: its optimizer; its state (e.g. Adam moments) is kept.
        noise_multiplier: σ (noise std = σ · max_grad_norm on the summed clipped gradient).
        max_grad_norm: R, the per-sample clipping bound.
        expected_batch_size: q · N, the divisor of the noisy sum (Poisson batches vary in size).
        mode: ``auto`` | ``ghost`` | ``hooks``.
        generator: torch generator of the noise (seeded runs are reproducible; not secure RNG).
        distributed: one of several data-parallel workers (a torch.distributed group): each clips
            its own examples, rank 0 alone adds the noise, the sums are all-reduced — noise is
            added once per logical step. ``expected_batch_size`` is then this worker's share.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, *, noise_multiplier: float,
                 max_grad_norm: float, expected_batch_size: float, mode: str = "auto",
                 generator: torch.Generator | None = None, distributed: bool = False):
        from opacus.grad_sample.utils import prepare_module
        from opacus.optimizers import get_optimizer_class

        if noise_multiplier < 0 or not max_grad_norm > 0 or not expected_batch_size > 0:
            raise InputError(f"need noise_multiplier ≥ 0, max_grad_norm > 0 and expected_batch_size ≥ 1, got "
                             f"{noise_multiplier}, {max_grad_norm}, {expected_batch_size}")
        self.mode = resolve_mode(model, mode)
        if self.mode == "bookkeeping":  # this engine is Opacus's: its best mode for the model
            self.mode = "hooks" if tied_parameters(model) else "ghost"
        check_model(model, self.mode)
        self.model = model
        extra = {"max_grad_norm": max_grad_norm} if self.mode == "ghost" else {}
        self.module = prepare_module(model, grad_sample_mode=self.mode, batch_first=True,
                                     loss_reduction="mean", **extra)
        self.distributed = distributed
        cls = get_optimizer_class(clipping="flat", distributed=distributed, grad_sample_mode=self.mode)
        self.optimizer = cls(optimizer=optimizer, noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm,
                             expected_batch_size=expected_batch_size, loss_reduction="mean", generator=generator)
        self.params = [p for p in model.parameters() if p.requires_grad]

    def _backward(self, chunk: torch.Tensor) -> torch.Tensor:
        """Forward and backward of one physical chunk; per-sample losses (B,)."""
        logits = self.module(input_ids=chunk).logits
        loss = lm_loss(logits, chunk)
        if self.mode == "ghost":
            from opacus.utils.fast_gradient_clipping_utils import DPTensorFastGradientClipping

            DPTensorFastGradientClipping(self.module, self.optimizer, loss, "mean").backward()
        else:
            loss.mean().backward()
        return loss.detach()

    def gradient(self, batch: torch.Tensor, *, physical_batch: int | None = None) -> float:
        """Leave the noisy gradient of a logical batch (N, T) in ``p.grad``: per-sample clipped
        gradients summed over physical chunks, plus N(0, σ²R²) noise, divided by the expected
        batch size. Returns the batch's mean loss (NaN for an empty batch)."""
        refuse_aggregated(self.params)
        self.module.train()
        if len(batch) == 0:  # an empty Poisson batch still costs a step: pure noise
            for p in self.params:
                if self.mode == "ghost":
                    p.grad = torch.zeros_like(p)  # ghost clipping accumulates the clipped sum from p.grad
                else:
                    p.grad_sample = p.new_zeros((0, *p.shape))
            self.optimizer.signal_skip_step(do_skip=False)
            self.optimizer.pre_step()
            if self.distributed:
                self.optimizer.reduce_gradients()
            return float("nan")
        chunks = [c.contiguous() for c in torch.split(batch, physical_batch or len(batch))]
        losses = []
        for i, chunk in enumerate(chunks):
            last = i == len(chunks) - 1
            self.optimizer.signal_skip_step(do_skip=not last)
            losses.append(self._backward(chunk))
            if last:
                self.optimizer.pre_step()  # clip and accumulate, add noise, scale
                if self.distributed:
                    self.optimizer.reduce_gradients()  # sum over workers (rank 0's noise once)
            else:
                self.optimizer.step()      # clip and accumulate only (the step is skipped)
                self.optimizer.zero_grad(set_to_none=True)
        return float(torch.cat(losses).mean())

    def step(self, batch: torch.Tensor, *, physical_batch: int | None = None) -> float:
        """One noisy update on a logical batch (N, T) of token ids; returns its mean loss."""
        loss = self.gradient(batch, physical_batch=physical_batch)
        self.optimizer.original_optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss

    def per_sample_norms(self, batch: torch.Tensor) -> torch.Tensor:
        """Per-sample gradient norms of a batch, before clipping (for tests and diagnostics)."""
        lm_loss(self.module(input_ids=batch).logits, batch).mean().backward()
        if self.mode == "ghost":
            norms = self.module.get_norm_sample()
        else:
            norms = torch.stack([p.grad_sample.reshape(len(batch), -1).norm(dim=1) for p in self.params],
                                dim=1).norm(dim=1)
        self.optimizer.zero_grad(set_to_none=True)
        for p in self.params:
            p.grad_sample = None
        return norms.detach()

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    @contextmanager
    def paused(self):
        """Ordinary forward/backward passes inside (Opacus's per-sample hooks off)."""
        self.module.disable_hooks()
        try:
            yield
        finally:
            self.module.enable_hooks()

    def detach(self) -> nn.Module:
        """Remove Opacus's hooks; the plain model (same parameters) comes back."""
        self.module._close()
        return self.model
