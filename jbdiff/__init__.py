"""jbdiff: hierarchical multi-level latent diffusion for music.

The public API, imported on first use so that ``import jbdiff`` stays light::

    from jbdiff import Pipeline, load_codec, load_audio

The package has two layers. ``jbdiff.core`` (audio, configs, the UNet, diffusion and
samplers, state dicts, atomic writes, training plumbing) and ``jbdiff.metrics`` are the
shared floor: they import nothing of jbdiff above them, nor ``levels`` or ``upsampler``.
The modules directly in ``jbdiff/`` compose everything: ``pipeline``, ``window_sampler``,
``bundle``, ``sampling_settings``, ``train``, ``evaluate_codec``, ``evaluate_generation``,
``studio`` (the web app) and ``cli``. The layers are import-linter contracts (``.importlinter``).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_PUBLIC = {
    "Pipeline": "jbdiff.pipeline",
    "Generation": "jbdiff.pipeline",
    "SamplingSettings": "jbdiff.sampling_settings",
    "load_codec": "levels.codec_io",
    "load_jukebox_vqvae": "levels.jukebox_checkpoint",
    "load_audio": "jbdiff.core.audio",
    "save_audio": "jbdiff.core.audio",
    "SAMPLE_RATE": "jbdiff.core.audio",
    "JbdiffError": "jbdiff.core.errors",
}

__all__ = [
    "SAMPLE_RATE", "Generation", "JbdiffError", "Pipeline", "SamplingSettings", "__version__",
    "load_audio", "load_codec", "load_jukebox_vqvae", "save_audio",
]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use."""
    if name not in _PUBLIC:
        raise AttributeError(f"module 'jbdiff' has no attribute {name!r}")
    return getattr(importlib.import_module(_PUBLIC[name]), name)
