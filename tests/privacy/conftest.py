"""A tiny Llama whose tokenizer is trained on the public split of a small stdlib corpus."""

import pytest

#: A small DP experiment (corpus, model and schedule) that reuses ``dp_model``'s cache.
DP_SMALL = ["job=dp", "model.tiny.layers=2", "model.tiny.vocab_size=320", "model.tiny.max_positions=32",
            "dp.corpus.max_chars=100000", "dp.corpus.seq_len=32", "dp.batch_size=32", "dp.public_steps=4",
            "dp.private_steps=4", "dp.eval_every=2", "dp.eval_sequences=16", "dp.diag_batch=8",
            "dp.hutchinson_probes=1", "dp.canaries=20", "dp.threads=1", "checkpoint.every=2", "checkpoint.keep=10"]


@pytest.fixture
def dp_config(cache_dir):
    from framework.config import load_config

    def make(*extra):
        return load_config(None, [f"cache_dir={cache_dir}", *DP_SMALL, *extra])

    return make


@pytest.fixture(scope="session")
def dp_model(cache_dir) -> str:
    from framework.config import load_config
    from framework.dp import prepare_model

    return prepare_model(load_config(None, [f"cache_dir={cache_dir}", *DP_SMALL]))
