"""Configs: YAML files plus dotted ``key=value`` overrides, loaded into frozen dataclasses.

OmegaConf does the merging and type checking against the dataclass schema, so unknown keys and
wrong types are errors naming the full key path. Range checks live in each dataclass's
``__post_init__`` and are reported with the full path too. Merge order:

    dataclass defaults ← YAML file ← QUICK (when ``quick=true``) ← command-line overrides

so an explicit override always wins, also over the reduced ``quick`` sizes.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from framework.errors import ConfigError, InputError

@dataclass(frozen=True)
class LabConfig:
    """The exact game lab: tabular MPO/OMPO on matrix and Markov games."""

    matrix_games: tuple[str, ...] = ("rock_paper_scissors", "asymmetric_cycle", "random")
    """Built-in matrix games to run (``random`` is a random non-transitive game)."""
    matrix_size: int = 5
    """Number of response classes of the ``random`` matrix game."""
    markov_games: int = 10
    """How many random Markov games to average over."""
    algos: tuple[str, ...] = ("mpo", "ompo")
    """Tabular algorithms: mpo, ompo (sppo = mpo on matrix games)."""
    eta: float = 0.7
    """Step size η of the mirror-descent update (β = 1/η); the OMPO bound is η ≤ 1/√2."""
    iters: int = 10_000
    """Policy updates per run."""
    init: str = "random"
    """Starting policy: ``uniform`` or ``random`` (Dirichlet per state, from the seed)."""

    def __post_init__(self):
        if not self.eta > 0:
            raise ConfigError("eta", f"must be > 0, got {self.eta}")
        if self.iters < 10:
            raise ConfigError("iters", f"must be ≥ 10 (a slope needs a decade), got {self.iters}")
        if self.markov_games < 1:
            raise ConfigError("markov_games", f"must be ≥ 1, got {self.markov_games}")
        if self.matrix_size < 3:
            raise ConfigError("matrix_size", f"must be ≥ 3, got {self.matrix_size}")
        if self.init not in ("uniform", "random"):
            raise ConfigError("init", f"must be 'uniform' or 'random', got {self.init!r}")
        from framework.tabular import TABULAR_ALGOS
        from games.matrix import BUILTIN_GAMES

        for i, name in enumerate(self.algos):
            if name not in TABULAR_ALGOS:
                raise ConfigError(f"algos[{i}]", f"unknown algorithm {name!r}; choose from {sorted(TABULAR_ALGOS)}")
        for i, name in enumerate(self.matrix_games):
            if name not in BUILTIN_GAMES:
                raise ConfigError(f"matrix_games[{i}]", f"unknown game {name!r}; choose from {sorted(BUILTIN_GAMES)}")


@dataclass(frozen=True)
class Config:
    """Everything ``alignplay run`` needs."""

    job: str = "lab"
    """What to run: ``lab`` (the exact game lab)."""
    seed: int = 0
    """Seed of every random choice of the run."""
    quick: bool = False
    """A reduced smoke version (sizes from ``QUICK``; explicit overrides still win)."""
    lab: LabConfig = field(default_factory=LabConfig)

    def __post_init__(self):
        from framework.jobs import JOBS

        if self.job not in JOBS:
            raise ConfigError("job", f"unknown job {self.job!r}; choose from {sorted(JOBS)}")


#: What ``quick=true`` changes: small enough for a smoke run of every example.
QUICK = {"lab.iters": 300, "lab.markov_games": 2}


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _build(cls, data: dict, path: str):
    """Instantiate (nested) frozen dataclasses; a check that fails names its full key path."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        value = data[f.name]
        if dataclasses.is_dataclass(hints[f.name]):
            value = _build(hints[f.name], value, f"{path}{f.name}.")
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[f.name] = value
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(path + e.key, e.message) from None


def _parse_overrides(overrides: list[str]):
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(item, "an override must look like key=value (e.g. lab.iters=500)")
    try:
        return OmegaConf.from_dotlist(list(overrides))
    except OmegaConfBaseException as e:
        raise ConfigError("", f"bad override: {_first_line(e)}") from None


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Load a YAML config (or the defaults) with ``key=value`` overrides into a ``Config``."""
    layers = []
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: no such config file")
        try:
            layers.append(OmegaConf.load(path))
        except Exception as e:  # YAML syntax errors come in several types
            raise ConfigError("", f"{path}: not valid YAML ({_first_line(e)})") from None
        if not isinstance(layers[-1], typing.Mapping) and not OmegaConf.is_dict(layers[-1]):
            raise ConfigError("", f"{path}: the top level must be a mapping")
    cli = _parse_overrides(list(overrides))
    schema = OmegaConf.structured(Config)
    OmegaConf.set_readonly(schema, False)
    try:
        merged = OmegaConf.merge(schema, *layers, cli)
        if merged.quick:
            merged = OmegaConf.merge(schema, *layers, OmegaConf.from_dotlist(
                [f"{k}={v}" for k, v in QUICK.items()]), cli)
        data = OmegaConf.to_container(merged, resolve=True)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None)
        msg = getattr(e, "msg", None) or _first_line(e)
        raise ConfigError(key or "", _first_line(Exception(msg))) from None
    return _build(Config, data, "")


def to_yaml(cfg: Config) -> str:
    """The resolved config as YAML (written to every run directory)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
