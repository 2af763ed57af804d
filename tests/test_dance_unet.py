"""DanceUNet: Harmonai's Dance Diffusion ``DiffusionAttnUnet1D`` layout, checkpoint loading, forward."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from jbdiff.core.errors import JbdiffError
from upsampler.dance_unet import DanceConfig, DanceUNet, load_dance_checkpoint

# Five levels: level 2 without attention, levels 3-5 with it (n_attn_layers=1 gives three),
# a width change at level 2 (16 -> 32, so 1x1 skip convs) and 64-channel attention with 2 heads.
SMALL = DanceConfig(depth=5, n_attn_layers=1, channels=(16, 32, 32, 64, 64))
LENGTH = 64  # a multiple of 2**(depth-1) = 16


def _level(n: int) -> str:
    """Key prefix of UNet level ``n`` (2 = outermost SkipBlock, nested at ``main.7``)."""
    return "net.3" + ".main.7" * (n - 2)


# Published Dance Diffusion architecture: sample-generator @ 6a3402d, train_uncond.py line 93
# (``DiffusionAttnUnet1D(global_args, io_channels=2, n_attn_layers=4)``, depth 14 and
# c_mults [128, 128, 256, 256] + [512] * 10 by default in audio_diffusion/models.py, and
# latent_dim = 0 in defaults.ini). Keys and shapes below were read from that code's state_dict.
PUBLISHED_KEYS: dict[str, tuple[int, ...]] = {
    "timestep_embed.weight": (8, 1),  # FourierFeatures(1, 16), an nn.Parameter
    "net.0.main.0.weight": (128, 18, 5),  # io_channels 2 + 16 embedding channels
    "net.0.main.0.bias": (128,),
    "net.0.main.1.weight": (128,),  # GroupNorm(1, 128)
    "net.0.skip.weight": (128, 18, 1),
    "net.3.main.0.kernel": (8,),  # Downsample1d('cubic'): a persistent buffer
    "net.3.main.14.kernel": (8,),  # Upsample1d('cubic')
    "net.3.main.8.main.0.weight": (128, 256, 5),  # after the concatenated skip
    _level(3) + ".main.1.skip.weight": (256, 128, 1),
    _level(3) + ".main.12.skip.weight": (128, 256, 1),
    _level(9) + ".main.2.norm.weight": (512,),  # level 9 = depth - n_attn_layers - 1: first with attention
    _level(9) + ".main.2.qkv_proj.weight": (1536, 512, 1),
    _level(9) + ".main.2.qkv_proj.bias": (1536,),
    _level(9) + ".main.13.out_proj.weight": (512, 512, 1),
    _level(14) + ".main.8.main.0.weight": (512, 512, 5),  # innermost: no concatenation
    "net.4.main.0.weight": (128, 256, 5),
    "net.6.main.3.weight": (2, 128, 5),
    "net.6.main.3.bias": (2,),
    "net.6.skip.weight": (2, 128, 1),
}
PUBLISHED_ABSENT = [
    _level(8) + ".main.2.norm.weight",  # level 8 has no attention
    "net.6.main.4.weight",  # the last block has no final GroupNorm
    "net.3.main.12.skip.weight",  # 128 -> 128 needs no skip conv
    _level(14) + ".main.7.main.0.weight",  # nothing inside the innermost level
]
# The 8 'cubic' taps of audio_diffusion/blocks.py (_kernels['cubic']).
CUBIC = [-0.01171875, -0.03515625, 0.11328125, 0.43359375, 0.43359375, 0.11328125, -0.03515625, -0.01171875]


pytestmark = pytest.mark.usefixtures("one_thread")


def _randomised(cfg: DanceConfig, seed: int) -> DanceUNet:
    torch.manual_seed(seed)
    net = DanceUNet(cfg)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.2)
    return net.eval()


def _save_ckpt(path: Path, state: dict[str, torch.Tensor], ema: dict[str, torch.Tensor]) -> Path:
    layout = {**{"diffusion." + k: v for k, v in state.items()}, **{"diffusion_ema." + k: v for k, v in ema.items()}}
    torch.save({"state_dict": layout, "global_step": 0, "epoch": 0}, path)
    return path


def test_published_layout() -> None:
    with torch.device("meta"):
        sd = DanceUNet(DanceConfig()).state_dict()
    for key, shape in PUBLISHED_KEYS.items():
        assert key in sd, key
        assert tuple(sd[key].shape) == shape, key
    for key in PUBLISHED_ABSENT:
        assert key not in sd, key
    # Totals of the reference's state_dict: 932 tensors, 221,389,530 values (26 kernel buffers).
    assert len(sd) == 932
    assert sum(v.numel() for v in sd.values()) == 221_389_530
    assert sum(k.endswith(".kernel") for k in sd) == 26
    assert sum(k.endswith("qkv_proj.weight") for k in sd) == 36  # 6 levels x 6 attention layers


def test_resampling_kernels_and_initial_scaling() -> None:
    net = DanceUNet(SMALL)
    sd = net.state_dict()
    assert torch.equal(sd["net.3.main.0.kernel"], torch.tensor(CUBIC))
    assert torch.equal(sd["net.3.main.14.kernel"], torch.tensor(CUBIC) * 2)
    # The reference halves every initial parameter of ``net`` (GroupNorm weights start at 0.5).
    assert torch.all(sd["net.0.main.1.weight"] == 0.5)
    assert torch.all(sd[_level(3) + ".main.2.norm.weight"] == 0.5)


def test_forward_shape_and_sigma_dependence() -> None:
    net = _randomised(SMALL, 0)
    x = torch.randn(2, 2, LENGTH)
    with torch.no_grad():
        low = net(x, torch.full((2,), 0.1))
        high = net(x, torch.full((2,), 0.9))
        shortest = net(torch.randn(1, 2, SMALL.min_length), torch.rand(1))
    assert low.shape == x.shape and shortest.shape == (1, 2, 48)
    assert torch.isfinite(low).all()
    assert (low - high).abs().max() > 1e-3


@pytest.mark.parametrize("length", [LENGTH + 8, 32, 0])
def test_forward_rejects_bad_length(length: int) -> None:
    with pytest.raises(ValueError, match="multiple of 16"):
        DanceUNet(SMALL)(torch.randn(1, 2, length), torch.rand(1))


def test_forward_rejects_bad_shapes() -> None:
    net = DanceUNet(SMALL)
    with pytest.raises(ValueError, match="expected x shaped"):
        net(torch.randn(1, 1, LENGTH), torch.rand(1))
    with pytest.raises(ValueError, match="expected sigma shaped"):
        net(torch.randn(2, 2, LENGTH), torch.rand(1))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"cond_dim": 4}, "cond_dim"),
        ({"learned_resample": True}, "learned_resample"),
        ({"use_snake": True}, "use_snake"),
        ({"channels": (16, 32, 32, 64)}, "depth is 5"),
        ({"channels": (16, 16, 16, 64, 64)}, "level 3 has attention"),
        ({"kernel_size": 4}, "odd"),
        ({"depth": 1, "channels": (16,)}, "depth must be"),
    ],
)
def test_config_refuses_unsupported(changes: dict[str, object], message: str) -> None:
    fields = {"depth": 5, "n_attn_layers": 1, "channels": (16, 32, 32, 64, 64), **changes}
    with pytest.raises(ValueError, match=message):
        DanceConfig(**fields)  # type: ignore[arg-type]


def test_load_uses_ema_weights(tmp_path: Path) -> None:
    trained, averaged = _randomised(SMALL, 1), _randomised(SMALL, 2)
    path = _save_ckpt(tmp_path / "model.ckpt", trained.state_dict(), averaged.state_dict())
    x, sigma = torch.randn(1, 2, LENGTH), torch.tensor([0.5])
    for use_ema, source in ((True, averaged), (False, trained)):
        net = load_dance_checkpoint(path, SMALL, use_ema=use_ema)
        assert not net.training
        for key, value in source.state_dict().items():
            assert torch.equal(net.state_dict()[key], value), key
        with torch.no_grad():
            torch.testing.assert_close(net(x, sigma), source(x, sigma))


def test_load_refuses_mismatching_files(tmp_path: Path) -> None:
    state = DanceUNet(SMALL).state_dict()
    missing = dict(state)
    del missing["timestep_embed.weight"]
    path = _save_ckpt(tmp_path / "missing.ckpt", state, missing)
    with pytest.raises(JbdiffError, match=r"missing key\(s\): timestep_embed\.weight"):
        load_dance_checkpoint(path, SMALL)
    load_dance_checkpoint(path, SMALL, use_ema=False)  # the trained copy is complete

    extra = {**state, "net.9.main.0.weight": torch.zeros(1)}
    with pytest.raises(JbdiffError, match=r"unexpected key\(s\): net\.9\.main\.0\.weight"):
        load_dance_checkpoint(_save_ckpt(tmp_path / "extra.ckpt", state, extra), SMALL)

    # A file for another architecture: other keys, or the same keys with other shapes.
    with pytest.raises(JbdiffError, match="does not match the model"):
        load_dance_checkpoint(path, DanceConfig(depth=4, n_attn_layers=1, channels=(32, 32, 64, 64)), use_ema=False)
    narrow = DanceConfig(depth=5, n_attn_layers=1, channels=(16, 32, 32, 64, 64), kernel_size=3)
    with pytest.raises(JbdiffError, match="shapes do not match"):
        load_dance_checkpoint(path, narrow, use_ema=False)


def test_load_refuses_non_dance_files(tmp_path: Path) -> None:
    plain = tmp_path / "plain.ckpt"
    torch.save({"model": {}}, plain)
    with pytest.raises(JbdiffError, match="no 'state_dict' entry"):
        load_dance_checkpoint(plain, SMALL)
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"model.weight": torch.zeros(1)}}, other)
    with pytest.raises(JbdiffError, match=r"no 'diffusion_ema\.\*' tensors"):
        load_dance_checkpoint(other, SMALL)
