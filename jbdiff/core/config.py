"""Typed configs: YAML files and plain dicts turned into frozen dataclasses.

Unknown keys are an error (a typo in a config must not be silently ignored); lists become
tuples; nested dataclass fields are built recursively.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from jbdiff.core.errors import JbdiffError

T = TypeVar("T")

LR_SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and loop settings shared by every stage's training."""

    batch_size: int = 8
    lr: float = 3e-4
    max_steps: int = 1000
    sample_seconds: float = 1.0
    checkpoint_every: int = 200
    log_every: int = 10
    accumulate_grad_batches: int = 1
    precision: str = "32-true"
    num_workers: int = 0
    grad_clip: float = 1.0
    seed: int = 0
    warmup_steps: int = 0
    lr_schedule: str = "constant"
    lr_final: float = 0.1

    def __post_init__(self) -> None:
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"unknown lr_schedule '{self.lr_schedule}'; use one of {', '.join(LR_SCHEDULES)}")
        if self.warmup_steps < 0 or not 0.0 <= self.lr_final <= 1.0:
            raise ValueError("warmup_steps must be >= 0 and lr_final in [0, 1]")

    def lr_factor(self, step: int) -> float:
        """The learning rate at optimizer step ``step`` as a fraction of ``lr``.

        A linear warmup over ``warmup_steps``, then constant or a cosine decay that reaches
        ``lr_final`` at ``max_steps`` (the config's, not a ``--max-steps`` override) and stays there.
        """
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.lr_schedule == "constant":
            return 1.0
        span = max(1, self.max_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.lr_final + (1.0 - self.lr_final) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if _is_dataclass_type(tp):
        if not isinstance(value, dict):
            raise JbdiffError(f"{where}: expected a mapping, got {type(value).__name__}")
        return from_dict(tp, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise JbdiffError(f"{where}: expected a list, got {value!r}")
        (item_tp, *_) = typing.get_args(tp)
        return tuple(_convert(v, item_tp, where) for v in value)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        arms = [a for a in typing.get_args(tp) if a is not type(None)]
        return _convert(value, arms[0], where)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise JbdiffError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)  # YAML 1.1 reads 3e-4 (no dot) as a string
        except ValueError:
            raise JbdiffError(f"{where}: expected a number, got {value!r}") from None
    if tp in (int, str, bool) and not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise JbdiffError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build dataclass ``cls`` from ``data``, refusing unknown keys with their names."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise JbdiffError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(names))}")
    kwargs = {key: _convert(value, hints[key], f"{where}.{key}") for key, value in data.items()}
    try:
        return cls(**kwargs)
    except ValueError as err:
        raise JbdiffError(f"{where}: {err}") from None


def to_dict(obj: Any) -> dict[str, Any]:
    """A dataclass as plain YAML-friendly data (tuples become lists)."""

    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(obj))


def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML mapping, with one clear error for a missing or malformed file."""
    p = Path(path)
    if not p.is_file():
        raise JbdiffError(f"{p}: config file not found")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        raise JbdiffError(f"{p}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise JbdiffError(f"{p}: expected a YAML mapping at the top level")
    return data


def load_config(cls: type[T], path: str | os.PathLike[str]) -> T:
    """Load a YAML file into dataclass ``cls``."""
    return from_dict(cls, load_yaml(path), str(path))
