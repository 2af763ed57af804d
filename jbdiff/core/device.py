"""Device and dtype selection from user-facing names."""

from __future__ import annotations

import torch

from jbdiff.core.errors import JbdiffError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; an explicit device must be available."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise JbdiffError(f"unknown device '{name}'; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise JbdiffError(f"device '{name}' was asked for but this machine has no CUDA GPU available to torch")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise JbdiffError(f"device '{name}' was asked for but MPS is not available on this machine")
    return device


def resolve_dtype(name: str) -> torch.dtype:
    """A torch dtype from ``float32``, ``float16`` or ``bfloat16``."""
    if name not in DTYPES:
        raise JbdiffError(f"unknown dtype '{name}'; use one of {', '.join(DTYPES)}")
    return DTYPES[name]
