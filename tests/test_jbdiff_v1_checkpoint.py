"""Jukebox-Diffusion v1 level checkpoints: synthetic files in the layout its ``JBDiffusion`` saves.

The reference network is audio-diffusion-pytorch 0.1.3's ``DiffusionModel(net_t=UNetV0)`` with its
resnets rebuilt the way jmoso13/a-unet@add_dilation (what v1 trained with) builds them, so the key
names come from the reference, not from jbdiff.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from jbdiff.core.errors import JbdiffError
from jbdiff.core.unet import UNet1d, UNetConfig
from levels.denoiser_training import load_level_config
from levels.jbdiff_v1_checkpoint import (
    V1_DENOISER,
    load_jbdiff_v1_level,
    unet_state_from_v1,
    vqvae_from_jbdiff_v1,
)
from levels.latent_denoiser import DenoiserConfig, LatentDenoiser
from levels.vqvae import VQVAE, VQVAEConfig

ROOT = Path(__file__).resolve().parents[1]
SMALL = DenoiserConfig(
    unet=UNetConfig(
        in_channels=8,
        channels=(8, 16, 16),
        factors=(1, 2, 2),
        items=(1, 2, 2),
        attentions=(0, 0, 1),
        cross_attentions=(0, 1, 1),
        attention_heads=2,
        attention_features=8,
        embedding_features=8,
        embedding_max_length=32,
        use_embedding_cfg=True,
        resnet_groups=4,
        modulation_features=32,
        resnet_dilation_factor=3,
        resnet_style="v1-fork",
    ),
    window=16,
    context_mult=2,
)
SMALL_AUNET = dataclasses.replace(SMALL, unet=dataclasses.replace(SMALL.unet, resnet_style="a-unet"))
UNET_V0_ARGS = (
    "in_channels", "channels", "factors", "items", "attentions", "cross_attentions", "attention_heads",
    "attention_features", "embedding_features", "embedding_max_length", "use_embedding_cfg", "resnet_groups",
    "modulation_features",
)  # fmt: skip


def _resnet_convs(item: nn.Module) -> nn.ModuleList | None:
    """The two conv blocks of an a-unet resnet item, or None for any other item."""
    inner = getattr(getattr(item, "block", None), "blocks", None)
    convs = getattr(inner[0], "blocks", None) if isinstance(inner, nn.ModuleList) else None
    if isinstance(convs, nn.ModuleList) and all(
        isinstance(c, nn.Sequential) and isinstance(c[0], nn.GroupNorm) for c in convs
    ):
        return convs
    return None


def as_v1_fork(net: nn.Module, dilation_factor: int) -> None:
    """Rebuild an a-unet 0.0.16 UNetV0's resnets as jmoso13/a-unet@add_dilation builds them.

    Each conv block becomes GroupNorm, SiLU, Dropout, Conv; the j-th resnet of a level's down or up
    path dilates its first conv by ``dilation_factor ** j``; the second conv is 1x1.
    """
    for level in [m for m in net.modules() if type(m).__name__ == "Block"]:
        resnets = [convs for item in level.block.blocks if (convs := _resnet_convs(item)) is not None]
        half = len(resnets) // 2  # as many in the down path as in the up path
        for j, convs in [*enumerate(resnets[:half]), *enumerate(resnets[half:])]:
            for i, (norm, act, conv) in enumerate(list(convs)):
                if i == 0:
                    conv.dilation = conv.padding = (dilation_factor**j,)
                else:
                    conv = nn.Conv1d(conv.in_channels, conv.out_channels, 1)
                convs[i] = nn.Sequential(norm, act, nn.Dropout(0.0), conv)


def v1_diffusion_model(cfg: UNetConfig) -> nn.Module:
    """``DiffusionModel(net_t=UNetV0, ...)`` as v1 built it; skips without audio-diffusion-pytorch."""
    if importlib.util.find_spec("audio_diffusion_pytorch") is None:
        pytest.skip("audio-diffusion-pytorch is not installed")
    try:
        import torchaudio  # noqa: F401
    except Exception:  # noqa: BLE001 - absent or broken next to CPU torch; only the vocoder needs it
        stub = types.ModuleType("torchaudio")
        stub.transforms = types.ModuleType("torchaudio.transforms")  # type: ignore[attr-defined]
        sys.modules["torchaudio"] = stub
        sys.modules["torchaudio.transforms"] = stub.transforms  # type: ignore[attr-defined]
    from audio_diffusion_pytorch import DiffusionModel, UNetV0, VDiffusion, VSampler

    kwargs = {name: getattr(cfg, name) for name in UNET_V0_ARGS}
    model = DiffusionModel(net_t=UNetV0, diffusion_t=VDiffusion, sampler_t=VSampler, **kwargs)
    as_v1_fork(model.net, cfg.resnet_dilation_factor)
    return model


def perturb_(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def tiny_vqvae_state() -> dict[str, Tensor]:
    return VQVAE(VQVAEConfig(l_bins=16, width=4, depth=1, emb_width=8)).state_dict()


def write_v1_checkpoint(path: Path, diffusion: dict[str, Tensor], vqvae: dict[str, Tensor]) -> Path:
    """What Lightning 1.7 saves for ``JBDiffusion`` (no ``hyper_parameters``: it never saves any)."""
    state = {"diffusion." + k: v for k, v in diffusion.items()} | {"vqvae." + k: v for k, v in vqvae.items()}
    torch.save(
        {
            "epoch": 3,
            "global_step": 10,
            "pytorch-lightning_version": "1.7.0",
            "state_dict": state,
            "loops": {},
            "callbacks": {"ModelCheckpoint{'monitor': None}": {"dirpath": "/ckpts", "best_model_score": None}},
            "optimizer_states": [],
            "lr_schedulers": [],
        },
        path,
    )
    return path


def our_layout_state(denoiser: LatentDenoiser) -> dict[str, Tensor]:
    """``DiffusionModel``'s three copies of the UNet, from our own network (in its ``resnet_style``)."""
    net = denoiser.net.state_dict()
    return {f"{prefix}{k}": v for prefix in ("net.", "diffusion.net.", "sampler.net.") for k, v in net.items()}


