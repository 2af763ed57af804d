"""The sampling pipeline on a tiny random-weight bundle: continue, remix, generate, streaming."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from jbdiff.core.audio import load_audio
from jbdiff.core.errors import JbdiffError
from jbdiff.core.synth import synth_music
from jbdiff.metrics.codec import si_sdr
from jbdiff.pipeline import Pipeline, StageProgress
from jbdiff.sampling_settings import StageSettings
from jbdiff.window_sampler import WindowSampler
from tests.conftest import FAST

CHUNK = 128 * 128  # one level-2 window of the tiny configs, in samples


@pytest.fixture(scope="module")
def pipe(tiny_bundle: Path) -> Pipeline:
    torch.manual_seed(0)
    return Pipeline.from_pretrained(tiny_bundle, device="cpu")


@pytest.fixture(scope="module")
def seed_audio() -> np.ndarray:
    return np.concatenate([synth_music(1.0, seed=1), synth_music(1.0, seed=2)], axis=0)  # stereo


def test_continuation_has_the_asked_length_and_is_reproducible(pipe: Pipeline, seed_audio: np.ndarray) -> None:
    first = pipe.continue_(seed_audio, 44100, 1.0, settings=FAST)
    again = pipe.continue_(seed_audio, 44100, 1.0, settings=FAST)
    other = pipe.continue_(seed_audio, 44100, 1.0, settings=FAST, seed=5)
    assert first.audio is not None and again.audio is not None and other.audio is not None
    assert first.audio.shape == (2, 44100) and first.sample_rate == 44100
    assert np.isfinite(first.audio).all() and first.audio.std() > 1e-3
    assert np.array_equal(first.audio, again.audio)
    assert not np.allclose(first.audio, other.audio)
    assert first.seams == [CHUNK, 2 * CHUNK]
    manifest = first.manifest
    assert manifest["passes"] == 3 and manifest["channels"] == 2
    assert set(manifest["fingerprints"]) == {"codec", "level2", "level1", "level0", "dance"}
    assert all(manifest["timings_s"][stage] > 0 for stage in ("level2", "level1", "level0", "dance", "codec"))


def test_the_seed_is_kept_verbatim_before_the_crossfade(pipe: Pipeline, seed_audio: np.ndarray) -> None:
    result = pipe.continue_(seed_audio, 44100, 0.5, settings=FAST, include_seed=True)
    assert result.audio is not None
    lead = seed_audio.shape[1]  # the whole seed, though only its last whole latent frames are the context
    assert result.audio.shape == (2, lead + 22050)
    assert np.array_equal(result.audio[:, : lead - 512], seed_audio[:, : lead - 512])
    assert result.seams[0] == lead


def test_stage_ladder_taps_every_stage_of_the_same_run(pipe: Pipeline, seed_audio: np.ndarray) -> None:
    """Each stage's audio of one run; the tap leaves the output as it is."""
    plain = pipe.continue_(seed_audio, 44100, 1.0, settings=FAST)
    tapped = pipe.continue_(seed_audio, 44100, 1.0, settings=FAST, keep_stages=True)
    assert plain.stages == {} and plain.audio is not None and tapped.audio is not None
    # equal up to float rounding: the backend's kernels may round differently from run to run
    np.testing.assert_allclose(tapped.audio, plain.audio, rtol=0, atol=1e-5)
    assert list(tapped.stages) == ["level2", "level1", "level0", "dance"]
    assert [a.shape for a in tapped.stages.values()] == [(1, 44100)] * 3 + [(2, 44100)]
    assert np.array_equal(tapped.stages["dance"], tapped.audio)
    # each level's audio is the codec's decoding of that level's latents, so the levels differ
    level2, level1, level0 = (tapped.stages[f"level{k}"][0] for k in (2, 1, 0))
    assert min(np.abs(level2 - level1).max(), np.abs(level1 - level0).max()) > 1e-3
    # without the Dance stage the last level is the (mono) output itself, crossfaded alike
    mono = pipe.continue_(seed_audio, 44100, 1.0, settings=FAST.replace(levels=("level2", "level1")), keep_stages=True)
    assert list(mono.stages) == ["level2", "level1"] and np.array_equal(mono.stages["level1"], mono.audio)


