"""Shared fixtures: one local Ray per test session, a tiny warm-started policy built once, and a
small DP experiment with its tiny Llama (tokenizer trained on the public split of a small corpus)."""

import os
import textwrap
from pathlib import Path

import pytest

# The vLLM lane runs in its own venv (`make test-vllm` runs `pytest tests/vllm_lane` explicitly).
collect_ignore = ["vllm_lane"]


@pytest.fixture(scope="session")
def ray_session():
    import ray

    # (a Ray of its own, not one another process runs on this machine)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """Tiny models and warm starts for the whole session (built once, reused by every test)."""
    path = tmp_path_factory.mktemp("alignplay-cache")
    os.environ["ALIGNPLAY_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def task():
    from games.tasks import get_task

    return get_task("running_sum", turns=2)


@pytest.fixture(scope="session")
def tiny_policy(cache_dir, task) -> str:
    """A tiny Llama warm-started for 150 steps on running_sum (2 turns): follows the format."""
    from framework.config import load_config
    from framework.jobs.warmstart import prepare_policy

    cfg = load_config(None, [f"cache_dir={cache_dir}", "task.turns=2", "warm_start.steps=150"])
    return prepare_policy(cfg, task, progress=False)


#: A small self-play experiment that reuses ``tiny_policy``'s cached warm start.
SMALL = ["task.turns=2", "warm_start.steps=150", "train.conversations=6", "algo.k=3",
         "eval.conversations=4", "eval.final_conversations=6", "eval.samples=2"]


@pytest.fixture
def small_config(cache_dir):
    from framework.config import load_config

    def make(*extra, path=None):
        return load_config(path, [f"cache_dir={cache_dir}", *SMALL, *extra])

    return make


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """Writes a module outside the package onto sys.path, as a user's plugin; returns its name."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))

    def write(name: str, source: str) -> str:
        (folder / f"{name}.py").write_text(textwrap.dedent(source))
        return name

    return write


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
    from framework.jobs.dp import prepare_model

    return prepare_model(load_config(None, [f"cache_dir={cache_dir}", *DP_SMALL]))


@pytest.fixture
def server():
    """A scripted OpenAI-compatible HTTP server on 127.0.0.1 (tests/llm_server.py), standing in for
    a hosted LLM provider."""
    from llm_server import Server

    s = Server()
    yield s
    s.release.set()
    s.httpd.shutdown()
    s.httpd.server_close()
