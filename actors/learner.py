"""``Learner``: one data-parallel training worker (a plain class; ``actors.remote`` makes a
group of them Ray actors sharing a torch.distributed process group: gloo on CPU, NCCL on GPU).

The learner holds the policy, its optimizer, the frozen starting policy and whatever models an
algorithm trains beside the policy, all on the device Ray gave it (``framework.models.accelerator``:
its GPU, else the CPU); how a batch is trained on is the algorithm's ``update`` hook
(``framework.algorithms.hooks``), which uses the services below (``logp``, ``step``,
``reference_logp``, ``auxiliary``).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from safetensors.torch import load_file

from actors.weight_sync import Manifest, WeightGroup
from framework.algorithms.registry import get_algorithm
from framework.checkpoint import load_optimizer, save_optimizer
from framework.losses import sequence_logprob, sft_loss, token_logprobs
from framework.models import accelerator, autocast, load_policy, load_reference
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
        dtype: ``float32``, or ``bfloat16`` forward passes under autocast (weights and optimizer
            state stay float32).
    """

    def __init__(self, *, model_path: str, rank: int = 0, world_size: int = 1, init_method: str | None = None,
                 lr: float = 1e-3, weight_decay: float = 0.0, threads: int = 1, seed: int = 0, dtype: str = "float32"):
        torch.set_num_threads(threads)
        torch.manual_seed(seed)
        self.rank, self.world_size = rank, world_size
        self.device, self.dtype = accelerator(), dtype
        model, self.tokenizer = load_policy(model_path)
        self.module = model.to(self.device).train()
        if world_size > 1:
            cuda = self.device.type == "cuda"
            dist.init_process_group("nccl" if cuda else "gloo", init_method=init_method, rank=rank, world_size=world_size)
            self.model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[self.device.index] if cuda else None)
        else:
            self.model = model
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        self.version = 0
        self.weight_group: WeightGroup | None = None  # pipeline.weight_sync=broadcast: rank 0 hosts it
        self.manifest: Manifest | None = None
        self.model_path, self.lr = model_path, lr
        self.reference = None  # the frozen starting policy (KL penalties), loaded on first use
        self.aux: dict[str, tuple] = {}  # name → (module, optimizer) an algorithm trains beside the policy
        self.checkpoint: Path | None = None  # the checkpoint last loaded (auxiliary models restore from it)

    # --- services of the update hooks ------------------------------------------------------
    def logp(self, batch: TrainBatch, model=None) -> torch.Tensor:
        """(B,) log-probs of the responses under ``model`` (default: the trained policy)."""
        batch = batch.to(self.device)
        with autocast(self.device, self.dtype):
            logits = (model or self.model)(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        return sequence_logprob(token_logp=token_logprobs(logits=logits, input_ids=batch.input_ids),
                                mask=batch.response_mask)

    def step(self, loss: torch.Tensor, optimizer=None, module=None) -> float:
        """One clipped step of ``optimizer`` on ``module`` (default: the policy's); the gradient norm."""
        optimizer, module = optimizer or self.optimizer, module or self.module
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        optimizer.step()
        return float(norm)

    @torch.no_grad()
    def reference_logp(self, batch: TrainBatch) -> torch.Tensor:
        """(B,) log-probs under the frozen starting policy (the reference of KL penalties)."""
        if self.reference is None:
            self.reference = load_reference(self.model_path, dtype=self.dtype, device=self.device)
        return self.logp(batch, self.reference)

    def auxiliary(self, name: str, build: Callable[[], tuple]) -> tuple:
        """(module, optimizer) of a model an algorithm trains beside the policy, made by ``build()``
        on first use and saved with the policy under ``name/``; after ``load`` it is restored from
        the loaded checkpoint."""
        if name not in self.aux:
            module, optimizer = build()
            saved = self.checkpoint / name if self.checkpoint else None
            if saved is not None and (saved / "model.safetensors").exists():
                module.load_state_dict(load_file(str(saved / "model.safetensors")))
                load_optimizer(optimizer, saved)
            self.aux[name] = (module, optimizer)
        return self.aux[name]

    # --- the role's methods ----------------------------------------------------------------
    def train(self, batch: TrainBatch, *, algorithm: str, eta: float, tau: float = 0.0, link: str = "logistic",
              epochs: int = 1, minibatches: int = 1, lr: float | None = None, kl_coef: float = 0.0) -> dict:
        """One update of ``algorithm`` on this worker's shard (its ``update`` hook: by default
        ``epochs`` passes in ``minibatches`` optimizer steps each); ``lr`` (the driver's schedule)
        sets this update's learning rate. Returns the hook's metrics, the new version and the time."""
        start = time.perf_counter()
        if lr is not None:  # models trained beside the policy keep their own rate
            for group in self.optimizer.param_groups:
                group["lr"] = lr
        algo = get_algorithm(algorithm)
        if kl_coef and "kl_coef" not in algo.accepts:
            raise ValueError(f"{algorithm} has no KL penalty (kl_coef)")
        out = algo.update(self, batch.to(self.device), loss=algo.loss, eta=eta, tau=tau, link=link, kl_coef=kl_coef, epochs=epochs,
                          minibatches=minibatches)
        self.version += 1
        return {**out, "version": self.version, "train_seconds": time.perf_counter() - start}

    def sft_step(self, batch: TrainBatch) -> float:
        """One supervised step on demonstrations (the warm start); returns the loss."""
        batch = batch.to(self.device)
        with autocast(self.device, self.dtype):
            logits = self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        loss = sft_loss(token_logp=token_logprobs(logits=logits, input_ids=batch.input_ids),
                        mask=batch.response_mask).mean()
        self.step(loss)
        return float(loss.detach())

    def weights(self) -> dict:
        """The current weights for the generators (a detached copy, in host memory)."""
        return {k: v.detach().to("cpu", copy=True) for k, v in self.module.state_dict().items()}

    def join_weight_group(self, address: str, world_size: int, manifest: Manifest) -> None:
        """Host the weight-broadcast group at ``address`` as its rank 0 (``pipeline.weight_sync=broadcast``);
        ``manifest``: what the generators receive."""
        self.weight_group = WeightGroup(address, rank=0, world_size=world_size, device=self.device)
        self.manifest = manifest

    def broadcast_weights(self) -> int:
        """Send the current weights to every generator of the group; returns the version sent."""
        self.weight_group.send(self.module.state_dict(), self.manifest)
        return self.version

    def save(self, directory: str) -> None:
        """Policy (safetensors, loadable with from_pretrained), optimizer state and the auxiliary
        models (rank 0 only)."""
        if self.rank != 0:
            return
        directory = Path(directory)
        self.module.save_pretrained(directory / "policy")
        self.tokenizer.save_pretrained(directory / "policy")
        save_optimizer(self.optimizer, directory)
        for name, (module, optimizer) in self.aux.items():
            module.save_pretrained(directory / name)
            save_optimizer(optimizer, directory / name)
        if self.checkpoint is not None and self.checkpoint.is_dir():  # restored ones not used since: as they are
            for saved in self.checkpoint.iterdir():
                if saved.name not in self.aux and (saved / "model.safetensors").exists() and saved.name != "policy":
                    shutil.copytree(saved, directory / saved.name, dirs_exist_ok=True)

    def load(self, directory: str, version: int) -> None:
        directory = Path(directory)
        self.module.load_state_dict(load_file(str(directory / "policy" / "model.safetensors")))
        load_optimizer(self.optimizer, directory)  # (the optimizer moves the state to the parameters' device)
        self.checkpoint, self.aux = directory, {}
        self.version = version
