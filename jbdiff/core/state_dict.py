"""Reading foreign checkpoint files and loading their tensors strictly, with clear refusals."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any, Self

import torch
from torch import nn

from jbdiff.core.errors import JbdiffError

_SAFE = {
    ("collections", "OrderedDict"),
    ("collections", "Counter"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "slice"),
    ("builtins", "complex"),
    ("builtins", "bytearray"),
    ("torch", "Size"),
    ("torch", "device"),
    ("_codecs", "encode"),
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
}


def _allowed(module: str, name: str) -> bool:
    """Only data classes and torch/numpy rebuild functions may be instantiated from a checkpoint."""
    if (module, name) in _SAFE:
        return True
    if module.split(".")[0] == "torch":
        return name.startswith("_rebuild_") or name.endswith("Storage") or isinstance(getattr(torch, name, None), torch.dtype)
    if module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        return name in ("_reconstruct", "scalar")
    return False


class _Opaque(dict):  # type: ignore[type-arg]
    """Stands in for any other class stored in a checkpoint (hyperparameters, paths, dates).

    It accepts whatever arguments the pickle passes and keeps only dict-shaped state, so
    reading metadata never runs foreign code.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        return super().__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, dict):
            self.update(state)


class _LenientUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if _allowed(module, name):
            return super().find_class(module, name)
        return _Opaque


class _lenient_pickle:  # a stand-in for the ``pickle`` module
    Unpickler = _LenientUnpickler
    load = pickle.load
    __name__ = "pickle"


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a torch checkpoint on the CPU without importing the package that wrote it.

    Classes from other packages (Jukebox hyperparameters, Lightning attributes) become plain
    dicts; only tensors, storages and a short list of data classes are ever instantiated.
    """
    p = Path(path)
    if not p.is_file():
        raise JbdiffError(f"{p}: checkpoint file not found")
    try:
        data = torch.load(p, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - retry below with foreign classes replaced by dicts
        try:
            data = torch.load(p, map_location="cpu", weights_only=False, pickle_module=_lenient_pickle)
        except Exception as err:  # noqa: BLE001 - any decoding failure means "not a checkpoint"
            raise JbdiffError(f"{p}: not a readable PyTorch checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(data, dict):
        raise JbdiffError(f"{p}: expected a checkpoint dictionary, found {type(data).__name__}")
    return data


def _names(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``module``, refusing any missing, unexpected or misshapen key by name."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {_names(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {_names(unexpected)}")
        raise JbdiffError(f"{source}: does not match the model ({'; '.join(parts)})")
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items() if state[k].shape != v.shape]
    if wrong:
        raise JbdiffError(f"{source}: tensor shapes do not match the model ({_names(wrong, 4)})")
    module.load_state_dict(state, strict=True)


def strip_prefix(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    """``state`` with ``prefix`` removed from the keys that start with it."""
    return {k.removeprefix(prefix): v for k, v in state.items()}
