"""Loading Jukebox-Diffusion v1 level checkpoints (the Lightning ``.ckpt`` files of its ``JBDiffusion``).

``JBDiffusion`` (jmoso13/jukebox-diffusion, ``jbdiff/utils.py``) holds ``self.diffusion =
DiffusionModel(**diffusion_kwargs)`` and ``self.vqvae``, the frozen Jukebox 5b VQ-VAE built by
``make_vqvae``. audio-diffusion-pytorch's ``DiffusionModel`` registers its UNet three times (``net``,
``diffusion.net``, ``sampler.net``), so ``state_dict`` holds the UNet under ``diffusion.net.`` and again
under the two aliases, plus ``vqvae.*`` in the layout of OpenAI's ``vqvae.pth.tar``. There is no EMA copy
(it is commented out) and no ``hyper_parameters`` (``save_hyperparameters`` is never called): the
architecture is the one in ``jbdiff-v1.yaml``, :data:`V1_DENOISER`.

The UNet was built with jmoso13/a-unet@add_dilation, whose resnets differ from a-unet 0.0.16: each
conv block is GroupNorm, SiLU, Dropout, Conv (the conv is ``.3``, not ``.2``) and only a resnet's first
conv is 3 wide and dilated, the second is 1x1. :data:`V1_DENOISER` builds them that way
(``resnet_style="v1-fork"``), so its files load as saved. For a ``resnet_style="a-unet"`` target,
:func:`unet_state_from_v1` renames those convs and zero-pads the 1x1 kernels to 3-wide ones (centre
tap), which computes the same function.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from jbdiff.core.errors import JbdiffError
from jbdiff.core.state_dict import load_strict, read_checkpoint, strip_prefix
from jbdiff.core.unet import ResnetItem, UNet1d, UNetConfig
from levels.latent_denoiser import DenoiserConfig, LatentDenoiser
from levels.vqvae import VQVAE, VQVAEConfig

__all__ = ["V1_DENOISER", "load_jbdiff_v1_level", "unet_state_from_v1", "vqvae_from_jbdiff_v1"]

NET_PREFIX = "diffusion.net."
ALIAS_PREFIXES = ("diffusion.diffusion.net.", "diffusion.sampler.net.")
VQVAE_PREFIX = "vqvae."

# jbdiff-v1.yaml (the same UNet at every level); embedding_max_length = context_mult * base_tokens.
V1_DENOISER = DenoiserConfig(
    unet=UNetConfig(
        in_channels=64,
        channels=(64, 128, 128, 256, 256, 512, 512, 1024, 1024),
        factors=(1, 2, 1, 2, 1, 2, 1, 2, 1),
        items=(1, 3, 3, 3, 3, 3, 3, 3, 1),
        attentions=(0, 0, 0, 0, 1, 0, 1, 0, 0),
        cross_attentions=(0, 1, 0, 1, 0, 1, 0, 1, 1),
        attention_heads=8,
        attention_features=64,
        embedding_features=64,
        embedding_max_length=1536,
        use_embedding_cfg=True,
        resnet_dilation_factor=3,
        resnet_style="v1-fork",
    ),
    window=768,
    context_mult=2,
)


def _state_dict(path: str | os.PathLike[str]) -> dict[str, Any]:
    state = read_checkpoint(path).get("state_dict")
    if not isinstance(state, dict):
        raise JbdiffError(f"{path}: has no 'state_dict'; expected a Jukebox-Diffusion v1 Lightning checkpoint (.ckpt)")
    return state


def unet_state_from_v1(state: Mapping[str, torch.Tensor], net: UNet1d) -> dict[str, torch.Tensor]:
    """``state`` (UNetV0 keys as jmoso13/a-unet@add_dilation names them) renamed and reshaped for ``net``.

    ``net`` must have ``resnet_style="a-unet"``. Every other key passes through unchanged, so a state
    in the a-unet 0.0.16 layout is returned as is.
    """
    if net.config.resnet_style != "a-unet":
        raise ValueError(f"net has resnet_style={net.config.resnet_style!r}; only 'a-unet' needs converting")
    out = dict(state)
    for name, module in net.named_modules():
        if not isinstance(module, ResnetItem):
            continue
        for i, block in enumerate(module.block.blocks[0].blocks):
            ours, theirs = f"{name}.block.blocks.0.blocks.{i}.2.", f"{name}.block.blocks.0.blocks.{i}.3."
            for kind in ("weight", "bias"):
                if theirs + kind in out and ours + kind not in out:
                    out[ours + kind] = out.pop(theirs + kind)
            weight, width = out.get(ours + "weight"), block[2].kernel_size[0]
            if weight is not None and weight.dim() == 3 and weight.shape[-1] == 1 < width:
                out[ours + "weight"] = F.pad(weight, (width // 2, width // 2))
    return out


def load_jbdiff_v1_level(path: str | os.PathLike[str], cfg: DenoiserConfig | None = None) -> LatentDenoiser:
    """A denoiser (``cfg``, default :data:`V1_DENOISER`) holding the UNet of a v1 level checkpoint.

    The weights load as saved into a ``resnet_style="v1-fork"`` UNet and through
    :func:`unet_state_from_v1` into an "a-unet" one. ``vqvae.*`` and the UNet's aliases are skipped;
    any other key that does not fit is refused by name with JbdiffError. The denoiser is returned in
    eval mode.
    """
    state = _state_dict(path)
    if not any(key.startswith(NET_PREFIX) for key in state):
        raise JbdiffError(f"{path}: has no '{NET_PREFIX}*' weights; not a Jukebox-Diffusion v1 level checkpoint")
    skipped = (*ALIAS_PREFIXES, VQVAE_PREFIX)
    unet = strip_prefix({k: v for k, v in state.items() if not k.startswith(skipped)}, NET_PREFIX)
    denoiser = LatentDenoiser(cfg or V1_DENOISER)
    if denoiser.net.config.resnet_style == "a-unet":
        unet = unet_state_from_v1(unet, denoiser.net)
    load_strict(denoiser.net, unet, f"{path} ({NET_PREFIX}*)")
    return denoiser.eval()


def vqvae_from_jbdiff_v1(path: str | os.PathLike[str]) -> VQVAE:
    """The frozen Jukebox 5b VQ-VAE stored in a v1 level checkpoint (``vqvae.*``), in eval mode."""
    state = _state_dict(path)
    weights = {k.removeprefix(VQVAE_PREFIX): v for k, v in state.items() if k.startswith(VQVAE_PREFIX)}
    if not weights:
        raise JbdiffError(f"{path}: has no '{VQVAE_PREFIX}*' weights")
    vqvae = VQVAE(VQVAEConfig())
    load_strict(vqvae, weights, f"{path} ({VQVAE_PREFIX}*)")
    return vqvae.eval()
