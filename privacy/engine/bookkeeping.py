"""Book-keeping per-sample clipping: DP gradients at near non-private cost (Bu et al., ICML 2023).

One forward and one backward pass. Forward hooks keep each layer's input activations a (B, T, p);
hooks on the layer outputs keep the output gradients g (B, T, d) of the summed per-sample loss.
The backward computes only activation gradients: weights are frozen for its duration, so autograd
never forms the (unclipped) weight gradients. From the stored a and g, per layer:

- per-sample gradient norms, by the cheaper of two exact forms
    ghost norm      ‖Σ_t g_tᵀ a_t‖² = Σ_{t,s} (a_t·a_s)(g_t·g_s)      cost B·T²·(p + d)
    instantiation   G_i = g_iᵀ a_i, then ‖G_i‖²                        cost B·T·p·d (memory B·p·d)
  (ghost when 2T² < p·d); an Embedding's ghost form uses [idx_t = idx_s] in place of a_t·a_s;
- after the norms of all layers give the clip factors c_i (``clipping``: flat
  c_i = min(1, R / (‖G_i‖ + 1e-6)), automatic R / (‖G_i‖ + 0.01); privacy/engine/clipping.py), the
  clipped sum Σ_i c_i G_i = (c∘g)ᵀ a — one matmul from the same stored tensors (no second
  backward pass; with instantiation, Σ_i c_i G_i directly).

Linear and Embedding layers (nearly all of an LM's parameters) are handled here, and Hugging
Face's RMSNorms (weight ∘ h(x): per-sample gradient Σ_t g_t ∘ h_t); any other layer with
parameters gets its per-sample gradients from Opacus's functorch fallback on the same stored
tensors. Noise is Opacus's (same generator calls, same parameter order), so with a
fixed noise seed the result equals Opacus's. The clipping and noise formulas follow Opacus's DP
optimizer: ``(Σ_i c_i G_i + N(0, σ²R²)) / expected_batch_size``.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from framework.errors import InputError
from framework.losses import lm_loss
from privacy.engine.checks import check_model, is_rmsnorm, refuse_aggregated, tied_parameters
from privacy.engine.clipping import clip_factors


def _rmsnorm_input(module: nn.Module, a: torch.Tensor) -> torch.Tensor:
    """h with RMSNorm(a) = weight ∘ h (Hugging Face's ``*RMSNorm``: float32 statistics)."""
    x = a.float()
    return (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + module.variance_epsilon)).to(a.dtype)


