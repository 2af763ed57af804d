"""The 1-D diffusion UNet of each latent level (``UNetV0(dim=1)`` of audio-diffusion-pytorch 0.1.3).

With the extras off (the defaults) the network is the reference one: the same ``state_dict``
layout, key for key and shape for shape, and the same outputs for the same weights. The
module tree therefore keeps the reference's container names (``blocks.<i>``, ``block``), so
reference checkpoints load with ``strict=True``:

* ``blocks.0``: time embedding (learned Fourier features), ``blocks.1``: time MLP (one
  Linear+GELU layer applied twice, so both of its keys hold the same tensors),
* ``blocks.2``: the UNet (``net``), or with classifier-free guidance a container of the
  learned unconditional embedding (``blocks.0.blocks.0``) and the UNet (``blocks.1.net``).

Each UNet level ``i`` holds, in ``block.blocks``: its downsampling conv, ``items[i]`` groups
of [resnet, modulation, self-attention x ``attentions[i]``, cross-attention x
``cross_attentions[i]``], the next level, as many groups again, and its upsampling conv; its
input is added back through a time-modulated skip.

Beyond the reference, all keeping the key names: attention is computed with
``scaled_dot_product_attention`` (never materialising the T x T matrix where the backend has
a fused kernel), resnet convs can be dilated (``resnet_dilation_factor ** j`` for the j-th
resnet of a level's down or up path, as in Jukebox-Diffusion v1), resnet blocks can apply
dropout before each conv, and each level's down and up paths can be gradient-checkpointed.

``resnet_style="v1-fork"`` instead builds resnets as jmoso13/a-unet@add_dilation does (what
Jukebox-Diffusion v1 trained with): each conv block is GroupNorm, SiLU, Dropout, Conv (the conv is
``.3``) and only a resnet's first conv is 3 wide and dilated, the second is 1x1. v1 checkpoints
load into it as saved.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

__all__ = ["RESNET_STYLES", "UNet1d", "UNetConfig"]

RESNET_STYLES = ("a-unet", "v1-fork")


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of :class:`UNet1d`; the first block of fields mirrors ``UNetV0``'s arguments."""

    in_channels: int
    channels: tuple[int, ...]
    factors: tuple[int, ...]
    items: tuple[int, ...]
    attentions: tuple[int, ...] | None = None
    cross_attentions: tuple[int, ...] | None = None
    attention_heads: int | None = None
    attention_features: int | None = None
    embedding_features: int | None = None
    embedding_max_length: int | None = None
    use_embedding_cfg: bool = False
    resnet_groups: int = 8
    modulation_features: int = 1024
    out_channels: int | None = None
    # Extras (off by default; they change no key names).
    resnet_dilation_factor: int = 1
    resnet_dropout_rate: float = 0.0
    gradient_checkpointing: bool = False
    # "a-unet" (a-unet 0.0.16) or "v1-fork" (jmoso13/a-unet@add_dilation; other keys and shapes).
    resnet_style: str = "a-unet"

    def __post_init__(self) -> None:
        levels = len(self.channels)
        for name in ("channels", "factors", "items", "attentions", "cross_attentions"):
            value = getattr(self, name)
            value = (0,) * levels if value is None else tuple(value)
            object.__setattr__(self, name, value)
            if len(value) != levels:
                raise ValueError(f"{name} has {len(value)} entries but channels has {levels}")
        if levels == 0:
            raise ValueError("channels must have at least one entry")
        if any(c % self.resnet_groups for c in self.channels):
            raise ValueError(f"every entry of channels must be divisible by resnet_groups={self.resnet_groups}")
        if any(f < 1 for f in self.factors) or any(n < 0 for n in self.items):
            raise ValueError("factors must be >= 1 and items >= 0")
        if (any(self.attentions) or any(self.cross_attentions)) and (
            self.attention_heads is None or self.attention_features is None
        ):
            raise ValueError("attentions and cross_attentions need attention_heads and attention_features")
        if any(self.cross_attentions) and self.embedding_features is None:
            raise ValueError("cross_attentions need embedding_features")
        if self.use_embedding_cfg and (self.embedding_features is None or self.embedding_max_length is None):
            raise ValueError("use_embedding_cfg needs embedding_features and embedding_max_length")
        if self.resnet_dilation_factor < 1:
            raise ValueError("resnet_dilation_factor must be >= 1")
        if not 0.0 <= self.resnet_dropout_rate < 1.0:
            raise ValueError("resnet_dropout_rate must be in [0, 1)")
        if self.resnet_style not in RESNET_STYLES:
            raise ValueError(f"resnet_style must be one of {RESNET_STYLES}, got {self.resnet_style!r}")

    @property
    def total_factor(self) -> int:
        """The input length must be a multiple of this (the product of ``factors``)."""
        return math.prod(self.factors)


