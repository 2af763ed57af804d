"""The Jukebox-layout VQ-VAE: parity with OpenAI's reference, checkpoint loading, codebook, loss.

The reference is ``jukebox_infer``'s VQ-VAE built with the 5b hyperparameters and no weights;
we fill it with random weights, write them in OpenAI's ``vqvae.pth.tar`` format and check that
our loader reproduces the reference's codes and audio exactly at every level.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_CODEC_CONFIG, synth_music

from jbdiff.core.errors import JbdiffError
from levels.codebook import Bottleneck, EMACodebook
from levels.codec_config import load_codec_config
from levels.codec_io import load_codec
from levels.codec_loss import (
    CodecLossConfig,
    codec_loss,
    l2_loss,
    linf_loss,
    multispectral_loss,
)
from levels.jukebox_checkpoint import load_jukebox_vqvae
from levels.vqvae import VQVAE, VQVAEConfig

jukebox_hparams = pytest.importorskip("jukebox_infer.hparams")
jukebox_models = pytest.importorskip("jukebox_infer.make_models")

PARITY_SAMPLES = 8192
HOPS = (8, 32, 128)


def _parity_audio() -> torch.Tensor:
    """Two different 8192-sample items, NCT: a music-like clip and a noisy chirp."""
    music = torch.from_numpy(synth_music(0.25, seed=3))[..., :PARITY_SAMPLES]
    t = torch.arange(PARITY_SAMPLES, dtype=torch.float64) / 44100
    hiss = torch.randn(PARITY_SAMPLES, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    chirp = 0.4 * torch.sin(2 * math.pi * (200 + 3000 * t) * t) + 0.05 * hiss
    return torch.stack([music, chirp.float()[None]])


def _ntc(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 1).contiguous()


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Intra-op threads thrash on a busy 2-core machine; one thread is many times faster there."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference():
    """(hps, reference 5b VQ-VAE with random weights and data-driven random codebooks)."""
    hps = jukebox_hparams.setup_hparams("vqvae", {"restore_vqvae": "", "sample_length": PARITY_SAMPLES})
    ref = jukebox_models.make_vqvae(hps, "cpu")
    gen = torch.Generator().manual_seed(1234)
    state = ref.state_dict()
    new = {}
    for key, value in state.items():
        if key.startswith("bottleneck."):
            new[key] = value.clone()
        else:
            new[key] = torch.randn(value.shape, generator=gen) * 0.05
    ref.load_state_dict(new)
    # Codebooks: mostly vectors near real encoder outputs (so codes are diverse), some pure noise.
    music = torch.from_numpy(synth_music(1.5, seed=1))[None]
    audio = torch.cat([_parity_audio(), music[..., :PARITY_SAMPLES], music[..., -PARITY_SAMPLES:]])
    with torch.no_grad():
        for level, encoder in enumerate(ref.encoders):
            z = encoder(audio)[-1]
            flat = z.permute(0, 2, 1).reshape(-1, z.shape[1])
            spread = (flat - flat.mean(0)).std()
            idx = torch.randperm(flat.shape[0], generator=gen)[:1536]
            k = torch.randn(2048, z.shape[1], generator=gen) * spread + flat.mean(0)
            k[: len(idx)] = flat[idx] + 0.05 * spread * torch.randn(len(idx), z.shape[1], generator=gen)
            ref.bottleneck.level_blocks[level].k.copy_(k)
    return hps, ref.eval()


@pytest.fixture(scope="module")
def checkpoint(reference, tmp_path_factory) -> Path:
    """The reference's weights written the way OpenAI's ``vqvae.pth.tar`` stores them (Jukebox's
    ``save_checkpoint`` stores ``hps`` as a plain dict copy of its ``Hyperparams``)."""
    hps, ref = reference
    path = tmp_path_factory.mktemp("jukebox") / "vqvae.pth.tar"
    torch.save({"model": {"module." + k: v for k, v in ref.state_dict().items()}, "hps": dict(hps), "step": 0}, path)
    return path


@pytest.fixture(scope="module")
def loaded(checkpoint) -> VQVAE:
    return load_jukebox_vqvae(checkpoint)


# --------------------------------------------------------------------------- layout


def test_hops_of_the_5b_config() -> None:
    assert VQVAEConfig().hops == HOPS


def test_state_dict_layout_equals_reference(reference) -> None:
    _, ref = reference
    ours = VQVAE(VQVAEConfig()).state_dict()
    theirs = ref.state_dict()
    assert len(theirs) == 669
    assert set(ours) == set(theirs)
    assert len(ours) == 669
    wrong = {k: (tuple(ours[k].shape), tuple(theirs[k].shape)) for k in theirs if ours[k].shape != theirs[k].shape}
    assert wrong == {}


def test_config_validates_per_level_lengths() -> None:
    with pytest.raises(ValueError, match="downs_t"):
        VQVAEConfig(downs_t=(3, 2))
    with pytest.raises(ValueError, match="multipliers"):
        VQVAEConfig(levels=2, downs_t=(3, 2), strides_t=(2, 2))


# --------------------------------------------------------------------------- parity with the reference


def test_loader_reproduces_reference_codes_and_audio(reference, loaded) -> None:
    _, ref = reference
    audio = _parity_audio()
    with torch.no_grad():
        ref_codes = ref.encode(_ntc(audio))
        for level in range(3):
            ours = loaded.encode(audio, level)
            assert ours.shape == (2, PARITY_SAMPLES // HOPS[level])
            assert torch.equal(ours, ref_codes[level]), f"codes differ at level {level}"
            # The test is only meaningful if the codes are varied.
            assert ours.unique().numel() >= 20, f"level {level} uses too few codes"
            ref_audio = _ntc(ref.decode([ref_codes[level]], start_level=level, end_level=level + 1))
            our_audio = loaded.decode(ours, level)
            assert our_audio.shape == audio.shape
            assert ref_audio.abs().max() > 1e-2  # a non-trivial signal
            assert (our_audio - ref_audio).abs().max().item() <= 1e-5, f"audio differs at level {level}"


def test_loaded_codebooks_are_ready_for_training(reference, loaded) -> None:
    _, ref = reference
    for level, block in enumerate(loaded.bottleneck.level_blocks):
        assert torch.equal(block.k, ref.bottleneck.level_blocks[level].k)
        assert bool(block.initialised)
        assert torch.equal(block.k_sum, block.k)
        assert torch.equal(block.k_elem, torch.ones(2048))
    assert not loaded.training


def test_load_codec_from_checkpoint_matches_reference(reference, checkpoint) -> None:
    _, ref = reference
    codec = load_codec(checkpoint)
    assert codec.hops == HOPS
    music = torch.from_numpy(synth_music(1.5, seed=1))[None]  # 66150 samples: not a multiple of 128
    padded = torch.nn.functional.pad(music, (0, codec.padded_length(music.shape[-1]) - music.shape[-1]))
    codes = codec.encode_codes(music)
    with torch.no_grad():
        ref_codes = ref.encode(_ntc(padded))
        for level in range(3):
            assert codes[level].shape == (1, padded.shape[-1] // HOPS[level])
            assert torch.equal(codes[level], ref_codes[level]), f"codes differ at level {level}"
            ref_audio = _ntc(ref.decode([ref_codes[level]], start_level=level, end_level=level + 1))
            ours = codec.decode_codes(level, codes[level])
            assert ours.shape == padded.shape
            assert (ours - ref_audio).abs().max().item() <= 1e-5, f"audio differs at level {level}"
    # normalisation comes from the codebooks
    for level, block in enumerate(ref.bottleneck.level_blocks):
        assert codec.latent_mean[level].item() == pytest.approx(block.k.mean().item(), rel=1e-5, abs=1e-6)
        assert codec.latent_std[level].item() == pytest.approx(block.k.std().item(), rel=1e-5)


# --------------------------------------------------------------------------- refusals


def _write_variant(reference, path: Path, change) -> Path:
    hps, ref = reference
    model = {"module." + k: v for k, v in ref.state_dict().items()}
    change(model)
    torch.save({"model": model, "hps": dict(hps), "step": 0}, path)
    return path


def test_checkpoint_with_a_missing_key_is_refused(reference, tmp_path) -> None:
    key = "decoders.1.out.bias"
    path = _write_variant(reference, tmp_path / "missing.pth.tar", lambda m: m.pop("module." + key))
    with pytest.raises(JbdiffError, match=r"missing key.*decoders\.1\.out\.bias"):
        load_jukebox_vqvae(path)
    with pytest.raises(JbdiffError, match=r"decoders\.1\.out\.bias"):
        load_codec(path)


def test_checkpoint_with_an_extra_key_is_refused(reference, tmp_path) -> None:
    def add(model: dict) -> None:
        model["module.encoders.0.extra_weight"] = torch.zeros(3)

    path = _write_variant(reference, tmp_path / "extra.pth.tar", add)
    with pytest.raises(JbdiffError, match=r"unexpected key.*encoders\.0\.extra_weight"):
        load_jukebox_vqvae(path)


def test_checkpoint_with_a_wrong_shape_is_refused(reference, tmp_path) -> None:
    key = "bottleneck.level_blocks.2.k"
    def reshape(model: dict) -> None:
        model["module." + key] = torch.zeros(1024, 64)

    path = _write_variant(reference, tmp_path / "shape.pth.tar", reshape)
    with pytest.raises(JbdiffError, match=r"bottleneck\.level_blocks\.2\.k: \(1024, 64\) in the file, \(2048, 64\) in the model"):
        load_jukebox_vqvae(path)


def test_checkpoint_with_a_different_architecture_is_refused(checkpoint) -> None:
    tiny = load_codec_config(TINY_CODEC_CONFIG).model
    with pytest.raises(JbdiffError, match="does not match the model"):
        load_jukebox_vqvae(checkpoint, tiny)


def test_non_checkpoint_files_are_refused(tmp_path) -> None:
    text = tmp_path / "notes.pth.tar"
    text.write_text("this is not a checkpoint\n")
    with pytest.raises(JbdiffError, match="not a readable PyTorch checkpoint"):
        load_jukebox_vqvae(text)
    with pytest.raises(JbdiffError, match="not a readable PyTorch checkpoint"):
        load_codec(text)
    tensor = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(JbdiffError, match="expected a checkpoint dictionary"):
        load_jukebox_vqvae(tensor)
    not_model = tmp_path / "dict.pth"
    torch.save({"model": [1, 2, 3]}, not_model)
    with pytest.raises(JbdiffError, match="not a state dict"):
        load_jukebox_vqvae(not_model)
    with pytest.raises(JbdiffError, match="not found"):
        load_jukebox_vqvae(tmp_path / "absent.pth.tar")


def test_truncated_checkpoint_is_refused(checkpoint, tmp_path) -> None:
    cut = tmp_path / "cut.pth.tar"
    cut.write_bytes(checkpoint.read_bytes()[:100_000])
    with pytest.raises(JbdiffError, match="not a readable PyTorch checkpoint"):
        load_jukebox_vqvae(cut)


# --------------------------------------------------------------------------- codebook


def _seeded_codebook(k: torch.Tensor, mu: float = 0.9, threshold: float = 1.0) -> EMACodebook:
    cb = EMACodebook(k.shape[0], k.shape[1], mu=mu, threshold=threshold)
    cb.load_state_dict({"k": k.clone()})
    return cb


def test_codebook_state_dict_has_only_k() -> None:
    cb = EMACodebook(16, 4)
    assert list(cb.state_dict()) == ["k"]
    assert list(Bottleneck(16, 4, 0.99, 3).state_dict()) == [f"level_blocks.{i}.k" for i in range(3)]


def test_loading_k_restarts_ema_statistics() -> None:
    k = torch.randn(8, 3)
    cb = _seeded_codebook(k)
    assert bool(cb.initialised)
    assert torch.equal(cb.k_sum, k)
    assert torch.equal(cb.k_elem, torch.ones(8))


def test_ema_update_moves_used_code_towards_data_mean() -> None:
    k = torch.tensor([[0.0, 0.0], [10.0, 10.0], [-10.0, 10.0], [10.0, -10.0]])
    mu = 0.9
    cb = _seeded_codebook(k, mu=mu, threshold=0.5)  # threshold < mu: unused codes survive one step
    gen = torch.Generator().manual_seed(0)
    data = torch.tensor([1.0, 2.0]) + 0.1 * torch.randn(40, 2, generator=gen)  # all nearest to code 0
    codes, quantised, _commit, metrics = cb(data.T[None], update=True)
    assert torch.equal(codes, torch.zeros(1, 40, dtype=torch.long))
    expected = (mu * k[0] + (1 - mu) * data.sum(0)) / (mu + (1 - mu) * 40)
    torch.testing.assert_close(cb.k[0], expected)
    assert torch.linalg.norm(cb.k[0] - data.mean(0)) < torch.linalg.norm(k[0] - data.mean(0))
    torch.testing.assert_close(cb.k[1:], k[1:])  # unused but above threshold: unchanged
    assert metrics["usage"].item() == 4
    assert metrics["used_curr"].item() == 1
    # the returned quantisation is the pre-update codebook vector
    torch.testing.assert_close(quantised[0].T, k[0].expand(40, 2))


def test_ema_updates_converge_to_cluster_means() -> None:
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[1.0, 2.0], [-3.0, 0.5]])
    data = torch.cat(
        [centres[0] + 0.2 * torch.randn(30, 2, generator=gen), centres[1] + 0.2 * torch.randn(50, 2, generator=gen)]
    )
    cb = _seeded_codebook(torch.tensor([[0.0, 0.0], [-1.0, 0.0]]), mu=0.8)
    for _ in range(80):
        codes, _, _, _ = cb(data.T[None], update=True)
    assert torch.equal(codes[0], torch.cat([torch.zeros(30), torch.ones(50)]).long())
    torch.testing.assert_close(cb.k[0], data[:30].mean(0), atol=1e-4, rtol=0)
    torch.testing.assert_close(cb.k[1], data[30:].mean(0), atol=1e-4, rtol=0)


def test_dead_codes_are_restarted_from_the_batch() -> None:
    torch.manual_seed(0)
    far = 100.0 + torch.randn(16, 4)
    far[0] = 0.0
    cb = _seeded_codebook(far, mu=0.99, threshold=1.0)
    data = 0.5 * torch.randn(2, 4, 64)  # 128 vectors near the origin: all nearest to code 0
    flat = data.permute(0, 2, 1).reshape(-1, 4)
    cb(data, update=True)
    # each dead code is now one of the batch's vectors (enough of them: no tiling noise)
    dist = torch.cdist(cb.k[1:], flat)
    assert dist.min(dim=1).values.max().item() < 1e-5
    assert cb.k.abs().max().item() < 5.0
    # a later quantisation uses the restarted codes
    codes = cb.encode(data)
    assert codes.unique().numel() > 1


def test_first_training_use_initialises_from_data_with_tiling() -> None:
    torch.manual_seed(0)
    cb = EMACodebook(32, 4)
    assert not bool(cb.initialised)
    data = torch.randn(1, 4, 10)  # fewer vectors than bins: tiled with tiny noise
    cb(data, update=True)
    assert bool(cb.initialised)
    flat = data[0].T
    assert torch.cdist(cb.k, flat).min(dim=1).values.max().item() < 0.05


def test_initialisation_keeps_the_codebook_out_of_the_graph() -> None:
    # The first training call copies encoder outputs into ``k``; that copy must not make the
    # buffer part of the autograd graph (it would pin the first batch's activations forever).
    torch.manual_seed(0)
    cb = EMACodebook(16, 4)
    x = (2 * torch.randn(1, 4, 40, requires_grad=True)).tanh()
    cb(x, update=True)
    for name in ("k", "k_sum", "k_elem"):
        tensor = getattr(cb, name)
        assert not tensor.requires_grad and tensor.grad_fn is None, name


def test_commit_loss_is_mean_squared_distance() -> None:
    torch.manual_seed(0)
    cb = _seeded_codebook(torch.randn(16, 8))
    x = torch.randn(2, 8, 30)
    codes, quantised, commit, metrics = cb(x, update=False)
    nearest = cb.k[codes]  # (2, 30, 8)
    expected = (nearest - x.permute(0, 2, 1)).pow(2).mean()
    torch.testing.assert_close(commit, expected)
    # fit is the mean squared euclidean distance to the nearest code (commit summed over width)
    torch.testing.assert_close(metrics["fit"], expected * 8, rtol=1e-4, atol=1e-5)
    # codes are the true nearest neighbours
    assert torch.equal(codes, torch.cdist(x.permute(0, 2, 1), cb.k[None].expand(2, -1, -1)).argmin(-1))
    torch.testing.assert_close(quantised, nearest.permute(0, 2, 1))


def test_quantise_finds_the_nearest_code() -> None:
    gen = torch.Generator().manual_seed(0)
    k = torch.randn(512, 64, generator=gen)
    x = torch.randn(3000, 64, generator=gen)
    cb = _seeded_codebook(k)
    codes, _ = cb.quantise(x)
    truth = torch.cdist(x.double(), k.double()).argmin(-1)
    assert torch.equal(codes, truth)


def test_straight_through_gradient() -> None:
    torch.manual_seed(0)
    cb = _seeded_codebook(torch.randn(16, 8))
    x = torch.randn(2, 8, 30, requires_grad=True)
    _, quantised, _, _ = cb(x, update=False)
    weights = torch.randn_like(quantised)
    (quantised * weights).sum().backward()
    torch.testing.assert_close(x.grad, weights)  # identity gradient through the quantiser


def test_gradient_reaches_the_encoder() -> None:
    torch.manual_seed(0)
    vqvae = VQVAE(load_codec_config(TINY_CODEC_CONFIG).model).train()
    audio = torch.from_numpy(synth_music(0.05))[None][..., :2048]
    outs, _commits, _ = vqvae(audio)
    sum(o.pow(2).mean() for o in outs).backward()
    for level in range(3):
        grads = [p.grad for p in vqvae.encoders[level].parameters()]
        assert all(g is not None for g in grads)
        assert sum(g.abs().sum().item() for g in grads) > 0, f"no gradient at encoder {level}"
    assert all(not b.k.requires_grad for b in vqvae.bottleneck.level_blocks)


def test_ema_state_round_trip() -> None:
    torch.manual_seed(0)
    a = EMACodebook(16, 4, mu=0.9)
    data = torch.randn(2, 4, 40)
    for _ in range(3):
        a(data + 0.1 * torch.randn_like(data), update=True)
    b = EMACodebook(16, 4, mu=0.9)
    b.load_state_dict(a.state_dict())
    assert not torch.equal(b.k_sum, a.k_sum)  # k alone does not carry the EMA statistics
    b.load_ema_state(a.ema_state())
    for name in ("k", "k_sum", "k_elem", "initialised"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    # ema_state is a copy, not a view
    state = a.ema_state()
    state["k_sum"].add_(1.0)
    assert not torch.equal(state["k_sum"], a.k_sum)
    # both resume identically
    torch.manual_seed(7)
    a(data, update=True)
    torch.manual_seed(7)
    b(data, update=True)
    assert torch.equal(a.k, b.k)
    assert torch.equal(a.k_sum, b.k_sum)


def test_eval_forward_does_not_touch_the_codebook() -> None:
    torch.manual_seed(0)
    vqvae = VQVAE(load_codec_config(TINY_CODEC_CONFIG).model)
    audio = torch.from_numpy(synth_music(0.05))[None][..., :2048]
    vqvae.train()
    with torch.no_grad():
        vqvae(audio)
    before = {k: v.clone() for k, v in vqvae.state_dict().items()}
    vqvae.eval()
    with torch.no_grad():
        _outs, _commits, metrics = vqvae(audio)
    assert all(torch.equal(before[k], v) for k, v in vqvae.state_dict().items())
    assert all("dk" not in m for m in metrics)


def test_training_forward_shapes() -> None:
    torch.manual_seed(0)
    vqvae = VQVAE(load_codec_config(TINY_CODEC_CONFIG).model).train()
    audio = torch.from_numpy(synth_music(0.1))[None][..., :4096].repeat(2, 1, 1)
    with torch.no_grad():
        outs, commits, metrics = vqvae(audio)
    assert len(outs) == len(commits) == len(metrics) == 3
    for out, commit, m in zip(outs, commits, metrics):
        assert out.shape == audio.shape
        assert commit.dim() == 0 and commit.item() >= 0
        assert {"entropy", "used_curr", "usage", "dk", "fit"} <= set(m)


# --------------------------------------------------------------------------- loss


def test_codec_loss_of_a_perfect_reconstruction_is_the_commit_term() -> None:
    cfg = CodecLossConfig()
    target = torch.from_numpy(synth_music(0.2))[None]
    commits = [torch.tensor(0.5), torch.tensor(0.25), torch.tensor(0.0)]
    total, logs = codec_loss(target, [target.clone()] * 3, commits, cfg)
    assert total.item() == pytest.approx(cfg.commit * 0.75, abs=1e-5)
    for level in range(3):
        assert logs[f"spec/l{level}"].item() == pytest.approx(0.0, abs=1e-6)
        assert logs[f"l2/l{level}"].item() == 0.0
        assert logs[f"linf/l{level}"].item() == 0.0
    total0, _ = codec_loss(target, [target.clone()] * 3, [torch.tensor(0.0)] * 3, cfg)
    assert total0.item() == pytest.approx(0.0, abs=1e-5)


def test_codec_loss_is_large_for_noise_and_ordered() -> None:
    cfg = CodecLossConfig()
    target = torch.from_numpy(synth_music(0.2))[None]
    gen = torch.Generator().manual_seed(0)
    noise = 0.3 * torch.randn(target.shape, generator=gen)
    zero = [torch.tensor(0.0)] * 3
    near, _ = codec_loss(target, [target + 0.01 * noise] * 3, zero, cfg)
    far, _logs = codec_loss(target, [noise] * 3, zero, cfg)
    assert far.item() > 1.0
    assert 0 < near.item() < 0.2 * far.item()
    # l2 is relative to the target's power: scaling both leaves it unchanged
    assert l2_loss(3 * target, 3 * noise).item() == pytest.approx(l2_loss(target, noise).item(), rel=1e-4)
    relative = ((noise - target) ** 2).mean().item() / (target**2).mean().item()
    assert l2_loss(target, noise).item() == pytest.approx(relative, rel=1e-3)
    # linf is the mean of the k largest squared errors: never below l2
    assert linf_loss(target, noise, 2048).item() >= l2_loss(target, noise).item()
    assert multispectral_loss(target, noise, cfg).item() > multispectral_loss(target, target + 0.01 * noise, cfg).item()


def test_loss_config_validates_resolutions() -> None:
    with pytest.raises(ValueError):
        CodecLossConfig(n_fft=(2048, 1024), hop_length=(240, 120, 50))


def test_training_reduces_the_loss() -> None:
    cfg = load_codec_config(TINY_CODEC_CONFIG)
    torch.manual_seed(0)
    vqvae = VQVAE(cfg.model)
    audio = torch.from_numpy(synth_music(0.5, seed=2))[None][..., 2000 : 2000 + 68 * 128]  # 0.2 s

    def evaluate() -> float:
        vqvae.eval()
        with torch.no_grad():
            outs, commits, _ = vqvae(audio)
            return codec_loss(audio, outs, commits, cfg.loss)[0].item()

    vqvae.train()
    with torch.no_grad():
        vqvae(audio)  # initialise the codebooks from the data
    before = evaluate()
    opt = torch.optim.Adam(vqvae.parameters(), lr=2e-3)
    vqvae.train()
    for _ in range(30):
        outs, commits, _ = vqvae(audio)
        loss, _ = codec_loss(audio, outs, commits, cfg.loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = evaluate()
    assert np.isfinite(after)
    assert after < 0.75 * before, (before, after)
