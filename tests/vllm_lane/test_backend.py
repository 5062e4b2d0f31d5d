"""The vllm backend against transformers on the same tiny weights: greedy tokens, sampled
log-probs, in-place weight updates. One engine serves the whole module."""

import math
import sys

import pytest
import torch

from actors.backends import make_backend
from framework.errors import InputError


def encode(tokenizer, states):
    return [list(tokenizer.apply_chat_template(s, add_generation_prompt=True, tokenize=True)["input_ids"])
            for s in states]


@torch.no_grad()
def hf_greedy(model, tokenizer, prompt, max_new_tokens=8):
    """transformers' greedy continuation, cut after the end-of-turn token."""
    out = model.generate(input_ids=torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                         do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    ids = out[0, len(prompt):].tolist()
    return ids[:ids.index(tokenizer.eos_token_id) + 1] if tokenizer.eos_token_id in ids else ids


@torch.no_grad()
def hf_logprobs(model, prompt, response):
    """(R,) log π(response_t | prompt, response_<t) from one teacher-forced forward."""
    logits = model(torch.tensor([prompt + response])).logits[0, len(prompt) - 1:-1]
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, torch.tensor(response)[:, None]).squeeze(-1)


def greedy(backend, prompts):
    return [group[0].token_ids for group in backend.generate(prompts, k=1, seed=0, temperature=0.0)]


def tokens(groups):
    return [[s.token_ids for s in g] for g in groups]


def test_greedy_tokens_and_text_equal_transformers_generate(vllm_backend, hf_policy, task):
    model, tok = hf_policy
    prompts = encode(tok, task.heldout_states(6, seed=0))  # first and later turns of 6 conversations
    got = vllm_backend.generate(prompts, k=1, seed=0, temperature=0.0)
    want = [hf_greedy(model, tok, p) for p in prompts]
    assert [g[0].token_ids for g in got] == want
    assert [g[0].text for g in got] == [tok.decode(w, skip_special_tokens=True) for w in want]
    assert sum(w[-1] == tok.eos_token_id for w in want) >= len(want) // 2  # stopping at <|end|> was compared


def test_sampled_logprobs_are_the_policys_and_seeds_reproduce(vllm_backend, hf_policy, task):
    model, tok = hf_policy
    prompts = encode(tok, task.heldout_states(2, seed=1))
    groups = vllm_backend.generate(prompts, k=4, seed=3)
    assert [len(g) for g in groups] == [4] * len(prompts)
    for prompt, group in zip(prompts, groups):
        for s in group:
            assert 0 < len(s.token_ids) == len(s.logprobs) <= 8
            assert tok.eos_token_id not in s.token_ids[:-1]  # the end-of-turn token ends a sample
            assert s.text == tok.decode(s.token_ids, skip_special_tokens=True)
            torch.testing.assert_close(torch.tensor(s.logprobs), hf_logprobs(model, prompt, s.token_ids),
                                       atol=1e-3, rtol=0)
    assert len({tuple(ids) for g in tokens(groups) for ids in g}) > 1  # each sample has its own seed
    # reproducible, whatever else the engine batches with a prompt; another seed, other samples
    assert tokens(vllm_backend.generate(prompts, k=4, seed=3)) == tokens(groups)
    assert tokens(vllm_backend.generate(prompts[:1], k=4, seed=3)) == tokens(groups[:1])
    assert tokens(vllm_backend.generate(prompts, k=4, seed=4)) != tokens(groups)


def test_more_prompt_tokens_than_one_engine_step_holds(vllm_backend, hf_policy, task):
    """Prefills queue for the next step rather than being split: vLLM 0.32 on CPU crashes on a
    seeded request whose prefill is split across steps."""
    model, tok = hf_policy
    states = encode(tok, task.heldout_states(16, seed=3))
    prompts = [p + q + r for p, q, r in zip(states, states[1:] + states[:1], states[2:] + states[:2])]
    scheduler = vllm_backend.llm.llm_engine.vllm_config.scheduler_config
    assert 8 * len(prompts) <= scheduler.max_num_seqs  # every request is eligible for the first step
    assert 8 * sum(map(len, prompts)) > 1.5 * scheduler.max_num_batched_tokens  # but their prompts overflow it
    groups = vllm_backend.generate(prompts, k=8, seed=0)
    assert tokens(vllm_backend.generate(prompts[:1], k=8, seed=0)) == tokens(groups[:1])


def test_load_state_dict_updates_the_running_engine_in_place(vllm_backend, hf_policy, task):
    model, tok = hf_policy
    prompts = encode(tok, task.heldout_states(6, seed=2))
    engine = vllm_backend.llm.llm_engine.engine_core
    original = {k: v.clone() for k, v in model.state_dict().items()}
    before = greedy(vllm_backend, prompts)
    g = torch.Generator().manual_seed(0)
    perturbed = {k: v + 0.1 * torch.randn(v.shape, generator=g) for k, v in original.items()}
    try:
        vllm_backend.load_state_dict(perturbed)
        model.load_state_dict(perturbed)
        after = greedy(vllm_backend, prompts)
        assert after == [hf_greedy(model, tok, p) for p in prompts]
        assert after != before
        for prompt, group in zip(prompts[:2], vllm_backend.generate(prompts[:2], k=2, seed=1)):
            for s in group:  # the sampling policy is the new one
                torch.testing.assert_close(torch.tensor(s.logprobs), hf_logprobs(model, prompt, s.token_ids),
                                           atol=1e-3, rtol=0)
        # all-zero weights: uniform next-token distributions, sampled without top-k/top-p cuts
        vllm_backend.load_state_dict({k: torch.zeros_like(v) for k, v in original.items()})
        samples = [s for group in vllm_backend.generate(prompts, k=8, seed=0) for s in group]
        vocab = len(tok)
        torch.testing.assert_close(torch.tensor([lp for s in samples for lp in s.logprobs]),
                                   torch.full((sum(len(s.logprobs) for s in samples),), -math.log(vocab)))
        drawn = [t for s in samples for t in s.token_ids]
        assert len(set(drawn)) > min(vocab, len(drawn)) / 2, (len(set(drawn)), len(drawn), vocab)
    finally:
        vllm_backend.load_state_dict(original)
        model.load_state_dict(original)
    assert greedy(vllm_backend, prompts) == before
    assert vllm_backend.llm.llm_engine.engine_core is engine  # one engine served every version


def test_make_backend_without_vllm_names_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` raises ImportError
    with pytest.raises(InputError, match=r"vllm is not installed; install alignplay\[vllm\]"):
        make_backend("vllm", model_path="unused", model=None, tokenizer=None, max_new_tokens=1)