class _Blocks(nn.Module):
    """Container registering its modules as ``blocks.<i>`` (the reference key layout)."""

    def __init__(self, *modules: nn.Module) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(modules)


class _Wrap(nn.Module):
    """Container registering one module as ``block`` (the reference key layout)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.block = module


class ConvBlock(nn.Sequential):
    """GroupNorm, SiLU, optional dropout, dilated k3 Conv1d (keys ``0.*`` and ``2.*``)."""

    def __init__(self, channels: int, groups: int, dilation: int, dropout: float) -> None:
        super().__init__(
            nn.GroupNorm(groups, channels),
            nn.SiLU(),
            nn.Conv1d(channels, channels, 3, padding=dilation, dilation=dilation),
        )
        self.dropout = dropout

    def forward(self, x: Tensor) -> Tensor:
        norm, act, conv = self[0], self[1], self[2]
        return conv(F.dropout(act(norm(x)), self.dropout, self.training))


class ForkConvBlock(nn.Sequential):
    """GroupNorm, SiLU, Dropout, Conv1d as the v1 fork builds them (keys ``0.*`` and ``3.*``)."""

    def __init__(self, channels: int, groups: int, kernel_size: int, dilation: int, dropout: float) -> None:
        super().__init__(
            nn.GroupNorm(groups, channels),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Conv1d(channels, channels, kernel_size, padding=dilation * (kernel_size // 2), dilation=dilation),
        )


class _Item(nn.Module):
    """One step of a level's path; ``tokens`` items take (B, T, C) instead of (B, C, T)."""

    tokens = False

    def forward(self, x: Tensor, features: Tensor, embedding: Tensor | None) -> Tensor:
        raise NotImplementedError


class ResnetItem(_Item):
    """Two conv blocks plus identity (keys ``block.blocks.0.blocks.{0,1}``).

    ``style`` "a-unet": both convs 3 wide and dilated alike; "v1-fork": a dilated 3-wide
    :class:`ForkConvBlock`, then a 1x1 one.
    """

    def __init__(self, channels: int, groups: int, dilation: int, dropout: float, style: str) -> None:
        super().__init__()
        if style == "v1-fork":
            blocks: tuple[nn.Module, ...] = (
                ForkConvBlock(channels, groups, 3, dilation, dropout),
                ForkConvBlock(channels, groups, 1, 1, dropout),
            )
        else:
            blocks = tuple(ConvBlock(channels, groups, dilation, dropout) for _ in range(2))
        self.block = _Blocks(_Blocks(*blocks))

    def forward(self, x: Tensor, features: Tensor, embedding: Tensor | None) -> Tensor:
        first, second = self.block.blocks[0].blocks
        return x + second(first(x))


class ModulationItem(_Item):
    """Parameter-free LayerNorm scaled and shifted from the time features (keys ``blocks.0.block.blocks.0``)."""

    tokens = True

    def __init__(self, channels: int, modulation_features: int) -> None:
        super().__init__()
        to_scale_shift = nn.Sequential(nn.SiLU(), nn.Linear(modulation_features, 2 * channels))
        self.blocks = nn.ModuleList([_Wrap(_Blocks(to_scale_shift))])

    def forward(self, x: Tensor, features: Tensor, embedding: Tensor | None) -> Tensor:
        to_scale_shift = self.blocks[0].block.blocks[0]
        scale, shift = to_scale_shift(features).unsqueeze(1).chunk(2, dim=-1)
        return F.layer_norm(x, x.shape[-1:], eps=1e-6) * (1 + scale) + shift


class Attention(nn.Module):
    """Pre-norm multi-head (cross-)attention with a residual, computed with SDPA."""

    def __init__(self, features: int, heads: int, head_features: int, context_features: int | None) -> None:
        super().__init__()
        mid = heads * head_features
        self.heads = heads
        self.norm = nn.LayerNorm(features)
        self.norm_context = nn.LayerNorm(features if context_features is None else context_features)
        self.to_q = nn.Linear(features, mid, bias=False)
        self.to_kv = nn.Linear(features if context_features is None else context_features, 2 * mid, bias=False)
        self.attention = _Blocks(nn.Linear(mid, features, bias=False))

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """``x`` (B, T, C); ``context`` (B, N, D) for cross-attention, else ``x`` itself."""
        context = x if context is None else context
        q = self.to_q(self.norm(x))
        k, v = self.to_kv(self.norm_context(context)).chunk(2, dim=-1)
        q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)
        return x + self.attention.blocks[0](out)


