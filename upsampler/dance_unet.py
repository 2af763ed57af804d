"""The Dance-Diffusion stage: Harmonai's stereo waveform UNet (``DiffusionAttnUnet1D``).

The module tree reproduces ``DiffusionAttnUnet1D`` of Harmonai's ``sample-generator``
(``audio_diffusion/models.py`` and ``blocks.py``) key for key and shape for shape, so the
published Dance Diffusion checkpoints (gwf-440k, jmann-small-190k, jmann-large-580k,
maestro-uncond-150k, unlocked-uncond-250k, honk-140k) load with strict key matching:

* ``timestep_embed.weight`` (8, 1): trained Fourier frequencies of the noise level; the
  embedding is ``[cos, sin]`` of ``2 pi sigma weight``, broadcast along time as 16 channels.
* ``net``: a ``Sequential`` of three residual conv blocks, the nested levels, and three more
  blocks. Each level ``i = 2 .. depth`` is a ``SkipBlock`` whose ``main`` holds: cubic
  downsampling (``0``, fixed kernel kept as the persistent buffer ``kernel``), three
  [conv block, attention or Identity] pairs (``1``-``6``), the next level (``7``), three more
  pairs (``8``-``13``) and cubic upsampling (``14``); its input is concatenated to its output.
* Residual conv blocks: ``main.{0,3}`` convs, ``main.{1,4}`` single-group GroupNorms (the
  network's last block has none at ``4``), a bias-free 1x1 ``skip`` conv where the width changes.
* Self-attention (``norm``, ``qkv_proj``, ``out_proj``; 32-channel heads) on the levels
  ``i >= depth - n_attn_layers - 1`` when ``n_attn_layers > 0``.

The network is called as ``net(x, sigma)`` with ``sigma`` in [0, 1] and returns v, with
``alpha, beta = cos, sin(sigma pi / 2)`` (:mod:`jbdiff.core.diffusion`, the reference's ``t``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jbdiff.core.errors import JbdiffError
from jbdiff.core.state_dict import load_strict, read_checkpoint, strip_prefix

__all__ = ["DanceConfig", "DanceUNet", "load_dance_checkpoint"]

EMBED_FEATURES = 16  # FourierFeatures(1, 16) of the reference
HEAD_CHANNELS = 32  # the reference gives a level of c channels c // 32 attention heads
_CUBIC_TAPS = 8


@dataclass(frozen=True)
class DanceConfig:
    """Architecture of :class:`DanceUNet`; the defaults are the published Dance Diffusion models.

    Only the options the published models use are implemented: conditioning inputs
    (``cond_dim``), learned resampling and snake activations are refused.
    """

    io_channels: int = 2
    depth: int = 14
    n_attn_layers: int = 4
    channels: tuple[int, ...] = (128, 128, 256, 256) + (512,) * 10
    cond_dim: int = 0
    kernel_size: int = 5
    learned_resample: bool = False
    conv_bias: bool = True
    use_snake: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(self.channels))
        if self.cond_dim != 0:
            raise ValueError("cond_dim must be 0: conditioning inputs are not supported (published models have none)")
        if self.learned_resample:
            raise ValueError("learned_resample is not supported: the published models use fixed cubic resampling")
        if self.use_snake:
            raise ValueError("use_snake is not supported: the published models use GELU activations")
        if self.io_channels < 1:
            raise ValueError("io_channels must be >= 1")
        if self.depth < 2:
            raise ValueError("depth must be >= 2")
        if len(self.channels) != self.depth:
            raise ValueError(f"channels has {len(self.channels)} entries but depth is {self.depth}")
        if any(c < 1 for c in self.channels):
            raise ValueError("every entry of channels must be >= 1")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError("kernel_size must be a positive odd number")
        for level in range(2, self.depth + 1):
            if self.has_attention(level):
                for c in self.channels[level - 2 : level]:
                    if c < HEAD_CHANNELS or c % (c // HEAD_CHANNELS):
                        raise ValueError(
                            f"level {level} has attention, so its widths {self.channels[level - 2 : level]} must be"
                            f" >= {HEAD_CHANNELS} and divisible by their head count (width // {HEAD_CHANNELS})"
                        )

    def has_attention(self, level: int) -> bool:
        """Whether level ``level`` (2 .. depth, 2 the outermost) has self-attention layers."""
        return self.n_attn_layers > 0 and level >= self.depth - self.n_attn_layers - 1

    @property
    def length_multiple(self) -> int:
        """Input lengths must be multiples of this (one halving per level below the top)."""
        return 2 ** (self.depth - 1)

    @property
    def min_length(self) -> int:
        """The shortest input: three samples at the innermost level (the reflect padding needs them)."""
        return 3 * self.length_multiple


def cubic_kernel() -> Tensor:
    """The reference's 8-tap ``'cubic'`` kernel: Keys' cubic (a = -0.5) at 2x, taps summing to 1."""
    a = -0.5
    offsets = (torch.arange(_CUBIC_TAPS, dtype=torch.float64) - (_CUBIC_TAPS - 1) / 2).abs() / 2
    inner = (a + 2) * offsets**3 - (a + 3) * offsets**2 + 1
    outer = a * offsets**3 - 5 * a * offsets**2 + 8 * a * offsets - 4 * a
    return (torch.where(offsets <= 1, inner, outer) / 2).float()


class FourierFeatures(nn.Module):
    """``[cos, sin]`` of ``2 pi x weight^T`` with a trained ``weight`` (out_features // 2, in_features)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features // 2, in_features))

    def forward(self, x: Tensor) -> Tensor:
        angles = 2 * math.pi * x @ self.weight.T
        return torch.cat([angles.cos(), angles.sin()], dim=-1)


class ResConvBlock(nn.Module):
    """Conv, GroupNorm(1), GELU, conv, GroupNorm(1), GELU, plus a skip; ``is_last`` drops the last norm and GELU."""

    def __init__(
        self, c_in: int, c_mid: int, c_out: int, kernel_size: int, bias: bool, is_last: bool = False
    ) -> None:
        super().__init__()
        pad = kernel_size // 2
        # Built before ``main`` (but registered after it) to draw initial weights in the reference's order.
        skip = nn.Identity() if c_in == c_out else nn.Conv1d(c_in, c_out, 1, bias=False)
        self.main = nn.Sequential(
            nn.Conv1d(c_in, c_mid, kernel_size, padding=pad, bias=bias),
            nn.GroupNorm(1, c_mid),
            nn.GELU(),
            nn.Conv1d(c_mid, c_out, kernel_size, padding=pad, bias=bias),
            nn.Identity() if is_last else nn.GroupNorm(1, c_out),
            nn.Identity() if is_last else nn.GELU(),
        )
        self.skip = skip

    def forward(self, x: Tensor) -> Tensor:
        return self.main(x) + self.skip(x)


class SelfAttention1d(nn.Module):
    """Pre-norm multi-head self-attention over time with a residual (1x1-conv projections)."""

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(1, channels)
        self.qkv_proj = nn.Conv1d(channels, 3 * channels, 1)
        self.out_proj = nn.Conv1d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        batch, channels, length = x.shape
        # Channels of qkv_proj are [q | k | v], each split into heads of channels // heads.
        qkv = self.qkv_proj(self.norm(x)).view(batch, 3 * self.heads, channels // self.heads, length)
        q, k, v = qkv.transpose(2, 3).chunk(3, dim=1)
        y = F.scaled_dot_product_attention(q, k, v)
        return x + self.out_proj(y.transpose(2, 3).reshape(batch, channels, length))


class Downsample1d(nn.Module):
    """Halve the length with a fixed per-channel low-pass kernel (reflect padding)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("kernel", cubic_kernel())

    def forward(self, x: Tensor) -> Tensor:
        pad = self.kernel.shape[0] // 2 - 1
        channels = x.shape[1]
        weight = self.kernel.to(x.dtype).expand(channels, 1, -1)
        return F.conv1d(F.pad(x, (pad, pad), mode="reflect"), weight, stride=2, groups=channels)


class Upsample1d(nn.Module):
    """Double the length with a fixed per-channel interpolation kernel (reflect padding)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("kernel", cubic_kernel() * 2)

    def forward(self, x: Tensor) -> Tensor:
        pad = self.kernel.shape[0] // 2 - 1
        channels = x.shape[1]
        weight = self.kernel.to(x.dtype).expand(channels, 1, -1)
        edge = (pad + 1) // 2
        padded = F.pad(x, (edge, edge), mode="reflect")
        return F.conv_transpose1d(padded, weight, stride=2, padding=2 * pad + 1, groups=channels)


class SkipBlock(nn.Module):
    """``main`` in sequence, its output concatenated with the block's input along channels."""

    def __init__(self, *modules: nn.Module) -> None:
        super().__init__()
        self.main = nn.Sequential(*modules)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.main(x), x], dim=1)


