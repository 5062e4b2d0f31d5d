"""Checkpoints: safetensors for tensors, JSON for everything else (never pickle).

A checkpoint directory holds
  policy/            the model (``save_pretrained``: safetensors + config + tokenizer), loadable
                     with ``AutoModelForCausalLM.from_pretrained``;
  optimizer.safetensors + optimizer.json   the optimizer's tensors and its scalar state;
  state.json         the driver's state (iteration, versions, counters, RNG seeds).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from framework.errors import InputError
from framework.models import check_model_path, check_safetensors


def save_optimizer(optimizer: torch.optim.Optimizer, directory: Path, state: dict | None = None) -> None:
    """``state`` (default ``optimizer.state_dict()``: parameters by index) as safetensors + JSON."""
    state = optimizer.state_dict() if state is None else state
    tensors, scalars = {}, {}
    for pid, pstate in state["state"].items():
        for name, value in pstate.items():
            if torch.is_tensor(value) and value.dim() > 0:
                tensors[f"{pid}.{name}"] = value.contiguous()
            else:
                scalars[f"{pid}.{name}"] = value.item() if torch.is_tensor(value) else value
    save_file(tensors, str(directory / "optimizer.safetensors"))
    (directory / "optimizer.json").write_text(json.dumps({"param_groups": state["param_groups"],
                                                          "scalars": scalars}))


def load_optimizer(optimizer: torch.optim.Optimizer, directory: Path) -> None:
    optimizer.load_state_dict(read_optimizer(directory))


def read_optimizer(directory: Path) -> dict:
    """What ``save_optimizer`` wrote, as ``optimizer.state_dict()`` has it."""
    meta = json.loads((directory / "optimizer.json").read_text())
    tensors = load_file(str(directory / "optimizer.safetensors"))
    state: dict = {}
    for key, value in tensors.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    for key, value in meta["scalars"].items():
        pid, name = key.split(".", 1)
        # Adam keeps `step` as a tensor; restore the type it had
        state.setdefault(int(pid), {})[name] = torch.tensor(float(value)) if name == "step" else value
    return {"state": state, "param_groups": meta["param_groups"]}


def write_state(directory: Path, state: dict) -> None:
    (directory / "state.json").write_text(json.dumps(state, indent=1))


def read_state(directory: Path) -> dict:
    """``state.json``; a file that is not a JSON object with an integer ``iteration`` is an InputError."""
    path = Path(directory) / "state.json"
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: not valid JSON ({str(e).splitlines()[0]}); the checkpoint is corrupt") from None
    if not isinstance(state, dict) or not isinstance(state.get("iteration"), int):
        raise InputError(f"{path}: expected a JSON object with an integer 'iteration'; the checkpoint is corrupt")
    return state


def check_checkpoint(directory: Path) -> dict:
    """What a resume reads from a checkpoint is there and whole: its state (returned), the policy
    (config, tokenizer, weights), the optimizer state, and every other JSON and safetensors file."""
    directory = Path(directory)
    state = read_state(directory)
    check_model_path(directory / "policy", "resume")
    for name in ("optimizer.json", "optimizer.safetensors"):
        if not (directory / name).is_file():
            raise InputError(f"resume: {directory / name} is missing (the optimizer state a resume continues with)")
    for path in sorted(directory.rglob("*.json")):
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(f"resume: {path} is not valid JSON ({str(e).splitlines()[0]})") from None
    for path in sorted(directory.rglob("*.safetensors")):
        check_safetensors(path, "resume")
    return state


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The complete checkpoint (a directory with state.json) of the latest iteration, or None."""
    done = [p for p in (Path(run_dir) / "checkpoints").iterdir() if (p / "state.json").exists()] \
        if (Path(run_dir) / "checkpoints").is_dir() else []
    return max(done, key=lambda p: read_state(p)["iteration"], default=None)


def finalize(tmp: Path, final: Path) -> None:
    """Make a checkpoint visible atomically: it is written to ``tmp`` and renamed."""
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
