"""Configs: YAML files plus dotted ``key=value`` overrides, loaded into frozen dataclasses.

OmegaConf does the merging and type checking against the dataclass schema, so unknown keys and
wrong types are errors naming the full key path. Range checks live in each dataclass's
``__post_init__`` and are reported with the full path too. Merge order:

    dataclass defaults ← YAML file ← QUICK (when ``quick=true``) ← command-line overrides

so an explicit override always wins, also over the reduced ``quick`` sizes.

Names that live in the floor are checked here (algorithms, tabular algorithms, DP methods, the
``job:`` values); names of things in ``games/`` (tasks, built-in matrix games) and of judges are
checked by each job's preflight, before anything is written.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import OmegaConf, flag_override
from omegaconf.errors import OmegaConfBaseException

from framework.algorithms.registry import algorithm_names, get_algorithm, implementing
from framework.algorithms.tabular import TABULAR_ALGOS
from framework.errors import ConfigError, InputError
from framework.models import DTYPES, TinyModelSpec

#: The values of ``job:`` (each is a file of ``framework/jobs/``, registered in ``framework.jobs.JOBS``).
JOB_NAMES = ("selfplay", "compare", "compare_irl", "dp", "compare_dp", "lab", "train_judge")


@dataclass(frozen=True)
class LabConfig:
    """The exact game lab: tabular MPO/OMPO on matrix and Markov games."""

    matrix_games: tuple[str, ...] = ("rock_paper_scissors", "asymmetric_cycle", "random")
    """Matrix games to run: built-in ones (``games.matrix``; ``random`` is a random non-transitive
    game) and ``task``, the class game of the config's ``task`` (running_sum: its 8 answer classes
    under the rule judge, e.g. ``task.correctness_weight=0`` for the pure style cycle)."""
    matrix_size: int = 5
    """Number of response classes of the ``random`` matrix game."""
    markov_games: int = 10
    """How many random Markov games to average over."""
    algos: tuple[str, ...] = ("mpo", "ompo")
    """Tabular algorithms: mpo, ompo (sppo = mpo on matrix games)."""
    eta: float = 0.7
    """Step size η of the mirror-descent update (β = 1/η); the OMPO bound is η ≤ 1/√2."""
    iters: int = 10_000
    """Policy updates per run."""
    init: str = "random"
    """Starting policy: ``uniform`` or ``random`` (Dirichlet per state, from the seed)."""
    staleness: int = 0
    """Updates computed from, and anchored at, the policy this many versions back (an async
    pipeline's lag; 0: the consecutive iterates the analysis assumes)."""

    def __post_init__(self):
        if not self.eta > 0:
            raise ConfigError("eta", f"must be > 0, got {self.eta}")
        if self.iters < 10:
            raise ConfigError("iters", f"must be ≥ 10 (a slope needs a decade), got {self.iters}")
        if self.markov_games < 1:
            raise ConfigError("markov_games", f"must be ≥ 1, got {self.markov_games}")
        if self.matrix_size < 3:
            raise ConfigError("matrix_size", f"must be ≥ 3, got {self.matrix_size}")
        if self.init not in ("uniform", "random"):
            raise ConfigError("init", f"must be 'uniform' or 'random', got {self.init!r}")
        if self.staleness < 0:
            raise ConfigError("staleness", f"must be ≥ 0, got {self.staleness}")
        for i, name in enumerate(self.algos):
            if name not in TABULAR_ALGOS:
                raise ConfigError(f"algos[{i}]", f"unknown algorithm {name!r}; choose from {sorted(TABULAR_ALGOS)}")


@dataclass(frozen=True)
class ModelConfig:
    """The policy: a Hugging Face checkpoint, or the tiny model built for the task."""

    path: Optional[str] = None
    """Local directory or hub id of a causal LM with a chat template; empty = build the tiny model."""
    tiny: TinyModelSpec = field(default_factory=TinyModelSpec)
    """Sizes of the tiny model (used when ``path`` is empty)."""
    max_new_tokens: int = 8
    """Response length cap (tokens)."""
    dtype: str = "float32"
    """What the self-play roles compute in, on the device Ray gave them (a GPU, else the CPU):
    ``float32``, or ``bfloat16`` — learners keep float32 weights and optimizer state and run their
    forward passes under autocast, generators and the reference hold bfloat16 weights. The warm
    start and DP training stay in float32."""

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ConfigError("max_new_tokens", f"must be ≥ 1, got {self.max_new_tokens}")
        if self.dtype not in DTYPES:
            raise ConfigError("dtype", f"must be one of {DTYPES}, got {self.dtype!r}")


@dataclass(frozen=True)
class TaskConfig:
    """The built-in multi-turn task (see games/tasks)."""

    name: str = "running_sum"
    """Task name."""
    turns: int = 3
    """User turns per conversation (horizon H)."""
    correctness_weight: float = 0.7
    """Weight w of the transitive (correctness) part of the rule judge."""
    margins: tuple[float, float, float] = (0.1, 0.2, 0.4)
    """Margins of the non-transitive style cycle."""
    path: Optional[str] = None
    """``mtbench101``: the MT-Bench-101-format JSONL file of dialogues."""


@dataclass(frozen=True)
class WarmStartConfig:
    """Supervised warm start on the task's demonstrations (cached per model and task)."""

    steps: int = 800
    """SFT optimizer steps (0 = start self-play from the random-init model)."""
    batch_size: int = 64
    """Assistant turns per SFT step."""
    lr: float = 3e-3
    """AdamW learning rate."""
    demonstrations: int = 4000
    """Demonstration conversations generated for SFT."""
    until: str = "steps"
    """``steps``: train for ``steps``; ``plateau``: hold out a tenth of the demonstrations and stop
    once their NLL has not fallen by ``min_delta`` for ``patience`` checks (every ``eval_every``
    steps), keeping the best weights (``steps`` is then the cap) — a converged SFT model."""
    eval_every: int = 100
    """With ``until=plateau``: steps between held-out NLL checks."""
    patience: int = 3
    """With ``until=plateau``: checks without an improvement before stopping."""
    min_delta: float = 0.002
    """With ``until=plateau``: the mean NLL per answer (nats) a check must improve by."""
    lr_drops: int = 0
    """With ``until=plateau``: plateaus met by going back to the best weights and going on at
    ``lr_drop_factor`` × the rate before stopping at the next (an annealed, converged start)."""
    lr_drop_factor: float = 0.3
    """With ``until=plateau``: what each of the ``lr_drops`` multiplies the learning rate by."""
    seed: Optional[int] = None
    """The seed of the start (the tiny model, its tokenizer, the SFT demonstrations and their
    order); unset: the run's ``seed``. A fixed one gives runs of every seed one start."""

    def __post_init__(self):
        if self.steps < 0 or self.batch_size < 1 or self.demonstrations < 1:
            raise ConfigError("steps", "steps ≥ 0, batch_size ≥ 1 and demonstrations ≥ 1 are required")
        if not self.lr > 0:
            raise ConfigError("lr", f"must be > 0, got {self.lr}")
        if self.until not in ("steps", "plateau"):
            raise ConfigError("until", f"must be 'steps' or 'plateau', got {self.until!r}")
        if self.eval_every < 1 or self.patience < 1 or not self.min_delta >= 0:
            raise ConfigError("eval_every", "eval_every ≥ 1, patience ≥ 1 and min_delta ≥ 0 are required")
        if self.lr_drops < 0 or not 0 < self.lr_drop_factor < 1:
            raise ConfigError("lr_drops", "lr_drops ≥ 0 and 0 < lr_drop_factor < 1 are required")
        if self.until == "plateau" and self.demonstrations < 10:
            raise ConfigError("demonstrations", "until=plateau holds out a tenth: at least 10 are needed")

    def cache_key(self) -> dict:
        """What determines the warm start (the plateau's settings only when it stops on one)."""
        every = dataclasses.asdict(self)
        del every["seed"]  # (part of the key as the start's seed, see warmstart.prepare_policy)
        if self.until == "steps":
            return {k: every[k] for k in ("steps", "batch_size", "lr", "demonstrations")}
        if not self.lr_drops:  # (plateau starts without drops keep their cache entries)
            del every["lr_drops"], every["lr_drop_factor"]
        return every


@dataclass(frozen=True)
class DemosConfig:
    """Demonstrations for the reward-learning methods (sft, spin, irft) and the warm start."""

    path: Optional[str] = None
    """A JSONL/Parquet file of demonstrations (``games/demonstrations.py``); default: the task's own."""
    count: int = 1000
    """Task conversations to demonstrate (each gives one demonstration per turn); a file is used whole."""
    corruption: float = 0.0
    """Share of the task's demonstrated answers replaced by wrong ones (low-quality demonstrations)."""

    def __post_init__(self):
        if self.count < 1:
            raise ConfigError("count", f"must be ≥ 1, got {self.count}")
        if not 0 <= self.corruption <= 1:
            raise ConfigError("corruption", f"must be in [0, 1], got {self.corruption}")


LR_SCHEDULES = ("constant", "linear", "cosine")


@dataclass(frozen=True)
class AlgoConfig:
    """The self-play algorithm and its learner settings."""

    name: str = "mpo"
    """Algorithm (registered in framework/algorithms)."""
    eta: float = 5.0
    """Step size η of π_{t+1} ∝ π_t exp(η Q), for every method: DPO's β and IPO's τ are 1/η."""
    kl_coef: float = 0.0
    """MPO: β of a KL penalty toward the warm-start policy π_ref (0 = the paper's MPO). The step
    becomes π_{t+1} ∝ π_t^{1−ηβ} π_ref^{ηβ} exp(η Q̂), mirror descent on the KL-regularised game,
    whose last iterate settles at the regularised equilibrium π ∝ π_ref exp(Q/β) where plain MPO's
    circles a non-transitive preference's equilibrium. Needs ηβ < 1 and one-step Q."""
    tau: float = 0.0
    """OMPO's optimism offset τ in η (2 Q̂ᵗ − Q̂ᵗ⁻¹ − τ) (the paper uses 0); other methods ignore it."""
    q: str = "one_step"
    """MPO's Q estimate: ``one_step`` (the paper's default: the answer's win rate at its turn),
    ``monte_carlo`` (every answer continued to the end with π_t, per-turn win rates summed,
    baseline (H − h + 1)/2) or ``terminal`` (the win rate at the conversation's last turn only)."""
    rounds: int = 0
    """irft: T, the number of slices of the demonstrations; round r trains on slice r mod T
    (0: as many rounds as fit in train.iterations). rft: the same slices when > 0 (0: every
    demonstration every iteration)."""
    round_iterations: int = 1
    """irft: pipeline iterations per round. Within a round the generators keep the round's
    starting policy (it draws the answers and is the contrast's reference) while the learner
    takes one iteration per part of the round's slice; weights are published when a round ends."""
    link: str = "logistic"
    """spin/irft: the link h of the demonstration-vs-generation contrast (``logistic`` or ``linear``)."""
    k: int = 4
    """Sampled answers per visited state (self-play methods; spin/irft draw one, sft none)."""
    keep: str = "all"
    """Which samples train: ``all`` or ``best_worst`` (the paper's choice)."""
    lr: float = 1e-3
    """Learner AdamW learning rate (the peak, under a schedule)."""
    lr_schedule: str = "constant"
    """How the learning rate moves over ``train.iterations``: ``constant``, or ``linear`` /
    ``cosine`` decay to zero at the last iteration (after the warm-up)."""
    warmup: int = 0
    """Iterations of linear warm-up from zero to ``lr``."""
    epochs: int = 1
    """Passes over each iteration's batch."""
    minibatches: int = 2
    """Optimizer steps per pass."""
    temperature: float = 1.0
    """spin/irft: the temperature π_t draws its own answers at (0: greedy, as the authors' scripts
    decode); the contrast's reference is π_t's log-probability of that answer either way."""
    round_reset: bool = False
    """Each round — ``round_iterations`` iterations for irft, one iteration otherwise — is a training
    stage of its own, as the authors run each stage: a fresh AdamW state, and the schedule
    (``lr_schedule``) runs within the round, optimizer step by optimizer step, after a linear
    warm-up over its first ``round_warmup`` share. For the self-play methods this solves each
    iteration's regression afresh (with ``epochs`` passes), so the step taken is η (metric
    ``effective_step``) rather than what a few steps of carried-over momentum reach."""
    round_warmup: float = 0.1
    """With ``round_reset``: the share of a round's optimizer steps spent warming up."""
    reward_model: Optional[str] = None
    """rft: the reward model to start from (e.g. a ``job: train_judge`` judge of kind reward_model
    on the policy's tokenizer); default: the starting policy's body with a fresh scalar head."""

    def __post_init__(self):
        if self.name not in algorithm_names():
            raise ConfigError("name", f"unknown algorithm {self.name!r}; choose from {algorithm_names()}")
        accepts = get_algorithm(self.name).accepts
        if not self.eta > 0:
            raise ConfigError("eta", f"must be > 0, got {self.eta}")
        if self.q not in ("one_step", "monte_carlo", "terminal"):
            raise ConfigError("q", f"must be 'one_step', 'monte_carlo' or 'terminal', got {self.q!r}")
        if self.q != "one_step" and "q" not in accepts:
            raise ConfigError("q", f"multi-turn Q estimates are implemented for {', '.join(implementing('q'))}, "
                              f"not {self.name!r}")
        if self.kl_coef < 0:
            raise ConfigError("kl_coef", f"must be ≥ 0, got {self.kl_coef}")
        if self.kl_coef and ("kl_coef" not in accepts or self.q != "one_step"):
            raise ConfigError("kl_coef", f"the KL penalty is implemented for {', '.join(implementing('kl_coef'))} "
                              f"with one-step Q, not {self.name!r} with q={self.q!r}")
        if self.kl_coef * self.eta >= 1:
            raise ConfigError("kl_coef", f"η·β must be < 1 (the step mixes π_t^(1−ηβ) and π_ref^(ηβ)), "
                              f"got {self.eta} × {self.kl_coef} = {self.eta * self.kl_coef:g}")
        if self.rounds < 0:
            raise ConfigError("rounds", f"must be ≥ 0, got {self.rounds}")
        if self.round_iterations < 1:
            raise ConfigError("round_iterations", f"must be ≥ 1, got {self.round_iterations}")
        if self.round_iterations > 1 and "round_iterations" not in accepts:
            raise ConfigError("round_iterations", f"rounds of several iterations are implemented for "
                              f"{', '.join(implementing('round_iterations'))}, not {self.name!r}")
        if self.link not in ("logistic", "linear"):
            raise ConfigError("link", f"must be 'logistic' or 'linear', got {self.link!r}")
        if self.k < 2:
            raise ConfigError("k", f"must be ≥ 2 (Q̂ compares samples), got {self.k}")
        if self.keep not in ("all", "best_worst"):
            raise ConfigError("keep", f"must be 'all' or 'best_worst', got {self.keep!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError("lr_schedule", f"must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.warmup < 0:
            raise ConfigError("warmup", f"must be ≥ 0, got {self.warmup}")
        if not self.lr > 0 or self.epochs < 1 or self.minibatches < 1:
            raise ConfigError("lr", "lr > 0, epochs ≥ 1 and minibatches ≥ 1 are required")
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):
            raise ConfigError("temperature", f"must be ≥ 0 (0: greedy), got {self.temperature}")
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for key in ("temperature", "round_reset", "reward_model"):
            if getattr(self, key) != defaults[key] and key not in accepts:
                raise ConfigError(key, f"is implemented for {', '.join(implementing(key))}, not {self.name!r}")
        if not 0 <= self.round_warmup < 1:
            raise ConfigError("round_warmup", f"must be in [0, 1), got {self.round_warmup}")
        if self.round_reset and self.warmup:
            raise ConfigError("warmup", "with round_reset each round warms up over its round_warmup share; "
                              "set warmup=0")

    def lr_at(self, iteration: int, iterations: int) -> float:
        """The learning rate of the update of ``iteration`` (0-based) in a run of ``iterations``:
        linear warm-up over ``warmup`` iterations (the first step at lr/warmup), then the schedule,
        which reaches zero one iteration past the last (so the last update still moves)."""
        return self._schedule(iteration, iterations, self.warmup)

    def round_lrs(self, position: int) -> list[float]:
        """With ``round_reset``: the learning rate of each optimizer step of the update at
        ``position`` (0-based) in its round of ``round_iterations`` updates, the schedule running
        over the round's steps after a warm-up over ``round_warmup`` of them."""
        per = self.epochs * self.minibatches
        steps = per * self.round_iterations
        warm = round(self.round_warmup * steps)
        return [self._schedule(position * per + j, steps, warm) for j in range(per)]

    def _schedule(self, step: int, steps: int, warmup: int) -> float:
        if step < warmup:
            return self.lr * (step + 1) / warmup
        if self.lr_schedule == "constant":
            return self.lr
        progress = (step - warmup) / max(steps - warmup, 1)
        if self.lr_schedule == "linear":
            return self.lr * (1 - progress)
        return self.lr * 0.5 * (1 + math.cos(math.pi * progress))


#: The judge kinds (``games/judges``) and the ``judge.`` keys each reads besides ``kwargs``.
JUDGE_SETTINGS = {
    "rule": (),
    "custom": (),
    "reward_model": ("path", "temperature", "batch_size", "max_length", "threads"),
    "pairwise_model": ("path", "batch_size", "max_length", "threads"),
    "llm": ("base_url", "model", "api_key_env", "max_concurrency", "timeout_s", "requests_per_minute",
            "tokens_per_minute", "request_retries", "template", "verdict", "max_tokens", "extra_body"),
}
LLM_VERDICTS = ("text", "logprobs")


@dataclass(frozen=True)
class JudgeConfig:
    """Which preference judge scores the samples (README "Judges")."""

    kind: str = "rule"
    """``rule`` (the task's programmatic judge), ``reward_model`` (a scalar reward model:
    P = σ((r_a − r_b)/T)), ``pairwise_model`` (a model reading both answers), ``llm`` (an LLM over an
    OpenAI-compatible HTTP endpoint) or ``custom`` (``target``)."""
    target: Optional[str] = None
    """For kind=custom: ``module:Class`` implementing compare(conversations, a, b)."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for the judge's constructor."""
    retries: int = 2
    """Extra attempts when the judge raises, before the run stops."""
    requeue: int = 1
    """Times a pair the judge could not judge (it answered None: an HTTP call that kept failing, a
    verdict that did not parse) is asked again before it is dropped; dropped pairs are counted
    (``judge_failures``), never scored."""
    path: Optional[str] = None
    """reward_model / pairwise_model: the Hugging Face checkpoint (a local directory or hub id),
    e.g. a ``job: train_judge`` run's ``judge/`` or an RFT checkpoint's ``reward_model/``."""
    temperature: float = 1.0
    """reward_model: T in P(a ≻ b) = σ((r_a − r_b)/T)."""
    batch_size: int = 64
    """reward_model / pairwise_model: sequences per forward pass."""
    max_length: int = 512
    """reward_model / pairwise_model: tokens read per sequence (longer ones keep their end)."""
    threads: int = 1
    """reward_model / pairwise_model: torch threads of each judge actor."""
    base_url: Optional[str] = None
    """llm: the OpenAI-compatible API root, e.g. ``http://127.0.0.1:8000/v1`` (``vllm serve``)."""
    model: Optional[str] = None
    """llm: the model name sent with each request."""
    api_key_env: Optional[str] = None
    """llm: the *name* of the environment variable holding the API key (unset: no key is sent)."""
    max_concurrency: int = 8
    """llm: requests in flight per judge actor."""
    timeout_s: float = 60.0
    """llm: seconds per request (connect to last byte) before it counts as failed and is retried."""
    requests_per_minute: float = 0.0
    """llm: one limit for the whole run, shared by every judge actor (0: none)."""
    tokens_per_minute: float = 0.0
    """llm: one limit on prompt + completion tokens for the whole run (0: none)."""
    request_retries: int = 4
    """llm: attempts beyond the first on 429, 5xx, timeouts and lost connections (jittered
    exponential backoff; a 429's ``Retry-After`` is honoured by every judge of the run)."""
    template: Optional[str] = None
    """llm: a file holding the pairwise prompt (``{conversation}``, ``{answer_a}``, ``{answer_b}``);
    default: MT-Bench's pairwise prompt with the multi-turn context."""
    verdict: str = "text"
    """llm: ``text`` (parse ``[[A]]``, ``[[B]]``, ``[[C]]`` = tie) or ``logprobs`` (P(A) from the
    verdict token's log-probs, where the server returns them)."""
    max_tokens: int = 512
    """llm: completion tokens per request."""
    extra_body: dict[str, Any] = field(default_factory=dict)
    """llm: extra fields of each request's JSON body (provider options, e.g. vLLM's
    ``structured_outputs``)."""

    def __post_init__(self):
        if self.kind not in JUDGE_SETTINGS:
            raise ConfigError("kind", f"unknown judge {self.kind!r}; choose from {sorted(JUDGE_SETTINGS)}")
        if self.kind == "custom" and not self.target:
            raise ConfigError("target", "judge.kind=custom needs judge.target=module:Class")
        if self.kind in ("reward_model", "pairwise_model") and not self.path:
            raise ConfigError("path", f"judge.kind={self.kind} needs judge.path (a checkpoint directory or hub id)")
        if self.kind == "llm":
            for name in ("base_url", "model"):
                if not getattr(self, name):
                    raise ConfigError(name, f"judge.kind=llm needs judge.{name}")
            if not str(self.base_url).startswith(("http://", "https://")):
                raise ConfigError("base_url", f"must start with http:// or https://, got {self.base_url!r}")
        for name in ("retries", "requeue", "request_retries"):
            if getattr(self, name) < 0:
                raise ConfigError(name, f"must be ≥ 0, got {getattr(self, name)}")
        for name in ("batch_size", "max_length", "threads", "max_concurrency", "max_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be ≥ 1, got {getattr(self, name)}")
        for name in ("requests_per_minute", "tokens_per_minute"):
            if not (getattr(self, name) >= 0 and math.isfinite(getattr(self, name))):
                raise ConfigError(name, f"must be a finite number ≥ 0 (0: no limit), got {getattr(self, name)}")
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise ConfigError("temperature", f"must be a finite number > 0, got {self.temperature}")
        if not (self.timeout_s > 0 and math.isfinite(self.timeout_s)):
            raise ConfigError("timeout_s", f"must be a finite number > 0, got {self.timeout_s}")
        if self.verdict not in LLM_VERDICTS:
            raise ConfigError("verdict", f"must be one of {LLM_VERDICTS}, got {self.verdict!r}")

    def settings(self) -> dict[str, Any]:
        """The keyword arguments of this kind's factory in ``games.judges``: its ``judge.`` keys
        and ``kwargs``."""
        return {**{name: getattr(self, name) for name in JUDGE_SETTINGS[self.kind]}, **self.kwargs}


WEIGHT_SYNCS = ("object_store", "broadcast")
LEARNER_STRATEGIES = ("ddp", "fsdp")
PLACEMENT_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
#: pipeline.light_roles: where the reference and a rule judge run
LIGHT_ROLES = ("auto", "driver", "actors")
TIMED_ROLES = ("generator", "reference", "judge", "learner", "dp_worker")


@dataclass(frozen=True)
class RoleResources:
    """What each actor of one role asks Ray for."""

    cpus: Optional[float] = None
    """CPUs; empty: 0.01 — a place in the run's placement group rather than a reservation (the
    role's torch threads are set apart) — except DP workers, which take dp.threads / dp.workers."""
    gpus: Optional[float] = None
    """GPUs (a fraction shares one); empty: when the cluster has GPUs, one per learner, generator
    and DP worker — half each where a generator and a learner share a bundle
    (``pipeline.placement=colocated``) — and none for the reference and the judge; none without GPUs."""
    resources: dict[str, float] = field(default_factory=dict)
    """Custom Ray resources, e.g. ``{gpu_node: 0.01}`` to place the role on nodes that declare ``gpu_node``."""

    def __post_init__(self):
        if self.cpus is not None and self.cpus < 0:
            raise ConfigError("cpus", f"must be ≥ 0, got {self.cpus}")
        if self.gpus is not None and self.gpus < 0:
            raise ConfigError("gpus", f"must be ≥ 0, got {self.gpus}")
        for name, amount in self.resources.items():
            if not amount > 0:
                raise ConfigError(f"resources.{name}", f"must be > 0, got {amount}")


@dataclass(frozen=True)
class ResourcesConfig:
    """Resources per role (``pipeline.resources.<role>.cpus`` / ``.gpus`` / ``.resources``)."""

    generator: RoleResources = field(default_factory=RoleResources)
    learner: RoleResources = field(default_factory=RoleResources)
    reference: RoleResources = field(default_factory=RoleResources)
    """The frozen generator holding the warm start (held-out win rates)."""
    judge: RoleResources = field(default_factory=RoleResources)
    dp_worker: RoleResources = field(default_factory=RoleResources)


@dataclass(frozen=True)
class PipelineConfig:
    """How the actors are laid out and scheduled."""

    mode: str = "async"
    """``sync`` (each stage waits) or ``async`` (generation runs ahead of the learner)."""
    max_staleness: int = 1
    """Async: generators run at most this many policy versions ahead; older samples are dropped."""
    generators: int = 1
    """Rollout generator actors."""
    learners: int = 1
    """Data-parallel learner workers (one torch.distributed process group)."""
    backend: str = "auto"
    """Generation backend: ``hf`` (transformers generate), ``vllm`` (a vLLM engine per generator,
    weights updated in place) or ``auto``: ``vllm`` on a GPU where vLLM is installed, else ``hf``
    (on CPU, ``hf`` measured 2.6–2.9× faster on the tiny model: README)."""
    ray: bool = True
    """Run the roles as Ray actors (false: all in this process, for debugging)."""
    num_cpus: Optional[int] = None
    """CPUs Ray may use (default: all)."""
    generator_threads: Optional[int] = None
    """torch threads per generator; empty: its share of the thread budget (``learner_threads``)."""
    learner_threads: Optional[int] = None
    """torch threads per learner worker; empty: the thread budget of a run on a Ray of its own
    (``num_cpus`` cores) — in sync mode, where the roles take turns, the role that runs gets every
    core (shared by the learners, or by the generators, that run together); in async mode the
    generators and the learners split them, each at least one; a role pinned to cores
    (``placement=disaggregated`` on CPUs) as many as it has. On a joined cluster: the role's
    ``resources.<role>.cpus`` (at least 1)."""
    placement: str = "colocated"
    """``colocated``: generator i and learner i share a placement bundle (on GPUs: one GPU);
    ``disaggregated``: each has its own (on a CPU-only cluster: pinned to its own core)."""
    placement_strategy: str = "PACK"
    """How the run's placement group spreads its bundles over nodes (Ray's ``PACK``, ``SPREAD``,
    ``STRICT_PACK`` or ``STRICT_SPREAD``)."""
    address: Optional[str] = None
    """The Ray cluster to join (e.g. ``auto``, ``ray://head:10001``); empty: ``$RAY_ADDRESS``, else a
    Ray started on this machine for the run."""
    placement_timeout: float = 300.0
    """Seconds to wait for a joined cluster (its autoscaler, say) to hold the run's placement group
    before failing; a Ray started for the run holds it or fails at once."""
    learner_strategy: str = "ddp"
    """How several learners share the policy: ``ddp`` (each a replica: DistributedDataParallel) or
    ``fsdp`` (sharded with FSDP2: each rank holds 1/N of the weights, gradients and Adam state, for
    a model that does not fit one device; the KL reference stays whole on each rank)."""
    weight_sync: str = "object_store"
    """How each published policy version reaches the generators: ``object_store`` (learner rank 0
    puts one copy in Ray's object store, each generator reads it) or ``broadcast`` (a collective
    from learner rank 0 into the generators: gloo on CPU, NCCL on GPU; bench/weight_sync.py)."""
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    max_restarts: int = 3
    """How many times the run re-creates a generator, the reference or the judge that died or
    missed its deadline (their lost calls are re-issued with the same seeds); past it the run stops
    with a resumable checkpoint, naming the role."""
    call_timeout_s: float = 600.0
    """Deadline of every remote call, in seconds from when the run starts waiting for it (0: none):
    a role that misses it is treated as dead. ``call_timeouts`` overrides it per role."""
    call_timeouts: dict[str, float] = field(default_factory=dict)
    """Per-role deadlines overriding ``call_timeout_s``, e.g. ``{judge: 30}`` (roles: generator,
    reference, judge, learner, dp_worker)."""
    judges: int = 1
    """Judge actors (each with ``resources.judge``): every iteration's pairs are split between them
    in order; a dead or hung judge is re-created and its share sent again."""
    shared_prompts: bool = False
    """The learner runs each distinct prompt of a batch once — a state's K answers share its keys
    and values — and only the answers after it (one learner; checked against the plain forward on
    its first batch, and left off where they differ). The same log-probs and gradients to float
    rounding: a run's figures move in their last digits, so it is off by default and a seed's
    runs reproduce earlier ones."""
    light_roles: str = "auto"
    """Where the light roles run — the reference (the warm start, sampled only by evaluations) and a
    ``rule`` judge: ``actors`` (each its own Ray actor: placed by ``resources``, re-created when it
    dies or hangs), ``driver`` (in this process: two processes fewer to start and hold; they run
    when called and are not restarted apart from the run), ``auto`` (``driver`` for a run on a
    Ray of its own where the role asks for no GPU or custom resource — a judge only when it is the
    rule judge, alone — else ``actors``)."""

    @property
    def ahead(self) -> int:
        """Policy versions generation runs ahead of the learner: 0 in sync mode, else ``max_staleness``."""
        return 0 if self.mode == "sync" else self.max_staleness

    def __post_init__(self):
        if self.max_restarts < 0:
            raise ConfigError("max_restarts", f"must be ≥ 0, got {self.max_restarts}")
        if not (self.call_timeout_s >= 0 and math.isfinite(self.call_timeout_s)):
            raise ConfigError("call_timeout_s", f"must be a finite number ≥ 0 (0: no deadline), got {self.call_timeout_s}")
        for role, seconds in self.call_timeouts.items():
            if role not in TIMED_ROLES:
                raise ConfigError(f"call_timeouts.{role}", f"unknown role; choose from {TIMED_ROLES}")
            if not (seconds >= 0 and math.isfinite(seconds)):
                raise ConfigError(f"call_timeouts.{role}", f"must be a finite number ≥ 0, got {seconds}")
        if self.learner_strategy not in LEARNER_STRATEGIES:
            raise ConfigError("learner_strategy", f"must be one of {LEARNER_STRATEGIES}, got {self.learner_strategy!r}")
        if self.weight_sync not in WEIGHT_SYNCS:
            raise ConfigError("weight_sync", f"must be one of {WEIGHT_SYNCS}, got {self.weight_sync!r}")
        if self.weight_sync == "broadcast" and not self.ray:
            raise ConfigError("weight_sync", "broadcast needs pipeline.ray=true (roles in one process "
                              "cannot meet in a collective)")
        if self.mode not in ("sync", "async"):
            raise ConfigError("mode", f"must be 'sync' or 'async', got {self.mode!r}")
        if self.backend not in ("auto", "hf", "vllm"):
            raise ConfigError("backend", f"must be 'auto', 'hf' or 'vllm', got {self.backend!r}")
        if self.max_staleness < 0:
            raise ConfigError("max_staleness", f"must be ≥ 0, got {self.max_staleness}")
        if self.num_cpus is not None and self.num_cpus < 1:
            raise ConfigError("num_cpus", f"must be ≥ 1 (or unset: every CPU), got {self.num_cpus}")
        for name in ("generators", "learners", "generator_threads", "learner_threads", "judges"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(name, f"must be ≥ 1, got {getattr(self, name)}")
        if self.light_roles not in LIGHT_ROLES:
            raise ConfigError("light_roles", f"must be one of {LIGHT_ROLES}, got {self.light_roles!r}")
        if self.placement not in ("colocated", "disaggregated"):
            raise ConfigError("placement", f"must be 'colocated' or 'disaggregated', got {self.placement!r}")
        if self.placement_timeout < 0:
            raise ConfigError("placement_timeout", f"must be ≥ 0, got {self.placement_timeout}")
        if self.placement_strategy not in PLACEMENT_STRATEGIES:
            raise ConfigError("placement_strategy", f"must be one of {PLACEMENT_STRATEGIES}, "
                              f"got {self.placement_strategy!r}")


@dataclass(frozen=True)
class TrainConfig:
    """The self-play loop."""

    iterations: int = 200
    """Policy updates."""
    conversations: int = 64
    """Training conversations played per iteration (each turn branches K answers)."""
    fixed_prompts: bool = False
    """Play the same training conversations every iteration (OMPO's previous-iterate answers
    then exist for the same states, as in the paper) instead of fresh ones."""
    max_failures: int = 2
    """How many times a run rebuilds its learner group (a learner died or missed its deadline, a
    lost node) and continues from its latest checkpoint, re-running and replacing the iterations
    since; past it the run stops (resume=true continues it)."""

    def __post_init__(self):
        if self.iterations < 1:
            raise ConfigError("iterations", f"must be ≥ 1, got {self.iterations}")
        if self.conversations < 1:
            raise ConfigError("conversations", f"must be ≥ 1, got {self.conversations}")
        if self.max_failures < 0:
            raise ConfigError("max_failures", f"must be ≥ 0, got {self.max_failures}")


@dataclass(frozen=True)
class EvalConfig:
    """Held-out evaluation: win rate against the warm start, exploitability."""

    every: int = 20
    """Evaluate every this many iterations (and at the end)."""
    conversations: int = 60
    """Held-out conversations per periodic evaluation (states = conversations × turns)."""
    final_conversations: int = 200
    """Held-out conversations for the start and final evaluations."""
    samples: int = 4
    """Answers sampled per held-out state."""
    final_samples: Optional[int] = None
    """Answers sampled per held-out state at the start and final evaluations (default: ``samples``).
    Exploitability is a maximum over a per-state estimate of the class mix, so few samples bias it
    upward: +0.028 at running_sum's equilibrium with 4, +0.014 with 16 (the comparisons use 16)."""

    def __post_init__(self):
        for name in ("every", "conversations", "final_conversations", "samples"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be ≥ 1, got {getattr(self, name)}")
        if self.final_samples is not None and self.final_samples < 1:
            raise ConfigError("final_samples", f"must be ≥ 1 (or empty: eval.samples), got {self.final_samples}")

    @property
    def headline_samples(self) -> int:
        """Samples per state of the start and final evaluations."""
        return self.final_samples or self.samples


@dataclass(frozen=True)
class CheckpointConfig:
    every: int = 25
    """Save a checkpoint every this many iterations (and at the end)."""
    keep: int = 2
    """How many periodic checkpoints to keep (0: all; the final one is always kept)."""

    def __post_init__(self):
        if self.every < 1:
            raise ConfigError("every", f"must be ≥ 1, got {self.every}")
        if self.keep < 0:
            raise ConfigError("keep", f"must be ≥ 0 (0 keeps every checkpoint), got {self.keep}")


@dataclass(frozen=True)
class DPMethod:
    """A ``job: dp`` method: the phases the DP learner (privacy/learner.py) runs, in order.

    A phase trains on ``public`` data, on ``private`` data through the per-sample clipping engine
    (Poisson batches, private_steps of them: DP-AdamW when ``noised``, the accountant counting the
    steps), or on ``all`` the data without privacy. A public phase lasts public_steps (or ends on a
    plateau, ``dp.switch``); an ``all`` phase public_steps + private_steps.
    """

    name: str
    phases: tuple[str, ...]
    public_weight: Optional[str] = None
    """Mixing baselines: each DP step adds a public batch's gradient, weighed α_t by ``ratio``
    (the public share of all sequences) or ``cosine`` (½(1 + cos(π t / T)), decaying)."""
    clipped: bool = True
    """Its private steps clip per sample (``dp.clipping``); false: the plain sum over the batch."""
    noised: bool = True
    """Its private steps add the Gaussian noise (σ planned for ``dp.target_epsilon``); false: σ = 0."""

    @property
    def private(self) -> bool:
        """Trains on the private split through the clipping engine (a private phase)."""
        return "private" in self.phases

    @property
    def budgeted(self) -> bool:
        """Trains on private data under DP: it has a budget and spends it (one run per ε)."""
        return self.private and self.noised

    @property
    def bounded(self) -> bool:
        """Its privacy loss is bounded (ε is reported): it trains on private data only under DP."""
        return "all" not in self.phases and (not self.private or self.noised)

    def steps(self, public_steps: int, private_steps: int) -> int:
        """Optimizer steps of the whole run (at most: a public phase may end early)."""
        return sum({"public": public_steps, "private": private_steps,
                    "all": public_steps + private_steps}[p] for p in self.phases)


#: The ``job: dp`` methods; a DP comparison's ``<method>@<ε>`` keys use their names.
#: nondp_continual and clip_only are dp_continual's ablation from the same switch, steps and
#: schedule: no clipping and no noise, clipping and no noise (no privacy either way).
DP_METHODS = {m.name: m for m in (
    DPMethod("nondp", ("all",)),
    DPMethod("public_only", ("public",)),
    DPMethod("dp_scratch", ("private",)),
    DPMethod("dp_continual", ("public", "private")),
    DPMethod("nondp_continual", ("public", "private"), clipped=False, noised=False),
    DPMethod("clip_only", ("public", "private"), noised=False),
    DPMethod("mix", ("private",), public_weight="ratio"),
    DPMethod("dpmd", ("private",), public_weight="cosine"),
)}


@dataclass(frozen=True)
class DPCorpusConfig:
    """The DP pre-training corpus: standard-library docstrings, split by text hash (privacy/corpus.py)."""

    public_fraction: float = 0.1
    """Share of the (non-held-out) documents that are public."""
    eval_fraction: float = 0.05
    """Share of the documents held out for evaluation."""
    max_chars: Optional[int] = 900_000
    """Keep this many characters of the corpus (a deterministic subset; empty = all, ~2 MB)."""
    seq_len: int = 64
    """Tokens per training sequence (the unit of privacy)."""

    def __post_init__(self):
        if not 0 < self.public_fraction < 1 or not 0 < self.eval_fraction < 1:
            raise ConfigError("public_fraction", "public_fraction and eval_fraction must be in (0, 1)")
        if self.seq_len < 8:
            raise ConfigError("seq_len", f"must be ≥ 8, got {self.seq_len}")
        if self.max_chars is not None and self.max_chars < 10_000:
            raise ConfigError("max_chars", f"must be ≥ 10000 (or empty for all), got {self.max_chars}")


@dataclass(frozen=True)
class DPConfig:
    """``job: dp``: (DP) continual pre-training on the stdlib corpus (privacy/learner.py)."""

    method: str = "dp_continual"
    """``nondp`` (all data, no privacy), ``public_only``, ``dp_scratch`` (DP from the initial model),
    ``dp_continual`` (public phase, then DP-AdamW on the private split), its ablations
    ``nondp_continual`` (no clipping, σ = 0) and ``clip_only`` (σ = 0), or the mixing baselines
    ``mix`` (sample-ratio public weight) and ``dpmd`` (cosine-decayed public weight)."""
    start_from: Optional[str] = None
    """Continual methods: skip the public phase and switch at this checkpoint of a ``public_only``
    run (its ``checkpoints/final``: weights, AdamW state, step count), so several runs share one
    switch point (``job: compare_dp`` does this)."""
    target_epsilon: float = 8.0
    """The privacy budget ε of the private phase (dp_scratch, dp_continual)."""
    delta: Optional[float] = None
    """δ; empty = 1/(10·N) with N private sequences (δ = 1/N is too weak: publishing one random
    record meets it)."""
    noise_multiplier: Optional[float] = None
    """σ; empty = the smallest σ whose private_steps steps fit target_epsilon."""
    stop_at_budget: bool = False
    """With an explicit σ whose schedule would exceed ε: run and stop at the last step inside the
    budget (default: refuse the config)."""
    accountant: str = "rdp"
    """``rdp`` or ``prv`` (Opacus's accountants)."""
    max_grad_norm: float = 1.0
    """R, the per-sample clipping bound."""
    clipping: str = "flat"
    """``flat``: c_i = min(1, R/‖g_i‖) (Abadi et al.); ``automatic``: c_i = R/(‖g_i‖ + 0.01), every
    example normalised (Bu et al. 2023; book-keeping engine). Both bound the sensitivity by R."""
    optimizer: str = "adamw"
    """The private phase's optimizer: ``adamw``, or ``adambc`` (DP-AdamBC, Tang et al. 2024: fresh
    moments, the noise variance (σR/B)² subtracted from Adam's second moment; privacy/adambc.py)."""
    switch_state: str = "keep"
    """AdamW's state at the switch: ``keep`` (first moment reset, second moment and step kept) or
    ``reset`` (all of it: a fresh AdamW)."""
    private_warmup: int = 0
    """Linear learning-rate warm-up over the first this many private steps (0: none)."""
    batch_size: int = 256
    """Logical batch: expected size of a Poisson batch (private phase), exact size otherwise."""
    physical_batch: int = 0
    """Sequences per forward/backward inside a logical batch (0 = all at once)."""
    public_batch_size: int = 0
    """Batch of the non-private steps: the public phase and nondp (0 = batch_size). The private
    phase's B can then be chosen without moving the switch point (examples/compare_dp.yaml)."""
    lr: float = 2e-3
    """AdamW learning rate."""
    private_lr: Optional[float] = None
    """AdamW learning rate of the private phase (empty = lr). Clipped gradients are smaller than
    the public ones Adam's second moment was estimated on, so the private phase may want more."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    public_steps: int = 300
    """The longest public phase (dp_continual, public_only)."""
    private_steps: int = 400
    """DP steps (dp_scratch, dp_continual, mix, dpmd); nondp takes public_steps + private_steps steps."""
    switch: str = "step"
    """End of the public phase: after public_steps (``step``) or (``plateau``) when the loss on a
    held-out tenth of the public split stops improving — decided from public data only."""
    plateau_window: int = 25
    """Plateau: check the held-out public loss every this many public steps."""
    plateau_tol: float = 0.01
    """Plateau: end the public phase when the loss improved by less than this (relative) since
    the last check."""
    grad_sample_mode: str = "auto"
    """Per-sample clipping: ``bookkeeping`` (alignplay's one-backward engine, privacy/engine/bookkeeping.py;
    untied parameters), Opacus's ``ghost`` clipping (untied) or ``hooks``; ``auto`` picks the first
    the model allows."""
    canaries: int = 200
    """Audit canaries (random secret strings, each put into the private split with probability ½)."""
    eval_every: int = 50
    """Evaluate (held-out loss and, with diagnostics, the curvature analysis) every this many steps."""
    eval_sequences: int = 512
    """Held-out sequences per evaluation."""
    diagnostics: bool = True
    """Log GᵀG, GᵀHG, tr(H), the noise term and the predicted step at each evaluation."""
    diag_batch: int = 32
    """Held-out sequences for the curvature diagnostics (one backward each, then Hessian-vector
    products through all of them)."""
    hutchinson_probes: int = 2
    """Rademacher vectors for tr(H) and tr(PHP)."""
    covariance_samples: int = 4
    """Held-out examples whose clipped gradients estimate the mini-batch term tr(HΣ)/B (≥ 2)."""
    threads: int = 2
    """torch threads of each DP worker."""
    workers: int = 1
    """Data-parallel DP workers (Ray actors in one process group: gloo on CPUs, NCCL on GPUs): each
    owns a shard of the private data and clips its own examples; the noise is added once per step."""
    corpus: DPCorpusConfig = field(default_factory=DPCorpusConfig)

    @property
    def public_batch(self) -> int:
        """The batch of the non-private steps: ``public_batch_size``, or ``batch_size`` when 0."""
        return self.public_batch_size or self.batch_size

    def __post_init__(self):
        if self.method not in DP_METHODS:
            raise ConfigError("method", f"must be one of {tuple(DP_METHODS)}, got {self.method!r}")
        if not self.target_epsilon > 0:
            raise ConfigError("target_epsilon", f"must be > 0, got {self.target_epsilon}")
        if self.delta is not None and not 0 < self.delta < 1:
            raise ConfigError("delta", f"must be in (0, 1), got {self.delta}")
        if self.noise_multiplier is not None and not self.noise_multiplier > 0:
            raise ConfigError("noise_multiplier", f"must be > 0, got {self.noise_multiplier}")
        if self.accountant not in ("rdp", "prv"):
            raise ConfigError("accountant", f"must be 'rdp' or 'prv', got {self.accountant!r}")
        for name, allowed in (("clipping", ("flat", "automatic")), ("optimizer", ("adamw", "adambc")),
                              ("switch_state", ("keep", "reset"))):
            if getattr(self, name) not in allowed:
                raise ConfigError(name, f"must be one of {allowed}, got {getattr(self, name)!r}")
        if self.private_warmup < 0:
            raise ConfigError("private_warmup", f"must be ≥ 0, got {self.private_warmup}")
        if self.start_from is not None and DP_METHODS[self.method].phases != ("public", "private"):
            raise ConfigError("start_from", f"only a continual method (public then private phase) starts from a "
                                            f"public_only checkpoint, not {self.method!r}")
        if self.switch not in ("step", "plateau"):
            raise ConfigError("switch", f"must be 'step' or 'plateau', got {self.switch!r}")
        if self.grad_sample_mode not in ("auto", "bookkeeping", "ghost", "hooks"):
            raise ConfigError("grad_sample_mode", f"must be 'auto', 'bookkeeping', 'ghost' or 'hooks', "
                                                  f"got {self.grad_sample_mode!r}")
        if self.private_lr is not None and not self.private_lr > 0:
            raise ConfigError("private_lr", f"must be > 0, got {self.private_lr}")
        if not 0 < self.max_grad_norm < math.inf:  # (also refuses nan)
            raise ConfigError("max_grad_norm", f"the clipping bound must be finite and > 0, got {self.max_grad_norm}")
        if not 0 < self.lr < math.inf:
            raise ConfigError("lr", f"must be finite and > 0, got {self.lr}")
        if self.covariance_samples < 2 or self.covariance_samples > self.diag_batch:
            raise ConfigError("covariance_samples", f"must be in [2, dp.diag_batch={self.diag_batch}], got "
                                                    f"{self.covariance_samples}")
        for name in ("batch_size", "eval_every", "eval_sequences", "diag_batch", "hutchinson_probes", "threads",
                     "plateau_window", "workers"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be ≥ 1, got {getattr(self, name)}")
        for name in ("public_steps", "private_steps", "physical_batch", "public_batch_size", "canaries"):
            if getattr(self, name) < 0:
                raise ConfigError(name, f"must be ≥ 0, got {getattr(self, name)}")
        if self.canaries == 1 or (self.canaries and self.canaries < 10):
            raise ConfigError("canaries", f"the audit needs 0 or ≥ 10 canaries, got {self.canaries}")


@dataclass(frozen=True)
class CompareConfig:
    """``job: compare``: every method on the same task, budget and seeds (``framework/jobs/compare.py``)."""

    methods: tuple[str, ...] = ("sft", "dpo", "ipo", "sppo", "step_dpo", "mpo", "ompo")
    """Registered algorithm names (``compare_dp``: DP methods). In ``job: compare``, ``sft`` is the SFT
    warm start every run starts from, measured as it is; in ``compare_irl`` it is ``algo.name=sft``
    trained on the demonstrations like the other methods."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """One run per method and seed."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Per method, a list of ``key=value`` overrides of the shared config (e.g. its step size)."""
    variants: dict[str, Any] = field(default_factory=dict)
    """``compare_irl``: data variants, name → list of ``key=value`` overrides (e.g. corrupted
    demonstrations); methods are reported as ``<method>@<variant>``."""
    lr_grid: tuple[float, ...] = ()
    """``compare_irl``: one learning-rate grid for every method; each method's ``algo.lr`` is the
    grid's best by greedy correctness on validation states (held-out states other than the test
    ones), chosen on the first variant and seed and used for all. Empty: ``algo.lr`` as given."""
    validation_conversations: int = 100
    """``compare_irl``: held-out conversations of the validation states that choose the lr."""
    grid: dict[str, Any] = field(default_factory=dict)
    """``job: compare``: one shared grid, config key → values (e.g. ``{algo.lr: [0.0005, 0.001],
    algo.eta: [2.0, 5.0]}``); every method runs each point of its product on the first seed and
    keeps the one with the best win rate against the SFT start on the periodic evaluation's states
    (held out, and not the final evaluation's), which then runs on every seed. A point overrides
    ``compare.overrides``. Empty: each method as configured."""
    finished_only: bool = False
    """``compare_dp``: report the runs already finished under the run directory and start none
    (the report lists what is missing): to read a comparison whose seeds run as separate
    processes (``compare.seeds=[k]`` each, into the same run directory)."""

    def __post_init__(self):
        known = ["sft", *algorithm_names(), *DP_METHODS]
        for m in self.methods:
            if m not in known:
                raise ConfigError("methods", f"unknown method {m!r}; choose from {known}")
        if not self.methods or not self.seeds:
            raise ConfigError("methods", "at least one method and one seed are required")
        for m, over in self.overrides.items():
            if m not in known:
                raise ConfigError(f"overrides.{m}", f"unknown method {m!r}; choose from {known}")
            if not isinstance(over, (list, tuple)) or not all(isinstance(o, str) and "=" in o for o in over):
                raise ConfigError(f"overrides.{m}", f"expected a list of 'key=value' strings, got {over!r}")
        for v, over in self.variants.items():
            if not isinstance(over, (list, tuple)) or not all(isinstance(o, str) and "=" in o for o in over):
                raise ConfigError(f"variants.{v}", f"expected a list of 'key=value' strings, got {over!r}")
        for key, values in self.grid.items():
            if not isinstance(key, str) or "=" in key or "." not in key:
                raise ConfigError("grid", f"expected config keys such as algo.lr, got {key!r}")
            if not isinstance(values, (list, tuple)) or not values:
                raise ConfigError(f"grid.{key}", f"expected a non-empty list of values, got {values!r}")
        if not all(isinstance(lr, (int, float)) and lr > 0 for lr in self.lr_grid):
            raise ConfigError("lr_grid", f"expected learning rates > 0, got {list(self.lr_grid)}")
        if self.validation_conversations < 1:
            raise ConfigError("validation_conversations", f"must be ≥ 1, got {self.validation_conversations}")


@dataclass(frozen=True)
class TrainJudgeConfig:
    """``job: train_judge``: a reward model or a pairwise preference model trained on preference
    data (``framework/jobs/train_judge.py``), saved where ``judge.path`` can load it."""

    data: Optional[str] = None
    """A self-play run directory (its ``comparisons/`` with the answers from ``rollouts/``), or a
    JSONL / Parquet file of rows ``{"messages" | "prompt", "chosen", "rejected"}`` or
    ``{"messages" | "prompt", "a", "b", "probability"}``."""
    kind: str = "reward_model"
    """``reward_model`` (Bradley–Terry on soft labels) or ``pairwise_model`` (both orders)."""
    base: Optional[str] = None
    """The model the judge starts from (its body; the head starts fresh): a local directory or hub
    id; empty: the starting policy of a self-play run of this config (``model.path``, else the
    task's warm-started tiny model)."""
    epochs: int = 4
    """Passes over the training pairs."""
    lr: float = 3e-3
    """AdamW learning rate (linear decay to 0)."""
    batch_size: int = 16
    """Pairs per optimizer step."""
    held_out: float = 0.2
    """Share of the states (conversations) kept out of training, for accuracy and calibration."""
    max_length: int = 512
    """Tokens read per sequence (longer ones keep their end)."""
    threads: Optional[int] = None
    """torch threads (default: every core)."""

    def __post_init__(self):
        if self.kind not in ("reward_model", "pairwise_model"):
            raise ConfigError("kind", f"must be 'reward_model' or 'pairwise_model', got {self.kind!r}")
        for name in ("epochs", "batch_size", "max_length"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be ≥ 1, got {getattr(self, name)}")
        if not 0 < self.lr < math.inf:
            raise ConfigError("lr", f"must be finite and > 0, got {self.lr}")
        if not 0 < self.held_out < 1:
            raise ConfigError("held_out", f"must be in (0, 1), got {self.held_out}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError("threads", f"must be ≥ 1 (or unset: every core), got {self.threads}")


@dataclass(frozen=True)
class Config:
    """Everything ``alignplay run`` needs."""

    job: str = "selfplay"
    """What to run: ``selfplay`` (the Ray pipeline), ``compare`` (self-play methods side by side),
    ``compare_irl`` (learning from demonstrations side by side), ``dp`` (DP continual pre-training),
    ``compare_dp`` (DP pre-training methods side by side), ``lab`` (the exact game lab) or
    ``train_judge`` (a reward or pairwise preference model from preference data)."""
    seed: int = 0
    """Seed of every random choice of the run."""
    quick: bool = False
    """A reduced smoke version (sizes from ``QUICK``; explicit overrides still win)."""
    resume: bool = False
    """Continue the run in --run-dir from its latest checkpoint."""
    cache_dir: Optional[str] = None
    """Where tiny models and warm starts are cached (default ~/.cache/alignplay or $ALIGNPLAY_CACHE)."""
    lab: LabConfig = field(default_factory=LabConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    warm_start: WarmStartConfig = field(default_factory=WarmStartConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)
    demos: DemosConfig = field(default_factory=DemosConfig)
    dp: DPConfig = field(default_factory=DPConfig)
    train_judge: TrainJudgeConfig = field(default_factory=TrainJudgeConfig)

    def __post_init__(self):
        if self.seed < 0:
            raise ConfigError("seed", f"must be ≥ 0, got {self.seed}")
        if self.job not in JOB_NAMES:
            raise ConfigError("job", f"unknown job {self.job!r}; choose from {sorted(JOB_NAMES)}")
        if self.pipeline.learners > 1 and get_algorithm(self.algo.name).single_learner:
            raise ConfigError("pipeline.learners", f"{self.algo.name}'s update runs on one learner (it is not "
                              f"data-parallel): set pipeline.learners=1")
        if self.dp.workers > 1 and not self.pipeline.ray:
            raise ConfigError("dp.workers", "more than one DP worker needs pipeline.ray=true")
        if self.pipeline.learners > 1 and not self.pipeline.ray:
            raise ConfigError("pipeline.learners", "more than one learner needs pipeline.ray=true")
        if self.job == "train_judge" and not self.train_judge.data:
            raise ConfigError("train_judge.data", "job=train_judge needs train_judge.data (a run directory, or a "
                              "JSONL / Parquet file of preference rows)")
        if self.algo.warmup and self.algo.warmup >= self.train.iterations:
            raise ConfigError("algo.warmup", f"the warm-up ({self.algo.warmup}) must be shorter than "
                              f"train.iterations ({self.train.iterations})")


#: What ``quick=true`` changes: small enough for a smoke run of every example (< 3 minutes for a
#: single run here; a comparison runs one seed of each of its runs, without a tuning grid, < 10 minutes).
QUICK = {"compare.seeds": [0], "demos.count": 400, "lab.iters": 300, "lab.markov_games": 2,
         "train.iterations": 12, "warm_start.steps": 300, "eval.every": 6, "eval.conversations": 20,
         "eval.final_conversations": 40, "checkpoint.every": 6,
         "dp.public_steps": 40, "dp.private_steps": 40, "dp.batch_size": 64, "dp.public_batch_size": 0, "dp.eval_every": 20,
         "dp.eval_sequences": 128, "dp.corpus.max_chars": 300_000, "dp.canaries": 100, "train_judge.epochs": 1,
         "compare.grid": {}}


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _build(cls, data: dict, path: str):
    """Instantiate (nested) frozen dataclasses; a check that fails names its full key path."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        value = data[f.name]
        if dataclasses.is_dataclass(hints[f.name]):
            value = _build(hints[f.name], value, f"{path}{f.name}.")
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[f.name] = value
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(path + e.key, e.message) from None


def _parse_overrides(overrides: list[str]):
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(item, "an override must look like key=value (e.g. lab.iters=500)")
    try:
        return OmegaConf.from_dotlist(list(overrides))
    except OmegaConfBaseException as e:
        raise ConfigError("", f"bad override: {_first_line(e)}") from None


#: Key names that hold secrets, at any level and in any case (``judge.kwargs.api_key``): a config
#: takes them from the environment (``${oc.env:VAR}``), never as literals, and no file shows them.
SECRET_NAMES = ("api_key", "apikey", "token", "access_token", "password", "secret", "authorization")
REDACTED = "***"


def is_secret(key) -> bool:
    """Whether a key names a secret: one of ``SECRET_NAMES``, or ``_`` + one of them but ``token``
    at its end (``openai_api_key``, ``db_password``; not ``eos_token``)."""
    name = str(key).lower().replace("-", "_")
    return name in SECRET_NAMES or any(name.endswith("_" + s) for s in SECRET_NAMES if s != "token")


def _env_values(raw, path: tuple = ()) -> dict[tuple, str]:
    """Where the unresolved config ``raw`` takes a value from the environment (key path → its
    ``${oc.env:...}``); refuses secrets written as literals, also in a comparison's ``key=value``
    overrides."""
    found = {}
    for key, value in raw.items() if isinstance(raw, dict) else enumerate(raw):
        here = (*path, key)
        if isinstance(value, (dict, list)):
            found.update(_env_values(value, here))
        elif isinstance(value, str) and "${oc.env:" in value:
            found[here] = value
        elif is_secret(key) and value not in (None, ""):
            raise _literal_secret(".".join(str(k) for k in here))
        elif isinstance(value, str) and isinstance(key, int) and "=" in value:  # a comparison's override
            name, literal = value.split("=", 1)
            if literal and is_secret(name.rsplit(".", 1)[-1]):
                raise ConfigError(".".join(str(k) for k in here), str(_literal_secret(name)))
    return found


def _literal_secret(dotted: str) -> ConfigError:
    name = dotted.rsplit(".", 1)[-1].upper()
    return ConfigError(dotted, f"a secret must not be written in a config; use {dotted}='${{oc.env:MY_{name}}}'")


def _resolved(merged) -> Config:
    """The Config of a merged tree; it remembers which values came from the environment (``to_yaml``
    writes those back unresolved)."""
    env = _env_values(OmegaConf.to_container(merged, resolve=False))
    try:
        data = OmegaConf.to_container(merged, resolve=True)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None)
        raise ConfigError(key or "", _first_line(Exception(getattr(e, "msg", None) or _first_line(e)))) from None
    cfg = _build(Config, data, "")
    object.__setattr__(cfg, "_env", env)  # (not a field: no key of the schema, no part of equality)
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Load a YAML config (or the defaults) with ``key=value`` overrides into a ``Config``."""
    layers = []
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: no such config file")
        try:
            layers.append(OmegaConf.load(path))
        except Exception as e:  # YAML syntax errors come in several types
            raise ConfigError("", f"{path}: not valid YAML ({_first_line(e)})") from None
        if not isinstance(layers[-1], typing.Mapping) and not OmegaConf.is_dict(layers[-1]):
            raise ConfigError("", f"{path}: the top level must be a mapping")
    cli = _parse_overrides(list(overrides))
    schema = OmegaConf.structured(Config)
    OmegaConf.set_readonly(schema, False)
    try:
        merged = OmegaConf.merge(schema, *layers, cli)
        if merged.quick:
            layers.append(OmegaConf.create({}))
            for k, v in QUICK.items():
                OmegaConf.update(layers[-1], k, v, merge=False)
            merged = OmegaConf.merge(schema, *layers, cli)
        for key in REPLACED:  # a later layer's mapping replaces an earlier one's (OmegaConf would merge them)
            for layer in (cli, *reversed(layers)):
                value = OmegaConf.select(layer, key, default=_UNSET)
                if value is not _UNSET:
                    parent, name = key.rsplit(".", 1)
                    node = OmegaConf.select(merged, parent)
                    with flag_override(node, "readonly", False):
                        node[name] = value
                    break
    except OmegaConfBaseException as e:
        raise _merge_error(e, schema, list(overrides)) from None
    return _resolved(merged)


#: Mappings a config layer sets as a whole: the command line's (or quick's) replaces the file's.
REPLACED = ("compare.overrides", "compare.variants", "compare.grid")
_UNSET = object()


def _merge_error(e: OmegaConfBaseException, schema, overrides: list[str]) -> ConfigError:
    """The key and value a merge refused. OmegaConf names neither for a list element of the wrong
    type ("Value '$VALUE' ..."): the override that holds it is found by merging each alone."""
    key = getattr(e, "full_key", None)
    msg = _first_line(Exception(getattr(e, "msg", None) or _first_line(e)))
    if "$VALUE" in msg:
        target = msg.rsplit(" to ", 1)[-1]
        for item in overrides:
            try:
                OmegaConf.merge(schema, _parse_overrides([item]))
            except OmegaConfBaseException:
                name, value = item.split("=", 1)
                return ConfigError(name.lstrip("+~"), f"{value} holds a value that is not a {target}")
        return ConfigError(key or "", f"a list in the config file holds a value that is not a {target}")
    return ConfigError(key or "", msg)


def with_overrides(cfg: Config, overrides: list[str]) -> Config:
    """A copy of ``cfg`` with ``key=value`` overrides, validated like a loaded config."""
    schema = OmegaConf.structured(Config)
    try:  # (values from the environment are taken from it again)
        merged = OmegaConf.merge(schema, OmegaConf.create(to_yaml(cfg)), _parse_overrides(list(overrides)))
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None)
        raise ConfigError(key or "", _first_line(Exception(getattr(e, "msg", None) or _first_line(e)))) from None
    return _resolved(merged)


def to_yaml(cfg: Config) -> str:
    """The config as YAML (written to every run directory): resolved, but what came from the
    environment stays ``${oc.env:VAR}`` (a resumed run takes it from there again), and a secret
    from anywhere else is redacted."""
    data = OmegaConf.to_container(OmegaConf.structured(cfg))
    env = getattr(cfg, "_env", {})

    def unresolve(node, path: tuple) -> None:
        for key, value in node.items() if isinstance(node, dict) else enumerate(node):
            here = (*path, key)
            if here in env:
                node[key] = env[here]
            elif isinstance(value, (dict, list)):
                unresolve(value, here)
            elif is_secret(key) and value not in (None, ""):
                node[key] = REDACTED

    unresolve(data, ())
    return OmegaConf.to_yaml(OmegaConf.create(data))
