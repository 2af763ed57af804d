"""``jbdiff eval continuation``, ``remix`` and ``inpaint``: do generated clips sound like music,
and like the audio they came from?

Continuation: from each track, a seed (``seed_seconds`` starting at ``start_fraction`` of the
track, pulled earlier when the track is too short) is continued by ``seconds``; the result is
compared with the real audio that follows the seed and with the seed. Baselines on the same
clips: the real continuation itself, the seed looped, pink noise at the real continuation's
RMS, and the codec's level-0 and level-2 reconstructions of the real continuation (the
ceilings of the whole chain and of the base prior). The stage ladder measures the same
continuation after every stage that ran (level 2 decoded, level 1, level 0, Dance), tapped
from the one sampling run, to show where music is lost.

Remix: from each track, a clip of ``seconds`` from ``start_fraction`` is remixed at every
strength and compared with the input, giving one curve per metric; the input itself is the
curve's first point.

Inpaint: from each track, a clip of ``context_seconds`` + the longest region +
``after_seconds`` (from ``start_fraction``) has a region of each length regenerated after the
context; the region is compared with the real one, against baselines crossfaded in its place
as the pipeline splices its own: a plain continuation of the context (the naive edit), the
real region, pink noise at its RMS, and the codec's reconstruction. Seams are measured at the region's start and end; a loop
made from the context is measured at its wrap point (played twice), against the continuation
it was made from played twice.

Metrics (:mod:`jbdiff.metrics.music`; embeddings and tags from :mod:`jbdiff.metrics.musicnn`; notes
from :mod:`jbdiff.metrics.pitch`): Fréchet distance between the musicnn embeddings of all clips
of a condition and those of the reference clips (pooled over files), tag-distribution KL,
mean-chroma correlation and MIREX key agreement, pitch-class agreement of transcribed notes,
note density and tonalness, seam discontinuity (at the join between seed and continuation: in
the pipeline's own output with the seed included, every baseline crossfaded into the seed the
same way, and as a hard cut; and at the generator's window seams), silent and clipped
fractions and RMS level. Without basic-pitch's model the note metrics are left out and the
report says why. Per-file values are averaged over files in the summary. Reproducible: file
``i`` is generated with seed ``seed + i``, which also seeds its pink noise.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from matplotlib.figure import Figure
from tqdm import tqdm

from jbdiff.core.atomic import atomic_path
from jbdiff.core.audio import (
    SAMPLE_RATE,
    AudioError,
    audio_info,
    list_audio_files,
    load_audio,
    mono_signal,
    resample,
)
from jbdiff.core.crossfade import fade_curves, splice
from jbdiff.core.errors import JbdiffError
from jbdiff.core.report import json_safe, markdown_table
from jbdiff.core.stages import SAMPLING_STAGES
from jbdiff.metrics import music as mm
from jbdiff.metrics import musicnn, pitch

if TYPE_CHECKING:
    from jbdiff.sampling_settings import SamplingSettings

__all__ = [
    "CONDITIONS",
    "CONDITION_LEGEND",
    "LADDER",
    "METRICS",
    "GenerationPipeline",
    "evaluate_continuation",
    "evaluate_inpaint",
    "evaluate_remix",
    "pink_noise",
    "report_markdown",
    "write_report",
]

CONDITIONS = ("generated", "real", "looped_seed", "pink_noise", "codec", "codec_level1", "codec_level2")
LADDER = tuple(f"after_{stage}" for stage in SAMPLING_STAGES)
"""The stage ladder's rows: the generated continuation after each stage, when more than one ran."""

# name -> what it is (continuation rows)
CONDITION_LEGEND: dict[str, str] = {
    "generated": "the continuation, after the last stage that ran",
    "after_level2": "the same run's level-2 latents decoded by the codec (the base prior alone)",
    "after_level1": "the same run after the level-1 residual upsampler, decoded",
    "after_level0": "the same run after the level-0 residual upsampler, decoded",
    "after_dance": "the same run after the Dance stage (stereo)",
    "real": "the real continuation",
    "looped_seed": "the seed repeated",
    "pink_noise": "pink noise at the real continuation's RMS",
    "codec": "the codec's level-0 reconstruction of the real continuation (ceiling of the whole chain)",
    "codec_level1": "the codec's level-1 reconstruction of the real continuation (ceiling after the level-1 upsampler)",
    "codec_level2": "the codec's level-2 reconstruction of the real continuation (ceiling of the base prior)",
}
INPAINT_CONDITIONS = ("inpainted", "naive", "real", "pink_noise", "codec")