def _attention(cfg: DanceConfig, level: int, channels: int) -> nn.Module:
    return SelfAttention1d(channels, channels // HEAD_CHANNELS) if cfg.has_attention(level) else nn.Identity()


class DanceUNet(nn.Module):
    """Harmonai's ``DiffusionAttnUnet1D``: ``net(x (B, io_channels, T), sigma (B,)) -> v``."""

    def __init__(self, cfg: DanceConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or DanceConfig()
        self.config = cfg
        self.timestep_embed = FourierFeatures(1, EMBED_FEATURES)

        def conv(c_in: int, c_mid: int, c_out: int, is_last: bool = False) -> ResConvBlock:
            return ResConvBlock(c_in, c_mid, c_out, cfg.kernel_size, cfg.conv_bias, is_last)

        inner: nn.Module = nn.Identity()
        for level in range(cfg.depth, 1, -1):
            c, c_prev = cfg.channels[level - 1], cfg.channels[level - 2]
            inner = SkipBlock(
                Downsample1d(),
                conv(c_prev, c, c),
                _attention(cfg, level, c),
                conv(c, c, c),
                _attention(cfg, level, c),
                conv(c, c, c),
                _attention(cfg, level, c),
                inner,
                conv(c if level == cfg.depth else 2 * c, c, c),
                _attention(cfg, level, c),
                conv(c, c, c),
                _attention(cfg, level, c),
                conv(c, c, c_prev),
                _attention(cfg, level, c_prev),
                Upsample1d(),
            )
        c = cfg.channels[0]
        self.net = nn.Sequential(
            conv(cfg.io_channels + EMBED_FEATURES, c, c),
            conv(c, c, c),
            conv(c, c, c),
            inner,
            conv(2 * c, c, c),
            conv(c, c, c),
            conv(c, c, cfg.io_channels, is_last=True),
        )
        with torch.no_grad():  # the reference halves every initial weight of the network body
            for param in self.net.parameters():
                param.mul_(0.5)

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        """v predicted from ``x`` (B, io_channels, T) at noise level ``sigma`` (B,) in [0, 1]."""
        cfg = self.config
        if x.ndim != 3 or x.shape[1] != cfg.io_channels:
            raise ValueError(f"expected x shaped (batch, {cfg.io_channels}, length), got {tuple(x.shape)}")
        length = x.shape[2]
        if length % cfg.length_multiple or length < cfg.min_length:
            raise ValueError(
                f"length {length} must be a multiple of {cfg.length_multiple} (2**(depth-1)) and at least"
                f" {cfg.min_length}"
            )
        if sigma.shape != (x.shape[0],):
            raise ValueError(f"expected sigma shaped ({x.shape[0]},), got {tuple(sigma.shape)}")
        weight = self.timestep_embed.weight
        embedding = self.timestep_embed(sigma.to(device=weight.device, dtype=weight.dtype)[:, None])
        planes = embedding.to(x.dtype)[:, :, None].expand(-1, -1, length)
        return self.net(torch.cat([x, planes], dim=1))


def load_dance_checkpoint(
    path: str | os.PathLike[str], cfg: DanceConfig | None = None, use_ema: bool = True
) -> DanceUNet:
    """Build a :class:`DanceUNet` (published architecture unless ``cfg``) from a Dance Diffusion ``.ckpt``.

    The Lightning ``state_dict`` holds ``diffusion.*`` (trained) and ``diffusion_ema.*``
    (averaged, used for sampling) copies; ``use_ema`` picks the latter. A file whose tensors
    do not match is refused with the missing/unexpected keys named.
    """
    data = read_checkpoint(path)
    state = data.get("state_dict")
    if not isinstance(state, dict):
        raise JbdiffError(f"{path}: no 'state_dict' entry, so not a Dance Diffusion (Lightning) checkpoint")
    prefix = "diffusion_ema." if use_ema else "diffusion."
    picked = {k: v for k, v in state.items() if k.startswith(prefix)}
    if not picked:
        raise JbdiffError(f"{path}: its state_dict has no '{prefix}*' tensors")
    net = DanceUNet(cfg)
    load_strict(net, strip_prefix(picked, prefix), str(path))
    return net.eval()