def outputs(net: nn.Module, cfg: DenoiserConfig, **kwargs: Any) -> Tensor:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, cfg.channels, cfg.window, generator=gen)
    time = torch.rand(3, generator=gen)
    embedding = torch.randn(3, cfg.context_length, cfg.channels, generator=gen)
    with torch.no_grad():
        return net(x, time, embedding=embedding, **kwargs)


@pytest.mark.parametrize("level", [0, 1, 2])
def test_default_is_the_full_level_config(level: int) -> None:
    model = load_level_config(ROOT / "configs" / f"level{level}" / "full.yaml").model
    training_only = {"gradient_checkpointing": True, "resnet_dropout_rate": model.unet.resnet_dropout_rate}
    assert model == dataclasses.replace(V1_DENOISER, unet=dataclasses.replace(V1_DENOISER.unet, **training_only))


def shapes(state: dict[str, Tensor]) -> dict[str, torch.Size]:
    return {k: v.shape for k, v in state.items()}


@pytest.mark.parametrize("cfg", [V1_DENOISER.unet, SMALL.unet], ids=["v1", "small"])
def test_v1_fork_style_has_the_v1_layout(cfg: UNetConfig) -> None:
    with torch.device("meta"):
        reference = v1_diffusion_model(cfg).net
        ours = UNet1d(cfg)
    assert shapes(ours.state_dict()) == shapes(reference.state_dict())
    assert any(k.endswith(".blocks.1.3.weight") and v.shape[-1] == 1 for k, v in reference.state_dict().items())
    dropouts = [[n for n, m in net.named_modules() if isinstance(m, nn.Dropout)] for net in (ours, reference)]
    assert dropouts[0] == dropouts[1] and dropouts[0]


def test_v1_layout_converts_to_the_a_unet_style() -> None:
    cfg = dataclasses.replace(V1_DENOISER.unet, resnet_style="a-unet")
    with torch.device("meta"):
        reference = v1_diffusion_model(cfg).net
        ours = UNet1d(cfg)
        fork = UNet1d(V1_DENOISER.unet)
    assert shapes(unet_state_from_v1(reference.state_dict(), ours)) == shapes(ours.state_dict())
    with pytest.raises(ValueError, match="resnet_style='v1-fork'"):
        unet_state_from_v1(reference.state_dict(), fork)


