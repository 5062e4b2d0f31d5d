"""Shared fixtures: one local Ray per test session, and a tiny warm-started policy built once."""

import os
import textwrap
from pathlib import Path

import pytest

# The vLLM lane runs in its own venv (`make test-vllm` runs `pytest tests/vllm_lane` explicitly).
collect_ignore = ["vllm_lane"]


@pytest.fixture(scope="session")
def ray_session():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
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
    from framework.warmstart import prepare_policy

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