# name -> (what it measures, which way is better)
METRICS: dict[str, tuple[str, str]] = {
    "fd_real": ("Fréchet distance of musicnn embeddings to the real continuations", "lower"),
    "fd_seed": ("Fréchet distance of musicnn embeddings to the seeds", "lower"),
    "fd_input": ("Fréchet distance of musicnn embeddings to the inputs", "lower: closer to the input"),
    "tag_kl_seed": ("tag-distribution KL from the seed", "lower"),
    "tag_kl_real": ("tag-distribution KL from the real continuation", "lower"),
    "tag_kl_input": ("tag-distribution KL from the input", "lower: closer to the input"),
    "chroma_seed": ("mean-chroma correlation with the seed", "higher"),
    "chroma_real": ("mean-chroma correlation with the real continuation", "higher"),
    "chroma_input": ("mean-chroma correlation with the input", "higher"),
    "key_seed": ("MIREX key agreement with the seed", "higher"),
    "key_real": ("MIREX key agreement with the real continuation", "higher"),
    "key_input": ("MIREX key agreement with the input", "higher"),
    "pitch_class_seed": ("correlation of transcribed pitch-class profiles with the seed's", "higher"),
    "pitch_class_real": ("correlation of transcribed pitch-class profiles with the real continuation's", "higher"),
    "pitch_class_input": ("correlation of transcribed pitch-class profiles with the input's", "higher"),
    "note_density": ("transcribed notes per second (basic-pitch)", "as the real audio"),
    "tonalness": ("share of spectral energy in partials (narrow peaks); noise is about 0.03", "as the real audio"),
    "seam_join": ("spectral-flux jump where the clip follows the seed, crossfaded as the pipeline joins them, relative to elsewhere", "about 1"),
    "seam_cut": ("spectral-flux jump where the clip follows the seed without a crossfade, relative to elsewhere", "about 1"),
    "seam_windows": ("spectral-flux jump at the generator's window seams, relative to elsewhere", "about 1"),
    "seam_start": ("spectral-flux jump where the region starts, relative to elsewhere", "about 1"),
    "seam_end": ("spectral-flux jump where the region ends, relative to elsewhere", "about 1"),
    "seam_wrap": ("spectral-flux jump where a loop played twice wraps around, relative to elsewhere", "about 1"),
    "silent_fraction": ("fraction of 50 ms frames below -60 dBFS", "lower"),
    "clipped_fraction": ("fraction of samples at full scale", "lower"),
    "rms_db": ("RMS level, dBFS", "as the real audio"),
}


class GenerationPipeline(Protocol):
    """What the evaluation needs of :class:`jbdiff.pipeline.Pipeline`.

    The results have ``audio`` ``(channels, samples)``, ``sample_rate`` and ``seams``; a
    continuation with ``keep_stages`` also has ``stages`` (stage name to its audio at ``sample_rate``).
    """

    @property
    def codec(self) -> Any: ...

    @property
    def settings(self) -> SamplingSettings: ...

    def continue_(
        self, audio: np.ndarray, sample_rate: int, seconds: float, *, seed: int, settings: SamplingSettings | None,
        keep_stages: bool, include_seed: bool,
    ) -> Any: ...

    def remix(
        self, audio: np.ndarray, sample_rate: int, strength: float, *, seed: int, settings: SamplingSettings | None
    ) -> Any: ...

    def inpaint(
        self, audio: np.ndarray, sample_rate: int, start: float, end: float, *, seed: int, settings: SamplingSettings | None,
        fade: float, jumps: int,
    ) -> Any: ...

    def loop(
        self, audio: np.ndarray, sample_rate: int, seconds: float, *, seed: int, settings: SamplingSettings | None,
        fade: float, jumps: int,
    ) -> Any: ...


def pink_noise(samples: int, seed: int, rms: float = 0.1) -> np.ndarray:
    """Seeded pink (1/f power) noise ``(1, samples)`` float32 with the given RMS level."""
    rng = np.random.default_rng(seed)
    spectrum = np.fft.rfft(rng.standard_normal(samples))
    spectrum[1:] /= np.sqrt(np.arange(1, len(spectrum)))
    spectrum[0] = 0.0
    noise = np.fft.irfft(spectrum, n=samples)
    return (noise * rms / max(1e-12, float(np.sqrt(np.mean(noise**2)))))[None].astype(np.float32)


