"""Loading OpenAI Jukebox ``vqvae.pth.tar`` files (``{"model": {"module."+key: tensor}}``)."""

from __future__ import annotations

import os

from jbdiff.core.errors import JbdiffError
from jbdiff.core.state_dict import load_strict, read_checkpoint, strip_prefix
from levels.vqvae import VQVAE, VQVAEConfig


def load_jukebox_vqvae(path: str | os.PathLike[str], cfg: VQVAEConfig | None = None) -> VQVAE:
    """Build a VQ-VAE (5b hyperparameters unless ``cfg`` is given) and load OpenAI's weights.

    A file whose tensors do not match is refused with the missing/unexpected keys named.
    """
    data = read_checkpoint(path)
    state = data.get("model", data)
    if not isinstance(state, dict):
        raise JbdiffError(f"{path}: its 'model' entry is not a state dict")
    vqvae = VQVAE(cfg or VQVAEConfig())
    load_strict(vqvae, strip_prefix(state, "module."), str(path))
    return vqvae.eval()
