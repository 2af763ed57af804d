"""Continuation and remix evaluation, on a stand-in pipeline that returns real audio.

The stand-in replaces only the pipeline (its generator and its codec): every metric and
baseline runs for real.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from jbdiff.core.audio import SAMPLE_RATE, save_audio
from jbdiff.core.errors import JbdiffError
from jbdiff.core.synth import synth_music
from jbdiff.evaluate_generation import (
    CONDITION_LEGEND,
    CONDITIONS,
    LADDER,
    METRICS,
    evaluate_continuation,
    evaluate_remix,
    pink_noise,
    report_markdown,
    write_report,
)
from jbdiff.metrics.music import PITCH_CLASSES
from jbdiff.sampling_settings import SamplingSettings

SR = SAMPLE_RATE
WINDOW = 2 * SR  # the stand-in's window length: a seam every 2 s


pytestmark = pytest.mark.usefixtures("one_thread")


class MuLawCodec:
    """Test double for ``levels.codec.Codec``: mu-law quantisation, 8-bit at level 0, 6-bit at level 1, 5-bit at level 2."""

    device, dtype = torch.device("cpu"), torch.float32

    def encode(self, audio: torch.Tensor, levels: list[int]) -> dict[int, torch.Tensor]:
        assert levels == [0] and audio.dim() == 3 and audio.shape[1] == 1
        mu = 255.0
        return {0: torch.round(torch.sign(audio) * torch.log1p(mu * audio.abs().clamp(max=1)) / math.log1p(mu) * 127)}

    def decode(self, level: int, latents: torch.Tensor) -> torch.Tensor:
        assert level == 0
        mu = 255.0
        return torch.sign(latents) * torch.expm1(latents.abs() / 127 * math.log1p(mu)) / mu

    def reconstruct(self, audio: torch.Tensor, level: int) -> torch.Tensor:
        codes = self.encode(audio, [0])[0]
        step = (1, 4, 8)[level]
        return self.decode(0, torch.round(codes / step) * step)


class StandInPipeline:
    """Test double for :class:`jbdiff.pipeline.Pipeline` built from the tracks it is evaluated on.

    ``continue_`` returns, in stereo, the seed and, cut on, the real audio that follows it in its
    track, a seed-dependent number of samples later, with every other window 20 dB down (a level
    jump at each seam); its stage ladder has that audio in mono before the level jumps
    (``level2``) and the output itself (``dance``). ``remix`` mixes pink noise into the input
    in proportion to strength.
    """

    def __init__(self, tracks: list[np.ndarray]) -> None:
        self.tracks, self.codec, self.settings = tracks, MuLawCodec(), SamplingSettings(crossfade_samples=2048)

    def _follows(self, seed: np.ndarray) -> tuple[np.ndarray, int]:
        for track in self.tracks:
            for start in np.flatnonzero(track == seed[0, 0]):
                if np.array_equal(track[start : start + seed.shape[-1]], seed[0]):
                    return track, int(start) + seed.shape[-1]
        raise AssertionError("the seed was not cut from a known track")

    def continue_(
        self, audio: np.ndarray, sample_rate: int, seconds: float, *, seed: int, settings: Any, keep_stages: bool, include_seed: bool
    ) -> Any:
        assert sample_rate == SR and settings is None and keep_stages and include_seed
        track, end = self._follows(audio)
        begin = end + int(np.random.default_rng(seed).integers(0, SR // 4))
        clean = track[begin : begin + round(seconds * SR)].copy()
        out = clean.copy()
        for start in range(WINDOW, len(out), 2 * WINDOW):
            out[start : start + WINDOW] *= 0.1
        stereo = np.stack([out, out])
        stages = {"level2": clean[None], "dance": stereo}
        lead = audio.shape[-1]  # the seed comes first, cut on
        seams = [lead] + [lead + s for s in range(WINDOW, len(out), WINDOW)]
        return SimpleNamespace(audio=np.concatenate([np.repeat(audio, 2, axis=0), stereo], axis=-1), sample_rate=SR, seams=seams, stages=stages)

    def remix(self, audio: np.ndarray, sample_rate: int, strength: float, *, seed: int, settings: Any) -> Any:
        rms = float(np.sqrt(np.mean(audio**2)))
        out = (1 - strength) * audio + strength * pink_noise(audio.shape[-1], seed, rms)
        return SimpleNamespace(audio=out, sample_rate=sample_rate, seams=[WINDOW])


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[np.ndarray]]:
    """A 16.1 s track (its seed joins off the beat) twice under two names, and a track too short."""
    folder = tmp_path_factory.mktemp("tracks")
    track = synth_music(16.1, seed=0)[0]
    save_audio(folder / "track0.wav", track)
    save_audio(folder / "track0_copy.wav", track)
    save_audio(folder / "very_short.wav", synth_music(4.0, seed=9))
    return folder, [track]


@pytest.fixture(scope="module")
def continuation(data: tuple[Path, list[np.ndarray]]) -> dict[str, Any]:
    """Both copies evaluated: the same clips, generated with seeds 0 and 1."""
    folder, tracks = data
    pipe = StandInPipeline(tracks)
    return evaluate_continuation(folder, pipeline=pipe, seed_seconds=2.0, seconds=3.0, seed=0, progress=False)


def test_continuation_report_scores_each_condition(continuation: dict[str, Any]) -> None:
    summary = continuation["summary"]
    rows = ["generated", "after_level2", "after_dance", *CONDITIONS[1:]]
    assert list(summary) == rows == continuation["conditions"] and continuation["notes"] == []
    assert [Path(f["path"]).name for f in continuation["files"]] == ["track0.wav", "track0_copy.wav"]
    assert [Path(s["path"]).name for s in continuation["skipped"]] == ["very_short.wav"]
    assert "5.00 s are needed" in continuation["skipped"][0]["reason"]
    assert set(summary["generated"]) <= set(METRICS)

    real, generated, noise = summary["real"], summary["generated"], summary["pink_noise"]
    # the real continuation against itself
    assert real["fd_real"] == pytest.approx(0.0, abs=1e-6)
    assert real["tag_kl_real"] == pytest.approx(0.0, abs=1e-9)
    assert real["chroma_real"] == pytest.approx(1.0) and real["key_real"] == 1.0
    assert real["seam_windows"] is None  # no window seams in real audio
    # shifted real music is far closer to the real continuation and the seed than pink noise
    assert noise["fd_real"] > 5 * generated["fd_real"]
    assert noise["fd_seed"] > generated["fd_seed"]
    assert noise["tag_kl_seed"] > 5 * generated["tag_kl_seed"]
    # music into noise is a jump at the join; the real audio flows on
    assert noise["seam_join"] > 2 * real["seam_join"]
    # the seed played again from its start: a click where it is cut on, far less where crossfaded as delivered
    looped = summary["looped_seed"]
    assert looped["seam_cut"] > 1.5 * looped["seam_join"] and real["seam_cut"] == pytest.approx(real["seam_join"], rel=0.3)
    # the output's join is measured as delivered: the stand-in cuts its continuation on, with no crossfade
    assert generated["seam_join"] > 1.5 * summary["after_level2"]["seam_join"]
    # the stand-in's level jumps at its window seams
    assert generated["seam_windows"] > 2.0
    assert continuation["files"][0]["generated_seams"] == [WINDOW]
    # pink noise at the real RMS; nothing silent or clipped
    assert noise["rms_db"] == pytest.approx(real["rms_db"], abs=0.01)
    for name in CONDITIONS:
        assert summary[name]["silent_fraction"] == 0.0
        assert summary[name]["clipped_fraction"] == 0.0
    # 8-bit mu-law keeps the music: its reconstruction is close to the real continuation
    assert summary["codec"]["fd_real"] < generated["fd_real"] < noise["fd_real"]
    assert summary["codec"]["tag_kl_real"] < 0.01
    # the coarser level-2 ceiling loses more than level 0, and still keeps the notes
    assert summary["codec"]["fd_real"] < summary["codec_level1"]["fd_real"] < summary["codec_level2"]["fd_real"] < noise["fd_real"]
    assert summary["codec_level2"]["pitch_class_real"] > 0.9
    # the ladder: the last stage is the output; level 2 has no level jumps yet
    assert summary["after_dance"] == generated
    assert summary["after_level2"]["seam_windows"] < 2.0 < 2 * 2.0 < generated["seam_windows"]
    assert summary["after_level2"]["rms_db"] == pytest.approx(real["rms_db"], abs=0.1)
    assert summary["after_level2"]["rms_db"] > generated["rms_db"] + 1


def test_note_metrics_tell_music_from_noise(continuation: dict[str, Any]) -> None:
    summary = continuation["summary"]
    real, noise, generated = summary["real"], summary["pink_noise"], summary["generated"]
    assert real["pitch_class_real"] == pytest.approx(1.0)
    assert generated["pitch_class_real"] > 0.8 and generated["pitch_class_seed"] > 0.5
    assert noise["pitch_class_real"] < 0.5
    assert real["tonalness"] > 0.3 and noise["tonalness"] < 0.1
    assert real["note_density"] > 1.0 > noise["note_density"]
    for file in continuation["files"]:
        assert set(file["conditions"]["generated"]) >= {"pitch_class_seed", "pitch_class_real", "note_density", "tonalness"}
        assert file["seed_pitch_classes"] and file["conditions"]["real"]["pitch_classes"]
        assert set(file["conditions"]["real"]["pitch_classes"].split()) <= set(PITCH_CLASSES)


def test_continuation_is_reproducible_per_seed(
    continuation: dict[str, Any], data: tuple[Path, list[np.ndarray]]
) -> None:
    first, second = (file["conditions"] for file in continuation["files"])
    assert second["real"] == first["real"] and second["codec"] == first["codec"]
    assert second["generated"] != first["generated"]  # seed 1 instead of 0
    assert second["pink_noise"]["tag_kl_seed"] != first["pink_noise"]["tag_kl_seed"]
    # seed 1 on the first file reproduces what seed 0 + 1 gave the second
    folder, tracks = data
    pipe = StandInPipeline(tracks)
    again = evaluate_continuation(folder, pipeline=pipe, seed_seconds=2.0, seconds=3.0, seed=1, max_files=1, progress=False)
    assert again["files"][0]["seed"] == continuation["files"][1]["seed"] == 1
    assert again["files"][0]["conditions"] == second


def test_remix_curve_moves_away_from_the_input(data: tuple[Path, list[np.ndarray]]) -> None:
    folder, tracks = data
    pipe = StandInPipeline(tracks)
    report = evaluate_remix(folder, pipeline=pipe, strengths=(0.3, 1.0), seconds=3.0, max_files=1, progress=False)
    curve = report["summary"]
    assert list(curve) == report["conditions"] == ["input", "0.3", "1"]
    assert curve["input"]["fd_input"] == pytest.approx(0.0, abs=1e-6)
    assert curve["input"]["chroma_input"] == pytest.approx(1.0)
    assert curve["input"]["seam_windows"] is None
    assert 0.0 < curve["0.3"]["fd_input"] < curve["1"]["fd_input"]
    assert curve["0.3"]["tag_kl_input"] < curve["1"]["tag_kl_input"]
    assert curve["0.3"]["chroma_input"] > curve["1"]["chroma_input"]

    written = write_report(report, folder / "remix")
    assert sorted(p.name for p in written) == sorted(["remix.md", "remix.json"] + [f"remix_{m}.png" for m in curve["input"]])
    assert json.loads((folder / "remix.json").read_text()) == report
    assert (folder / "remix_fd_input.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_writer_outputs_table_json_and_plots(continuation: dict[str, Any], tmp_path: Path) -> None:
    written = write_report(continuation, tmp_path / "eval")
    metrics = list(continuation["summary"]["generated"])
    assert {p.name for p in written} == {"eval.md", "eval.json"} | {f"eval_{m}.png" for m in metrics}
    for path in written:
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    assert json.loads((tmp_path / "eval.json").read_text()) == continuation
    table = report_markdown(continuation)
    assert (tmp_path / "eval.md").read_text() == table
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert [row.split("|")[1].strip() for row in rows] == ["condition", *continuation["conditions"]]
    assert set(continuation["conditions"]) <= set(CONDITION_LEGEND) and set(LADDER) <= set(CONDITION_LEGEND)
    assert f"- `codec_level2`: {CONDITION_LEGEND['codec_level2']}" in table
    assert "n/a" in rows[4]  # the real audio has no window seams
    assert f"{continuation['summary']['generated']['fd_real']:.4g}" in rows[1]
    assert "skipped" in table and "very_short.wav" in table
    with pytest.raises(JbdiffError, match="does not exist"):
        write_report(continuation, tmp_path / "missing" / "eval")


def test_bad_arguments_are_one_sentence(tmp_path: Path) -> None:
    pipe = StandInPipeline([])
    with pytest.raises(JbdiffError, match="contains no audio files"):
        evaluate_continuation(tmp_path, pipeline=pipe, progress=False)
    with pytest.raises(JbdiffError, match="strengths"):
        evaluate_remix(tmp_path, pipeline=pipe, strengths=(0.5, 1.5), progress=False)
    with pytest.raises(JbdiffError, match="different numbers"):
        evaluate_remix(tmp_path, pipeline=pipe, strengths=(0.5, 0.50), progress=False)
    with pytest.raises(JbdiffError, match="seconds"):
        evaluate_continuation(tmp_path, pipeline=pipe, seconds=0.0, progress=False)
    save_audio(tmp_path / "short.wav", synth_music(1.0))
    with pytest.raises(JbdiffError, match=r"none of its 1 audio files could be evaluated \(is 1.00 s long"):
        evaluate_remix(tmp_path, pipeline=pipe, seconds=2.0, progress=False)


def test_without_basic_pitch_the_note_metrics_are_left_out_in_one_sentence(
    data: tuple[Path, list[np.ndarray]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from jbdiff.metrics import pitch

    monkeypatch.setattr(pitch, "_MODEL_FILE", ("saved_models", "absent.onnx"))
    folder, tracks = data
    report = evaluate_remix(folder, pipeline=StandInPipeline(tracks), strengths=(0.5,), seconds=3.0, max_files=1, progress=False)
    assert report["notes"] == [
        (
            "note metrics left out: note transcription needs basic-pitch's ONNX model and onnxruntime: "
            "pip install onnxruntime && pip install --no-deps basic-pitch==0.4.0"
        )
    ]
    assert "pitch_class_input" not in report["summary"]["0.5"] and "tonalness" not in report["summary"]["0.5"]
    assert "- note metrics left out: note transcription needs" in report_markdown(report)


def test_pink_noise_is_seeded_with_a_1_over_f_spectrum() -> None:
    noise = pink_noise(2**18, seed=3, rms=0.2)[0]
    assert np.sqrt(np.mean(noise**2)) == pytest.approx(0.2, rel=1e-4)
    np.testing.assert_array_equal(noise, pink_noise(2**18, seed=3, rms=0.2)[0])
    assert not np.array_equal(noise, pink_noise(2**18, seed=4, rms=0.2)[0])
    power = np.abs(np.fft.rfft(noise)) ** 2
    freqs = np.fft.rfftfreq(len(noise))
    band = (freqs > 1e-3) & (freqs < 0.4)
    slope = np.polyfit(np.log(freqs[band]), np.log(power[band]), 1)[0]
    assert slope == pytest.approx(-1.0, abs=0.05)


def test_end_to_end_with_the_real_pipeline(tiny_bundle: Path, tmp_path: Path) -> None:
    """The tiny random-weight bundle, level 2 only with one step: wiring, not quality."""
    from jbdiff.pipeline import Pipeline
    from jbdiff.sampling_settings import SamplingSettings, StageSettings

    save_audio(tmp_path / "song.wav", synth_music(4.5, seed=3))
    pipe = Pipeline.from_pretrained(tiny_bundle, device="cpu")
    settings = SamplingSettings(levels=("level2",), level2=StageSettings(1), window_multiplier=1)
    report = evaluate_continuation(
        tmp_path, pipeline=pipe, settings=settings, seed_seconds=1.0, seconds=1.5, progress=False
    )
    assert report["options"]["sampling"]["levels"] == ["level2"]
    assert "after_level2" not in report["summary"]  # one stage: no ladder
    assert report["summary"]["codec_level2"]["fd_real"] is not None
    file = report["files"][0]
    assert file["sampling_s"]["wall"] > 0 and set(file["sampling_s"]) == {"wall", "level2", "codec"}
    assert file["generated_seams"] and all(0 < s < 1.5 * SR for s in file["generated_seams"])
    generated, real = report["summary"]["generated"], report["summary"]["real"]
    assert real["fd_real"] == pytest.approx(0.0, abs=1e-6)
    assert generated["fd_real"] > 0 and generated["seam_windows"] is not None
    assert report["summary"]["codec"]["fd_real"] is not None  # the bundle's codec reconstructed the clip
    remix = evaluate_remix(tmp_path, pipeline=pipe, settings=settings, strengths=(0.5,), seconds=1.5, progress=False)
    assert remix["summary"]["0.5"]["fd_input"] > 0
    assert 0.0 <= remix["summary"]["0.5"]["silent_fraction"] <= 1.0