@dataclasses.dataclass(frozen=True)
class _Clip:
    """Audio ``(channels, samples)`` at the model rate and what the metrics need of it."""

    audio: np.ndarray
    music: musicnn.MusicnnOutput
    chroma: np.ndarray
    key: mm.Key
    notes: pitch.Transcription | None
    tonalness: float | None

    @property
    def mono(self) -> np.ndarray:
        return mono_signal(self.audio)


def _describe(audio: np.ndarray, notes: bool) -> _Clip:
    """What the metrics need of ``audio``; ``notes``: transcribe it and measure its tonalness too."""
    chroma = mm.mean_chroma(audio, SAMPLE_RATE)
    transcription = pitch.transcribe(audio, SAMPLE_RATE) if notes else None
    tonal = pitch.tonalness(audio, SAMPLE_RATE) if notes else None
    return _Clip(audio, musicnn.analyse(audio, SAMPLE_RATE), chroma, mm.estimate_key(chroma), transcription, tonal)


def _pitch_notes() -> list[str]:
    """Why the note metrics are left out (one sentence), or nothing when basic-pitch's model is there."""
    try:
        pitch.model_path()
    except pitch.PitchModelMissing as missing:
        return [f"note metrics left out: {missing}"]
    return []


def _similarity(reference: _Clip, candidate: _Clip, name: str) -> dict[str, Any]:
    """Style, key and pitch classes of ``candidate`` against ``reference``, metrics suffixed with ``name``."""
    values = {
        f"tag_kl_{name}": mm.tag_kl(reference.music.probabilities, candidate.music.probabilities),
        f"chroma_{name}": mm.chroma_correlation(reference.chroma, candidate.chroma),
        f"key_{name}": mm.key_agreement(reference.key, candidate.key),
    }
    if reference.notes is not None and candidate.notes is not None:
        values[f"pitch_class_{name}"] = pitch.pitch_class_agreement(reference.notes.profile, candidate.notes.profile)
    return values


def _pitch_classes(notes: pitch.Transcription) -> str:
    """The pitch classes holding at least a tenth of a clip's notes, e.g. ``C E G``."""
    return " ".join(mm.PITCH_CLASSES[pc] for pc in sorted(pitch.top_pitch_classes(notes.profile)))


def _signal(clip: _Clip, seams: Sequence[int]) -> dict[str, Any]:
    """Notes, tonalness and main pitch classes, seams within the clip, silence, clipping and level."""
    notes = {}
    if clip.notes is not None:
        notes = {"note_density": clip.notes.note_density, "tonalness": clip.tonalness, "pitch_classes": _pitch_classes(clip.notes)}
    return {
        **notes,
        "seam_windows": mm.seam_discontinuity(clip.audio, SAMPLE_RATE, seams),
        "silent_fraction": mm.silent_fraction(clip.audio, SAMPLE_RATE),
        "clipped_fraction": mm.clipped_fraction(clip.audio),
        "rms_db": mm.rms_db(clip.audio),
        "key": str(clip.key),
    }


def _generated_audio(result: Any, samples: int) -> tuple[np.ndarray, list[int]]:
    """A pipeline result's audio at the model rate, at most ``samples`` long, and its seams."""
    audio = np.asarray(result.audio, dtype=np.float32)
    audio = audio[None] if audio.ndim == 1 else audio
    seams = [int(s) for s in result.seams]
    if result.sample_rate != SAMPLE_RATE:
        audio = resample(audio, result.sample_rate)
        seams = [round(s * SAMPLE_RATE / result.sample_rate) for s in seams]
    audio = np.ascontiguousarray(audio[:, :samples])
    return audio, [s for s in seams if 0 < s < audio.shape[-1]]


def _stage_ladder(result: Any, samples: int) -> dict[str, np.ndarray]:
    """The ladder's rows (``after_<stage>``) of a continuation's ``stages``; none when one stage ran."""
    stages = getattr(result, "stages", None) or {}
    if len(stages) < 2:
        return {}
    ladder = {}
    for stage, audio in stages.items():
        audio = np.asarray(audio, dtype=np.float32)
        audio = resample(audio, result.sample_rate) if result.sample_rate != SAMPLE_RATE else audio
        ladder[f"after_{stage}"] = np.ascontiguousarray(audio[:, :samples])
    return ladder


def _sampling_seconds(result: Any) -> dict[str, float]:
    """How long the run took (``wall``) and its seconds per stage, from its manifest (none without)."""
    manifest = getattr(result, "manifest", None) or {}
    return {**({"wall": manifest["wall_s"]} if "wall_s" in manifest else {}), **manifest.get("timings_s", {})}


