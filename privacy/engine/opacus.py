"""Per-sample clipping and Gaussian noise for a causal LM by Opacus (``PrivateEngine``).

It wraps the user's own model and optimizer (Opacus's ``GradSampleModule`` / ghost-clipping
module and ``DPOptimizer``); ``step`` takes one *logical* batch of sequences — split into physical
chunks the way Opacus's ``BatchMemoryManager`` does (clip and accumulate, skip the update until
the last chunk) — and makes one noisy update. Sampling and accounting are the caller's (the DP
learner owns its Poisson sampler and its budget).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from framework.errors import InputError
from framework.losses import lm_loss
from privacy.engine.checks import check_model, refuse_aggregated, tied_parameters

MODES = ("auto", "ghost", "hooks")


class PrivateEngine:
    """Opacus's per-sample clipping (ghost or hooks) and noise around a model and its optimizer.

    Args:
        model: the causal LM (left as is; ``self.module`` wraps it, parameters shared).
        optimizer: its optimizer; its state (e.g. Adam moments) is kept.
        noise_multiplier: σ (noise std = σ · max_grad_norm on the summed clipped gradient).
        max_grad_norm: R, the per-sample clipping bound.
        expected_batch_size: q · N, the divisor of the noisy sum (Poisson batches vary in size).
        mode: ``ghost`` (ghost clipping), ``hooks`` (per-sample gradients) or ``auto``: ghost
            clipping unless parameters are tied (which it refuses), else hooks.
        generator: torch generator of the noise (seeded runs are reproducible; not secure RNG).
        distributed: one of several data-parallel workers (a torch.distributed group): each clips
            its own examples, rank 0 alone adds the noise, the sums are all-reduced — noise is
            added once per logical step. ``expected_batch_size`` is then this worker's share.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, *, noise_multiplier: float,
                 max_grad_norm: float, expected_batch_size: float, mode: str = "auto",
                 generator: torch.Generator | None = None, distributed: bool = False, clipping: str = "flat"):
        from opacus.grad_sample.utils import prepare_module
        from opacus.optimizers import get_optimizer_class

        if noise_multiplier < 0 or not max_grad_norm > 0 or not expected_batch_size > 0:
            raise InputError(f"need noise_multiplier ≥ 0, max_grad_norm > 0 and expected_batch_size ≥ 1, got "
                             f"{noise_multiplier}, {max_grad_norm}, {expected_batch_size}")
        if clipping != "flat":
            raise InputError(f"Opacus's engines clip flat only; clipping={clipping!r} needs the book-keeping engine")
        if mode not in MODES:
            raise InputError(f"Opacus's grad_sample_mode must be one of {MODES}, got {mode!r}")
        self.mode = ("hooks" if tied_parameters(model) else "ghost") if mode == "auto" else mode
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
        loss = lm_loss(logits=logits, input_ids=chunk)
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
        lm_loss(logits=self.module(input_ids=batch).logits, input_ids=batch).mean().backward()
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
