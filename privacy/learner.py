"""``DPLearner``: DP continual pre-training as one role (a plain class; Ray wraps it elsewhere).

It owns everything private: the private split (with the audit's canaries), its Poisson sampler,
the noise generator and the privacy budget. Nothing private leaves it: the driver sees step
counts, ε, and losses on public or held-out data only (a private batch's loss is itself a
non-private release, so it is not reported).

Methods (``method``; their phases are the table ``framework.config.DP_METHODS``), each a
schedule of phases over one model and one AdamW:
  nondp         non-private steps on public ∪ private, public_steps + private_steps of them
  public_only   the public phase of dp_continual alone (no private data)
  dp_scratch    private_steps DP-AdamW steps on the private split, from the initial model
  dp_continual  non-private steps on the public split until the switch (``switch=step``: after
                public_steps; ``plateau``: when the loss on a held-out tenth of the public split
                stops improving, at most public_steps; ``start_from``: a public_only checkpoint),
                then private_steps DP-AdamW steps. At the switch the privacy engine wraps the same
                AdamW, whose first moment is reset (``switch_state=keep``: second moment and step
                kept; ``reset``: a fresh AdamW), or a fresh DP-AdamBC (``optimizer=adambc``).
  nondp_continual, clip_only
                dp_continual's private steps with σ = 0, without clipping / with it: the ablation
                that prices clipping and noise from the same switch, steps and schedule.
  mix, dpmd     private_steps steps from the initial model on g = (1 − α_t) g̃_private + α_t g_public
                (public gradients cost no privacy): ``mix`` with the sample ratio α = n_pub / n_all,
                ``dpmd`` with a cosine-decayed public weight α_t = ½ (1 + cos(π t / T)).

A driver calls ``sample`` → ``update`` → ``account`` per step, ``evaluate`` now and then,
``save``/``load`` for checkpoints and ``audit`` at the end.
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

from framework.checkpoint import load_optimizer, save_optimizer
from framework.config import DP_METHODS
from framework.errors import InputError, NonFiniteError
from framework.losses import lm_loss
from framework.models import accelerator, group_backend, load_policy
from privacy import corpus as corpus_lib
from privacy.accounting import Budget, plan_noise
from privacy.adambc import DPAdamBC
from privacy.audit import audit
from privacy.diagnostics import curvature_diagnostics
from privacy.engine import layer_report, make_engine, resolve_mode
from privacy.engine.checks import check_model


class DPLearner:
    def __init__(self, *, model_path: str, method: str, seed: int, public_fraction: float, eval_fraction: float,
                 max_chars: int | None, seq_len: int, canaries: int, batch_size: int, physical_batch: int,
                 lr: float, private_lr: float | None, weight_decay: float, public_steps: int, private_steps: int, switch: str,
                 plateau_window: int, plateau_tol: float, target_epsilon: float, delta: float | None,
                 noise_multiplier: float | None, stop_at_budget: bool, accountant: str, max_grad_norm: float,
                 grad_sample_mode: str, eval_sequences: int, diag_batch: int, hutchinson_probes: int,
                 covariance_samples: int = 4, clipping: str = "flat", optimizer: str = "adamw",
                 switch_state: str = "keep", private_warmup: int = 0, start_from: str | None = None,
                 public_batch_size: int = 0,
                 threads: int = 1, workers: int = 1, rank: int = 0, init_method: str | None = None):
        if method not in DP_METHODS:
            raise InputError(f"dp.method must be one of {tuple(DP_METHODS)}, got {method!r}")
        self.spec = DP_METHODS[method]
        torch.set_num_threads(threads)
        self.rank, self.workers = rank, workers
        self.device = accelerator()  # the model and each batch; the data stay in host memory
        if workers > 1:  # data-parallel DP workers: one group (NCCL on GPUs, gloo on CPUs), the noise added once
            if not dist.is_initialized():
                dist.init_process_group(group_backend(self.device), init_method=init_method,
                                        rank=rank, world_size=workers)
        torch.manual_seed(seed)
        self.method, self.seed = method, seed
        self.batch_size, self.physical_batch = batch_size, physical_batch or None
        self.public_batch_size = public_batch_size or batch_size  # the public phase's and nondp's
        self.public_steps, self.private_steps = public_steps, private_steps
        self.switch, self.plateau_window, self.plateau_tol = switch, plateau_window, plateau_tol
        self.max_grad_norm, self.grad_sample_mode = max_grad_norm, grad_sample_mode
        self.clipping = clipping if self.spec.clipped else "none"
        self.optimizer_name, self.switch_state, self.private_warmup = optimizer, switch_state, private_warmup
        self.weight_decay = weight_decay
        self.eval_sequences, self.diag_batch, self.probes = eval_sequences, diag_batch, hutchinson_probes
        self.covariance_samples = covariance_samples

        self.model, self.tokenizer = load_policy(model_path)
        self.model.to(self.device)
        self._load_data(public_fraction=public_fraction, eval_fraction=eval_fraction, max_chars=max_chars,
                        seq_len=seq_len, canaries=canaries)

        if self.spec.private:  # what cannot be made private fails now, not at the switch
            mode = resolve_mode(self.model, grad_sample_mode)
            check_model(self.model, mode)
            if self.clipping != "flat" and mode != "bookkeeping":
                raise InputError(f"{'dp.clipping=automatic' if self.spec.clipped else f'dp.method={method}'} needs "
                                 f"the book-keeping engine (dp.grad_sample_mode=bookkeeping or auto), not {mode!r}")
        self.sample_rate = batch_size / self.private_total
        self.delta = delta if delta is not None else 1 / (10 * self.private_total)
        self.noise_multiplier = 0.0
        self.budget = None
        if self.spec.budgeted:
            # the budget, and σ: the smallest that fits private_steps into it, or the given one if
            # its schedule fits (else refused, unless the run is to stop at the budget)
            self.budget = Budget(target_epsilon=target_epsilon, delta=self.delta, accountant=accountant)
            self.noise_multiplier = plan_noise(
                private_sequences=self.private_total, batch_size=batch_size, private_steps=self.private_steps,
                target_epsilon=target_epsilon, delta=self.delta, noise_multiplier=noise_multiplier,
                stop_at_budget=stop_at_budget, accountant=accountant)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=weight_decay)
        self.private_lr = private_lr if private_lr is not None else lr
        self.sampler = torch.Generator().manual_seed(seed * 7919 + 1 + 1000 * rank)  # this shard's Poisson draws
        self.shared = torch.Generator().manual_seed(seed * 7919 + 3)  # global batches, the same on every worker
        self.noise = torch.Generator(device=self.device).manual_seed(seed * 7919 + 2)  # where the noise is drawn
        self.engine = None
        self.phase = self.spec.phases[0]
        self.step_count = 0      # optimizer steps taken
        self.private_taken = 0   # DP steps taken
        self.public_val_losses: list[float] = []  # the plateau test's history
        self.started_from = None
        self._batch = None
        self._all = None
        self._unaccounted = False
        if start_from:
            self._restore_public(Path(start_from))
        if self.phase == "private":
            self._attach()

    def _load_data(self, *, public_fraction: float, eval_fraction: float, max_chars: int | None, seq_len: int,
                   canaries: int) -> None:
        """The splits, packed with the model's tokenizer: public (a tenth held out), held-out
        evaluation, canaries, and this worker's shard of the private split (with its canaries)."""
        if self.model.config.max_position_embeddings < seq_len:
            raise InputError(f"dp.corpus.seq_len={seq_len} exceeds the model's "
                             f"max_position_embeddings={self.model.config.max_position_embeddings}")
        splits = corpus_lib.split_documents(corpus_lib.stdlib_documents(), public_fraction=public_fraction,
                                            eval_fraction=eval_fraction, max_chars=max_chars)
        pack = lambda texts: torch.from_numpy(corpus_lib.pack(texts, self.tokenizer, seq_len=seq_len))
        public, self.eval_data = pack(splits.public), pack(splits.eval)
        # a tenth of the public split is held out to decide the switch (public data only)
        held = torch.arange(len(public)) % 10 == 0
        self.public, self.public_val = public[~held], public[held]
        self.canaries = corpus_lib.make_canaries(canaries, seed=self.seed)
        self.coins = corpus_lib.canary_coins(canaries, seed=self.seed)
        self.canary_data = torch.from_numpy(corpus_lib.canary_sequences(self.canaries, self.tokenizer,
                                                                        seq_len=seq_len))
        private = torch.cat([pack(splits.private), self.canary_data[torch.from_numpy(self.coins)]])
        if min(len(self.public), len(private), len(self.eval_data)) < 1:
            raise InputError("dp.corpus: a split is empty (raise dp.corpus.max_chars)")
        if self.batch_size > len(private):
            raise InputError(f"dp.batch_size={self.batch_size} exceeds the {len(private)} private sequences")
        self.private_total = len(private)
        # each worker owns a shard; Poisson sampling of every shard at rate q is Poisson sampling
        # of the whole private set at rate q, which is what the accountant assumes
        self.private = private[self.rank::self.workers]

    def describe(self) -> dict:
        """What the driver may know: sizes, the mechanism, the layer report (no private content)."""
        mode = resolve_mode(self.model, self.grad_sample_mode) if self.spec.private else "none"
        return {"method": self.method, "public_sequences": len(self.public), "private_sequences": self.private_total,
                "eval_sequences": len(self.eval_data), "canaries": len(self.canaries),
                "sample_rate": self.sample_rate, "delta": self.delta, "noise_multiplier": self.noise_multiplier,
                "public_batch_size": self.public_batch_size,
                "max_grad_norm": self.max_grad_norm, "grad_sample_mode": mode, "clipping": self.clipping,
                "optimizer": self.optimizer_name, "switch_state": self.switch_state, "started_from": self.started_from,
                "layers": layer_report(self.model, mode) if self.spec.private else {},
                "parameters": sum(p.numel() for p in self.model.parameters())}

    def done(self) -> bool:
        if self.spec.private:
            return self.private_taken >= self.private_steps
        if self.phase == "public":
            return self._public_finished()
        return self.step_count >= self.spec.steps(self.public_steps, self.private_steps)

    def _public_finished(self) -> bool:
        """The public phase ends after public_steps, or (``plateau``) once the held-out public
        loss improved by less than plateau_tol (relative) since its last check, or at once when the
        run starts from a public_only checkpoint."""
        if self.step_count >= self.public_steps or self.started_from is not None:
            return True
        v = self.public_val_losses
        return self.switch == "plateau" and len(v) >= 2 and v[-1] > v[-2] * (1 - self.plateau_tol)

    def _restore_public(self, d: Path) -> None:
        """Start at the end of a public_only run's public phase: its weights, AdamW state, step
        count and plateau history (the switch happens at the first ``sample``)."""
        state = json.loads((d / "learner.json").read_text())
        if state["method"] != "public_only" or state["phase"] != "public":
            raise InputError(f"dp.start_from: {d} is a checkpoint of {state['method']!r} in its {state['phase']} "
                             f"phase, not of a public_only run")
        weights = load_file(str(d / "policy" / "model.safetensors"))
        missing = set(self.model.state_dict()) - set(weights)
        if missing or any(weights[k].shape != v.shape for k, v in self.model.state_dict().items() if k in weights):
            raise InputError(f"dp.start_from: {d} holds another model's weights (missing or mismatched: "
                             f"{sorted(missing)[:3] or 'shapes'}); use the same model and corpus settings")
        self.model.load_state_dict(weights)
        load_optimizer(self.optimizer, d)
        self.step_count, self.public_val_losses = state["step_count"], state["public_val_losses"]
        self.started_from = str(d)

    def _attach(self) -> None:
        """Switch to private training: the optimizer's state as ``switch_state`` / ``optimizer``
        say, the private learning rate, and the clipping engine around the optimizer."""
        if self.optimizer_name == "adambc":  # fresh moments, the noise variance (σR/B)² subtracted
            self.optimizer = self._adambc()
        elif self.switch_state == "reset":
            self.optimizer.state.clear()
        for state in self.optimizer.state.values():
            if "exp_avg" in state:
                state["exp_avg"].zero_()
        self._set_private_lr()
        self.optimizer.zero_grad(set_to_none=True)
        self._wrap()
        self.phase = "private"

    def _adambc(self) -> DPAdamBC:
        """A fresh DP-AdamBC over the model at the private learning rate and Φ."""
        return DPAdamBC(self.model.parameters(), lr=self.private_lr, weight_decay=self.weight_decay,
                        noise_variance=self.noise_variance())

    def noise_variance(self) -> float:
        """Φ = (σR/B)²: the per-coordinate variance of the noise in the private gradient."""
        return (self.noise_multiplier * self.max_grad_norm / self.batch_size) ** 2

    def _set_private_lr(self) -> None:
        """The private phase's learning rate for the next private step (with its linear warm-up)."""
        scale = min(1.0, (self.private_taken + 1) / self.private_warmup) if self.private_warmup else 1.0
        for group in self.optimizer.param_groups:
            group["lr"] = self.private_lr * scale

    def _wrap(self) -> None:
        self.engine = make_engine(self.model, self.optimizer, noise_multiplier=self.noise_multiplier,
                                  max_grad_norm=self.max_grad_norm, expected_batch_size=self.batch_size / self.workers,
                                  mode=self.grad_sample_mode, generator=self.noise, distributed=self.workers > 1,
                                  clipping=self.clipping)

    # --- the stages ------------------------------------------------------------------------
    def sample(self) -> dict:
        """Draw the next batch (kept here). ``stop`` is set when the run must end before it."""
        if self.phase == "public" and self.spec.private and self._public_finished():
            self._attach()  # the public phase is over: the private one follows
        if self.phase == "private":
            if self.budget is not None and not self.budget.allows(noise_multiplier=self.noise_multiplier,
                                                                  sample_rate=self.sample_rate):
                return {"phase": "private", "stop": (
                    f"privacy budget: one more step would spend more than ε={self.budget.target_epsilon} "
                    f"(δ={self.delta:.3g}); stopped after {self.private_taken} private steps at "
                    f"ε={self.budget.spent():.4f}")}
            mask = torch.rand(len(self.private), generator=self.sampler) < self.sample_rate
            self._batch = self.private[mask]
            if self.spec.public_weight:
                self._public_batch = self._global_batch(self.public, self.batch_size)
        else:
            self._batch = self._global_batch(self.public if self.phase == "public" else self._everything(),
                                             self.public_batch_size)
        return {"phase": self.phase, "stop": None}

    def update(self) -> dict:
        """One optimizer step on the sampled batch."""
        batch, self._batch = self._batch, None
        if batch is None:
            raise RuntimeError("update() without sample()")
        batch = batch.to(self.device)
        if self.phase == "private":
            self._set_private_lr()
            if self.spec.public_weight:
                self._mixed_gradient(batch)
            else:
                self.engine.gradient(batch, physical_batch=self.physical_batch)
            # what is checked is released anyway (the noised gradient, the weights): the private
            # batch's loss is not looked at
            self._apply("noised gradient")
            self.engine.zero_grad()
            self.private_taken += 1
            self._unaccounted = True
            return {"phase": "private", "train_loss": None}  # a private batch's loss is not released
        self.model.train()
        loss = lm_loss(logits=self.model(input_ids=batch).logits, input_ids=batch).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.workers > 1:
            loss = self._average([p.grad for p in self.model.parameters()] + [loss.detach()])[-1]
        self._apply("gradient", loss=float(loss.detach()))
        self.optimizer.zero_grad(set_to_none=True)
        out = {"phase": self.phase, "train_loss": float(loss.detach()) if self.phase == "public" else None}
        if self.phase == "public" and self.switch == "plateau" and self.step_count % self.plateau_window == 0:
            val = float(self._mean_loss(self.public_val).mean())
            self.public_val_losses.append(self._finite("public held-out loss", val, taken=True))
            out["public_val_loss"] = self.public_val_losses[-1]
        return out

    def _apply(self, gradient: str, *, loss: float | None = None) -> None:
        """The optimizer step on the gradient in ``p.grad``, refused before it is taken when the
        loss or the ``gradient``'s norm is not finite (every worker holds the same averaged values,
        so all stop alike); then the weights are checked."""
        if loss is not None:
            self._finite("loss", loss)
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        self._finite(f"{gradient} norm", float(torch.stack([g.norm() for g in grads]).norm()))
        self.optimizer.step()
        self.step_count += 1
        largest = torch.stack([p.detach().abs().max() for p in self.model.parameters()]).max()
        self._finite("largest weight", float(largest), taken=True)

    def _finite(self, what: str, value: float, *, taken: bool = False) -> float:
        """``value``, unless it is not finite: then a NonFiniteError naming ``what`` and the step
        about to be taken (refused), or with ``taken`` the step just taken."""
        if math.isfinite(value):
            return value
        step = self.step_count + (not taken)
        applied = "the step was applied" if taken else "nothing was applied"
        raise NonFiniteError(f"step {step}: the {what} is {value}; {applied}", step=step, applied=int(taken))

    def _global_batch(self, pool: torch.Tensor, size: int) -> torch.Tensor:
        """A non-private batch of ``size`` drawn alike on every worker; this worker's rows."""
        return pool[torch.randperm(len(pool), generator=self.shared)[:size]][self.rank::self.workers]

    def _everything(self) -> torch.Tensor:
        """nondp trains on everything: the public split and every worker's private shard (built once)."""
        if self._all is None:
            shards = [self.private]
            if self.workers > 1:
                shards = [None] * self.workers
                dist.all_gather_object(shards, self.private)
            self._all = torch.cat([self.public, *shards])
        return self._all

    def _average(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """In-place mean over the workers."""
        for t in tensors:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
            t /= self.workers
        return tensors

    def public_weight(self) -> float:
        """α_t of the mixing baselines."""
        if self.spec.public_weight == "ratio":
            return len(self.public) / (len(self.public) + self.private_total)
        return 0.5 * (1 + math.cos(math.pi * self.private_taken / max(self.private_steps, 1)))

    def _mixed_gradient(self, batch: torch.Tensor) -> None:
        """(1 − α) × the noisy private gradient + α × a public batch's gradient, in ``p.grad``."""
        alpha = self.public_weight()
        self.engine.gradient(batch, physical_batch=self.physical_batch)
        params = self.engine.params
        private = [p.grad for p in params]
        with self.engine.paused():  # a public gradient needs no per-sample work
            pub = self._public_batch.to(self.device)
            public = torch.autograd.grad(lm_loss(logits=self.model(input_ids=pub).logits, input_ids=pub).mean(),
                                         params)
            if self.workers > 1:
                public = self._average(list(public))
        for p, g_priv, g_pub in zip(params, private, public):
            p.grad = (1 - alpha) * g_priv + alpha * g_pub
        for group in self.optimizer.param_groups:  # DP-AdamBC: the noise is scaled by 1 − α too
            if "noise_variance" in group:
                group["noise_variance"] = (1 - alpha) ** 2 * self.noise_variance()

    def account(self) -> dict:
        """Record the step just taken with the accountant (the ``account`` stage)."""
        if self._unaccounted and self.budget is not None:
            self.budget.step(noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate)
            self._unaccounted = False
        return self.status()

    def status(self) -> dict:
        return {"epsilon": self.epsilon(), "private_steps": self.private_taken, "steps": self.step_count}

    def epsilon(self) -> float | None:
        """ε spent on the private data: None (unbounded) when it is trained on without DP, 0 when
        it is not trained on."""
        if not self.spec.bounded:
            return None
        return self.budget.spent() if self.budget is not None else 0.0

    # --- evaluation ------------------------------------------------------------------------
    @torch.no_grad()
    def _mean_loss(self, data: torch.Tensor, chunk: int = 64) -> torch.Tensor:
        """Per-sequence losses, (N,)."""
        self.model.eval()
        out = [lm_loss(logits=self.model(input_ids=x.to(self.device)).logits, input_ids=x.to(self.device)).cpu()
               for x in torch.split(data, chunk)]
        return torch.cat(out) if out else torch.zeros(0)

    def evaluate(self, *, diagnostics: bool = False) -> dict:
        """Held-out loss and perplexity; with ``diagnostics``, the curvature analysis on held-out data."""
        loss = self._finite("held-out loss", float(self._mean_loss(self.eval_data[: self.eval_sequences]).mean()),
                            taken=True)
        # public validation loss: what hyper-parameters may be chosen on without touching held-out data
        out = {"eval_loss": loss, "eval_ppl": math.exp(loss),
               "public_val_loss": float(self._mean_loss(self.public_val).mean())}
        if diagnostics:
            out.update(self.diagnostics())
        return out

    def diagnostics(self) -> dict:
        """The one-step analysis of the next update on a held-out batch (never private data): the
        clipping, the mini-batch and noise terms, plain and preconditioned by the optimizer's
        current second moment (privacy/diagnostics.py)."""
        g = torch.Generator().manual_seed(self.seed + 17 + self.step_count)
        idx = torch.randperm(len(self.eval_data), generator=g)[: self.diag_batch]
        batch = self.eval_data[idx].to(self.device)
        params = [p for p in self.model.parameters() if p.requires_grad]
        private = self.phase == "private"
        self.model.eval()
        paused = self.engine.paused() if self.engine is not None else contextlib.nullcontext()
        try:
            with paused:  # the engine's per-sample hooks stay out of the analysis
                if hasattr(self.model, "set_attn_implementation"):
                    self.model.set_attn_implementation("eager")  # double backward through attention
                out = curvature_diagnostics(
                    lambda rows: lm_loss(logits=self.model(input_ids=batch[rows]).logits, input_ids=batch[rows]),
                    params, n=len(batch), noise_multiplier=self.noise_multiplier if private else 0.0,
                    max_grad_norm=self.max_grad_norm, batch_size=self.batch_size,
                    clipping=self.clipping if private else "none", preconditioner=self._preconditioner(params),
                    probes=self.probes, covariance_samples=self.covariance_samples, generator=g)
        finally:
            if hasattr(self.model, "set_attn_implementation"):
                self.model.set_attn_implementation("sdpa")
            for p in params:
                p.grad = None
        return out

    def _preconditioner(self, params: list[torch.Tensor]):
        """P of the next step as a function of the clipped mean gradient G_c: the per-coordinate
        scale 1/(√v̂' + eps) (AdamW) or 1/√max(v̂' − Φ, γ') (DP-AdamBC), with v̂' the bias-corrected
        second moment after that step in expectation, (β₂ v + (1 − β₂)(G_c² + Φ)) / (1 − β₂^(t+1)),
        Φ the noise's per-coordinate variance (the mini-batch variance left out). Today's v̂ alone
        would be degenerate where the public phase never had a gradient (v = 0 → P = 1/eps)."""
        groups = [(group, p) for group in self.optimizer.param_groups for p in group["params"]]
        if len(groups) != len(params):
            return None
        phi = self.noise_variance() if self.phase == "private" else 0.0

        def precondition(gc: list[torch.Tensor]) -> list[torch.Tensor]:
            out = []
            for (group, p), g in zip(groups, gc):
                beta2, eps = group["betas"][1], group["eps"]
                state = self.optimizer.state.get(p, {})
                v, t = (state["exp_avg_sq"], float(state["step"])) if "exp_avg_sq" in state else (torch.zeros_like(p), 0.0)
                v_hat = (beta2 * v + (1 - beta2) * (g * g + phi)) / (1 - beta2 ** (t + 1))
                if "noise_variance" in group:
                    out.append((v_hat - group["noise_variance"]).clamp(min=eps).rsqrt())
                else:
                    out.append(1 / (v_hat.sqrt() + eps))
            return out

        return precondition

    def audit(self) -> dict:
        """One-run audit over the canaries (score = −loss): an empirical ε lower bound at 95%."""
        scores = -self._mean_loss(self.canary_data).numpy()
        return audit(scores, self.coins, delta=self.delta)

    # --- checkpoints -----------------------------------------------------------------------
    def save(self, directory: str) -> None:
        """Weights (safetensors), optimizer, RNG states and the accountant's history (JSON)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        rng = {"sampler": self.sampler.get_state(), "shared": self.shared.get_state(), "noise": self.noise.get_state(),
               "torch": torch.get_rng_state()}
        save_file(rng, str(d / f"rng-{self.rank}.safetensors"))  # every worker's own draws
        if self.rank != 0:
            return
        self.model.save_pretrained(d / "policy")
        self.tokenizer.save_pretrained(d / "policy")
        save_optimizer(self.optimizer, d)
        (d / "learner.json").write_text(json.dumps({
            "method": self.method, "phase": self.phase, "step_count": self.step_count,
            "private_taken": self.private_taken, "public_val_losses": self.public_val_losses,
            "noise_multiplier": self.noise_multiplier,
            "budget": self.budget.state_dict() if self.budget else None}))

    def load(self, directory: str) -> dict:
        d = Path(directory)
        state = json.loads((d / "learner.json").read_text())
        if state["method"] != self.method:
            raise InputError(f"{d}: a checkpoint of method {state['method']!r}, not {self.method!r}")
        if self.engine is not None:
            self.engine.detach()
            self.engine = None
        weights = load_file(str(d / "policy" / "model.safetensors"))
        self.model.load_state_dict(weights, strict=False)
        if state["phase"] == "private" and self.optimizer_name == "adambc" and not isinstance(self.optimizer, DPAdamBC):
            self.optimizer = self._adambc()  # (its state comes from the checkpoint next)
        load_optimizer(self.optimizer, d)
        rng = load_file(str(d / f"rng-{self.rank}.safetensors"))
        self.sampler.set_state(rng["sampler"])
        self.shared.set_state(rng["shared"])
        self.noise.set_state(rng["noise"])
        torch.set_rng_state(rng["torch"])
        self.step_count, self.private_taken = state["step_count"], state["private_taken"]
        self.public_val_losses = state["public_val_losses"]
        self.noise_multiplier = state["noise_multiplier"]
        if state["budget"] is not None:
            self.budget = Budget.from_state_dict(state["budget"])
        self.phase = state["phase"]
        if self.phase == "private":
            self._wrap()  # without touching the restored moments
        return {"step": self.step_count, "private_steps": self.private_taken}