@torch.no_grad()
def _codec_reconstruction(codec: Any, audio: np.ndarray, level: int) -> np.ndarray:
    """The codec's encode-decode of mono ``audio`` ``(1, samples)`` at ``level``."""
    x = torch.from_numpy(audio)[None].to(device=codec.device, dtype=codec.dtype)
    return codec.reconstruct(x, level)[0].float().cpu().numpy()


def _clip_from(path: Path, seconds: float, start_fraction: float) -> tuple[np.ndarray, float]:
    """Mono ``seconds`` of ``path`` from ``start_fraction`` of it (earlier if needed) and the start."""
    info = audio_info(path)
    if info.duration < seconds:
        raise AudioError(f"{path}: is {info.duration:.2f} s long but {seconds:.2f} s are needed")
    start = min(info.duration * start_fraction, info.duration - seconds)
    audio = load_audio(path, sample_rate=SAMPLE_RATE, channels=1, offset=start, duration=seconds)
    samples = round(seconds * SAMPLE_RATE)
    if audio.shape[-1] < samples:
        raise AudioError(f"{path}: only {audio.shape[-1] / SAMPLE_RATE:.2f} s could be read from {start:.2f} s")
    return audio[:, :samples], start


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _check_options(seconds: float, start_fraction: float, max_files: int | None) -> None:
    if not (seconds > 0 and math.isfinite(seconds)):
        raise JbdiffError(f"seconds must be a positive number, got {seconds}")
    if not 0.0 <= start_fraction < 1.0:
        raise JbdiffError(f"start fraction must be in [0, 1), got {start_fraction}")
    if max_files is not None and max_files < 1:
        raise JbdiffError(f"max_files must be at least 1, got {max_files}")


def _clips(
    data_dir: str | os.PathLike[str],
    seconds: float,
    start_fraction: float,
    max_files: int | None,
    desc: str,
    progress: bool,
    skipped: list[dict[str, str]],
) -> Iterator[tuple[int, Path, np.ndarray, float]]:
    """(index, path, clip, start) of every readable file; the others go to ``skipped``."""
    paths = list_audio_files(data_dir)[:max_files]
    if not paths:
        raise JbdiffError(f"{data_dir}: contains no audio files")
    for index, path in enumerate(tqdm(paths, desc=desc, unit="file", disable=not progress)):
        try:
            clip, start = _clip_from(path, seconds, start_fraction)
        except AudioError as error:
            skipped.append({"path": str(path), "reason": str(error).removeprefix(f"{path}: ")})
            continue
        yield index, path, clip, start
    if len(skipped) == len(paths):
        reason = skipped[0]["reason"]
        raise JbdiffError(f"{data_dir}: none of its {len(paths)} audio files could be evaluated ({reason})")


def _summary(
    names: Sequence[str], per_file: list[dict[str, dict[str, Any]]], fd: dict[str, Callable[[str], float]]
) -> dict[str, dict[str, float]]:
    """Per condition: the Fréchet distances ``fd`` and the mean over files of every other metric."""
    return {
        name: {
            **{metric: distance(name) for metric, distance in fd.items()},
            **{
                metric: _mean([file[name][metric] for file in per_file])
                for metric in per_file[0][name]
                if not isinstance(per_file[0][name][metric], str)
            },
        }
        for name in names
    }


def _options(
    data_dir: str | os.PathLike[str], pipe: GenerationPipeline, settings: SamplingSettings | None, **values: Any
) -> dict[str, Any]:
    """What the report ran with: the pipeline's bundle and the sampling settings (its own if none given)."""
    path = getattr(pipe, "path", None)
    used = settings if settings is not None else getattr(pipe, "settings", None)
    return {
        "data_dir": str(data_dir),
        "model": None if path is None else str(path),
        "sampling": None if used is None else dataclasses.asdict(used),
        **values,
        "sample_rate": SAMPLE_RATE,
    }


