"""Tests for jbdiff.evaluate_codec on the tiny random-weight codec and synthetic music."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import soundfile as sf
import torch

from jbdiff.core.errors import JbdiffError
from jbdiff.core.synth import synth_music
from jbdiff.evaluate_codec import (
    CodecReport,
    _level_metrics,
    evaluate_codec,
)
from jbdiff.metrics.codec import (
    codebook_perplexity,
    codebook_usage,
    histogram_perplexity,
    histogram_usage,
)
from levels.codec import Codec

SR = 44100
SECONDS = (1.0, 0.5, 0.75)


def _write_music(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed, seconds in enumerate(SECONDS):
        path = folder / f"song{seed}.wav"
        sf.write(path, synth_music(seconds, SR, seed)[0], SR)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def music_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("music")
    _write_music(folder)
    return folder


@pytest.fixture(scope="module")
def report(tiny_codec: Codec, music_dir: Path) -> CodecReport:
    return evaluate_codec(tiny_codec, music_dir, progress=False)


def test_report_has_every_level_with_finite_values(report: CodecReport, tiny_codec: Codec) -> None:
    assert [level.level for level in report.levels] == [0, 1, 2]
    assert tuple(level.hop for level in report.levels) == tiny_codec.hops
    for level in report.levels:
        assert all(math.isfinite(value) for value in (level.stft, level.mel, level.si_sdr, level.perplexity))
        assert level.stft > 0 and level.mel > 0
        assert 0 < level.usage <= 1
        assert 1 <= level.perplexity <= tiny_codec.cfg.l_bins
    assert report.codec_fingerprint == tiny_codec.fingerprint()
    assert report.codebook_size == tiny_codec.cfg.l_bins
    assert report.skipped == ()


def test_report_means_and_seconds(report: CodecReport) -> None:
    assert [file.seconds for file in report.files] == pytest.approx(list(SECONDS))
    assert report.seconds_evaluated == pytest.approx(sum(SECONDS))
    for index, level in enumerate(report.levels):
        for name in ("stft", "mel", "si_sdr"):
            values = [getattr(file.levels[index], name) for file in report.files]
            assert getattr(level, name) == pytest.approx(sum(values) / len(values))


def test_seconds_and_max_files_limit_the_evaluation(tiny_codec: Codec, music_dir: Path) -> None:
    limited = evaluate_codec(tiny_codec, music_dir, seconds=0.25, max_files=2, progress=False)
    assert [Path(file.path).name for file in limited.files] == ["song0.wav", "song1.wav"]
    assert [file.seconds for file in limited.files] == pytest.approx([0.25, 0.25])
    assert limited.seconds_limit == 0.25


def test_identical_audio_scores_perfectly() -> None:
    reference = torch.from_numpy(synth_music(1.0, SR))[None]
    decoded = torch.cat([reference, torch.ones(1, 1, 128)], dim=-1)  # longer, as decoded audio is
    metrics = _level_metrics(reference, decoded, SR)
    assert metrics.stft == pytest.approx(0.0, abs=1e-6)
    assert metrics.mel == pytest.approx(0.0, abs=1e-6)
    assert metrics.si_sdr > 100.0


def test_codebook_stats_match_metrics_on_all_codes() -> None:
    generator = torch.Generator().manual_seed(0)
    bins = 64
    files = [torch.randint(0, 40, (1, n), generator=generator) for n in (300, 50, 7)]
    counts = sum(torch.bincount(codes.reshape(-1), minlength=bins) for codes in files)
    usage, perplexity = histogram_usage(counts), histogram_perplexity(counts)
    every = torch.cat([codes.reshape(-1) for codes in files])
    assert usage == pytest.approx(codebook_usage(every, bins))
    assert perplexity == pytest.approx(codebook_perplexity(every, bins))


def test_unreadable_and_too_short_files_are_skipped(tiny_codec: Codec, tmp_path: Path) -> None:
    _write_music(tmp_path)
    (tmp_path / "broken.wav").write_text("not audio")
    (tmp_path / "notes.txt").write_text("not listed: not an audio extension")
    sf.write(tmp_path / "blip.wav", synth_music(0.01, SR)[0], SR)
    result = evaluate_codec(tiny_codec, tmp_path, seconds=0.25, progress=False)
    assert len(result.files) == len(SECONDS)
    assert sorted(Path(skipped.path).name for skipped in result.skipped) == ["blip.wav", "broken.wav"]
    for skipped in result.skipped:
        assert skipped.reason and not skipped.reason.startswith(skipped.path)


def test_no_readable_files_is_an_error(tiny_codec: Codec, tmp_path: Path) -> None:
    with pytest.raises(JbdiffError, match="contains no audio files"):
        evaluate_codec(tiny_codec, tmp_path, progress=False)
    (tmp_path / "broken.flac").write_bytes(b"\0" * 100)
    with pytest.raises(
        JbdiffError, match="none of its 1 audio files could be evaluated .*broken.flac: not an audio file"
    ):
        evaluate_codec(tiny_codec, tmp_path, progress=False)
    with pytest.raises(JbdiffError, match="no such folder"):
        evaluate_codec(tiny_codec, tmp_path / "missing", progress=False)


@pytest.mark.parametrize("kwargs", [{"seconds": 0.0}, {"seconds": math.inf}, {"max_files": 0}])
def test_bad_limits_are_errors(tiny_codec: Codec, music_dir: Path, kwargs: dict[str, float]) -> None:
    with pytest.raises(JbdiffError):
        evaluate_codec(tiny_codec, music_dir, progress=False, **kwargs)


def test_json_round_trip(report: CodecReport, tmp_path: Path) -> None:
    path = report.write_json(tmp_path / "codec.json")
    data = json.loads(path.read_text())
    assert data == report.to_dict()
    assert data["files_evaluated"] == len(SECONDS)
    assert [level["level"] for level in data["levels"]] == [0, 1, 2]
    assert len(data["files"]) == len(SECONDS)
    assert all(len(file["levels"]) == 3 for file in data["files"])
    assert data["files"][0]["levels"][1]["si_sdr"] == pytest.approx(report.files[0].levels[1].si_sdr)
    assert list(tmp_path.iterdir()) == [path]


def test_table_is_fixed_width(report: CodecReport) -> None:
    lines = report.table().splitlines()
    assert len(lines) == 2 + len(report.levels)
    assert len({len(line) for line in lines}) == 1
    assert "SI-SDR dB" in lines[0] and "perplexity" in lines[0]
    assert lines[2].split("|")[1].strip() == "0"
