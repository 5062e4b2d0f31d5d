"""``Learner``: one data-parallel training worker (a plain class; ``actors.remote`` makes a
group of them Ray actors sharing a torch.distributed process group: gloo on CPU, NCCL on GPU)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from framework.algorithms import get_algorithm
from framework.losses import sequence_logprob, sft_loss, token_logprobs
from framework.records import TrainBatch


class Learner:
    """Holds the trainable policy and its optimizer; publishes versioned weights.

    Args:
        model_path: directory or hub id of the starting policy.
        rank, world_size, init_method: the process group (``init_method`` e.g. tcp://host:port);
            world_size 1 needs no group.
        lr, weight_decay: AdamW settings (``train`` may set each update's lr).
        threads: torch intra-op threads for this worker.
        seed: torch seed (dropout-free models make updates deterministic anyway).
    """

    def __init__(self, *, model_path: str, rank: int = 0, world_size: int = 1, init_method: str | None = None,
                 lr: float = 1e-3, weight_decay: float = 0.0, threads: int = 1, seed: int = 0):
        import torch.distributed as dist

        from framework.models import load_policy

        torch.set_num_threads(threads)
        torch.manual_seed(seed)
        self.rank, self.world_size = rank, world_size
        model, self.tokenizer = load_policy(model_path)
        self.module = model.train()
        if world_size > 1:
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world_size)
            self.model = torch.nn.parallel.DistributedDataParallel(model)
        else:
            self.model = model
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        self.version = 0
        self.model_path, self.lr = model_path, lr
        self.reward = None  # RFT: (reward model, its optimizer), made on first use
        self.reference = None  # the frozen starting policy (KL penalties), loaded on first use

    def _logp(self, batch: TrainBatch, model=None) -> torch.Tensor:
        """(B,) log-probs of the responses under ``model`` (default: the trained policy)."""
        logits = (model or self.model)(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        return sequence_logprob(token_logp=token_logprobs(logits=logits, input_ids=batch.input_ids),
                                mask=batch.response_mask)

    def _step(self, loss: torch.Tensor, optimizer=None, module=None) -> float:
        """One clipped step of ``optimizer`` on ``module`` (default: the policy's)."""
        optimizer, module = optimizer or self.optimizer, module or self.module
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        optimizer.step()
        return float(norm)

    def _reference(self):
        """The frozen starting policy: the reference of KL penalties (MPO's ``kl_coef``, RFT)."""
        if self.reference is None:
            from transformers import AutoModelForCausalLM

            self.reference = AutoModelForCausalLM.from_pretrained(self.model_path).eval().requires_grad_(False)
        return self.reference

    @torch.no_grad()
    def _reference_logp(self, batch: TrainBatch) -> torch.Tensor:
        return self._logp(batch, self._reference())

    def train(self, batch: TrainBatch, *, algorithm: str, eta: float, tau: float = 0.0, link: str = "logistic",
              epochs: int = 1, minibatches: int = 1, lr: float | None = None, kl_coef: float = 0.0) -> dict:
        """``epochs`` passes over this worker's shard in ``minibatches`` optimizer steps each
        (minibatches hold whole examples: a conversation's turns or a pair stay together).

        ρ is measured against the policy that generated the samples (the generator's log-probs),
        as PPO measures its ratio against the behaviour policy: with async generation one version
        behind, the step is taken from there, which damps overshooting (in our runs anchoring on
        the learner's newer weights instead made correctness swing by ±10 points). In sync mode
        both anchors are the same; ``behaviour_gap`` reports how far apart they are (measured on
        the first minibatch, before the first step). ``rho_mean`` is the mean ρ the last pass saw.

        ``kl_coef`` β > 0 (MPO) penalises the divergence from the starting policy; ``kl_ref``
        reports mean log π_t(a|s) − log π_ref(a|s) over the samples, an estimate of that KL.
        ``lr`` (the driver's schedule) sets this update's learning rate.
        """
        start = time.perf_counter()
        if lr is not None:  # the driver's schedule sets each update's rate (RFT's reward model keeps its own)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
        algo = get_algorithm(algorithm)
        if algo.reward_model:
            return self._train_rft(batch, eta=eta, epochs=epochs, minibatches=minibatches, start=start)
        examples = len(torch.unique(batch.example))
        if kl_coef and not algo.kl_penalty:
            raise ValueError(f"{algorithm} has no KL penalty (kl_coef)")
        extra, kl = ({"kl_coef": kl_coef}, {"kl_ref": 0.0}) if kl_coef else ({}, {})
        if examples == 0:  # e.g. every pair tied: nothing to learn from, the policy stays
            self.version += 1
            return {"loss": 0.0, "grad_norm": 0.0, "rho_mean": 0.0, "behaviour_gap": 0.0, "examples": 0, **kl,
                    "version": self.version, "train_seconds": time.perf_counter() - start}
        if kl_coef:
            batch = dataclasses.replace(batch, logp_ref=self._reference_logp(batch))
            kl["kl_ref"] = float((batch.logp_old - batch.logp_ref).mean())
        # Diagnostics come from the training forwards (no extra passes over the batch):
        # behaviour_gap from the first minibatch, before any step; rho_mean over the last pass.
        losses, norms, rhos, behaviour_gap = [], [], [], 0.0
        for epoch in range(epochs):
            for i, mb in enumerate(batch.shard(minibatches)):
                logp = self._logp(mb)
                rho = (logp.detach() - mb.logp_old)
                if epoch == 0 and i == 0:
                    behaviour_gap = float(rho.mean())
                if epoch == epochs - 1:
                    rhos.append(rho)
                loss = algo.loss(batch=mb, logp=logp, eta=eta, tau=tau, link=link, **extra).mean()
                norms.append(self._step(loss))
                losses.append(float(loss.detach()))
        self.version += 1
        return {"loss": sum(losses) / len(losses), "grad_norm": sum(norms) / len(norms),
                "rho_mean": float(torch.cat(rhos).mean()), "behaviour_gap": behaviour_gap, "examples": examples,
                **kl, "version": self.version, "train_seconds": time.perf_counter() - start}

    def _reward_model(self):
        """RFT's reward model (the policy's architecture with a scalar head, from the starting
        policy) and its optimizer."""
        if self.reward is None:
            from transformers import AutoModelForSequenceClassification

            rm = AutoModelForSequenceClassification.from_pretrained(self.model_path, num_labels=1)
            rm.config.pad_token_id = self.tokenizer.pad_token_id
            self.reward = (rm.train(), torch.optim.AdamW(rm.parameters(), lr=self.lr))
        return self.reward

    def _train_rft(self, batch: TrainBatch, *, eta: float, epochs: int, minibatches: int, start: float) -> dict:
        """RFT (DESIGN §3): (1) Bradley–Terry steps of the reward model on (demonstration, own
        answer) pairs; (2) REINFORCE with a leave-one-out baseline on the policy's own answers,
        rewarded r − (1/η)(log π_t − log π_ref): the KL penalty to the starting policy."""
        from framework.losses import bt_reward_loss, rloo_loss

        rm, rm_optimizer = self._reward_model()
        rm_losses = []
        for _ in range(epochs):
            for mb in batch.shard(minibatches):
                r = rm(input_ids=mb.input_ids, attention_mask=mb.attention_mask).logits.squeeze(-1)
                r_demo, _ = mb.per_example(r)  # one demonstration row per example
                own = mb.side == 1
                loss = bt_reward_loss(chosen_reward=r_demo[mb.example_index()[own]], rejected_reward=r[own]).mean()
                self._step(loss, rm_optimizer, rm)
                rm_losses.append(float(loss.detach()))
        own = batch.rows(batch.side == 1)
        with torch.no_grad():
            reward = rm(input_ids=own.input_ids, attention_mask=own.attention_mask).logits.squeeze(-1)
        shaped = reward - (own.logp_old - self._reference_logp(own)) / eta
        own = dataclasses.replace(own, q_hat=shaped)
        losses, norms = [], []
        for _ in range(epochs):
            for mb in own.shard(minibatches):
                loss = rloo_loss(logp=self._logp(mb), reward=mb.q_hat, group=mb.example).mean()
                norms.append(self._step(loss))
                losses.append(float(loss.detach()))
        self.version += 1
        return {"loss": sum(losses) / len(losses), "grad_norm": sum(norms) / len(norms),
                "rho_mean": 0.0, "behaviour_gap": 0.0, "examples": len(torch.unique(batch.example)),
                "reward_loss": sum(rm_losses) / len(rm_losses), "reward_mean": float(reward.mean()),
                "version": self.version, "train_seconds": time.perf_counter() - start}

    def sft_step(self, batch: TrainBatch) -> float:
        """One supervised step on demonstrations (the warm start); returns the loss."""
        logits = self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        loss = sft_loss(token_logp=token_logprobs(logits=logits, input_ids=batch.input_ids),
                        mask=batch.response_mask).mean()
        self._step(loss)
        return float(loss.detach())

    def weights(self) -> dict:
        """The current weights for the generators (a detached copy)."""
        return {k: v.detach().clone() for k, v in self.module.state_dict().items()}

    def save(self, directory: str, version: int | None = None) -> None:
        """Policy (safetensors, loadable with from_pretrained) and optimizer state (rank 0 only)."""
        from framework.checkpoint import save_optimizer

        if self.rank != 0:
            return
        directory = Path(directory)
        self.module.save_pretrained(directory / "policy")
        self.tokenizer.save_pretrained(directory / "policy")
        save_optimizer(self.optimizer, directory)
        if self.reward is not None:  # RFT's reward model is part of the run state
            self.reward[0].save_pretrained(directory / "reward_model")
            save_optimizer(self.reward[1], directory / "reward_model")

    def load(self, directory: str, version: int) -> None:
        from safetensors.torch import load_file

        from framework.checkpoint import load_optimizer

        directory = Path(directory)
        self.module.load_state_dict(load_file(str(directory / "policy" / "model.safetensors")))
        load_optimizer(self.optimizer, directory)
        if (directory / "reward_model").exists():
            rm, rm_optimizer = self._reward_model()
            rm.load_state_dict(load_file(str(directory / "reward_model" / "model.safetensors")))
            load_optimizer(rm_optimizer, directory / "reward_model")
        self.version = version