class AttentionItem(_Item):
    """Self- or cross-attention item (keys ``blocks.0.block.*``)."""

    tokens = True

    def __init__(self, channels: int, heads: int, head_features: int, context_features: int | None) -> None:
        super().__init__()
        self.cross = context_features is not None
        self.blocks = nn.ModuleList([_Wrap(Attention(channels, heads, head_features, context_features))])

    def forward(self, x: Tensor, features: Tensor, embedding: Tensor | None) -> Tensor:
        if self.cross and embedding is None:
            raise ValueError("this UNet has cross-attention: pass an embedding")
        return self.blocks[0].block(x, embedding if self.cross else None)


class Downsample(_Item):
    """Strided conv, kernel = stride = factor (keys ``block.*``)."""

    def __init__(self, in_channels: int, channels: int, factor: int) -> None:
        super().__init__()
        self.block = nn.Conv1d(in_channels, channels, factor, stride=factor)

    def forward(self, x: Tensor, features: Tensor, embedding: Tensor | None) -> Tensor:
        return self.block(x)


class Upsample(_Item):
    """Nearest-neighbour upsampling then a k3 conv (keys ``block.1.*``)."""

    def __init__(self, channels: int, out_channels: int, factor: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Upsample(scale_factor=factor, mode="nearest"), nn.Conv1d(channels, out_channels, 3, padding=1)
        )

    def forward(self, x: Tensor, features: Tensor, embedding: Tensor | None) -> Tensor:
        return self.block(x)


def _apply(items: Sequence[_Item], x: Tensor, features: Tensor, embedding: Tensor | None) -> Tensor:
    """Apply ``items`` in order, transposing only where the layout changes."""
    tokens = False
    for item in items:
        if item.tokens != tokens:
            x, tokens = x.transpose(1, 2), item.tokens
        x = item(x, features, embedding)
    return x.transpose(1, 2) if tokens else x


class UNetLevel(nn.Module):
    """One resolution: down path, the next level, up path, and a time-modulated skip."""

    def __init__(self, cfg: UNetConfig, depth: int, in_channels: int, out_channels: int, inner: UNetLevel | None) -> None:
        super().__init__()
        channels, factor = cfg.channels[depth], cfg.factors[depth]
        self.gradient_checkpointing = cfg.gradient_checkpointing

        def attention(context_features: int | None) -> AttentionItem:
            assert cfg.attention_heads is not None and cfg.attention_features is not None  # UNetConfig checks this
            return AttentionItem(channels, cfg.attention_heads, cfg.attention_features, context_features)

        def group(dilation: int) -> list[_Item]:
            return [
                ResnetItem(channels, cfg.resnet_groups, dilation, cfg.resnet_dropout_rate, cfg.resnet_style),
                ModulationItem(channels, cfg.modulation_features),
                *(attention(None) for _ in range(cfg.attentions[depth])),
                *(attention(cfg.embedding_features) for _ in range(cfg.cross_attentions[depth])),
            ]

        def path() -> list[_Item]:
            return [item for j in range(cfg.items[depth]) for item in group(cfg.resnet_dilation_factor**j)]

        down = [Downsample(in_channels, channels, factor), *path()]
        up = [*path(), Upsample(channels, out_channels, factor)]
        self.num_down = len(down)
        adapter = nn.Identity() if in_channels == out_channels else nn.Conv1d(in_channels, out_channels, 1)
        self.skip_adapter = _Wrap(adapter)
        self.block = _Blocks(*down, *([inner] if inner is not None else []), *up)
        self.skip = _Blocks(nn.Sequential(nn.SiLU(), nn.Linear(cfg.modulation_features, out_channels)))

    @property
    def inner(self) -> UNetLevel | None:
        """The next (coarser) level, if any."""
        inner = self.block.blocks[self.num_down]
        return inner if isinstance(inner, UNetLevel) else None

    def _path(self, items: Sequence[_Item], x: Tensor, features: Tensor, embedding: Tensor | None) -> Tensor:
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(_apply, items, x, features, embedding, use_reentrant=False)  # type: ignore[return-value]
        return _apply(items, x, features, embedding)

    def forward(self, x: Tensor, features: Tensor, embedding: Tensor | None) -> Tensor:
        blocks = list(self.block.blocks)
        inner = self.inner
        skip = self.skip_adapter.block(x)
        x = self._path(blocks[: self.num_down], x, features, embedding)
        if inner is not None:
            x = inner(x, features, embedding)
        x = self._path(blocks[self.num_down + (inner is not None) :], x, features, embedding)
        scale = self.skip.blocks[0](features).unsqueeze(-1)
        return skip + scale * x


class UNetCore(nn.Module):
    """The UNet proper, as ``net`` (reference layout)."""

    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__()
        inner: UNetLevel | None = None
        for depth in reversed(range(len(cfg.channels))):
            in_channels = cfg.in_channels if depth == 0 else cfg.channels[depth - 1]
            out_channels = (cfg.out_channels or cfg.in_channels) if depth == 0 else in_channels
            inner = UNetLevel(cfg, depth, in_channels, out_channels, inner)
        assert inner is not None
        self.net = inner

    def forward(self, x: Tensor, features: Tensor, embedding: Tensor | None) -> Tensor:
        return self.net(x, features, embedding)