def _embedding_norms(idx: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Per-sample ‖Σ_t e_{idx_t} g_tᵀ‖² = Σ_{t,s} [idx_t = idx_s] g_t·g_s, (B,)."""
    same = (idx[:, :, None] == idx[:, None, :]).to(g.dtype)
    return (same * (g @ g.transpose(1, 2))).sum(dim=(1, 2))


class BookKeepingEngine:
    """Per-sample clipping by book-keeping, and Opacus's Gaussian noise, around a model and optimizer.

    Same interface as ``privacy.engine.opacus.PrivateEngine`` (``gradient``, ``step``,
    ``per_sample_norms``, ``zero_grad``, ``paused``, ``detach``).
    """

    mode = "bookkeeping"

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, *, noise_multiplier: float,
                 max_grad_norm: float, expected_batch_size: float, generator: torch.Generator | None = None,
                 distributed: bool = False, loss_fn=None, clipping: str = "flat"):
        if noise_multiplier < 0 or not max_grad_norm > 0 or not expected_batch_size > 0:
            raise InputError(f"need noise_multiplier ≥ 0, max_grad_norm > 0 and expected_batch_size > 0, got "
                             f"{noise_multiplier}, {max_grad_norm}, {expected_batch_size}")
        if tied := tied_parameters(model):
            raise InputError(f"book-keeping clipping needs untied parameters, but these are tied: {', '.join(tied)}")
        check_model(model, "hooks")
        if clipping == "none" and noise_multiplier > 0:
            raise InputError("unclipped gradients have no sensitivity bound: noise needs clipping='flat' or 'automatic'")
        clip_factors(torch.ones(1), max_grad_norm, clipping)  # (an unknown rule fails here)
        self.clipping = clipping
        self.model, self.optimizer = model, optimizer
        self.noise_multiplier, self.max_grad_norm = noise_multiplier, max_grad_norm
        self.expected_batch_size, self.generator, self.distributed = expected_batch_size, generator, distributed
        self.loss_fn = loss_fn or (lambda m, x: lm_loss(logits=m(input_ids=x).logits, input_ids=x))
        self.params = [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]
        self.layers: dict[nn.Module, str] = {}
        for module in model.modules():
            own = [p for p in module.parameters(recurse=False) if p.requires_grad]
            if own:
                self.layers[module] = ("linear" if type(module) is nn.Linear else
                                       "embedding" if type(module) is nn.Embedding else
                                       "rmsnorm" if is_rmsnorm(module) else "fallback")
        self.active = False
        self._acts: dict[nn.Module, torch.Tensor] = {}
        self._sq, self._parts = None, []
        self._handles = [m.register_forward_hook(self._capture) for m in self.layers]

    # --- capture: each layer's work happens as its output gradient arrives ----------------------
    def _capture(self, module, inputs, output):
        if not self.active:
            return None
        self._acts[module] = inputs[0].detach()
        if not output.requires_grad:  # the first layer's output is where the backward starts to matter
            output = output.requires_grad_()
        output.register_hook(lambda g, m=module: self._on_grad(m, g.detach()))
        return output

    def _on_grad(self, module: nn.Module, g: torch.Tensor) -> None:
        """Per-sample squared norm of this layer, and what its clipped sum will need: the per-sample
        gradients when they take less memory than keeping (a, g) — then a and g are dropped now."""
        kind, a = self.layers[module], self._acts.pop(module)
        if a.dim() == 2 and kind != "embedding":
            a, g = a[:, None], g[:, None]
        if kind == "linear":
            t, p, d = a.shape[1], a.shape[-1], g.shape[-1]
            if p * d <= t * (p + d):  # instantiate: B·p·d kept instead of B·T·(p + d), and no B·T² work
                per_sample = g.transpose(1, 2) @ a
                self._sq += per_sample.pow(2).sum(dim=(1, 2))
                kept = {module.weight: per_sample}
                if module.bias is not None:
                    kept[module.bias] = g.sum(dim=1)
                    self._sq += kept[module.bias].pow(2).sum(dim=1)
                self._parts.append((module, "per_sample", kept))
                return
            self._sq += ((a @ a.transpose(1, 2)) * (g @ g.transpose(1, 2))).sum(dim=(1, 2))  # ghost norm
            if module.bias is not None:
                self._sq += g.sum(dim=1).pow(2).sum(dim=1)
            self._parts.append((module, "linear", (a, g)))
        elif kind == "embedding":
            if module.padding_idx is not None:  # the padding row gets no gradient
                g = g * (a != module.padding_idx)[..., None].to(g.dtype)
            self._sq += _embedding_norms(a, g)
            self._parts.append((module, "embedding", (a, g)))
        elif kind == "rmsnorm":  # Σ_t g_t ∘ h_t: (B, d)
            per_sample = (g * _rmsnorm_input(module, a)).sum(dim=1)
            self._sq += per_sample.pow(2).sum(dim=1)
            self._parts.append((module, "per_sample", {module.weight: per_sample}))
        else:
            from opacus.grad_sample.functorch import ft_compute_per_sample_gradient

            with torch.enable_grad():
                per_sample = ft_compute_per_sample_gradient(module, [a], g)
            for gs in per_sample.values():
                self._sq += gs.reshape(len(gs), -1).pow(2).sum(dim=1)
            self._parts.append((module, "per_sample", per_sample))

    @contextmanager
    def _frozen(self):
        """Weights frozen: the backward forms activation gradients only."""
        flags = [p.requires_grad for p in self.model.parameters()]
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.active = True
        try:
            yield
        finally:
            self.active = False
            for p, flag in zip(self.model.parameters(), flags):
                p.requires_grad_(flag)

    @contextmanager
    def paused(self):
        """Ordinary forward/backward passes inside (no per-sample work)."""
        yield

    # --- the maths -------------------------------------------------------------------------
    def _per_layer(self, chunk: torch.Tensor):
        """One forward/backward; per-sample squared norms (B,) and what the clipped sum needs."""
        self._acts.clear()
        self._sq = torch.zeros(len(chunk), dtype=torch.float32, device=chunk.device)
        self._parts = []
        self.model.train()
        try:
            with self._frozen():
                losses = self.loss_fn(self.model, chunk)
                losses.sum().backward()  # g of the summed loss = per-sample output gradients
        finally:
            self._acts.clear()
        parts, self._parts = self._parts, []
        return losses.detach(), self._sq, parts

    @staticmethod
    def _clipped_sum(c: torch.Tensor, parts) -> dict:
        """Σ_i c_i G_i for every parameter, from what each layer kept."""
        out: dict = {}
        for module, kind, kept in parts:
            if kind == "per_sample":
                for p, gs in kept.items():
                    out[p] = torch.einsum("b,b...->...", c, gs)
            elif kind == "linear":
                a, g = kept
                cg = g * c[:, None, None]
                out[module.weight] = cg.reshape(-1, cg.shape[-1]).T @ a.reshape(-1, a.shape[-1])
                if module.bias is not None:
                    out[module.bias] = c @ g.sum(dim=1)
            else:  # embedding
                idx, g = kept
                cg = (g * c[:, None, None]).reshape(-1, g.shape[-1])
                out[module.weight] = torch.zeros_like(module.weight).index_add_(0, idx.reshape(-1), cg)
        return out

    def per_sample_norms(self, batch: torch.Tensor) -> torch.Tensor:
        """Per-sample gradient norms before clipping."""
        _, sq, _ = self._per_layer(batch)
        return sq.sqrt()

    def gradient(self, batch: torch.Tensor, *, physical_batch: int | None = None) -> float:
        """Leave the noisy clipped gradient of a logical batch in ``p.grad`` (Opacus's formula)."""
        from opacus.optimizers.optimizer import _generate_noise

        refuse_aggregated(self.params)
        summed = {p: torch.zeros_like(p) for p in self.params}
        losses = []
        for chunk in torch.split(batch, physical_batch or max(len(batch), 1)):
            if len(chunk) == 0:
                continue
            loss, sq, parts = self._per_layer(chunk.contiguous())
            c = clip_factors(sq.sqrt(), self.max_grad_norm, self.clipping)
            for p, grad in self._clipped_sum(c, parts).items():
                if p in summed:
                    summed[p] += grad
            losses.append(loss)
        rank = torch.distributed.get_rank() if self.distributed else 0
        for p in self.params:
            if rank == 0:  # noise once per logical step (rank 0 of several workers)
                summed[p] += _generate_noise(std=self.noise_multiplier * self.max_grad_norm, reference=summed[p],
                                             generator=self.generator)
            p.grad = summed[p] / self.expected_batch_size
            if self.distributed:
                torch.distributed.all_reduce(p.grad, op=torch.distributed.ReduceOp.SUM)
                p.grad /= torch.distributed.get_world_size()
        return float(torch.cat(losses).mean()) if losses else float("nan")

    def step(self, batch: torch.Tensor, *, physical_batch: int | None = None) -> float:
        loss = self.gradient(batch, physical_batch=physical_batch)
        self.optimizer.step()
        self.zero_grad()
        return loss

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def detach(self) -> nn.Module:
        for h in self._handles:
            h.remove()
        self._handles = []
        return self.model


def supports(model: nn.Module) -> list[str]:
    """Why book-keeping cannot take ``model`` (empty when it can): tied parameters, or layers
    with parameters that are neither Linear/Embedding nor simple enough for the functorch fallback."""
    reasons = [f"tied parameters: {', '.join(tied)}"] if (tied := tied_parameters(model)) else []
    for name, m in model.named_modules():
        if any(p.requires_grad for p in m.parameters(recurse=False)) and type(m) not in (nn.Linear, nn.Embedding):
            if list(m.buffers(recurse=False)) or list(m.children()):
                reasons.append(f"{name} ({type(m).__name__}) has buffers or children")
    return reasons
