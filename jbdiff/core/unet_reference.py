"""audio-diffusion-pytorch 0.1.3's ``UNetV0``: the layout and outputs that :mod:`jbdiff.core.unet` reproduces.

Used by the parity tests and the UNet benchmark only; audio-diffusion-pytorch is not a runtime
dependency of jbdiff.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from torch import nn

# The Jukebox-Diffusion v1 anchor's UNetV0 arguments (jbdiff-v1.yaml; configs/level*/full.yaml
# adds the v1 fork's resnet dilation, dropout and style, which UNetV0 0.1.3 does not take).
JBDIFF_V1_UNET: dict[str, Any] = {
    "in_channels": 64,
    "channels": (64, 128, 128, 256, 256, 512, 512, 1024, 1024),
    "factors": (1, 2, 1, 2, 1, 2, 1, 2, 1),
    "items": (1, 3, 3, 3, 3, 3, 3, 3, 1),
    "attentions": (0, 0, 0, 0, 1, 0, 1, 0, 0),
    "cross_attentions": (0, 1, 0, 1, 0, 1, 0, 1, 1),
    "attention_heads": 8,
    "attention_features": 64,
    "embedding_features": 64,
    "use_embedding_cfg": True,
    "embedding_max_length": 1536,
}


def reference_unet(**kwargs: Any) -> nn.Module:
    """``UNetV0(dim=1, **kwargs)`` from audio-diffusion-pytorch (ImportError when it is not installed).

    Its package imports torchaudio for a vocoder that UNetV0 never uses; where torchaudio is
    absent or broken beside a CPU torch, an empty stand-in module takes its place.
    """
    try:
        import torchaudio  # noqa: F401
    except (ImportError, OSError, RuntimeError):
        stub = types.ModuleType("torchaudio")
        stub.transforms = types.ModuleType("torchaudio.transforms")  # type: ignore[attr-defined]
        sys.modules["torchaudio"] = stub
        sys.modules["torchaudio.transforms"] = stub.transforms  # type: ignore[attr-defined]
    from audio_diffusion_pytorch import UNetV0

    return UNetV0(dim=1, **kwargs)
