"""Pre-encoded latent shards: a folder of per-file VQ codes that level training reads.

``encode_folder`` runs the codec once over a data folder so training never runs the
VQ-VAE per step. Codes are stored rather than float latents (a 64-wide float latent per
frame is ~128x larger); ``Codec.codes_to_latents`` recovers the latents. Layout::

    LATENTS_DIR/manifest.json                 codec fingerprint, hops, ... and one entry per source
    LATENTS_DIR/shards/<name>.safetensors     tensors level0, level1, ...: 1-D codes per level,
                                              and start0, start1, ...: the level above decoded
                                              to audio and re-encoded at that level
                                              (what the residual upsamplers start from)

``encode --levels 2`` stores only the levels named (and the start codes of those levels whose
level above is stored too): the base prior needs only level 2, which encodes 24-30x faster than
all three levels with their start tracks (60 s of music, one thread). The manifest records the levels stored.

Every shard and every manifest update is written atomically, the manifest after each file,
so an interrupted run loses at most the file in progress and a rerun resumes: it encodes
only new or changed (size or mtime) sources and drops the entries of vanished ones.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from jbdiff import __version__
from jbdiff.core.atomic import atomic_path, remove_stale_parts
from jbdiff.core.audio import AudioError, list_audio_files, load_audio
from jbdiff.core.errors import JbdiffError
from levels.codec import Codec

MANIFEST = "manifest.json"
SHARDS = "shards"
FORMAT = 2
_INT16_MAX = 32767


@dataclass(frozen=True)
class ShardEntry:
    """One encoded source file: where it came from and what its shard holds."""

    source: str  # relative to the data folder, '/'-separated
    path: str  # absolute source path when encoded
    size: int
    mtime_ns: int
    duration: float  # seconds
    samples: int  # at the codec's sample rate, before padding
    frames: tuple[int, ...]  # per level: padded samples / hop
    shard: str  # file name inside shards/
    offset: int = 0  # start sample of the shard within the source


@dataclass
class EncodeReport:
    """What one ``encode_folder`` run did."""

    encoded: int = 0
    skipped_unchanged: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (source, reason)
    removed: int = 0


def shard_name(source: str) -> str:
    """A stable, collision-free shard file name for a relative source path."""
    digest = hashlib.sha1(source.encode()).hexdigest()[:10]
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", source).lstrip(".")[:100]
    return f"{readable}-{digest}.safetensors"


def _code_dtype(l_bins: int) -> torch.dtype:
    return torch.int16 if l_bins <= _INT16_MAX else torch.int32


def _read_manifest(out_dir: Path) -> dict[str, Any] | None:
    """The manifest with entries parsed into ShardEntry, or None if there is none."""
    path = out_dir / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
        if not isinstance(manifest.get("codec_fingerprint"), str) or not isinstance(manifest.get("hops"), list):
            raise TypeError("no codec_fingerprint or hops")
        manifest["entries"] = [
            ShardEntry(**{**entry, "frames": tuple(entry["frames"])}) for entry in manifest["entries"]
        ]
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as error:
        raise JbdiffError(f"{path}: the latents manifest is damaged ({error})") from error
    return manifest


def _write_manifest(out_dir: Path, header: dict[str, Any], entries: dict[str, ShardEntry]) -> None:
    manifest = {**header, "entries": [dataclasses.asdict(entries[key]) for key in sorted(entries)]}
    with atomic_path(out_dir / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1) + "\n")


def _clean_shards(shard_dir: Path, keep: set[str]) -> None:
    """Remove temp files of a killed run and shards no manifest entry refers to."""
    remove_stale_parts(shard_dir)
    for path in shard_dir.glob("*.safetensors"):
        if path.is_file() and not path.name.startswith(".") and path.name not in keep:
            path.unlink()


def _encode_file(
    codec: Codec,
    fingerprint: str,
    path: Path,
    source: str,
    stat: os.stat_result,
    shard_path: Path,
    levels: tuple[int, ...],
) -> ShardEntry:
    """Encode ``levels`` of one source into ``shard_path`` (atomically) and describe it."""
    audio = torch.from_numpy(load_audio(path, sample_rate=codec.sample_rate, channels=1))
    codes = codec.encode_codes(audio[None], levels)
    dtype = _code_dtype(codec.cfg.l_bins)
    tensors = {f"level{level}": codes[level][0].to(dtype).contiguous() for level in levels}
    for level in (level for level in levels if level + 1 in levels):
        above = codec.decode_codes(level + 1, codes[level + 1])
        tensors[f"start{level}"] = codec.encode_codes(above, [level])[level][0].to(dtype).contiguous()
    with atomic_path(shard_path) as tmp:
        save_file(tensors, str(tmp), metadata={"source": source, "codec_fingerprint": fingerprint})
    return ShardEntry(
        source=source,
        path=str(path.resolve()),
        size=stat.st_size,
        mtime_ns=stat.st_mtime_ns,
        duration=audio.shape[-1] / codec.sample_rate,
        samples=audio.shape[-1],
        frames=tuple(codec.padded_length(audio.shape[-1]) // hop for hop in codec.hops),
        shard=shard_path.name,
    )


def encode_folder(
    data_dir: str | os.PathLike[str],
    codec: Codec,
    out_dir: str | os.PathLike[str],
    *,
    codec_source: str,
    progress: bool = True,
    levels: Iterable[int] | None = None,
) -> EncodeReport:
    """Encode every audio file under ``data_dir`` into code shards in ``out_dir``, resumably.

    ``levels`` (default: all) are the levels stored. Unchanged sources already in the
    manifest are skipped, vanished ones are dropped and unreadable ones are listed in the
    report's ``failed``. Raises JbdiffError if the folder has no audio, if every file
    failed, or if ``out_dir`` holds another codec's codes or other levels.
    """
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    stored = tuple(sorted(set(range(codec.levels) if levels is None else levels)))
    if not stored or not all(0 <= level < codec.levels for level in stored):
        raise JbdiffError(f"levels {list(stored)}: the codec has levels 0..{codec.levels - 1}")
    files = list_audio_files(data_dir)
    if not files:
        raise JbdiffError(f"{data_dir}: contains no audio files")
    fingerprint = codec.fingerprint()
    manifest = _read_manifest(out_dir)
    if manifest is not None and manifest.get("format") != FORMAT:
        manifest = None  # written by another shard format: encode everything again
    if manifest is not None and manifest["codec_fingerprint"] != fingerprint:
        raise JbdiffError(
            f"{out_dir}: was encoded with codec {manifest['codec_fingerprint']}, not {fingerprint}; "
            "use a new --out folder"
        )
    if manifest is not None and tuple(manifest.get("levels", range(codec.levels))) != stored:
        raise JbdiffError(
            f"{out_dir}: holds levels {list(manifest.get('levels', range(codec.levels)))}, not {list(stored)}; "
            "use a new --out folder"
        )

    header = {
        "format": FORMAT,
        "jbdiff_version": __version__,
        "codec_fingerprint": fingerprint,
        "codec_source": codec_source,
        "sample_rate": codec.sample_rate,
        "hops": list(codec.hops),
        "l_bins": codec.cfg.l_bins,
        "code_dtype": str(_code_dtype(codec.cfg.l_bins)).removeprefix("torch."),
        "data_dir": str(data_dir.resolve()),
        "levels": list(stored),
    }
    shard_dir = out_dir / SHARDS
    shard_dir.mkdir(parents=True, exist_ok=True)
    sources = {path.relative_to(data_dir).as_posix(): path for path in files}
    entries = {entry.source: entry for entry in (manifest["entries"] if manifest else [])}
    report = EncodeReport()

    vanished = [source for source in entries if source not in sources]
    for source in vanished:
        del entries[source]
    report.removed = len(vanished)
    _write_manifest(out_dir, header, entries)
    _clean_shards(shard_dir, {entry.shard for entry in entries.values()})

    for source, path in tqdm(sources.items(), desc="encode", unit="file", disable=not progress):
        stat = path.stat()
        old = entries.get(source)
        if (
            old is not None
            and (old.size, old.mtime_ns) == (stat.st_size, stat.st_mtime_ns)
            and (shard_dir / old.shard).is_file()
        ):
            report.skipped_unchanged += 1
            continue
        try:
            entries[source] = _encode_file(codec, fingerprint, path, source, stat, shard_dir / shard_name(source), stored)
            report.encoded += 1
        except AudioError as error:
            report.failed.append((source, str(error)))
            if old is not None:  # the source changed and is now unreadable
                del entries[source]
                _write_manifest(out_dir, header, entries)
                (shard_dir / old.shard).unlink(missing_ok=True)
            continue
        _write_manifest(out_dir, header, entries)

    if len(report.failed) == len(sources):
        raise JbdiffError(
            f"{data_dir}: none of its {len(sources)} audio files could be read (first: {report.failed[0][1]})"
        )
    return report


class LatentShards:
    """Read access to an encoded latents folder; shards open lazily so crops stay cheap."""

    def __init__(self, out_dir: str | os.PathLike[str]) -> None:
        self.root = Path(out_dir)
        manifest = _read_manifest(self.root)
        if manifest is None:
            raise JbdiffError(f"{self.root}: no {MANIFEST} found; encode the data with 'jbdiff encode' first")
        if manifest.get("format") != FORMAT:
            raise JbdiffError(f"{self.root}: holds shards of another format; re-run 'jbdiff encode' into it")
        self.manifest = manifest
        self.entries: list[ShardEntry] = manifest["entries"]

    @property
    def fingerprint(self) -> str:
        """The fingerprint of the codec that produced the codes."""
        return self.manifest["codec_fingerprint"]

    @property
    def hops(self) -> tuple[int, ...]:
        return tuple(self.manifest["hops"])

    @property
    def levels(self) -> int:
        return len(self.hops)

    @property
    def stored_levels(self) -> tuple[int, ...]:
        """The levels whose codes the shards hold (all of them unless encoded with ``levels``)."""
        return tuple(self.manifest.get("levels", range(self.levels)))

    def __len__(self) -> int:
        return len(self.entries)

    def check_trainable(self, level: int, *, residual: bool) -> None:
        """Raise JbdiffError unless the shards hold what training ``level`` reads."""
        self._check_level(level)
        need = (level, level + 1) if residual else (level,)
        missing = [n for n in need if n not in self.stored_levels]
        if missing:
            raise JbdiffError(
                f"{self.root}: holds the codes of levels {list(self.stored_levels)} only; level {level} "
                f"training needs level(s) {list(need)}: encode with --levels {','.join(map(str, need))}"
            )

    def check_codec(self, codec: Codec) -> None:
        """Raise JbdiffError unless ``codec`` is the one the shards were encoded with."""
        if codec.fingerprint() != self.fingerprint:
            raise JbdiffError(
                f"{self.root}: was encoded with codec {self.fingerprint}, not {codec.fingerprint()}; "
                "re-encode the data with this codec"
            )

    def crop(self, index: int, level: int, start: int, length: int, *, upsampler_start: bool = False) -> torch.Tensor:
        """Codes ``[start, start + length)`` of shard ``index`` at ``level``, reading only those.

        With ``upsampler_start``, the codes of the level above decoded and re-encoded at
        ``level`` (not defined for the coarsest level).
        """
        self._check_level(level)
        if upsampler_start and level == self.levels - 1:
            raise ValueError(f"level {level} is the coarsest: it has no upsampler start codes")
        if level not in self.stored_levels or (upsampler_start and level + 1 not in self.stored_levels):
            raise JbdiffError(f"{self.root}: holds the codes of levels {list(self.stored_levels)} only")
        frames = self.entries[index].frames[level]
        if start < 0 or length < 0 or start + length > frames:
            raise ValueError(f"crop [{start}, {start + length}) is outside the shard's {frames} frames")
        path = self.root / SHARDS / self.entries[index].shard
        if not path.is_file():
            raise JbdiffError(f"{path}: shard file is missing; re-run 'jbdiff encode'")
        with safe_open(str(path), framework="pt") as shard:
            name = f"start{level}" if upsampler_start else f"level{level}"
            return shard.get_slice(name)[start : start + length].long()

    def _check_level(self, level: int) -> None:
        if not 0 <= level < self.levels:
            raise ValueError(f"level {level} is outside 0..{self.levels - 1}")
