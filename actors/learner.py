"""``Learner``: one data-parallel training worker (a plain class; ``actors.remote`` makes a
group of them Ray actors sharing a torch.distributed process group: gloo on CPU, NCCL on GPU),
replicated (``ddp``: DistributedDataParallel) or sharded (``fsdp``: FSDP2's ``fully_shard`` per
transformer block, each rank holding 1/N of the weights, gradients and Adam state).

The learner holds the policy, its optimizer, the frozen starting policy and whatever models an
algorithm trains beside the policy, all on the device Ray gave it (``framework.models.accelerator``:
its GPU, else the CPU); how a batch is trained on is the algorithm's ``update`` hook
(``framework.algorithms.hooks``), which uses the services below (``logp``, ``step``,
``reference_logp``, ``auxiliary``).
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from safetensors.torch import load_file

from actors.weight_sync import Manifest, WeightGroup, gather, is_sharded
from framework.algorithms.registry import get_algorithm
from framework.checkpoint import load_optimizer, read_optimizer, save_optimizer
from framework.config import LEARNER_STRATEGIES
from framework.errors import NonFiniteError
from framework.losses import sequence_logprob, sft_loss, token_logprobs
from framework.models import accelerator, autocast, group_backend, load_policy, load_reference
from framework.records import TrainBatch



def full_state(*, offload: bool = True):
    """``torch.distributed.checkpoint.state_dict``'s functions (imported here: only a sharded
    learner needs them, and they take most of a learner's import time) and the options of a
    sharded model's full state — gathered one tensor at a time, into host memory on rank 0 only."""
    from torch.distributed.checkpoint import state_dict

    return state_dict, state_dict.StateDictOptions(full_state_dict=True, cpu_offload=offload)


def shard(model: torch.nn.Module, device: torch.device) -> None:
    """FSDP2 over every rank of the default group: each transformer block (the model's
    ``_no_split_modules``: ``LlamaDecoderLayer``, say) a unit of its own, the rest (embeddings,
    final norm, head) the root's."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    blocks = set(getattr(model, "_no_split_modules", None) or ())
    for module in model.modules():
        if type(module).__name__ in blocks:
            fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh)


def full_logp(model, batch: TrainBatch) -> torch.Tensor:
    """(B,) response log-probs from one forward over every row's prompt and response."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    return sequence_logprob(token_logp=token_logprobs(logits=logits, input_ids=batch.input_ids),
                            mask=batch.response_mask)


def prompt_groups(batch: TrainBatch) -> tuple[list[list[int]], torch.Tensor, torch.Tensor] | None:
    """(the distinct prompts, each row's prompt index, each row's prompt length) when rows share
    prompts — collate's layout: prompt, then response (every row has one), then padding — else None."""
    mask = batch.response_mask > 0
    if not bool(mask.any(dim=1).all()):
        return None
    lengths = mask.float().argmax(dim=1)  # the first response position: the prompt's length
    index: dict[tuple, int] = {}
    rows = [index.setdefault(tuple(ids[:n]), len(index)) for ids, n in zip(batch.input_ids.tolist(), lengths.tolist())]
    if len(index) == len(rows):
        return None
    return [list(p) for p in index], torch.tensor(rows, device=mask.device), lengths


def cache_argument(model) -> str:
    """The name a model's forward takes its KV cache by (``cache`` from transformers 5.25 on)."""
    import inspect

    forward = getattr(model, "module", model).forward  # (a DDP wrapper's model)
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"