@pytest.mark.parametrize("cfg", [SMALL, SMALL_AUNET], ids=["v1-fork", "a-unet"])
def test_loads_a_v1_checkpoint(tmp_path: Path, cfg: DenoiserConfig) -> None:
    torch.manual_seed(0)
    reference = perturb_(v1_diffusion_model(cfg.unet)).eval()
    path = write_v1_checkpoint(tmp_path / "v1.ckpt", reference.state_dict(), tiny_vqvae_state())
    denoiser = load_jbdiff_v1_level(path, cfg)
    assert isinstance(denoiser, LatentDenoiser) and not denoiser.training
    for kwargs in ({}, {"embedding_mask_proba": 1.0}, {"embedding_scale": 2.5}):
        torch.testing.assert_close(outputs(denoiser.net, cfg, **kwargs), outputs(reference.net, cfg, **kwargs))


def test_loads_the_unforked_layout(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = perturb_(LatentDenoiser(SMALL_AUNET)).eval()
    path = write_v1_checkpoint(tmp_path / "plain.ckpt", our_layout_state(source), tiny_vqvae_state())
    denoiser = load_jbdiff_v1_level(path, SMALL_AUNET)
    assert torch.equal(outputs(denoiser.net, SMALL_AUNET), outputs(source.net, SMALL_AUNET))


@pytest.mark.parametrize(
    "edit,named",
    [
        (lambda s: s.pop("diffusion.net.blocks.0.weights"), "missing key(s): blocks.0.weights"),
        (lambda s: s.update({"diffusion.net.blocks.3.weight": torch.zeros(1)}), "unexpected key(s): blocks.3.weight"),
        (
            lambda s: s.update({"diffusion_ema.net.blocks.0.weights": torch.zeros(1)}),
            "diffusion_ema.net.blocks.0.weights",
        ),
    ],
    ids=["missing", "extra", "foreign"],
)
def test_refuses_a_mismatching_unet(tmp_path: Path, edit: Any, named: str) -> None:
    state = {"diffusion." + k: v for k, v in our_layout_state(LatentDenoiser(SMALL)).items()}
    edit(state)
    path = tmp_path / "bad.ckpt"
    torch.save({"state_dict": state}, path)
    with pytest.raises(JbdiffError, match=r"does not match the model") as error:
        load_jbdiff_v1_level(path, SMALL)
    assert named in str(error.value)


def test_refuses_a_misshapen_unet(tmp_path: Path) -> None:
    path = write_v1_checkpoint(tmp_path / "small.ckpt", our_layout_state(LatentDenoiser(SMALL)), {})
    with pytest.raises(JbdiffError, match=r"tensor shapes do not match"):
        load_jbdiff_v1_level(
            path, dataclasses.replace(SMALL, unet=dataclasses.replace(SMALL.unet, modulation_features=16))
        )


@pytest.mark.parametrize(
    "data,message",
    [({"model": {}}, "has no 'state_dict'"), ({"state_dict": {"vqvae.x": torch.zeros(1)}}, "has no 'diffusion.net.")],
)
def test_refuses_other_files(tmp_path: Path, data: dict[str, Any], message: str) -> None:
    path = tmp_path / "other.ckpt"
    torch.save(data, path)
    with pytest.raises(JbdiffError, match=message):
        load_jbdiff_v1_level(path, SMALL)


def test_vqvae_from_jbdiff_v1(tmp_path: Path) -> None:
    torch.manual_seed(0)
    vqvae = VQVAE(VQVAEConfig())
    for block in vqvae.bottleneck.level_blocks:
        block.k.normal_()
    path = write_v1_checkpoint(tmp_path / "v1.ckpt", our_layout_state(LatentDenoiser(SMALL)), vqvae.state_dict())
    loaded = vqvae_from_jbdiff_v1(path)
    assert not loaded.training
    expected = vqvae.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in loaded.state_dict().items())

    tiny = write_v1_checkpoint(tmp_path / "tiny.ckpt", {}, tiny_vqvae_state())
    with pytest.raises(JbdiffError, match=r"does not match the model"):
        vqvae_from_jbdiff_v1(tiny)
    bare = write_v1_checkpoint(tmp_path / "bare.ckpt", our_layout_state(LatentDenoiser(SMALL)), {})
    with pytest.raises(JbdiffError, match=r"has no 'vqvae\.\*' weights"):
        vqvae_from_jbdiff_v1(bare)
