"""``RolloutGenerator``: samples K responses per state with the current policy (a plain class;
``actors.remote`` makes it a Ray actor)."""

from __future__ import annotations

import json

import torch

from actors.backends import make_backend
from framework.records import Rollout
from games.conversation import Episode


class RolloutGenerator:
    """Holds a copy of the policy; plays conversations, branching K samples at every turn.

    Args:
        model_path: a local directory or hub id (``framework.models.load_policy``).
        backend: ``hf`` (transformers generate) or ``vllm`` (a vLLM engine; weights updated in place).
        generator_id: index of this generator (recorded with each rollout).
        max_new_tokens: response length cap.
        threads: torch intra-op threads for this process.
    """

    def __init__(self, *, model_path: str, backend: str = "hf", generator_id: int = 0,
                 max_new_tokens: int = 8, threads: int = 1):
        from framework.models import load_policy

        torch.set_num_threads(threads)
        model, self.tokenizer = load_policy(model_path)
        self.backend = make_backend(backend, model_path=model_path, model=model, tokenizer=self.tokenizer,
                                    max_new_tokens=max_new_tokens)
        self.generator_id = generator_id
        self.version = 0

    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id

    def ping(self) -> int:
        """Returns once every call queued before it has run (the policy version held)."""
        return self.version

    def set_weights(self, version: int, state_dict: dict) -> int:
        """Load a published policy version; returns the version now held."""
        if version > self.version:
            self.backend.load_state_dict(state_dict)
            self.version = version
        return self.version

    def encode(self, messages: list[dict]) -> list[int]:
        return list(self.tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                       tokenize=True)["input_ids"])

    def sample(self, states: list[list[dict]], *, k: int, seed: int):
        """K samples for each state (a conversation prefix ending with a user turn)."""
        return self.backend.generate([self.encode(s) for s in states], k=k, seed=seed)

    def rollout(self, episodes: list[Episode], *, k: int, iteration: int, seed: int,
                mode: str = "tree") -> list[Rollout]:
        """Play every episode to its end with K samples per state.

        ``tree``: at each turn draw K answers and continue with the first; sample 0 is a draw from
        the policy, so the visited states follow the policy's occupancy. ``paths``: K whole
        conversations, each continuing with its own answers (sample k is path k at every turn).
        """
        if mode not in ("tree", "paths"):
            raise ValueError(f"rollout mode must be 'tree' or 'paths', got {mode!r}")
        by_id = {e.conversation_id: e for e in episodes}
        branches = 1 if mode == "tree" else k
        # (conversation, path) → state; in tree mode path 0 carries the conversation
        states = {(e.conversation_id, p): e.start() for e in episodes for p in range(branches)}
        out, turn = [], 0
        while states:
            keys = list(states)
            prompts = [self.encode(states[key]) for key in keys]
            draws = k if mode == "tree" else (1 if turn > 0 else k)
            if mode == "paths" and turn == 0:  # K first answers per conversation, one per path
                unique = [key for key in keys if key[1] == 0]
                groups = self.backend.generate([prompts[keys.index(key)] for key in unique], k=k,
                                               seed=seed * 1000 + turn)
                samples = {(cid, p): [group[p]] for (cid, _), group in zip(unique, groups) for p in range(k)}
            else:
                groups = self.backend.generate(prompts, k=draws, seed=seed * 1000 + turn)
                samples = dict(zip(keys, groups))
            nxt = {}
            for key, prompt in zip(keys, prompts):
                cid, path = key
                group = samples[key]
                state_json = json.dumps(states[key])
                for j, s in enumerate(group):
                    out.append(Rollout(cid, turn, j if mode == "tree" else path, iteration, state_json, prompt,
                                       s.token_ids, s.logprobs, s.text, self.version, self.generator_id))
                following = by_id[cid].advance(states[key], group[0].text)
                if following is not None:
                    nxt[key] = following
            states, turn = nxt, turn + 1
        return out