def test_batch_takes_differ_and_a_resampled_seed_works(pipe: Pipeline, seed_audio: np.ndarray) -> None:
    seed_22k = seed_audio[:, ::2]
    result = pipe.continue_(seed_22k, 22050, 0.4, settings=FAST.replace(batch=2))
    assert len(result.takes) == 2 and all(t.shape == (2, 17640) for t in result.takes)
    assert not np.allclose(result.takes[0], result.takes[1])


@pytest.mark.parametrize("levels", [("level2",), ("level2", "level1"), ("level2", "level0", "dance")])
def test_stopping_early_or_skipping_levels_is_never_silent(pipe: Pipeline, seed_audio: np.ndarray, levels: tuple[str, ...]) -> None:
    result = pipe.continue_(seed_audio, 44100, 0.5, settings=FAST.replace(levels=levels))
    assert result.audio is not None
    assert result.audio.shape == ((2 if "dance" in levels else 1), 22050)
    assert result.audio.std() > 1e-3


def test_generate_from_nothing(pipe: Pipeline) -> None:
    result = pipe.generate(0.6, settings=FAST.replace(noise_style="walk"))
    assert result.audio is not None and result.audio.shape == (2, 26460) and result.audio.std() > 1e-3


def test_remix_at_strength_zero_is_the_codec_reconstruction(pipe: Pipeline, seed_audio: np.ndarray) -> None:
    mono = seed_audio[:1, :30000]
    settings = FAST.replace(levels=("level2",))
    kept = pipe.remix(mono, 44100, 0.0, settings=settings)
    assert kept.audio is not None and kept.audio.shape == (1, 30000)
    codec = pipe.codec
    padded = torch.nn.functional.pad(torch.from_numpy(mono)[None], (0, 32768 - 30000))
    reference = codec.decode(2, codec.encode(padded, [2])[2])[0, :, :30000]
    away_from_seam = np.r_[0 : CHUNK - 512, CHUNK : 30000]  # the crossfade blends the 512 samples before a seam
    assert np.abs(kept.audio[0, away_from_seam] - reference[0, away_from_seam].numpy()).max() < 1e-5
    assert si_sdr(reference, torch.from_numpy(kept.audio)) > 15


@pytest.mark.parametrize("level", [2, 0])
def test_remix_strength_moves_latents_away_from_the_input(pipe: Pipeline, seed_audio: np.ndarray, level: int) -> None:
    codec = pipe.codec
    source = torch.from_numpy(seed_audio[:1, :CHUNK])[None]
    init = codec.encode(source, [level])[level]
    distances = []
    for strength in (0.0, 0.5, 1.0):
        sampler = WindowSampler(pipe.stages, FAST.replace(levels=(f"level{level}",)), device=torch.device("cpu"), dtype=torch.float32)
        sampler.next_pass(init, strength)
        distances.append((sampler.history[level][..., -init.shape[-1] :] - init).abs().mean().item())
    assert distances[0] == 0.0 and distances[0] < distances[1] < distances[2]


def test_streamed_output_with_spectrogram_and_manifest(pipe: Pipeline, seed_audio: np.ndarray, tmp_path: Path) -> None:
    out = tmp_path / "take.wav"
    result = pipe.continue_(seed_audio, 44100, 0.5, settings=FAST, out=out)
    assert result.audio is None and result.paths == [out]
    written = load_audio(out, channels=None)
    in_memory = pipe.continue_(seed_audio, 44100, 0.5, settings=FAST).audio
    assert written.shape == (2, 22050) and np.array_equal(written, in_memory)  # float32 WAV: exact
    assert out.with_suffix(".png").stat().st_size > 1000
    manifest = json.loads(out.with_suffix(".json").read_text())
    assert manifest["command"] == "continue" and manifest["settings"]["level2"]["steps"] == 3
    assert manifest["outputs"] == [str(out)]


