"""Reading foreign checkpoint files and loading their tensors strictly, with clear refusals."""

from __future__ import annotations

import os
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from jbdiff.core.errors import JbdiffError


class _PlainDict:
    """Stands in for a foreign ``dict`` subclass that only adds attribute access (hyperparameters).

    Torch's weights-only unpickler creates it by calling ``__new__``, which gives a plain
    ``dict`` that the pickle's items then fill; no code of the foreign package runs, nor is
    the package imported.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[misc]
        return {}


HYPERPARAMETER_DICTS: tuple[str, ...] = ("jukebox.hparams.Hyperparams",)
"""The exact names of the foreign classes a checkpoint may hold, each read as a plain dict.

OpenAI's own ``save_checkpoint`` stores ``hps`` as a plain dict already; a file saved by other
Jukebox code may keep the ``Hyperparams`` object, a ``dict`` with attribute access.
"""

_UNSUPPORTED = re.compile(r"GLOBAL (\S+)")


def read_checkpoint(path: str | os.PathLike[str], *, mmap: bool = False) -> dict[str, Any]:
    """Load a torch checkpoint on the CPU with torch's weights-only unpickler, and nothing else.

    Only tensors, plain containers and numbers are ever built, so no code stored in the file
    can run; the Jukebox hyperparameter classes of :data:`HYPERPARAMETER_DICTS` become
    plain dicts. Anything else (an arbitrary object, a callable, numpy arrays) is refused in
    one sentence that names it. ``mmap`` maps the tensors of a zip-format file instead of
    reading them, for a quick look at a large file's metadata.
    """
    p = Path(path)
    if not p.is_file():
        raise JbdiffError(f"{p}: checkpoint file not found")
    try:
        with torch.serialization.safe_globals([(_PlainDict, name) for name in HYPERPARAMETER_DICTS]), warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Detected pickle protocol")  # newer protocols load or are refused below
            data = torch.load(p, map_location="cpu", weights_only=True, mmap=mmap and zipfile.is_zipfile(p))
    except Exception as err:  # noqa: BLE001 - any decoding failure means "not a checkpoint jbdiff reads"
        raise JbdiffError(_refusal(p, err)) from None
    if not isinstance(data, dict):
        raise JbdiffError(f"{p}: expected a checkpoint dictionary, found {type(data).__name__}")
    return data


def _refusal(path: Path, error: Exception) -> str:
    """One sentence saying why ``path`` was not read (torch's own messages run to paragraphs)."""
    message = str(error)
    why = "jbdiff reads only tensors and plain data from a checkpoint, so that no code in the file can run"
    found = _UNSUPPORTED.search(message)
    if found:
        return f"{path}: refused: it refers to {found.group(1).rstrip('.')}, but {why}"
    if "Weights only load failed" in message:
        return f"{path}: not a readable PyTorch checkpoint (damaged, or holding more than tensors and plain data, and {why})"
    detail = next((line.strip() for line in message.splitlines() if line.strip()), "")[:160].rstrip(". ")
    return f"{path}: not a readable PyTorch checkpoint ({type(error).__name__}{': ' + detail if detail else ''})"


def _names(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], source: str, *, model: str = "the model") -> None:
    """Load ``state`` into ``module``, refusing missing, unexpected, misshapen or non-finite tensors.

    ``model`` names the receiving side in the refusal (e.g. "the level1 model that bundle.yaml
    describes"); each refusal is one sentence.
    """
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {_names(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {_names(unexpected)}")
        raise JbdiffError(f"{source}: does not match {model} ({'; '.join(parts)})")
    wrong = [k for k, v in expected.items() if state[k].shape != v.shape]
    if wrong:
        first = wrong[0]
        raise JbdiffError(
            f"{source}: tensor shapes do not match {model} ({len(wrong)} of {len(expected)}; "
            f"first {first}: {tuple(state[first].shape)} in the file, {tuple(expected[first].shape)} in the model)"
        )
    damaged = next((k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
    if damaged is not None:
        raise JbdiffError(f"{source}: tensor {damaged} holds NaN or infinite values, so these weights cannot be used")
    module.load_state_dict(state, strict=True)


def strip_prefix(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    """``state`` with ``prefix`` removed from the keys that start with it."""
    return {k.removeprefix(prefix): v for k, v in state.items()}
