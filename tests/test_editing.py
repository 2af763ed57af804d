"""Inpaint, extend, loop and morph on the tiny random-weight bundle: known-answer checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from jbdiff.core.audio import load_audio, save_audio
from jbdiff.core.crossfade import splice
from jbdiff.core.errors import JbdiffError
from jbdiff.core.noise import slerp
from jbdiff.core.samplers import invert, sample
from jbdiff.core.synth import synth_music
from jbdiff.pipeline import Pipeline
from tests.conftest import FAST

RATE = 44100


@pytest.fixture(scope="module")
def pipe(tiny_bundle: Path) -> Pipeline:
    return Pipeline.from_pretrained(tiny_bundle, device="cpu")


@pytest.fixture(scope="module")
def music() -> np.ndarray:
    return np.concatenate([synth_music(2.0, seed=3), synth_music(2.0, seed=4)], axis=0)  # stereo, 2 s


class _Linear(torch.nn.Module):
    """A smooth stand-in denoiser: v = a * x + b * sigma * x."""

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, **_: object) -> torch.Tensor:
        return 0.3 * x + 0.2 * sigma.view(-1, 1, 1) * x.roll(1, -1)


@pytest.mark.parametrize("sampler", ["v", "dpm"])
@pytest.mark.parametrize("jumps", [0, 2])
def test_the_sampler_keeps_the_known_entries_exactly(sampler: str, jumps: int) -> None:
    g = torch.Generator().manual_seed(0)
    noise, known = torch.randn(2, 4, 16, generator=g), torch.randn(2, 4, 16, generator=g)
    mask = torch.zeros(1, 1, 16, dtype=torch.bool)
    mask[..., :5] = mask[..., 11:] = True
    out = sample(_Linear(), noise, 6, sampler=sampler, known=known, known_mask=mask, jumps=jumps, generator=g)
    free = sample(_Linear(), noise, 6, sampler=sampler)
    assert torch.equal(out[..., :5], known[..., :5]) and torch.equal(out[..., 11:], known[..., 11:])
    assert not torch.allclose(out[..., 5:11], free[..., 5:11])  # the known part steered the rest


def test_inversion_round_trip_error_falls_with_steps() -> None:
    x = torch.randn(1, 4, 32, generator=torch.Generator().manual_seed(1))
    errors = [float((sample(_Linear(), invert(_Linear(), x, n), n, sampler="v") - x).norm() / x.norm()) for n in (2, 8, 32)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.1  # first order: about 1 / steps


def test_slerp_keeps_the_norm_of_orthogonal_noises_and_splice_keeps_the_outside() -> None:
    a, b = torch.zeros(1, 2, 1), torch.zeros(1, 2, 1)
    a[0, 0], b[0, 1] = 1.0, 1.0
    assert torch.allclose(slerp(a, b, 0.5).norm(), torch.tensor(1.0)) and torch.equal(slerp(a, b, 0.0), a)
    original, generated = torch.ones(1, 100), torch.zeros(1, 100)
    joined = splice(original, generated, 10, 20)
    assert torch.equal(joined[:, 10:80], generated[:, 10:80])
    assert torch.all(joined[:, :10].diff() < 0) and torch.all(joined[:, 80:].diff() > 0)


def test_inpaint_keeps_the_outside_bit_for_bit(pipe: Pipeline, music: np.ndarray) -> None:
    result = pipe.inpaint(music, RATE, 0.8, 1.1, fade=0.02, settings=FAST)
    again = pipe.inpaint(music, RATE, 0.8, 1.1, fade=0.02, settings=FAST)
    assert result.audio is not None and again.audio is not None
    assert result.audio.shape == music.shape and np.array_equal(result.audio, again.audio)
    a, b = round(0.8 * RATE), round(1.1 * RATE)  # the fades lie inside the region
    assert np.abs(result.audio[:, :a] - music[:, :a]).max() < 1e-6 and np.abs(result.audio[:, b:] - music[:, b:]).max() < 1e-6
    inside = result.audio[:, round(0.8 * RATE) : round(1.1 * RATE)]
    assert np.isfinite(inside).all() and not np.allclose(inside, music[:, round(0.8 * RATE) : round(1.1 * RATE)], atol=1e-3)
    assert result.seams == [round(0.8 * RATE), round(1.1 * RATE)] and result.manifest["region"]["fade"] == pytest.approx(0.02)


def test_inpaint_streams_to_a_float_wav_that_keeps_the_outside(pipe: Pipeline, music: np.ndarray, tmp_path: Path) -> None:
    path = tmp_path / "source.wav"
    save_audio(path, torch.from_numpy(music), RATE)
    source = load_audio(path, channels=None)
    out = tmp_path / "edited.wav"
    result = pipe.inpaint(source, RATE, 0.0, 0.5, settings=FAST.replace(batch=2), jumps=1, out=out)
    assert [p.name for p in result.paths] == ["edited_take1.wav", "edited_take2.wav"]
    takes = [load_audio(p, channels=None) for p in result.paths]
    after = round(0.5 * RATE)
    for take in takes:
        assert take.shape == source.shape and np.abs(take[:, after:] - source[:, after:]).max() < 1e-6
    assert not np.allclose(takes[0][:, :after], takes[1][:, :after])
    manifest = json.loads(out.with_suffix(".json").read_text())
    assert manifest["command"] == "inpaint" and manifest["jumps"] == 1
    assert (tmp_path / "edited_take1.png").exists()


def test_extend_before_and_after(pipe: Pipeline, music: np.ndarray) -> None:
    before = pipe.extend(music, RATE, before=0.5, settings=FAST)
    assert before.audio is not None and before.audio.shape == (2, music.shape[1] + 22050)
    assert np.abs(before.audio[:, 22050:] - music).max() < 1e-6
    assert before.audio[:, :22050].std() > 1e-3
    after = pipe.extend(music, RATE, after=0.5, settings=FAST)
    assert after.audio is not None and after.audio.shape == (2, music.shape[1] + 22050)
    assert np.array_equal(after.audio[:, : music.shape[1] - 512], music[:, : music.shape[1] - 512])  # the whole input, unaligned
    assert after.manifest["command"] == "extend"


def test_loop_plays_seamlessly_on_repeat(pipe: Pipeline, music: np.ndarray) -> None:
    result = pipe.loop(music, RATE, 1.5, settings=FAST)
    assert result.audio is not None and result.audio.shape == (2, round(1.5 * RATE))
    plain = pipe.continue_(music, RATE, 1.5, settings=FAST).audio
    assert plain is not None
    wrap = result.manifest["wrap_region"]
    keep = slice(round(wrap["start_until"] * RATE) + 1, round(wrap["end_from"] * RATE) - 1)
    assert keep.start < keep.stop
    assert np.abs(result.audio[:, keep] - plain[:, keep]).max() < 1e-6  # away from the wrap it is the continuation
    assert not np.allclose(result.audio[:, : keep.start], plain[:, : keep.start], atol=1e-3)


def test_morph_walks_between_two_recordings(pipe: Pipeline, music: np.ndarray) -> None:
    other = np.concatenate([synth_music(2.0, seed=7), synth_music(2.0, seed=8)], axis=0)
    result = pipe.morph(music, other, RATE, 3, settings=FAST)
    assert result.audio is not None and result.audio.shape == (2, 3 * 128 * 128)
    assert np.isfinite(result.audio).all() and result.audio.std() > 1e-3
    assert set(result.manifest["inversion_error"]) == {"A", "B"} and result.seams == [128 * 128, 2 * 128 * 128]


def test_more_inversion_steps_give_a_smaller_round_trip_error(pipe: Pipeline, music: np.ndarray) -> None:
    errors = [pipe.inversion_error(music, RATE, steps, window_multiplier=1) for steps in (2, 8, 32)]
    assert errors[0] > errors[1] > errors[2]


@pytest.mark.parametrize(
    ("start", "end", "fade", "message"),
    [
        (-0.1, 0.5, None, "outside the file"),
        (1.0, 2.5, None, "outside the file"),
        (0.5, 0.5, None, "must come after"),
        (0.5, 0.501, None, "shorter than one coarsest latent frame"),
        (0.5, 0.6, 0.2, "longer than the region"),
        (0.5, 0.6, 0.06, "longer than the region"),  # the two fades lie inside the region
    ],
)
def test_bad_regions_are_refused(pipe: Pipeline, music: np.ndarray, start: float, end: float, fade: float | None, message: str) -> None:
    with pytest.raises(JbdiffError, match=message):
        pipe.inpaint(music, RATE, start, end, fade=fade, settings=FAST)


def test_short_files_are_refused_for_loop_and_morph(pipe: Pipeline) -> None:
    short = synth_music(0.1, seed=1)
    with pytest.raises(JbdiffError, match="shorter than one window"):
        pipe.loop(short, RATE, 1.0, settings=FAST)
    with pytest.raises(JbdiffError, match="shorter than one pass"):
        pipe.morph(short, short, RATE, 2, settings=FAST)