def test_an_interrupted_run_leaves_no_output(pipe: Pipeline, seed_audio: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from jbdiff import window_sampler

    calls = {"n": 0}
    real = window_sampler.WindowSampler.next_pass

    def interrupted(self: window_sampler.WindowSampler, *args: object) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(window_sampler.WindowSampler, "next_pass", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pipe.continue_(seed_audio, 44100, 1.0, settings=FAST, out=tmp_path / "o.wav")
    assert list(tmp_path.iterdir()) == []


def test_the_progress_callback_counts_every_stage_and_can_cancel(pipe: Pipeline, seed_audio: np.ndarray, tmp_path: Path) -> None:
    seen: list[tuple[StageProgress, ...]] = []
    pipe.remix(seed_audio, 44100, 0.5, settings=FAST.replace(batch=2), progress=seen.append)
    first, last = seen[0], seen[-1]
    passes = math.ceil(seed_audio.shape[1] / CHUNK)
    assert [s.stage for s in last] == ["level2", "level1", "level0", "dance"]
    per_pass = [FAST.level2.evaluations(0.5), *(FAST.stage(name).evaluations() for name in ("level1", "level0", "dance"))]
    assert [s.total for s in last] == [passes * n for n in per_pass]  # the remix skips half of level 2's steps
    assert all(s.done == 0 and s.remaining is None for s in first) and all(s.done == s.total and s.remaining == 0 for s in last)
    assert len(seen) == 1 + sum(s.total for s in last)

    class Stop(Exception):
        pass

    def cancel(stages: tuple[StageProgress, ...]) -> None:
        if sum(s.done for s in stages) == 5:
            raise Stop

    with pytest.raises(Stop):
        pipe.continue_(seed_audio, 44100, 1.0, settings=FAST.replace(batch=2), out=tmp_path / "o.flac", progress=cancel)
    assert list(tmp_path.iterdir()) == []  # no take, no staging file, no png, no manifest


def test_bad_requests_are_refused(pipe: Pipeline, seed_audio: np.ndarray, tmp_path: Path) -> None:
    with pytest.raises(JbdiffError, match="shorter than one latent frame"):
        pipe.continue_(seed_audio[:, :100], 44100, 1.0, settings=FAST)
    with pytest.raises(JbdiffError, match="positive"):
        pipe.continue_(seed_audio, 44100, 0.0, settings=FAST)
    with pytest.raises(JbdiffError, match=r"\[0, 1\]"):
        pipe.remix(seed_audio, 44100, 1.5, settings=FAST)
    with pytest.raises(JbdiffError, match="needs level 2"):
        pipe.continue_(seed_audio, 44100, 1.0, settings=FAST.replace(levels=("level1", "level0")))
    with pytest.raises(JbdiffError, match="unknown level"):
        FAST.replace(levels=("level3",))
    with pytest.raises(JbdiffError, match="unknown sampler"):
        StageSettings(10, sampler="euler")
    with pytest.raises(JbdiffError, match="not found"):
        Pipeline.from_pretrained(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(JbdiffError, match="not a model bundle"):
        Pipeline.from_pretrained(tmp_path / "empty")


def test_match_loudness_scales_the_continuation_to_the_seed(pipe: Pipeline, seed_audio: np.ndarray) -> None:
    plain = pipe.continue_(seed_audio * 2, 44100, 1.0, settings=FAST)
    assert "loudness_gain_db" not in plain.manifest
    for level in (2.0, 3.0):  # the random-weight output is 6-10 dB louder than these seeds
        seed = seed_audio * level
        matched = pipe.continue_(seed, 44100, 1.0, settings=FAST.replace(match_loudness=True))
        assert matched.audio is not None
        (gain_db,) = matched.manifest["loudness_gain_db"]
        seed_db = 20 * math.log10(np.sqrt(np.mean(seed**2)))  # the whole continuation (1 s) set the gain
        assert 20 * math.log10(np.sqrt(np.mean(matched.audio**2))) == pytest.approx(seed_db, abs=0.5)
        if level == 2.0:  # the same run as `plain`, scaled: nothing else changes
            assert plain.audio is not None
            assert np.allclose(matched.audio, np.clip(plain.audio * 10 ** (gain_db / 20), -1, 1), atol=1e-3)


def test_match_tone_gives_the_continuation_the_seeds_spectrum(pipe: Pipeline, seed_audio: np.ndarray) -> None:
    from jbdiff.core.tone import band_powers

    def shape_db(audio: np.ndarray) -> torch.Tensor:
        power = band_powers(torch.from_numpy(audio), 44100)
        return 10 * torch.log10(power / power.sum())

    plain = pipe.continue_(seed_audio, 44100, 1.0, settings=FAST)
    toned = pipe.continue_(seed_audio, 44100, 1.0, settings=FAST.replace(match_tone=True))
    assert plain.audio is not None and toned.audio is not None
    assert "tone_gains_db" not in plain.manifest and len(toned.manifest["tone_gains_db"]) == 1
    seed = shape_db(seed_audio)
    before, after = (shape_db(plain.audio) - seed).abs().mean(), (shape_db(toned.audio) - seed).abs().mean()
    assert after < before - 3.0, (before, after)
    assert 10 * math.log10(np.mean(toned.audio**2) / np.mean(plain.audio**2)) == pytest.approx(0.0, abs=0.5)


def test_loudness_gain_is_bounded_by_its_limit_and_the_peak() -> None:
    from jbdiff.core.audio import loudness_gain

    tone = torch.sin(torch.linspace(0, 200 * math.pi, 8000))[None, None] * 0.1  # RMS 0.0707, peak 0.1
    both = torch.cat([tone, tone * 0.01])
    gains = loudness_gain(both, target_rms=0.1 / math.sqrt(2) * 2).flatten().tolist()
    assert gains[0] == pytest.approx(2.0, rel=1e-3)  # 6 dB up
    assert gains[1] == pytest.approx(10 ** (12 / 20), rel=1e-3)  # 46 dB asked for, 12 allowed
    assert loudness_gain(tone * 5, target_rms=5.0).item() == pytest.approx(0.999 / 0.5, rel=1e-3)  # stops at the peak


def test_seed_echo_starts_every_pass_from_the_looped_seed(
    pipe: Pipeline, seed_audio: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = FAST.replace(levels=("level2",))
    passes: list[tuple[torch.Tensor | None, float]] = []
    next_pass = WindowSampler.next_pass

    def recorded(self: WindowSampler, init: torch.Tensor | None = None, strength: float = 1.0) -> torch.Tensor:
        passes.append((init, strength))
        return next_pass(self, init, strength)

    monkeypatch.setattr(WindowSampler, "next_pass", recorded)
    pipe.continue_(seed_audio, 44100, 1.0, settings=settings)
    assert [init for init, _ in passes] == [None] * 3  # from noise by default
    passes.clear()
    pipe.continue_(seed_audio, 44100, 1.0, settings=settings.replace(seed_echo=0.3))
    seed = seed_audio[:, seed_audio.shape[1] % 128 :].mean(axis=0)  # mono, ending on the latent grid
    margin = WindowSampler(pipe.stages, settings, device=torch.device("cpu"), dtype=torch.float32).encode_margin[2]
    looped = torch.from_numpy(np.tile(seed, 3).astype(np.float32))[None, None]  # the seed (1 s) is all of its last 10 s
    assert len(passes) == 3
    for index, (init, strength) in enumerate(passes):
        start = index * CHUNK
        expected = pipe.codec.encode(looped[..., max(0, start - margin) : start + CHUNK], [2])[2][..., -CHUNK // 128 :]
        assert strength == pytest.approx(0.7) and init is not None
        torch.testing.assert_close(init, expected)
    with pytest.raises(JbdiffError, match="seed echo"):
        settings.replace(seed_echo=1.0)
