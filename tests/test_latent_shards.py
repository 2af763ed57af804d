"""Tests for levels.latent_shards: encoding a folder into code shards, resuming, reading crops."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from jbdiff import __version__
from jbdiff.core.audio import load_audio, save_audio
from jbdiff.core.errors import JbdiffError
from jbdiff.core.synth import synth_music
from levels.codec import Codec
from levels.latent_shards import (
    MANIFEST,
    SHARDS,
    LatentShards,
    encode_folder,
    shard_name,
)

SR = 44100
GOOD = ["a.wav", "sub1/song.wav", "sub2/song.wav"]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """Three short songs (two with the same basename in different folders) and one broken file."""
    data = tmp_path / "data"
    for i, (name, seconds) in enumerate(zip(GOOD, (1.0, 1.5, 1.2))):
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        save_audio(data / name, synth_music(seconds, SR, seed=i))
    (data / "broken.wav").write_text("this is not audio")
    return data


def encode(data: Path, codec: Codec, out: Path):  # type: ignore[no-untyped-def]
    return encode_folder(data, codec, out, codec_source="tiny", progress=False)


def expected_codes(codec: Codec, path: Path) -> dict[int, torch.Tensor]:
    audio = torch.from_numpy(load_audio(path, channels=1))[None]
    return {level: codes[0] for level, codes in codec.encode_codes(audio).items()}


def shard_mtimes(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (out / SHARDS).iterdir()}


def other_codec(codec: Codec) -> Codec:
    changed = copy.deepcopy(codec)
    with torch.no_grad():
        changed.vqvae.bottleneck.level_blocks[0].k[0] += 1.0
    changed.refresh_normalisation()
    return changed


def test_shards_hold_the_codecs_codes(data_dir: Path, tmp_path: Path, tiny_codec: Codec) -> None:
    out = tmp_path / "latents"
    report = encode(data_dir, tiny_codec, out)
    assert report.encoded == 3 and report.skipped_unchanged == 0 and report.removed == 0
    shards = LatentShards(out)
    assert [entry.source for entry in shards.entries] == GOOD
    for index, entry in enumerate(shards.entries):
        expected = expected_codes(tiny_codec, data_dir / entry.source)
        with safe_open(str(out / SHARDS / entry.shard), framework="pt") as raw:
            assert sorted(raw.keys()) == ["level0", "level1", "level2", "start0", "start1"]
            assert raw.get_tensor("level0").dtype == torch.int16
        for level in range(3):
            codes = shards.crop(index, level, 0, shards.entries[index].frames[level])
            assert codes.dtype == torch.int64
            assert torch.equal(codes, expected[level])


def test_manifest_records_codec_and_sources(data_dir: Path, tmp_path: Path, tiny_codec: Codec) -> None:
    out = tmp_path / "latents"
    encode(data_dir, tiny_codec, out)
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["codec_fingerprint"] == tiny_codec.fingerprint()
    assert manifest["codec_source"] == "tiny"
    assert manifest["hops"] == [8, 32, 128]
    assert manifest["l_bins"] == tiny_codec.cfg.l_bins
    assert manifest["sample_rate"] == SR
    assert manifest["jbdiff_version"] == __version__
    entry = next(e for e in manifest["entries"] if e["source"] == "sub1/song.wav")
    source = data_dir / "sub1" / "song.wav"
    assert entry["path"] == str(source.resolve())
    assert entry["size"] == source.stat().st_size and entry["mtime_ns"] == source.stat().st_mtime_ns
    assert entry["samples"] == int(1.5 * SR) and entry["duration"] == pytest.approx(1.5)
    padded = tiny_codec.padded_length(entry["samples"])
    assert entry["frames"] == [padded // hop for hop in (8, 32, 128)]
    assert entry["offset"] == 0
    shard_names = {e["shard"] for e in manifest["entries"]}
    assert len(shard_names) == 3 and shard_names == {p.name for p in (out / SHARDS).iterdir()}
    shards = LatentShards(out)
    assert len(shards) == 3 and shards.fingerprint == tiny_codec.fingerprint()
    assert [list(e.frames) for e in shards.entries] == [e["frames"] for e in manifest["entries"]]


def test_shard_names_are_stable_and_distinct() -> None:
    assert shard_name("sub1/song.wav") == shard_name("sub1/song.wav")
    assert shard_name("sub1/song.wav") != shard_name("sub2/song.wav")
    assert shard_name("a b.wav") != shard_name("a_b.wav")
    assert "/" not in shard_name("x/y/z.wav") and not shard_name(".hidden/a.wav").startswith(".")


def test_broken_file_is_listed_not_fatal(data_dir: Path, tmp_path: Path, tiny_codec: Codec) -> None:
    out = tmp_path / "latents"
    report = encode(data_dir, tiny_codec, out)
    assert [source for source, _ in report.failed] == ["broken.wav"]
    assert "broken.wav" in report.failed[0][1]
    assert "broken.wav" not in [entry.source for entry in LatentShards(out).entries]


def test_source_turned_unreadable_loses_its_shard(data_dir: Path, tmp_path: Path, tiny_codec: Codec) -> None:
    out = tmp_path / "latents"
    encode(data_dir, tiny_codec, out)
    (data_dir / "a.wav").write_text("overwritten with text")
    report = encode(data_dir, tiny_codec, out)
    assert [source for source, _ in report.failed] == ["a.wav", "broken.wav"]
    assert [entry.source for entry in LatentShards(out).entries] == GOOD[1:]
    assert not (out / SHARDS / shard_name("a.wav")).exists()


def test_second_run_encodes_nothing(data_dir: Path, tmp_path: Path, tiny_codec: Codec) -> None:
    out = tmp_path / "latents"
    encode(data_dir, tiny_codec, out)
    before = shard_mtimes(out)
    report = encode(data_dir, tiny_codec, out)
    assert report.encoded == 0 and report.skipped_unchanged == 3 and report.removed == 0
    assert shard_mtimes(out) == before


@pytest.mark.parametrize("change", ["touch", "rewrite"])
def test_changed_file_alone_is_reencoded(data_dir: Path, tmp_path: Path, tiny_codec: Codec, change: str) -> None:
    out = tmp_path / "latents"
    encode(data_dir, tiny_codec, out)
    before = shard_mtimes(out)
    source = data_dir / "sub1" / "song.wav"
    if change == "touch":
        stat = source.stat()
        os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    else:
        save_audio(source, synth_music(2.0, SR, seed=9))
    report = encode(data_dir, tiny_codec, out)
    assert report.encoded == 1 and report.skipped_unchanged == 2
    after = shard_mtimes(out)
    changed = shard_name("sub1/song.wav")
    assert {name for name in after if after[name] != before[name]} == {changed}
    shards = LatentShards(out)
    index = [entry.source for entry in shards.entries].index("sub1/song.wav")
    assert shards.entries[index].mtime_ns == source.stat().st_mtime_ns
    assert torch.equal(shards.crop(index, 0, 0, shards.entries[index].frames[0]), expected_codes(tiny_codec, source)[0])


def test_vanished_source_is_dropped(data_dir: Path, tmp_path: Path, tiny_codec: Codec) -> None:
    out = tmp_path / "latents"
    encode(data_dir, tiny_codec, out)
    (data_dir / "a.wav").unlink()
    report = encode(data_dir, tiny_codec, out)
    assert report.removed == 1 and report.encoded == 0
    assert [entry.source for entry in LatentShards(out).entries] == GOOD[1:]
    assert not (out / SHARDS / shard_name("a.wav")).exists()


def test_empty_folder_is_refused(tmp_path: Path, tiny_codec: Codec) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(JbdiffError, match="no audio files"):
        encode(tmp_path / "empty", tiny_codec, tmp_path / "latents")


def test_all_files_failing_is_refused(tmp_path: Path, tiny_codec: Codec) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "broken.wav").write_text("nope")
    with pytest.raises(JbdiffError, match="none of its 1 audio files"):
        encode(data, tiny_codec, tmp_path / "latents")


def test_other_codec_is_refused(data_dir: Path, tmp_path: Path, tiny_codec: Codec) -> None:
    out = tmp_path / "latents"
    encode(data_dir, tiny_codec, out)
    changed = other_codec(tiny_codec)
    assert changed.fingerprint() != tiny_codec.fingerprint()
    expected = f"encoded with codec {tiny_codec.fingerprint()}, not {changed.fingerprint()}; use a new --out folder"
    with pytest.raises(JbdiffError, match=expected):
        encode(data_dir, changed, out)
    shards = LatentShards(out)
    shards.check_codec(tiny_codec)
    with pytest.raises(JbdiffError, match="encoded with codec"):
        shards.check_codec(changed)


def test_interrupted_run_resumes(
    data_dir: Path, tmp_path: Path, tiny_codec: Codec, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "latents"
    dying = copy.deepcopy(tiny_codec)
    real = dying.encode_codes
    calls = 0

    def encode_codes(audio: torch.Tensor, levels: object = None) -> dict[int, torch.Tensor]:
        nonlocal calls
        calls += len(list(levels)) == dying.levels  # one all-level encode per file; start codes encode one level
        if calls == 2:
            raise KeyboardInterrupt
        return real(audio, levels)

    monkeypatch.setattr(dying, "encode_codes", encode_codes)
    with pytest.raises(KeyboardInterrupt):
        encode(data_dir, dying, out)
    manifest = json.loads((out / MANIFEST).read_text())
    assert [entry["source"] for entry in manifest["entries"]] == ["a.wav"]
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, SHARDS]
    assert [p.name for p in (out / SHARDS).iterdir()] == [shard_name("a.wav")]

    (out / SHARDS / ".leftover.part.safetensors").write_bytes(b"partial")
    report = encode(data_dir, tiny_codec, out)
    assert report.encoded == 2 and report.skipped_unchanged == 1
    assert [entry.source for entry in LatentShards(out).entries] == GOOD
    assert not (out / SHARDS / ".leftover.part.safetensors").exists()


def test_crop_equals_slice_of_full_codes(data_dir: Path, tmp_path: Path, tiny_codec: Codec) -> None:
    out = tmp_path / "latents"
    encode(data_dir, tiny_codec, out)
    shards = LatentShards(out)
    for level in range(3):
        full = shards.crop(1, level, 0, shards.entries[1].frames[level])
        start, length = 3, full.numel() // 2
        crop = shards.crop(1, level, start, length)
        assert crop.dtype == torch.int64 and torch.equal(crop, full[start : start + length])
    with pytest.raises(ValueError):
        shards.crop(1, 0, shards.entries[1].frames[0], 1)
    with pytest.raises(ValueError):
        shards.crop(0, 3, 0, 1)


def test_missing_manifest_is_refused(tmp_path: Path) -> None:
    with pytest.raises(JbdiffError, match="no manifest.json"):
        LatentShards(tmp_path)


def test_upsampler_start_codes_are_the_level_above_reencoded(tiny_codec: Codec, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    audio = synth_music(1.1, seed=5)
    save_audio(data / "a.wav", audio)
    encode_folder(data, tiny_codec, tmp_path / "lat", codec_source="tiny", progress=False)
    shards = LatentShards(tmp_path / "lat")
    codes = tiny_codec.encode_codes(torch.from_numpy(audio)[None])
    for level in (0, 1):
        above = tiny_codec.decode_codes(level + 1, codes[level + 1])
        expected = tiny_codec.encode_codes(above, [level])[level][0]
        frames = shards.entries[0].frames[level]
        assert torch.equal(shards.crop(0, level, 0, frames, upsampler_start=True), expected)
    with pytest.raises(ValueError, match="coarsest"):
        shards.crop(0, 2, 0, 1, upsampler_start=True)


def test_levels_option_stores_only_those_levels(data_dir: Path, tmp_path: Path, tiny_codec: Codec) -> None:
    out = tmp_path / "latents"
    report = encode_folder(data_dir, tiny_codec, out, codec_source="tiny", progress=False, levels=[2])
    assert report.encoded == 3
    shards = LatentShards(out)
    assert shards.stored_levels == (2,)
    full = expected_codes(tiny_codec, data_dir / "a.wav")
    index = [entry.source for entry in shards.entries].index("a.wav")
    assert torch.equal(shards.crop(index, 2, 0, len(full[2])), full[2])
    # frames of every level are still recorded, as an all-level encode records them
    assert shards.entries[index].frames == tuple(len(full[level]) for level in range(3))
    with safe_open(str(out / SHARDS / shards.entries[index].shard), framework="pt") as shard:
        assert sorted(shard.keys()) == ["level2"]
    shards.check_trainable(2, residual=False)
    with pytest.raises(JbdiffError, match="holds the codes of levels \\[2\\] only"):
        shards.crop(index, 1, 0, 4)
    with pytest.raises(JbdiffError, match="encode with --levels 1,2"):
        shards.check_trainable(1, residual=True)
    with pytest.raises(JbdiffError, match="holds levels \\[2\\], not \\[0, 1, 2\\]"):
        encode(data_dir, tiny_codec, out)
    with pytest.raises(JbdiffError, match="the codec has levels 0..2"):
        encode_folder(data_dir, tiny_codec, tmp_path / "other", codec_source="tiny", progress=False, levels=[3])
