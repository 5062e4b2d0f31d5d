"""``RolloutGenerator``: samples K responses per state with the current policy (a plain class;
``actors.remote`` makes it a Ray actor)."""

from __future__ import annotations

import json

import torch

from actors.backends import make_backend
from actors.remote import state_setting
from actors.weight_sync import Manifest, WeightGroup
from framework.errors import InputError
from framework.models import accelerator, answer_ids, load_policy
from framework.records import GenerationRequest, Rollout, Sample
from games.conversation import Episode


class RolloutGenerator:
    """Holds a copy of the policy; plays conversations, branching K samples at every turn.

    Args:
        model_path: a local directory or hub id (``framework.models.load_policy``).
        backend: ``hf`` (transformers generate) or ``vllm`` (a vLLM engine; weights updated in place).
        generator_id: index of this generator (recorded with each rollout).
        max_new_tokens: response length cap.
        threads: torch intra-op threads for this process.
        dtype: the policy's weights (``float32`` or ``bfloat16``), on the device Ray gave the role.
    """

    def __init__(self, *, model_path: str, backend: str = "hf", generator_id: int = 0,
                 max_new_tokens: int = 8, threads: int = 1, dtype: str = "float32"):
        torch.set_num_threads(threads)
        model, self.tokenizer = load_policy(model_path, dtype=dtype)
        self.backend = make_backend(backend, model_path=model_path, model=model, tokenizer=self.tokenizer,
                                    max_new_tokens=max_new_tokens)
        self.generator_id = generator_id
        self.version = 0
        self.weight_group: WeightGroup | None = None  # pipeline.weight_sync=broadcast

    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id

    def ping(self) -> int:
        """Returns once every call queued before it has run (the policy version held)."""
        return self.version

    @state_setting
    def set_weights(self, version: int, state_dict: dict) -> int:
        """Load a published policy version; returns the version now held."""
        if version > self.version:
            self.backend.load_state_dict(state_dict)
            if self.weight_group is not None:  # the broadcast's buffers hold what the engine holds
                buffers, in_place = self.backend.receive_buffers()
                if not in_place:
                    for name, t in buffers.items():
                        t.copy_(state_dict[name])
            self.version = version
        return self.version

    # --- pipeline.weight_sync=broadcast (actors.weight_sync) ---------------------------------
    def weight_manifest(self) -> Manifest:
        """What this generator receives in a weight broadcast."""
        return Manifest.of(self.backend.receive_buffers()[0])

    def join_weight_group(self, address: str, rank: int, world_size: int) -> None:
        """Join learner rank 0's broadcast group (returns once every member has joined)."""
        self.weight_group = WeightGroup(address, rank=rank, world_size=world_size, device=accelerator())

    def receive_weights(self, version: int) -> int:
        """Take part in one weight broadcast of policy ``version``; returns the version now held."""
        buffers, in_place = self.backend.receive_buffers()
        self.weight_group.broadcast(buffers.values())
        if not in_place:
            self.backend.load_state_dict(buffers)
        self.version = max(self.version, version)
        return self.version

    def weights(self) -> dict:
        """The policy this generator holds, in host memory (a checkpoint mid-way through a round
        saves it when the weights reached the generators by broadcast)."""
        buffers, in_place = self.backend.receive_buffers()
        if not in_place and self.weight_group is None:
            raise RuntimeError("a vllm generator's weights are kept beside its engine only under "
                               "pipeline.weight_sync=broadcast")
        return {k: v.detach().to("cpu", copy=True) for k, v in buffers.items()}

    def encode(self, messages: list[dict]) -> list[int]:
        return list(self.tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                       tokenize=True)["input_ids"])

    def encode_answer(self, messages: list[dict], text: str) -> list[int]:
        """The tokens of an assistant turn ``text`` after ``messages``, as the chat template writes it."""
        return answer_ids(self.tokenizer, messages, text)[1]

    def generate(self, request: GenerationRequest, *, iteration: int, seed: int) -> list[Rollout]:
        """Everything a request asks for: its episodes played (``rollout``) and its demonstrations
        answered (``respond``), tagged with ``iteration``."""
        out = []
        if request.episodes:
            out += self.rollout(list(request.episodes), k=request.k, iteration=iteration, seed=seed,
                                mode=request.mode)
        if request.demonstrations:
            out += self.respond(list(request.demonstrations), k=request.k, iteration=iteration, seed=seed,
                                temperature=request.temperature)
        return out

    def respond(self, demonstrations: list[tuple[str, list[dict], str]], *, k: int, iteration: int,
                seed: int, temperature: float = 1.0) -> list[Rollout]:
        """For each (id, state, demonstrated answer): the demonstration scored by this policy
        (``sample = -1``, its log-probs under π_t) and K answers of its own (samples 0..K−1, drawn
        at ``temperature``; 0 is greedy), each with its log-probs under π_t."""
        if not hasattr(self.backend, "score"):
            raise InputError("demonstration methods need a backend that scores given answers: "
                             "use pipeline.backend=hf")
        prompts = [self.encode(state) for _, state, _ in demonstrations]
        answers = [self.encode_answer(state, text) for _, state, text in demonstrations]
        scored = self.backend.score(prompts, answers)
        drawn = (self.backend.generate(prompts, k=k, seed=seed * 1000, temperature=temperature) if k > 0
                 else [[] for _ in prompts])
        out = []
        for (demo_id, state, text), prompt, ids, logps, group in zip(demonstrations, prompts, answers, scored, drawn):
            state_json, turn = json.dumps(state), sum(m["role"] == "user" for m in state) - 1
            out.append(Rollout(demo_id, turn, -1, iteration, state_json, prompt, ids, logps, text, self.version,
                               self.generator_id))
            out += [Rollout(demo_id, turn, j, iteration, state_json, prompt, s.token_ids, s.logprobs, s.text,
                            self.version, self.generator_id) for j, s in enumerate(group)]
        return out

    def score(self, states: list[list[dict]], answers: list[str]) -> list[float]:
        """log π(answer | state) of given answers, summed over their tokens (teacher forcing)."""
        if not hasattr(self.backend, "score"):
            raise InputError("scoring given answers needs pipeline.backend=hf")
        prompts = [self.encode(s) for s in states]
        ids = [self.encode_answer(s, a) for s, a in zip(states, answers)]
        return [float(sum(x)) for x in self.backend.score(prompts, ids)]

    def sample(self, states: list[list[dict]], *, k: int, seed: int, temperature: float = 1.0) -> list[list[Sample]]:
        """K samples for each state (a conversation prefix ending with a user turn), at
        ``temperature`` (0: greedy)."""
        return self.backend.generate([self.encode(s) for s in states], k=k, seed=seed, temperature=temperature)

    def rollout(self, episodes: list[Episode], *, k: int, iteration: int, seed: int,
                mode: str = "tree") -> list[Rollout]:
        """Play every episode to its end with K samples per state.

        ``tree``: at each turn draw K answers and continue with the first; sample 0 is a draw from
        the policy, so the visited states follow the policy's occupancy. ``paths``: K whole
        conversations, each continuing with its own answers (sample k is path k at every turn).
        ``branches``: ``tree``, and every other answer k of turn h is also continued to the end
        with one answer per turn (``branch_of = h``), for Monte-Carlo multi-turn Q (branch 0's
        continuation is the main line itself).
        """
        if mode not in ("tree", "paths", "branches"):
            raise ValueError(f"rollout mode must be 'tree', 'paths' or 'branches', got {mode!r}")
        by_id = {e.conversation_id: e for e in episodes}
        # threads: (conversation, branch_of, sample) → state; the main line is (cid, -1, 0)
        threads = {(e.conversation_id, -1, 0): e.start() for e in episodes}
        out, turn = [], 0
        while threads:
            keys = list(threads)
            prompts = {key: self.encode(threads[key]) for key in keys}
            fans = [key for key in keys if key[1] == -1 and (mode != "paths" or turn == 0)]
            fanned = set(fans)
            singles = [key for key in keys if key not in fanned]
            drawn = {}
            for group, draws, offset in ((fans, k, 0), (singles, 1, 500)):
                if group:
                    results = self.backend.generate([prompts[key] for key in group], k=draws,
                                                    seed=seed * 1000 + turn + offset)
                    drawn.update(zip(group, results))
            nxt = {}
            for key in keys:
                cid, branch_of, sample = key
                state, group = threads[key], drawn[key]
                state_json = json.dumps(state)
                for j, s in enumerate(group):
                    label = sample if len(group) == 1 else j
                    out.append(Rollout(cid, turn, label, iteration, state_json, prompts[key], s.token_ids,
                                       s.logprobs, s.text, self.version, self.generator_id, branch_of=branch_of))
                if mode == "paths" and len(group) > 1:  # the K first answers start K paths
                    continuing = {(cid, -1, j): s.text for j, s in enumerate(group)}
                elif mode == "branches" and len(group) > 1:  # the main line, and K − 1 branches from here
                    continuing = {key: group[0].text, **{(cid, turn, j): group[j].text for j in range(1, len(group))}}
                else:
                    continuing = {key: group[0].text}
                for new_key, text in continuing.items():
                    following = by_id[cid].advance(state, text)
                    if following is not None:
                        nxt[new_key] = following
            threads, turn = nxt, turn + 1
        return out
