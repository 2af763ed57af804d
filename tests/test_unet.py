"""UNet1d against audio-diffusion-pytorch 0.1.3 ``UNetV0(dim=1)``, and its extras."""

from __future__ import annotations

import importlib.util
import re
from typing import Any

import pytest
import torch
import yaml
from torch import Tensor, nn

from jbdiff.core import unet_reference
from jbdiff.core.config import from_dict
from jbdiff.core.unet import ConvBlock, ForkConvBlock, ResnetItem, UNet1d, UNetConfig
from jbdiff.core.unet_reference import JBDIFF_V1_UNET
from tests.conftest import ROOT

SMALL: dict[str, Any] = {
    "in_channels": 4,
    "channels": (8, 16, 16, 32),
    "factors": (1, 2, 2, 2),
    "items": (1, 2, 2, 2),
    "attentions": (0, 0, 1, 1),
    "cross_attentions": (0, 1, 0, 1),
    "attention_heads": 2,
    "attention_features": 8,
    "embedding_features": 16,
    "embedding_max_length": 32,
}
SMALL_CFG = {**SMALL, "use_embedding_cfg": True}
# No CFG, another output width (adds the top skip adapter conv), fewer groups, small modulation.
SMALL_OUT = {**SMALL, "out_channels": 6, "resnet_groups": 4, "modulation_features": 32}
RTOL = 1e-4


def reference_unet(**kwargs: Any) -> nn.Module:
    """``UNetV0(dim=1, **kwargs)``; skips the test when audio-diffusion-pytorch is not installed."""
    if importlib.util.find_spec("audio_diffusion_pytorch") is None:
        pytest.skip("audio-diffusion-pytorch is not installed")
    return unet_reference.reference_unet(**kwargs)