def evaluate_continuation(
    data_dir: str | os.PathLike[str],
    pipeline: GenerationPipeline,
    *,
    settings: SamplingSettings | None = None,
    seed_seconds: float = 10.0,
    seconds: float = 20.0,
    start_fraction: float = 1 / 3,
    max_files: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Continue a seed from every audio file under ``data_dir`` and score it against baselines.

    ``pipeline`` (a loaded :class:`jbdiff.pipeline.Pipeline`) generates with the sampling
    ``settings`` (None: the pipeline's defaults; the seed is replaced). Files shorter than
    ``seed_seconds + seconds`` or unreadable are skipped and listed. Returns a JSON-ready
    report: ``options``, per-condition ``summary``, per-file values and ``skipped``.
    """
    _check_options(seconds, start_fraction, max_files)
    if not (seed_seconds > 0 and math.isfinite(seed_seconds)):
        raise JbdiffError(f"seed seconds must be a positive number, got {seed_seconds}")
    seed_samples, samples = round(seed_seconds * SAMPLE_RATE), round(seconds * SAMPLE_RATE)
    loops = -(-samples // seed_samples)
    files: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    notes = _pitch_notes()
    embeddings: dict[str, list[np.ndarray]] = {}
    names: list[str] = []
    clips = _clips(data_dir, seed_seconds + seconds, start_fraction, max_files, "eval continuation", progress, skipped)
    used = settings or pipeline.settings
    fade = (used.crossfade, min(used.crossfade_samples, seed_samples, samples))
    for index, path, clip, start in clips:
        seed_audio, real = clip[:, :seed_samples], clip[:, seed_samples:]
        result = pipeline.continue_(seed_audio, SAMPLE_RATE, seconds, seed=seed + index, settings=settings, keep_stages=True, include_seed=True)
        delivered, seams = _generated_audio(result, seed_samples + samples)  # the seed, joined as the pipeline joins it
        generated, seams = delivered[:, seed_samples:], [s - seed_samples for s in seams if s > seed_samples]
        candidates = {
            "generated": (generated, seams),
            **{name: (audio, seams) for name, audio in _stage_ladder(result, samples).items()},
            "real": (real, []),
            "looped_seed": (np.tile(seed_audio, loops)[:, :samples], [k * seed_samples for k in range(1, loops)]),
            "pink_noise": (pink_noise(samples, seed + index, rms=float(np.sqrt(np.mean(real**2)))), []),
            "codec": (_codec_reconstruction(pipeline.codec, real, 0), []),
            "codec_level1": (_codec_reconstruction(pipeline.codec, real, 1), []),
            "codec_level2": (_codec_reconstruction(pipeline.codec, real, 2), []),
        }
        names = names or list(candidates)
        seed_clip = _describe(seed_audio, not notes)
        described: dict[str, _Clip] = {}
        joins: dict[str, np.ndarray] = {}
        for name, (audio, _) in candidates.items():
            same = name in LADDER and np.array_equal(audio, generated)  # the last stage is the output itself
            described[name] = described["generated"] if same else _describe(audio, not notes)
            joins[name] = mono_signal(delivered) if name == "generated" or same else _joined(seed_clip.mono, described[name].mono, fade)
        embeddings.setdefault("seed", []).append(seed_clip.music.embeddings)
        conditions = {}
        for name, candidate in described.items():
            embeddings.setdefault(name, []).append(candidate.music.embeddings)
            cut = np.concatenate([seed_clip.mono, candidate.mono])
            conditions[name] = {
                **_similarity(seed_clip, candidate, "seed"),
                **_similarity(described["real"], candidate, "real"),
                "seam_join": mm.seam_discontinuity(joins[name], SAMPLE_RATE, [seed_samples - fade[1] // 2]),
                "seam_cut": mm.seam_discontinuity(cut, SAMPLE_RATE, [seed_samples]),
                **_signal(candidate, candidates[name][1]),
            }
        files.append(
            {
                "path": str(path),
                "start_seconds": start,
                "seed": seed + index,
                "seed_key": str(seed_clip.key),
                **({} if seed_clip.notes is None else {"seed_pitch_classes": _pitch_classes(seed_clip.notes)}),
                "generated_seams": seams,
                "sampling_s": _sampling_seconds(result),
                "conditions": conditions,
            }
        )

    pooled = {name: np.concatenate(parts) for name, parts in embeddings.items()}
    summary = _summary(
        names,
        [file["conditions"] for file in files],
        {
            "fd_real": lambda name: mm.frechet_distance(pooled[name], pooled["real"]),
            "fd_seed": lambda name: mm.frechet_distance(pooled[name], pooled["seed"]),
        },
    )
    options = _options(
        data_dir, pipeline, settings,
        seed_seconds=seed_seconds, seconds=seconds, start_fraction=start_fraction, seed=seed,
    )  # fmt: skip
    report = {"kind": "continuation", "options": options, "conditions": names, "summary": summary, "notes": notes}
    return json_safe({**report, "files": files, "skipped": skipped})


def evaluate_remix(
    data_dir: str | os.PathLike[str],
    pipeline: GenerationPipeline,
    *,
    settings: SamplingSettings | None = None,
    strengths: Sequence[float] = (0.25, 0.5, 0.75, 1.0),
    seconds: float = 20.0,
    start_fraction: float = 1 / 3,
    max_files: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Remix a clip of every audio file under ``data_dir`` at each strength; score output vs input.

    ``pipeline``, ``settings`` and skipping as in
    :func:`evaluate_continuation`. Returns a JSON-ready report whose ``summary`` maps
    ``"input"`` and each strength (formatted as ``"0.5"``) to its metrics: a curve from the
    input outwards.
    """
    _check_options(seconds, start_fraction, max_files)
    points = ["input", *(f"{s:g}" for s in strengths)]
    if not strengths or not all(0.0 <= s <= 1.0 for s in strengths) or len(set(points)) < len(points):
        raise JbdiffError(f"remix strengths must be one or more different numbers in [0, 1], got {list(strengths)}")
    samples = round(seconds * SAMPLE_RATE)
    files: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    embeddings: dict[str, list[np.ndarray]] = {point: [] for point in points}
    notes = _pitch_notes()
    clips = _clips(data_dir, seconds, start_fraction, max_files, "eval remix", progress, skipped)
    for index, path, clip, start in clips:
        source = _describe(clip, not notes)
        outputs: dict[str, tuple[_Clip, list[int]]] = {"input": (source, [])}
        for strength, point in zip(strengths, points[1:]):
            result = pipeline.remix(clip, SAMPLE_RATE, strength, seed=seed + index, settings=settings)
            audio, seams = _generated_audio(result, samples)
            outputs[point] = (_describe(audio, not notes), seams)
        results = {}
        for point, (output, seams) in outputs.items():
            embeddings[point].append(output.music.embeddings)
            results[point] = {**_similarity(source, output, "input"), **_signal(output, seams)}
        files.append({"path": str(path), "start_seconds": start, "seed": seed + index, "strengths": results})

    pooled = {point: np.concatenate(parts) for point, parts in embeddings.items()}
    summary = _summary(
        points,
        [file["strengths"] for file in files],
        {"fd_input": lambda point: mm.frechet_distance(pooled[point], pooled["input"])},
    )
    options = _options(
        data_dir, pipeline, settings,
        strengths=list(strengths), seconds=seconds, start_fraction=start_fraction, seed=seed,
    )  # fmt: skip
    report = {"kind": "remix", "options": options, "conditions": points, "summary": summary, "notes": notes}
    return json_safe({**report, "files": files, "skipped": skipped})


def _joined(seed: np.ndarray, clip: np.ndarray, fade: tuple[str, int]) -> np.ndarray:
    """Mono ``clip`` after mono ``seed`` as the pipeline joins a continuation to its seed:
    crossfaded over the seed's last and the clip's first samples (``fade``: style and length)."""
    style, length = fade
    if not length:
        return np.concatenate([seed, clip])
    leave, enter = (curve.numpy() for curve in fade_curves(style, length))
    return np.concatenate([seed[:-length], seed[-length:] * leave + clip[:length] * enter, clip[length:]])


def _spliced(original: np.ndarray, region: np.ndarray, start: int, fade: int) -> np.ndarray:
    """Mono ``region`` crossfaded into mono ``original`` from ``start`` as the pipeline splices
    its own: equal-power fades of ``fade`` samples at both ends, inside the region."""
    end = start + region.shape[-1]
    joined = splice(torch.from_numpy(original[:, start:end]), torch.from_numpy(region), fade, fade)
    return np.concatenate([original[:, :start], joined.numpy(), original[:, end:]], axis=-1)


def evaluate_inpaint(
    data_dir: str | os.PathLike[str],
    pipeline: GenerationPipeline,
    *,
    settings: SamplingSettings | None = None,
    regions: Sequence[float] = (1.0, 3.0, 10.0),
    context_seconds: float = 6.0,
    after_seconds: float = 3.0,
    loop_seconds: float = 6.0,
    fade: float = 0.05,
    jumps: int = 0,
    start_fraction: float = 1 / 3,
    max_files: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Inpaint a region of each length after ``context_seconds`` of every file; score it and its seams.

    The inpainted clip is the pipeline's output (its region faded in and out over ``fade``
    seconds at its ends); every baseline (see the module docstring) is crossfaded into the
    real clip in its place the same way. Seams are measured on those clips; the region alone
    is scored against the real region. With ``loop_seconds``
    a loop continuing the context is also made and its wrap measured (0: no loop). ``jumps``:
    RePaint resamplings per step, for the inpainting and the loop. Returns a
    JSON-ready report whose ``summary`` maps ``"<length>s <condition>"`` (and ``"loop"`` /
    ``"loop naive"``) to its metrics.
    """
    if not regions or not all(r > 0 and math.isfinite(r) for r in regions) or len(set(regions)) < len(regions):
        raise JbdiffError(f"inpaint regions must be one or more different positive lengths in seconds, got {list(regions)}")
    for name, value in (("context seconds", context_seconds), ("after seconds", after_seconds)):
        if not (value > 0 and math.isfinite(value)):
            raise JbdiffError(f"{name} must be a positive number, got {value}")
    if not (loop_seconds >= 0 and math.isfinite(loop_seconds)) or not (fade >= 0 and math.isfinite(fade)):
        raise JbdiffError(f"loop seconds and fade must be non-negative numbers, got {loop_seconds} and {fade}")
    clip_seconds = context_seconds + max(regions) + after_seconds
    _check_options(clip_seconds, start_fraction, max_files)
    begin, fade_samples = round(context_seconds * SAMPLE_RATE), round(fade * SAMPLE_RATE)
    names = [f"{r:g}s {condition}" for r in regions for condition in INPAINT_CONDITIONS]
    names += ["loop", "loop naive"] if loop_seconds else []
    files: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    embeddings: dict[str, list[np.ndarray]] = {name: [] for name in names}
    clips = _clips(data_dir, clip_seconds, start_fraction, max_files, "eval inpaint", progress, skipped)
    for index, path, clip, start in clips:
        context, decoded = clip[:, :begin], _codec_reconstruction(pipeline.codec, clip, 0)
        conditions: dict[str, dict[str, Any]] = {}
        for length in regions:
            end = begin + round(length * SAMPLE_RATE)
            real = clip[:, begin:end]
            result = pipeline.inpaint(
                clip, SAMPLE_RATE, begin / SAMPLE_RATE, end / SAMPLE_RATE, seed=seed + index, settings=settings,
                fade=fade, jumps=jumps,
            )
            edited = mono_signal(_generated_audio(result, clip.shape[-1])[0])[None]
            naive, _ = _generated_audio(
                pipeline.continue_(context, SAMPLE_RATE, length, seed=seed + index, settings=settings, keep_stages=False), end - begin,
            )
            candidates = {
                "inpainted": edited[:, begin:end],
                "naive": mono_signal(naive)[None],
                "real": real,
                "pink_noise": pink_noise(end - begin, seed + index, rms=float(np.sqrt(np.mean(real**2)))),
                "codec": decoded[:, begin:end],
            }
            real_clip = _describe(real, False)
            for condition, audio in candidates.items():
                name = f"{length:g}s {condition}"
                described = real_clip if condition == "real" else _describe(audio, False)
                embeddings[name].append(described.music.embeddings)
                whole = edited if condition == "inpainted" else _spliced(clip, audio, begin, fade_samples)
                conditions[name] = {
                    **_similarity(real_clip, described, "real"),
                    "seam_start": mm.seam_discontinuity(whole, SAMPLE_RATE, [begin]),
                    "seam_end": mm.seam_discontinuity(whole, SAMPLE_RATE, [end]),
                    "rms_db": mm.rms_db(audio),
                }
        if loop_seconds:
            samples = round(loop_seconds * SAMPLE_RATE)
            looped, _ = _generated_audio(
                pipeline.loop(context, SAMPLE_RATE, loop_seconds, seed=seed + index, settings=settings, fade=fade, jumps=jumps), samples,
            )
            plain, _ = _generated_audio(
                pipeline.continue_(context, SAMPLE_RATE, loop_seconds, seed=seed + index, settings=settings, keep_stages=False), samples,
            )
            for name, audio in (("loop", looped), ("loop naive", plain)):
                twice = np.tile(mono_signal(audio)[None], 2)
                described = _describe(mono_signal(audio)[None], False)
                embeddings[name].append(described.music.embeddings)
                conditions[name] = {"seam_wrap": mm.seam_discontinuity(twice, SAMPLE_RATE, [samples]), "rms_db": mm.rms_db(audio)}
        files.append({"path": str(path), "start_seconds": start, "seed": seed + index, "conditions": conditions})

    pooled = {name: np.concatenate(parts) for name, parts in embeddings.items()}
    per_file = [file["conditions"] for file in files]
    summary = {
        name: {
            **({"fd_real": mm.frechet_distance(pooled[name], pooled[f"{name.split()[0]} real"])} if not name.startswith("loop") else {}),
            **{metric: _mean([file[name][metric] for file in per_file]) for metric in per_file[0][name]},
        }
        for name in names
    }
    options = _options(
        data_dir, pipeline, settings, regions=list(regions), context_seconds=context_seconds, after_seconds=after_seconds,
        loop_seconds=loop_seconds, fade=fade, jumps=jumps, start_fraction=start_fraction, seed=seed,
    )
    report = {"kind": "inpaint", "options": options, "conditions": names, "summary": summary}
    return json_safe({**report, "files": files, "skipped": skipped})


def _per_file(report: dict[str, Any], condition: str, metric: str) -> list[float]:
    """One metric of one condition (or strength) for every file; FD has no per-file values."""
    key = "strengths" if report["kind"] == "remix" else "conditions"
    values = [file[key].get(condition, {}).get(metric) for file in report["files"]]
    return [v for v in values if v is not None]


def _metrics(report: dict[str, Any]) -> list[str]:
    """Every metric of the summary, in first-seen order (rows may lack some)."""
    return list(dict.fromkeys(metric for values in report["summary"].values() for metric in values))


def report_markdown(report: dict[str, Any]) -> str:
    """The summary as a markdown table (a row per condition or strength) with a metric legend."""
    metrics = _metrics(report)
    header = ["strength" if report["kind"] == "remix" else "condition", *metrics]
    rows = [
        [name, *("n/a" if values.get(m) is None else f"{values[m]:.4g}" for m in metrics)]
        for name, values in report["summary"].items()
    ]
    table = markdown_table(header, rows, left=1)
    options = report["options"]
    files = len(report["files"])
    title = f"# jbdiff eval {report['kind']}: {files} file(s) from {options['data_dir']}, seed {options['seed']}"
    rows_legend = [f"- `{name}`: {CONDITION_LEGEND[name]}" for name in report["summary"] if name in CONDITION_LEGEND]
    legend = [f"- `{m}`: {METRICS[m][0]} ({METRICS[m][1]})" for m in metrics]
    skipped = [f"- skipped {s['path']}: {s['reason']}" for s in report["skipped"]]
    notes = [f"- {note}" for note in report.get("notes", [])]
    parts = [title, "", table, "", *rows_legend, *([""] if rows_legend else []), *legend]
    return "\n".join([*parts, *([""] + notes if notes else []), *([""] + skipped if skipped else [])]) + "\n"


def _plot(report: dict[str, Any], metric: str, path: Path) -> None:
    """One metric: bars per condition (continuation) or a curve over strength (remix), files as dots."""
    names = list(report["summary"])
    means = [report["summary"][name].get(metric) for name in names]
    figure = Figure(figsize=(7, 4), dpi=100)
    axes = figure.subplots()
    if report["kind"] != "remix":
        positions = np.arange(len(names))
        axes.bar(positions, [np.nan if m is None else m for m in means], color="#9bb7d4")
        axes.set_xticks(positions, names, rotation=30, ha="right", fontsize=7)
    else:
        positions = np.array([0.0, *report["options"]["strengths"]])
        axes.plot(positions, [np.nan if m is None else m for m in means], "o-", color="#3a6ea5")
        axes.set_xticks(positions, ["input", *names[1:]])
        axes.set_xlabel("remix strength")
    for x, name in zip(positions, names):
        values = _per_file(report, name, metric)
        axes.plot([x] * len(values), values, "k.", alpha=0.6)
    description, better = METRICS[metric]
    axes.set_title(f"{metric}: {better}", fontsize=10)
    axes.set_ylabel(description, fontsize=7)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")


def write_report(report: dict[str, Any], prefix: str | os.PathLike[str]) -> list[Path]:
    """Write ``PREFIX.md``, ``PREFIX.json`` and ``PREFIX_<metric>.png`` per metric; return the paths."""
    prefix = Path(prefix)
    if not prefix.parent.is_dir():
        raise JbdiffError(f"{prefix}: the folder {prefix.parent} does not exist")
    written = []
    texts = {".md": report_markdown(report), ".json": json.dumps(report, indent=2, allow_nan=False) + "\n"}
    for suffix, text in texts.items():
        path = prefix.parent / f"{prefix.name}{suffix}"
        with atomic_path(path) as tmp:
            tmp.write_text(text)
        written.append(path)
    for metric in _metrics(report):
        path = prefix.parent / f"{prefix.name}_{metric}.png"
        _plot(report, metric, path)
        written.append(path)
    return written