class TimeEmbedding(nn.Module):
    """Learned random Fourier features of the diffusion time: [t, sin, cos] then Linear."""

    def __init__(self, features: int, frequencies: int = 128) -> None:
        super().__init__()
        self.weights = nn.Parameter(torch.randn(frequencies))
        self.to_out = nn.Linear(2 * frequencies + 1, features)

    def forward(self, time: Tensor) -> Tensor:
        t = time.reshape(-1, 1).to(self.weights.dtype)
        freqs = t * self.weights * 2 * math.pi
        out = self.to_out(torch.cat([t, freqs.sin(), freqs.cos()], dim=-1))
        return out.reshape(*time.shape, -1)


class TimeMLP(nn.Module):
    """One Linear+GELU layer applied twice (registered twice: two keys, shared tensors)."""

    def __init__(self, features: int) -> None:
        super().__init__()
        layer = nn.Sequential(nn.Linear(features, features), nn.GELU())
        self.blocks = nn.ModuleList([layer, layer])

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.blocks:
            x = layer(x)
        return x


class UNet1d(nn.Module):
    """Time- and (optionally) embedding-conditioned 1-D UNet predicting a tensor shaped like ``x``."""

    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__()
        self.config = cfg
        core = UNetCore(cfg)
        body: nn.Module = core
        if cfg.use_embedding_cfg:
            assert cfg.embedding_max_length is not None and cfg.embedding_features is not None
            body = _Blocks(_Blocks(nn.Embedding(cfg.embedding_max_length, cfg.embedding_features)), core)
        self.blocks = nn.ModuleList([TimeEmbedding(cfg.modulation_features), TimeMLP(cfg.modulation_features), body])

    @property
    def core(self) -> UNetCore:
        """The UNet proper."""
        body = self.blocks[2]
        return body if isinstance(body, UNetCore) else body.blocks[1]

    @property
    def null_embedding(self) -> nn.Embedding | None:
        """Learned per-position embedding used for the unconditional branch of CFG."""
        return self.blocks[2].blocks[0].blocks[0] if self.config.use_embedding_cfg else None

    def time_features(self, time: Tensor) -> Tensor:
        """(B, modulation_features) conditioning from ``time`` (B,) or (B, N) (summed over N)."""
        features = self.blocks[1](F.gelu(self.blocks[0](time)))
        return features.sum(dim=1) if features.ndim == 3 else features

    def forward(
        self,
        x: Tensor,
        time: Tensor,
        embedding: Tensor | None = None,
        embedding_mask_proba: float = 0.0,
        embedding_scale: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Predict from ``x`` (B, C, T) at ``time`` (B,), with cross-attention ``embedding`` (B, N, D).

        With ``use_embedding_cfg``: each batch element's embedding is replaced by the learned
        null embedding with probability ``embedding_mask_proba`` (drawn from ``generator``), and
        ``embedding_scale != 1`` returns ``null + (cond - null) * embedding_scale``.
        """
        cfg = self.config
        if x.ndim != 3 or x.shape[1] != cfg.in_channels or x.shape[2] % cfg.total_factor:
            raise ValueError(
                f"expected x shaped (batch, {cfg.in_channels}, length) with length a multiple of"
                f" {cfg.total_factor}, got {tuple(x.shape)}"
            )
        features = self.time_features(time)
        null = self.null_embedding
        if null is None:
            if embedding_mask_proba > 0.0 or embedding_scale != 1.0:
                raise ValueError("embedding_mask_proba and embedding_scale need use_embedding_cfg=True")
            return self.core(x, features, embedding)
        if embedding is None:
            raise ValueError("use_embedding_cfg needs an embedding")
        batch, length = embedding.shape[:2]
        if length > null.num_embeddings:
            raise ValueError(f"embedding has length {length} > embedding_max_length={null.num_embeddings}")
        fixed = null(torch.arange(length, device=embedding.device)).expand(batch, -1, -1)
        if embedding_mask_proba > 0.0:
            drop = torch.full((batch, 1, 1), embedding_mask_proba, device=embedding.device)
            drop = drop.bool() if embedding_mask_proba >= 1.0 else torch.bernoulli(drop, generator=generator).bool()
            embedding = torch.where(drop, fixed, embedding)
        if embedding_scale == 1.0:
            return self.core(x, features, embedding)
        both = self.core(torch.cat([x, x]), torch.cat([features, features]), torch.cat([embedding, fixed]))
        cond, uncond = both.chunk(2)
        return uncond + (cond - uncond) * embedding_scale