def perturb_(model: nn.Module) -> None:
    """Move every parameter off its init (norm weights off 1, biases off 0)."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)


def rel_err(ours: Tensor, ref: Tensor) -> float:
    return ((ours - ref).abs().max() / ref.abs().max()).item()


def layout(model: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(key, tuple(value.shape)) for key, value in model.state_dict().items()]


def matched_pair(kwargs: dict[str, Any], seed: int = 0) -> tuple[nn.Module, UNet1d]:
    torch.manual_seed(seed)
    ref = reference_unet(**kwargs).eval()
    perturb_(ref)
    ours = UNet1d(UNetConfig(**kwargs)).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


def inputs(cfg: UNetConfig, batch: int, length: int, context: int) -> tuple[Tensor, Tensor, Tensor]:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, cfg.in_channels, length, generator=gen)
    time = torch.rand(batch, generator=gen)
    embedding = torch.randn(batch, context, cfg.embedding_features or 1, generator=gen)
    return x, time, embedding


@pytest.mark.parametrize("kwargs", [SMALL, SMALL_CFG, SMALL_OUT], ids=["small", "small_cfg", "small_out"])
def test_state_dict_layout_matches_reference(kwargs: dict[str, Any]) -> None:
    assert layout(UNet1d(UNetConfig(**kwargs))) == layout(reference_unet(**kwargs))


@pytest.mark.parametrize("kwargs", [SMALL, SMALL_OUT], ids=["small", "small_out"])
def test_matches_reference_without_cfg(kwargs: dict[str, Any]) -> None:
    ref, ours = matched_pair(kwargs)
    x, time, embedding = inputs(ours.config, batch=3, length=64, context=20)
    with torch.no_grad():
        expected = ref(x, time, embedding=embedding)
        got = ours(x, time, embedding)
    assert got.shape == (3, kwargs.get("out_channels", 4), 64)
    assert rel_err(got, expected) <= RTOL


@pytest.mark.parametrize(
    "mask_proba,scale", [(0.0, 1.0), (0.0, 3.0), (1.0, 1.0), (0.5, 1.0), (0.5, 2.5)], ids=lambda v: str(v)
)
def test_matches_reference_with_cfg(mask_proba: float, scale: float) -> None:
    ref, ours = matched_pair(SMALL_CFG)
    x, time, embedding = inputs(ours.config, batch=6, length=64, context=20)
    if 0.0 < mask_proba < 1.0:  # this seed drops some batch elements and keeps others
        dropped = torch.bernoulli(torch.full((6,), mask_proba), generator=torch.Generator().manual_seed(123)).sum()
        assert 0 < dropped < 6
    with torch.no_grad():
        torch.manual_seed(123)  # the reference draws its mask from the global generator
        expected = ref(x, time, embedding=embedding, embedding_mask_proba=mask_proba, embedding_scale=scale)
        got = ours(x, time, embedding, mask_proba, scale, generator=torch.Generator().manual_seed(123))
    assert rel_err(got, expected) <= RTOL


def test_cfg_mask_draws_only_from_the_given_generator() -> None:
    model = UNet1d(UNetConfig(**SMALL_CFG)).eval()
    x, time, embedding = inputs(model.config, batch=8, length=32, context=10)
    state = torch.get_rng_state()
    with torch.no_grad():
        a = model(x, time, embedding, 0.5, generator=torch.Generator().manual_seed(7))
        b = model(x, time, embedding, 0.5, generator=torch.Generator().manual_seed(7))
        keep = model(x, time, embedding)
        drop = model(x, time, embedding, 1.0)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b)
    kept = [torch.allclose(a[i], keep[i], atol=1e-6) for i in range(8)]
    dropped = [torch.allclose(a[i], drop[i], atol=1e-6) for i in range(8)]
    assert all(k != d for k, d in zip(kept, dropped)) and any(kept) and any(dropped)


def test_jbdiff_v1_anchor_matches_reference() -> None:
    ref, ours = matched_pair(JBDIFF_V1_UNET)
    assert layout(ours) == layout(ref)
    x, time, embedding = inputs(ours.config, batch=1, length=128, context=96)
    with torch.no_grad():
        expected = ref(x, time, embedding=embedding)
        got = ours(x, time, embedding)
    assert rel_err(got, expected) <= RTOL


def test_extras_keep_the_layout_and_take_effect() -> None:
    torch.manual_seed(0)
    plain = UNet1d(UNetConfig(**SMALL_CFG)).eval()
    extra = UNet1d(UNetConfig(**SMALL_CFG, resnet_dilation_factor=3, resnet_dropout_rate=0.3, gradient_checkpointing=True))
    assert layout(extra) == layout(plain)
    extra.load_state_dict(plain.state_dict(), strict=True)
    level = extra.core.net.inner  # depth 1: items=2, so dilations 1, 3 down and again up
    assert level is not None
    resnets = [m for m in level.block.blocks if isinstance(m, ResnetItem)]
    assert [c.block.blocks[0].blocks[0][2].dilation[0] for c in resnets] == [1, 3, 1, 3]
    assert all(m.dropout == 0.3 for m in extra.modules() if isinstance(m, ConvBlock))
    x, time, embedding = inputs(plain.config, batch=2, length=64, context=12)
    extra.eval()
    with torch.no_grad():
        assert not torch.allclose(extra(x, time, embedding), plain(x, time, embedding))
        assert torch.equal(extra(x, time, embedding), extra(x, time, embedding))  # eval: no dropout
    extra.train()
    with torch.no_grad():
        assert not torch.equal(extra(x, time, embedding), extra(x, time, embedding))


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_v1_fork_style_builds_the_fork_resnets(dropout: float) -> None:
    plain = UNet1d(UNetConfig(**SMALL_CFG))
    fork = UNet1d(UNetConfig(**SMALL_CFG, resnet_dilation_factor=3, resnet_dropout_rate=dropout, resnet_style="v1-fork"))
    convs = re.compile(r"(\.block\.blocks\.0\.blocks\.[01])\.2\.")  # a-unet resnet convs; the fork's are .3
    assert list(fork.state_dict()) == [convs.sub(r"\1.3.", k) for k in plain.state_dict()]
    level = fork.core.net.inner  # depth 1: items=2, so dilations 1, 3 down and again up
    assert level is not None
    resnets = [m.block.blocks[0].blocks for m in level.block.blocks if isinstance(m, ResnetItem)]
    assert all(isinstance(c, ForkConvBlock) and isinstance(c[2], nn.Dropout) for r in resnets for c in r)
    assert all(c[2].p == dropout for r in resnets for c in r)
    assert [(r[0][3].kernel_size[0], r[0][3].dilation[0], r[1][3].kernel_size[0]) for r in resnets] == [
        (3, 1, 1), (3, 3, 1), (3, 1, 1), (3, 3, 1)
    ]  # fmt: skip
    x, time, embedding = inputs(fork.config, batch=2, length=64, context=12)
    with torch.no_grad():
        assert fork.eval()(x, time, embedding).shape == x.shape


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = UNet1d(UNetConfig(**SMALL_CFG, resnet_dropout_rate=0.1, gradient_checkpointing=checkpointing)).train()
        x, time, embedding = inputs(model.config, batch=2, length=64, context=12)
        embedding.requires_grad_(True)
        torch.manual_seed(1)  # dropout masks; checkpoint recomputation replays the same ones
        out = model(x, time, embedding, embedding_mask_proba=0.5, generator=torch.Generator().manual_seed(2))
        out.square().mean().backward()
        grads.append([embedding.grad, *(p.grad for p in model.parameters())])
    for plain, checkpointed in zip(*grads):
        assert plain is not None and checkpointed is not None
        torch.testing.assert_close(checkpointed, plain, rtol=1e-5, atol=1e-7)


def test_config_from_yaml_style_dict() -> None:
    data = {k: list(v) if isinstance(v, tuple) else v for k, v in JBDIFF_V1_UNET.items()}
    extras = {"resnet_dilation_factor": 3, "resnet_dropout_rate": 0.05, "resnet_style": "v1-fork"}
    cfg = from_dict(UNetConfig, {**data, **extras})
    assert cfg.channels == JBDIFF_V1_UNET["channels"] and cfg.total_factor == 16
    assert UNetConfig(**SMALL).attentions == (0, 0, 1, 1)
    assert UNetConfig(in_channels=2, channels=(8,), factors=(1,), items=(1,)).cross_attentions == (0,)


@pytest.mark.parametrize("level", [0, 1, 2])
def test_full_configs_are_the_v1_anchor(level: int) -> None:
    unet = yaml.safe_load((ROOT / "configs" / f"level{level}" / "full.yaml").read_text())["model"]["unet"]
    assert {key: unet[key] for key in JBDIFF_V1_UNET} == {
        key: list(value) if isinstance(value, tuple) else value for key, value in JBDIFF_V1_UNET.items()
    }
    assert (unet["resnet_dilation_factor"], unet["resnet_style"]) == (3, "v1-fork")


@pytest.mark.parametrize(
    "bad,match",
    [
        ({"factors": (1, 2)}, "factors has 2 entries"),
        ({"resnet_groups": 3}, "divisible by resnet_groups"),
        ({"attention_heads": None}, "attention_heads"),
        ({"embedding_features": None}, "embedding_features"),
        ({"use_embedding_cfg": True, "embedding_max_length": None}, "embedding_max_length"),
        ({"resnet_dilation_factor": 0}, "resnet_dilation_factor"),
        ({"resnet_dropout_rate": 1.0}, "resnet_dropout_rate"),
        ({"resnet_style": "fork"}, "resnet_style must be one of"),
    ],
)
def test_config_rejects_bad_values(bad: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        UNetConfig(**{**SMALL, **bad})


def test_forward_rejects_bad_inputs() -> None:
    plain, guided = UNet1d(UNetConfig(**SMALL)).eval(), UNet1d(UNetConfig(**SMALL_CFG)).eval()
    x, time, embedding = inputs(plain.config, batch=1, length=64, context=8)
    with torch.no_grad():
        with pytest.raises(ValueError, match="multiple of 8"):
            plain(x[..., :60], time, embedding)
        with pytest.raises(ValueError, match="pass an embedding"):
            plain(x, time)
        with pytest.raises(ValueError, match="use_embedding_cfg=True"):
            plain(x, time, embedding, embedding_scale=2.0)
        with pytest.raises(ValueError, match="needs an embedding"):
            guided(x, time)
        with pytest.raises(ValueError, match="embedding_max_length=32"):
            guided(x, time, torch.randn(1, 33, 16))