def shared_prefix_logp(model, batch: TrainBatch, prompts: list[list[int]], rows: torch.Tensor,
                       lengths: torch.Tensor) -> torch.Tensor:
    """(B,) response log-probs with each distinct prompt's forward pass made once: its keys and
    values (a ``DynamicCache``) indexed out to the rows that share it, and only the responses run
    after it, at their own positions. Gradients reach a shared prompt from every row of it."""
    from transformers import DynamicCache

    device, pad = batch.input_ids.device, 0  # (padding is masked: any token id does)
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long, device=device)
    seen = torch.zeros((len(prompts), width), dtype=torch.long, device=device)
    for j, p in enumerate(prompts):  # right-padded: a prompt's positions are 0 … len − 1
        ids[j, :len(p)] = torch.tensor(p, device=device)
        seen[j, :len(p)] = 1
    cache = DynamicCache()
    name = cache_argument(model)
    out = model(input_ids=ids, attention_mask=seen, use_cache=True, **{name: cache})
    last = torch.tensor([len(p) - 1 for p in prompts], device=device)
    first = out.logits[torch.arange(len(prompts), device=device), last]  # (U, V): each prompt's next token
    cache.reorder_cache(rows)  # (U → B rows: index_select, so the gradient sums over a prompt's rows)
    resp = batch.response_mask > 0
    span = int(resp.sum(dim=1).max())
    col = torch.arange(span, device=device)
    take = lengths[:, None] + col[None]  # each row's response columns in the batch
    valid = col[None] < resp.sum(dim=1)[:, None]
    tokens = batch.input_ids.gather(1, take.clamp(max=batch.input_ids.shape[1] - 1)).masked_fill(~valid, pad)
    attention = torch.cat([seen[rows], valid.long()], dim=1)
    logits = model(input_ids=tokens, attention_mask=attention, position_ids=lengths[:, None] + col[None],
                   use_cache=True, **{name: cache}).logits  # (B, span, V): predicts tokens 1 … span
    predict = torch.cat([first[rows][:, None], logits[:, :-1]], dim=1).float()  # (B, span, V) for tokens 0 …
    picked = torch.log_softmax(predict, dim=-1).gather(-1, tokens[..., None]).squeeze(-1)
    return (picked * valid).sum(dim=1)


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
        strategy: ``ddp`` (every rank a replica) or ``fsdp`` (sharded; with several ranks, every
            rank takes part in ``weights``, ``broadcast_weights`` and ``save``).
        shared_prompts: rows that share a prompt share its forward pass (``logp``; one learner only).
    """

    def __init__(self, *, model_path: str, rank: int = 0, world_size: int = 1, init_method: str | None = None,
                 lr: float = 1e-3, weight_decay: float = 0.0, threads: int = 1, seed: int = 0, dtype: str = "float32",
                 strategy: str = "ddp", shared_prompts: bool = False):
        torch.set_num_threads(threads)
        torch.manual_seed(seed)
        self.rank, self.world_size = rank, world_size
        self.device, self.dtype = accelerator(), dtype
        model, self.tokenizer = load_policy(model_path)
        self.module = model.to(self.device).train()
        if strategy not in LEARNER_STRATEGIES:
            raise ValueError(f"learner strategy must be one of {LEARNER_STRATEGIES}, got {strategy!r}")
        self.sharded = world_size > 1 and strategy == "fsdp"
        self.model = model
        if world_size > 1:
            cuda = self.device.type == "cuda"
            dist.init_process_group(group_backend(self.device), init_method=init_method, rank=rank, world_size=world_size)
            if self.sharded:
                shard(model, self.device)  # in place: self.module is the sharded model
            else:
                self.model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[self.device.index] if cuda else None)
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        self.version = 0
        self.steps_taken = 0  # optimizer steps of the current update
        self.policy_steps = 0  # of them, the policy's
        self.step_lrs: list[float] = []  # the current update's learning rate per policy step, if scheduled so
        self.weight_group: WeightGroup | None = None  # pipeline.weight_sync=broadcast: rank 0 hosts it
        self.manifest: Manifest | None = None
        self.model_path, self.lr = model_path, lr
        self.reference = None  # the frozen starting policy (KL penalties), loaded on first use
        self.aux: dict[str, tuple] = {}  # name → (module, optimizer) an algorithm trains beside the policy
        self.checkpoint: Path | None = None  # the checkpoint last loaded (auxiliary models restore from it)
        # whether logp shares prompts' forwards (None: on, not yet checked on a batch)
        self.share_prefixes: bool | None = None if shared_prompts else False

    # --- services of the update hooks ------------------------------------------------------
    def logp(self, batch: TrainBatch, model=None) -> torch.Tensor:
        """(B,) log-probs of the responses under ``model`` (default: the trained policy). Rows that
        share a prompt (a state's K answers) share its forward pass (``shared_prefix_logp``) once
        that is checked on this learner's first such batch to give the same log-probs."""
        batch = batch.to(self.device)
        model = model or self.model
        # (one learner only: a replicated or sharded group's wrapper expects one forward per backward)
        groups = prompt_groups(batch) if self.share_prefixes is not False and self.world_size == 1 else None
        with autocast(self.device, self.dtype):
            if groups is not None:
                shared = shared_prefix_logp(model, batch, *groups)
                if self.share_prefixes is None:  # (once: a model family whose cache it cannot use is left alone)
                    with torch.no_grad():
                        whole = full_logp(model, batch)
                    self.share_prefixes = bool(torch.allclose(shared.detach().float(), whole.float(), atol=1e-3))
                    if not self.share_prefixes:
                        return full_logp(model, batch)
                return shared
            return full_logp(model, batch)

    def step(self, loss: torch.Tensor, optimizer=None, module=None) -> float:
        """One clipped step of ``optimizer`` on ``module`` (default: the policy's); the gradient norm."""
        optimizer, module = optimizer or self.optimizer, module or self.module
        if optimizer is self.optimizer and self.step_lrs:  # this update's schedule, step by step
            for group in optimizer.param_groups:
                group["lr"] = self.step_lrs[min(self.policy_steps, len(self.step_lrs) - 1)]
        value = self._over_ranks(loss)  # (before backward: the ranks stop together or not at all)
        if not math.isfinite(value):
            raise NonFiniteError(f"the loss is {value}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        norm = float(norm.full_tensor() if is_sharded(norm) else norm)  # (the same on every rank)
        if not math.isfinite(norm):
            raise NonFiniteError(f"the gradient norm is {norm}")
        optimizer.step()
        self.steps_taken += 1
        self.policy_steps += optimizer is self.optimizer
        return norm

    def _over_ranks(self, value: torch.Tensor) -> float:
        """A scalar summed over the learner ranks: non-finite when it is on any rank."""
        value = value.detach().float().clone()
        if self.world_size > 1:
            dist.all_reduce(value)
        return float(value)

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
              epochs: int = 1, minibatches: int = 1, lr: float | list[float] | None = None, kl_coef: float = 0.0,
              reset_optimizer: bool = False, options: dict | None = None) -> dict:
        """One update of ``algorithm`` on this worker's shard (its ``update`` hook: by default
        ``epochs`` passes in ``minibatches`` optimizer steps each); ``lr`` (the driver's schedule)
        sets this update's learning rate, or each of its policy steps' when a list;
        ``reset_optimizer`` starts the policy's AdamW afresh (a new training stage); ``options``
        are the hook's own keywords (``Algorithm.update_options``). Returns the hook's metrics,
        the new version and the time."""
        start = time.perf_counter()
        self.step_lrs = list(lr) if isinstance(lr, (list, tuple)) else []
        if lr is not None and not self.step_lrs:  # models trained beside the policy keep their own rate
            for group in self.optimizer.param_groups:
                group["lr"] = lr
        if reset_optimizer:
            self.optimizer.state.clear()  # moments and step counts: the next step is a first step
        algo = get_algorithm(algorithm)
        if kl_coef and "kl_coef" not in algo.accepts:
            raise ValueError(f"{algorithm} has no KL penalty (kl_coef)")
        self.steps_taken = self.policy_steps = 0
        try:
            extra = {"target": algo.target} if algo.target is not None else {}
            out = algo.update(self, batch.to(self.device), loss=algo.loss, eta=eta, tau=tau, link=link, kl_coef=kl_coef,
                              epochs=epochs, minibatches=minibatches, **extra, **(options or {}))
            weights = (q.to_local() if is_sharded(q) else q for q in self.module.parameters())
            if self._over_ranks(sum((~torch.isfinite(q)).sum() for q in weights)):  # before they are published
                raise NonFiniteError("the weights are not finite")
        except NonFiniteError as e:
            # a step is refused before it is taken, but earlier steps of the update leave weights
            # that belong to no iteration: the driver then keeps its last checkpoint
            applied = ("nothing was applied" if not self.steps_taken else
                       f"{self.steps_taken} optimizer step(s) of this update were applied and are not saved")
            raise NonFiniteError(f"iteration {self.version + 1}: {e}; {applied}", step=self.version + 1,
                                 applied=self.steps_taken) from None
        self.version += 1
        return {**out, "version": self.version, "train_seconds": time.perf_counter() - start}

    def sft_step(self, batch: TrainBatch) -> float:
        """One supervised step on demonstrations (the warm start); returns the loss."""
        batch = batch.to(self.device)
        with autocast(self.device, self.dtype):
            logits = self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        loss = sft_loss(token_logp=token_logprobs(logits=logits, input_ids=batch.input_ids),
                        mask=batch.response_mask).mean()
        try:
            self.step(loss)
        except NonFiniteError as e:
            raise NonFiniteError(f"warm start: {e} (lower warm_start.lr)") from None
        return float(loss.detach())

    def weights(self) -> dict | None:
        """The current weights for the generators (a detached copy, in host memory). Sharded: the
        full weights on rank 0, gathered one tensor at a time (None on the other ranks)."""
        if self.sharded:
            dcp, full = full_state()
            state = dcp.get_model_state_dict(self.module, options=full)
            return state if self.rank == 0 else None
        return {k: v.detach().to("cpu", copy=True) for k, v in self.module.state_dict().items()}

    def join_weight_group(self, address: str, world_size: int, manifest: Manifest) -> None:
        """Rank 0: host the weight-broadcast group at ``address`` (``pipeline.weight_sync=broadcast``);
        ``manifest``: what the generators receive (a sharded learner's other ranks keep only it)."""
        if self.rank == 0:
            self.weight_group = WeightGroup(address, rank=0, world_size=world_size, device=self.device)
        self.manifest = manifest

    def broadcast_weights(self) -> int:
        """Send the current weights to every generator of the group (sharded: each tensor gathered
        on every rank as it goes, rank 0 sends it); returns the version sent."""
        if self.rank == 0:
            self.weight_group.send(self.module.state_dict(), self.manifest)
        else:
            gather(self.module.state_dict(), self.manifest)
        return self.version

    def save(self, directory: str) -> None:
        """Policy (safetensors, loadable with from_pretrained), optimizer state and the auxiliary
        models (rank 0 writes; a sharded learner's other ranks take part in gathering the full
        state, one tensor at a time)."""
        policy = moments = None
        if self.sharded:
            dcp, full = full_state()
            policy = dcp.get_model_state_dict(self.module, options=full)
            moments = dcp.get_optimizer_state_dict(self.module, self.optimizer, options=full)
        if self.rank != 0:
            return
        directory = Path(directory)
        self.module.save_pretrained(directory / "policy", state_dict=policy)
        self.tokenizer.save_pretrained(directory / "policy")
        save_optimizer(self.optimizer, directory, state=self._by_index(moments) if moments else None)
        for name, (module, optimizer) in self.aux.items():
            module.save_pretrained(directory / name)
            self.tokenizer.save_pretrained(directory / name)  # whole: e.g. judge.kind=reward_model loads it
            save_optimizer(optimizer, directory / name)
        if self.checkpoint is not None and self.checkpoint.is_dir():  # restored ones not used since: as they are
            for saved in self.checkpoint.iterdir():
                if saved.name not in self.aux and (saved / "model.safetensors").exists() and saved.name != "policy":
                    shutil.copytree(saved, directory / saved.name, dirs_exist_ok=True)

    def shard_numel(self) -> int:
        """Parameter elements this rank holds (a sharded learner's part, else the whole model)."""
        return sum((q.to_local() if is_sharded(q) else q).numel() for q in self.module.parameters())

    def _by_index(self, state: dict) -> dict:
        """An optimizer state keyed by parameter names (a sharded model's) → by index, as
        ``optimizer.state_dict()`` keys it: one checkpoint format for both strategies."""
        index = {name: i for i, (name, _) in enumerate(self.module.named_parameters())}
        return {"state": {index[k]: v for k, v in state["state"].items()},
                "param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in state["param_groups"]]}

    def _by_name(self, state: dict) -> dict:
        names = [name for name, _ in self.module.named_parameters()]
        return {"state": {names[i]: v for i, v in state["state"].items()},
                "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in state["param_groups"]]}

    def load(self, directory: str, version: int) -> None:
        directory = Path(directory)
        policy = load_file(str(directory / "policy" / "model.safetensors"))
        if self.sharded:  # every rank reads the full state and keeps its shard
            dcp, full = full_state(offload=False)
            dcp.set_model_state_dict(self.module, policy, options=full)
            dcp.set_optimizer_state_dict(self.module, self.optimizer, self._by_name(read_optimizer(directory)),
                                         options=full)
        else:
            self.module.load_state_dict(policy)
            load_optimizer(self.optimizer, directory)  # (the optimizer moves the state to the parameters' device)
        self.checkpoint, self.aux = directory, {}
        self.version = version
