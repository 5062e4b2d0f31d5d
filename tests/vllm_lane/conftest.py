"""The vLLM lane (`make test-vllm`, its own venv): real vLLM engines on CPU.

vLLM is required here: without it the lane fails, it does not skip. Engines keep their caches
and sockets in a temporary directory of this session.
"""

import os
import shutil
import tempfile

import pytest

try:
    import vllm  # noqa: F401
except ImportError as e:
    raise ImportError(f"tests/vllm_lane needs vllm ({e}); run `make test-vllm`, which installs it in .venv-vllm") from None

_SCRATCH = tempfile.mkdtemp(prefix="alignplay-vllm-")
os.environ["VLLM_CACHE_ROOT"] = os.path.join(_SCRATCH, "cache")
os.environ["TMPDIR"] = _SCRATCH  # engine processes inherit it (IPC sockets, compile caches)
tempfile.tempdir = _SCRATCH


@pytest.fixture(scope="session", autouse=True)
def vllm_scratch():
    yield _SCRATCH
    shutil.rmtree(_SCRATCH, ignore_errors=True)


@pytest.fixture(scope="module")
def hf_policy(tiny_policy):
    """The warm-started tiny policy as a transformers model (the reference for vLLM)."""
    from framework.models import load_policy

    model, tokenizer = load_policy(tiny_policy)
    return model.eval(), tokenizer


@pytest.fixture(scope="module")
def vllm_backend(tiny_policy, hf_policy):
    """One vLLM engine for a whole test module (each start costs ~30 s here)."""
    from actors.backends import make_backend

    model, tokenizer = hf_policy
    backend = make_backend("vllm", model_path=tiny_policy, model=model, tokenizer=tokenizer, max_new_tokens=8)
    yield backend
    backend.llm.llm_engine.engine_core.shutdown()
