"""The offline corpus: deterministic, disjoint splits of the asked sizes, canaries with fair coins."""

import numpy as np
import pytest

from privacy.corpus import canary_coins, make_canaries, pack, split_documents, stdlib_documents


def test_splits_are_disjoint_deterministic_and_sized():
    docs = stdlib_documents()
    assert len(docs) > 3000 and len(set(docs)) == len(docs)
    a = split_documents(docs, public_fraction=0.1, eval_fraction=0.05, max_chars=None)
    b = split_documents(list(reversed(docs)), public_fraction=0.1, eval_fraction=0.05, max_chars=None)
    assert (a.public, a.private, a.eval) == (b.public, b.private, b.eval)  # order does not matter
    assert not (set(a.public) & set(a.private) or set(a.public) & set(a.eval) or set(a.private) & set(a.eval))
    n = len(docs)
    assert len(a.eval) / n == pytest.approx(0.05, abs=0.015)
    assert len(a.public) / (n - len(a.eval)) == pytest.approx(0.1, abs=0.02)
    small = split_documents(docs, public_fraction=0.1, eval_fraction=0.05, max_chars=50_000)
    assert 50_000 <= sum(map(len, small.public + small.private + small.eval)) < 50_000 + max(map(len, docs))


def test_canaries_are_random_secrets_with_fair_coins():
    canaries = make_canaries(1000, seed=0)
    assert len(set(canaries)) == 1000 and canaries == make_canaries(1000, seed=0) != make_canaries(1000, seed=1)
    coins = canary_coins(1000, seed=0)
    assert 430 < coins.sum() < 570  # Binomial(1000, ½): 4.4 standard deviations either side


def test_pack_cuts_joined_documents_into_full_sequences(dp_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(dp_model)
    texts = ["Return the sum of a and b.", "Open a file and return a stream."]
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    flat = ids[0] + [tok.eos_token_id] + ids[1] + [tok.eos_token_id]  # each document ends with the end token
    out = pack(texts, tok, seq_len=5)
    assert out.shape == (len(flat) // 5, 5) and out.dtype == np.int64
    assert out.reshape(-1).tolist() == flat[: out.size]  # the last partial sequence is dropped
    assert pack([], tok, seq_len=5).shape == (0, 5)
