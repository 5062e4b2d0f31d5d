"""The ``hf`` generation backend: transformers ``generate`` (the CPU default)."""

from __future__ import annotations

import torch

from framework.batching import collate
from framework.losses import token_logprobs
from framework.records import Sample


def sampling(temperature: float) -> dict:
    """``generate``'s sampling arguments: the full distribution at ``temperature``, or greedy at 0."""
    if temperature == 0:
        return {"do_sample": False}
    return {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}


class HFBackend:
    """Samples with ``model.generate`` and reports each sampled token's log-probability."""

    def __init__(self, *, model, tokenizer, max_new_tokens: int):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens

    def load_state_dict(self, state_dict: dict) -> None:
        self.model.load_state_dict(state_dict)

    def receive_buffers(self) -> tuple[dict, bool]:
        """The model's own tensors: a broadcast lands in the policy in place."""
        return self.model.state_dict(), True

    @torch.no_grad()
    def score(self, prompts: list[list[int]], responses: list[list[int]]) -> list[list[float]]:
        """log π of each given response token (teacher forcing), e.g. of a demonstration."""
        batch = collate(prompts, responses, pad_id=self.tokenizer.pad_token_id).to(self.model.device)
        logits = self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        logp = token_logprobs(logits=logits, input_ids=batch.input_ids)
        return [logp[i, len(p):len(p) + len(r)].tolist() for i, (p, r) in enumerate(zip(prompts, responses))]

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], *, k: int, seed: int, temperature: float = 1.0) -> list[list[Sample]]:
        tok = self.tokenizer
        rows = [p for p in prompts for _ in range(k)]
        width = max(len(p) for p in rows)
        input_ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
        attention = torch.zeros_like(input_ids)
        for i, p in enumerate(rows):  # left padding: every prompt ends at the same column
            input_ids[i, width - len(p):] = torch.tensor(p)
            attention[i, width - len(p):] = 1
        input_ids, attention = input_ids.to(self.model.device), attention.to(self.model.device)
        torch.manual_seed(seed)
        out = self.model.generate(
            input_ids=input_ids, attention_mask=attention, **sampling(temperature), max_new_tokens=self.max_new_tokens, pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id, output_logits=True, return_dict_in_generate=True,
        )
        new = out.sequences[:, width:]  # (N, R)
        # (the raw logits: log π at temperature 1, whatever the sampling temperature)
        logp = torch.log_softmax(torch.stack(out.logits, dim=1).float(), dim=-1)  # (N, R, V)
        picked = logp.gather(-1, new[:, :, None]).squeeze(-1)
        samples = []
        for ids, logps in zip(new.tolist(), picked.tolist()):  # one copy off the device
            end = ids.index(tok.eos_token_id) + 1 if tok.eos_token_id in ids else len(ids)
            samples.append(Sample(ids[:end], logps[:end], tok.decode(ids[:end], skip_special_tokens=True)))
        return [samples[j * k:(j + 1) * k] for j in range(len(prompts))]
