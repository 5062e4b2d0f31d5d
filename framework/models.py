"""Model loading and the tiny-model builder (an edge module: transformers lives here).

``load_policy`` loads any Hugging Face causal LM and tokenizer from a local directory or a hub
id; ``load_reference`` the same model frozen; ``load_reward_model`` a scalar-reward head on it.
``accelerator`` is the device a role computes on, ``group_backend`` its groups' backend and
``autocast`` its mixed precision.
``build_tiny_model`` makes a small Llama from a config with random init and a byte-level
BPE tokenizer trained locally with ``tokenizers`` — untied embeddings (DP ghost clipping needs
them), head dim 32 (vLLM's CPU attention needs ≥ 32) — and a chat template. It is deterministic
in its arguments and cached on disk under a hash of them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from framework.errors import ConfigError, InputError

#: what the roles may compute in (``model.dtype``)
DTYPES = ("float32", "bfloat16")

# Markers of the tiny models' chat format; the template renders
#   <|user|>3+4<|assistant|>7!<|end|><|user|>+2<|assistant|>9.<|end|> ...
USER, ASSISTANT, END, PAD = "<|user|>", "<|assistant|>", "<|end|>", "<|pad|>"
CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'user' %}" + USER + "{{ m['content'] }}"
    "{% elif m['role'] == 'assistant' %}" + ASSISTANT + "{{ m['content'] }}" + END +
    "{% else %}{{ m['content'] }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}" + ASSISTANT + "{% endif %}"
)


@dataclass(frozen=True)
class TinyModelSpec:
    """Sizes of the tiny Llama built when no model path is given (~0.2 M parameters)."""

    hidden_size: int = 64
    """Width; head dim = hidden_size / heads must be ≥ 32 (vLLM's CPU attention needs it)."""
    layers: int = 4
    """Transformer layers (2 learn running sums poorly)."""
    heads: int = 2
    """Attention heads."""
    intermediate_size: int = 192
    """MLP width."""
    vocab_size: int = 256
    """BPE vocabulary size (trained locally on the task's text)."""
    max_positions: int = 128
    """Longest conversation in tokens."""

    def __post_init__(self):
        for name in ("hidden_size", "layers", "heads", "intermediate_size", "max_positions"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be ≥ 1, got {getattr(self, name)}")
        if self.hidden_size % self.heads or self.hidden_size // self.heads < 32:
            raise ConfigError("hidden_size", f"hidden_size / heads must be an integer ≥ 32 "
                                             f"(vLLM CPU attention), got {self.hidden_size}/{self.heads}")
        if self.vocab_size < 64:
            raise ConfigError("vocab_size", f"must be ≥ 64, got {self.vocab_size}")


def default_cache_dir() -> Path:
    return Path(os.environ.get("ALIGNPLAY_CACHE", Path.home() / ".cache" / "alignplay"))


def _train_tokenizer(corpus: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    # Digits stay single tokens: arithmetic is learnable digit by digit.
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[PAD, USER, ASSISTANT, END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, eos_token=END, bos_token=None,
        additional_special_tokens=[USER, ASSISTANT],
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "left"  # generation pads on the left
    return fast


def build_tiny_model(spec: TinyModelSpec, corpus: list[str], *, seed: int = 0,
                     cache_dir: Path | None = None) -> Path:
    """Build (or reuse) a tiny Llama + tokenizer for ``corpus``; returns its directory."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    key = hashlib.sha256(json.dumps([asdict(spec), seed, corpus[:50], len(corpus), "v2"]).encode()).hexdigest()[:16]
    out = Path(cache_dir or default_cache_dir()) / "tiny" / key
    if (out / "config.json").exists() and (out / "tokenizer.json").exists():
        return out
    tokenizer = _train_tokenizer(corpus, spec.vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=spec.hidden_size, intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.layers, num_attention_heads=spec.heads, num_key_value_heads=spec.heads,
        head_dim=spec.hidden_size // spec.heads, max_position_embeddings=spec.max_positions,
        tie_word_embeddings=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.replace(out) if not out.exists() else None
    return out


def answer_ids(tokenizer, messages: list[dict], text: str) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids): the generation prompt after ``messages`` and the tokens the chat
    template writes for the assistant turn ``text`` after it."""
    prompt = list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)["input_ids"])
    full = list(tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": text}],
                                              tokenize=True)["input_ids"])
    if full[: len(prompt)] != prompt:
        raise ValueError("the chat template does not extend the generation prompt with the answer")
    return prompt, full[len(prompt):]


def check_model_path(path: str | Path, field: str = "model.path") -> None:
    """A local path must be a whole model directory (a config, a tokenizer and weights that are
    not cut short); anything else must look like a hub id (``org/name``)."""
    local = Path(path).expanduser()
    if not local.exists() and (str(path).startswith((".", "/", "~")) or str(path).count("/") > 1):
        raise InputError(f"{field}: {path} does not exist")
    if not local.exists():
        return
    if not (local / "config.json").is_file():
        raise InputError(f"{field}: {path} has no config.json (not a Hugging Face model directory)")
    _check_json(local / "config.json", field)
    if not any((local / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        raise InputError(f"{field}: {path} has no tokenizer (tokenizer.json or tokenizer_config.json)")
    if (local / "model.safetensors").is_file():
        check_safetensors(local / "model.safetensors", field)
    elif (local / "model.safetensors.index.json").is_file():
        index = _check_json(local / "model.safetensors.index.json", field)
        for shard in sorted(set(index.get("weight_map", {}).values()) if isinstance(index, dict) else ()):
            if not (local / shard).is_file():
                raise InputError(f"{field}: {local / shard} (a shard named in model.safetensors.index.json) "
                                 f"does not exist")
            check_safetensors(local / shard, field)
    elif not any((local / name).is_file() for name in ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        raise InputError(f"{field}: {path} holds no weights (expected model.safetensors or pytorch_model.bin)")


def _check_json(path: Path, field: str):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{field}: {path} is not valid JSON ({str(e).splitlines()[0]})") from None


def check_safetensors(path: Path, field: str) -> None:
    """A safetensors file is whole: its header parses and the file is as long as the header says
    (a truncated copy fails here, with its name, rather than deep inside a load). Reads the header only."""
    size = path.stat().st_size
    with path.open("rb") as f:
        n = int.from_bytes(f.read(8), "little") if size >= 8 else 0
        try:
            header = json.loads(f.read(n)) if 0 < n <= size - 8 else None
            end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            header = None
    if not isinstance(header, dict):
        raise InputError(f"{field}: {path} is not a safetensors file (its header is unreadable: truncated or corrupt)")
    if size != 8 + n + end:
        raise InputError(f"{field}: {path} is truncated or corrupt: {size} bytes, its header describes {8 + n + end}")


def load_policy(path: str | Path, *, dtype: str = "float32"):
    """Any Hugging Face causal LM and its tokenizer, from a local directory or a hub id."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_model_path(path)
    local = Path(path).expanduser()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(local) if local.exists() else str(path))
        model = AutoModelForCausalLM.from_pretrained(
            str(local) if local.exists() else str(path), dtype=getattr(torch, dtype))
    except OSError as e:
        raise InputError(f"model.path: cannot load {path!r} ({str(e).splitlines()[0]})") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    if tokenizer.chat_template is None:
        raise InputError(f"model.path: the tokenizer of {path!r} has no chat template")
    return model, tokenizer


def accelerator():
    """The device this process computes on: its first visible GPU — Ray makes a role's GPUs the
    visible ones, and none for a role without — else the CPU."""
    import torch

    return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")


def group_backend(device) -> str:
    """The torch.distributed backend of a group computing on ``device``: NCCL on GPUs, gloo on CPUs."""
    return "nccl" if device.type == "cuda" else "gloo"


def autocast(device, dtype: str):
    """Mixed precision for forward passes in ``dtype`` on ``device`` (none for float32)."""
    import torch

    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=getattr(torch, dtype))


def load_reference(path: str | Path, *, dtype: str = "float32", device=None):
    """The causal LM at ``path``, frozen and in eval mode (the reference of a KL penalty)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=getattr(torch, dtype))
    return model.to(device or "cpu").eval().requires_grad_(False)


def load_reward_model(path: str | Path, *, pad_token_id: int):
    """A sequence classifier with one output (a scalar reward) on the architecture at ``path``; a
    causal LM's weights give its body, the head starts fresh."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=1)
    model.config.pad_token_id = pad_token_id  # the reward is read at each row's last real token
    return model
