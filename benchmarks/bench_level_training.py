"""Level-1 training steps per second: pre-encoded latent shards vs encoding on the fly.

Usage: ``python benchmarks/bench_level_training.py [--config tiny|full|YAML] [--batch N]
[--device cpu|cuda] [--threads N] [--quick] [--json OUT]``

Both paths train one denoiser (``configs/level1/<config>.yaml``) with the same
``LevelTrainingModule.training_step``, backward, gradient clipping, AdamW step and EMA update,
on the same synthetic music, in one process, one step of each path in turn (so a change of load
on a shared machine hits both alike):

* shards (jbdiff): the batch is ``LatentWindows`` items, code crops read from the shards that
  ``encode_folder`` wrote once (timed separately, as a once-off cost).
* on the fly (Jukebox-Diffusion v1, ``JBDiffusion.training_step``): per item, the target crop and
  the context crop before it are read from the audio file; per batch the VQ-VAE encodes the target
  at level 1, encodes the context at level 1, and, for the upsampler's start, encodes the target
  at level 2, decodes that to audio and encodes it again at level 1.

The codec is the Jukebox 5b VQ-VAE architecture with random weights (codebooks drawn from one
training-mode pass on a short clip): speed depends on the architecture, not on the weights.
By default everything runs on the CPU with one torch thread, for a stable comparison on a shared
machine. With ``--device cuda`` the denoiser step runs under bf16 autocast when its config trains
in ``bf16-mixed`` (as ``full.yaml`` does), and the VQ-VAE passes in float32, as Jukebox-Diffusion
ran them; the clock waits for the GPU before each reading.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from harness import build_codec, machine_info, write_result
from torch.utils.flop_counter import FlopCounterMode

from jbdiff.core.audio import SAMPLE_RATE, audio_info, load_audio, save_audio
from jbdiff.core.synth import synth_music
from levels.codec import Codec
from levels.denoiser_training import LevelTrainingModule, load_level_config
from levels.latent_dataset import LatentWindows
from levels.latent_shards import LatentShards, encode_folder

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
LEVEL = 1


@dataclass(frozen=True)
class Setup:
    """Which denoiser, batch and device to time."""

    config: Path
    batch: int
    device: torch.device

    @property
    def name(self) -> str:
        """``<config stem>_<device type>``, e.g. ``tiny_cpu``: names the default result file."""
        return f"{self.config.stem}_{self.device.type}"


def resolve_config(name: str) -> Path:
    """``tiny``/``full`` name ``configs/level1/<name>.yaml``; anything else is a path."""
    path = ROOT / "configs" / "level1" / f"{name}.yaml" if name in ("tiny", "full") else Path(name)
    if not path.is_file():
        raise SystemExit(f"no level config at {path}")
    return path


@dataclass(frozen=True)
class Plan:
    """How much audio to synthesise and how many steps to time."""

    files: int
    seconds: float
    warmup: int
    steps: int


QUICK = Plan(files=2, seconds=5.0, warmup=2, steps=7)
FULL = Plan(files=4, seconds=15.0, warmup=3, steps=25)


def write_music(folder: Path, plan: Plan) -> list[Path]:
    """``plan.files`` synthetic songs of ``plan.seconds`` each, as WAV files."""
    folder.mkdir()
    return [save_audio(folder / f"song{i}.wav", synth_music(plan.seconds, seed=i)) for i in range(plan.files)]


def read_crop(path: Path, start: int, length: int) -> np.ndarray:
    """Samples ``[start, start + length)`` of ``path`` (mono), read by seeking; zero-padded if short."""
    audio = load_audio(path, offset=start / SAMPLE_RATE, duration=length / SAMPLE_RATE)[:, :length]
    return np.pad(audio, ((0, 0), (0, length - audio.shape[-1])))


class OnTheFly:
    """Jukebox-Diffusion v1's data path: audio crops, then the VQ-VAE on every batch."""

    def __init__(self, files: list[Path], codec: Codec, window: int, context_mult: int, batch: int) -> None:
        self.files, self.codec, self.batch = files, codec, batch
        self.samples = np.array([audio_info(path).frames for path in files])
        self.weights = self.samples / self.samples.sum()
        self.window = window * codec.hops[LEVEL]
        self.context = context_mult * self.window

    def audio(self, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch of target crops and of the context before each (zeros before the song starts)."""
        targets, contexts = [], []
        for _ in range(self.batch):
            index = int(rng.choice(len(self.files), p=self.weights))
            start = int(rng.integers(0, self.samples[index] - self.window + 1))
            targets.append(read_crop(self.files[index], start, self.window))
            context = np.zeros((1, self.context), dtype=np.float32)
            if start:
                available = min(start, self.context)
                context[:, -available:] = read_crop(self.files[index], start - available, available)
            contexts.append(context)
        device = self.codec.device
        return torch.from_numpy(np.stack(targets)).to(device), torch.from_numpy(np.stack(contexts)).to(device)

    def codes(self, target: torch.Tensor, context: torch.Tensor) -> dict[str, torch.Tensor]:
        """The five VQ-VAE passes of ``JBDiffusion.training_step`` for an upsampler level."""
        encode = self.codec.encode_codes
        above = self.codec.decode_codes(LEVEL + 1, encode(target, [LEVEL + 1])[LEVEL + 1])
        return {
            "codes": encode(target, [LEVEL])[LEVEL],
            "context": encode(context, [LEVEL])[LEVEL],
            "start": encode(above, [LEVEL])[LEVEL],
        }


class Trainer:
    """One optimisation step as the Lightning loop runs it, without the loop."""

    def __init__(self, module: LevelTrainingModule, mixed: bool) -> None:
        self.module = module.train()
        self.optimizer = module.configure_optimizers()["optimizer"]  # the LR schedule does not change the step's cost
        self.mixed = mixed
        self.step = 0

    def __call__(self, batch: dict[str, torch.Tensor]) -> None:
        with torch.autocast(self.module.device.type, dtype=torch.bfloat16, enabled=self.mixed):
            loss = self.module.training_step(batch, self.step)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.module.denoiser.parameters(), self.module.cfg.train.grad_clip)
        self.optimizer.step()
        self.module.update_ema()
        self.step += 1


class Clock:
    """Times a call; on a GPU it waits for the queued work before reading the clock."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def __call__(self, work: Any, *args: Any) -> tuple[Any, float]:
        if self.cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = work(*args)
        if self.cuda:
            torch.cuda.synchronize()
        return out, time.perf_counter() - start


def run_steps(
    plan: Plan, setup: Setup, windows: LatentWindows, fly: OnTheFly, train: Trainer
) -> dict[str, list[dict[str, float]]]:
    """Alternate one shards step and one on-the-fly step; per-phase seconds of the timed ones."""
    rng_shards, rng_fly = np.random.default_rng(1), np.random.default_rng(2)
    timed = Clock(setup.device)
    out: dict[str, list[dict[str, float]]] = {"shards": [], "on_the_fly": []}

    def shard_batch() -> dict[str, torch.Tensor]:
        items = [windows.item(rng_shards) for _ in range(setup.batch)]
        return {key: torch.stack([item[key] for item in items]).to(setup.device) for key in items[0]}

    for step in range(plan.warmup + plan.steps):
        batch, data_s = timed(shard_batch)
        _, train_s = timed(train, batch)
        shards = {"data_s": data_s, "vqvae_s": 0.0, "train_s": train_s}

        (target, context), data_s = timed(fly.audio, rng_fly)
        with torch.no_grad():
            batch, vqvae_s = timed(fly.codes, target, context)
        _, train_s = timed(train, batch)
        on_the_fly = {"data_s": data_s, "vqvae_s": vqvae_s, "train_s": train_s}
        if step >= plan.warmup:
            for name, phases in (("shards", shards), ("on_the_fly", on_the_fly)):
                out[name].append({**phases, "step_s": sum(phases.values())})
    return out


def count_tflop(work: Any, *args: Any) -> tuple[Any, float]:
    """The call's result and its matrix and convolution work in TFLOP (``torch.utils.flop_counter``)."""
    with FlopCounterMode(display=False) as counter:
        out = work(*args)
    return out, counter.get_total_flops() / 1e12


def summarise(steps: list[dict[str, float]]) -> dict[str, float]:
    """Median of each phase and of the whole step, and steps per second."""
    medians = {key: statistics.median(step[key] for step in steps) for key in steps[0]}
    return {**medians, "steps_per_s": 1.0 / medians["step_s"]}


def benchmark(plan: Plan, setup: Setup, workdir: Path) -> dict[str, Any]:
    cfg = load_level_config(setup.config)
    codec = build_codec().to(setup.device)
    files = write_music(workdir / "audio", plan)
    latents = workdir / "latents"
    timed = Clock(setup.device)
    report, encode_s = timed(
        lambda: encode_folder(workdir / "audio", codec, latents, codec_source="bench", progress=False)
    )
    assert report.encoded == plan.files
    shards = LatentShards(latents)
    model = cfg.model
    windows = LatentWindows(shards, LEVEL, model.window, model.context_mult, residual=True, seed=0)
    codebook = codec.latent_codebook(LEVEL)
    torch.manual_seed(0)
    module = LevelTrainingModule(cfg, LEVEL, codebook, residual=True).to(setup.device)
    mixed = setup.device.type == "cuda" and cfg.train.precision == "bf16-mixed"
    train = Trainer(module, mixed)
    fly = OnTheFly(files, codec, model.window, model.context_mult, setup.batch)
    target, context = fly.audio(np.random.default_rng(0))
    with torch.no_grad():
        batch, vqvae_tflop = count_tflop(fly.codes, target, context)
    _, train_tflop = count_tflop(train, batch)
    steps = run_steps(plan, setup, windows, fly, train)
    shards_summary, fly_summary = summarise(steps["shards"]), summarise(steps["on_the_fly"])
    audio_s = plan.files * plan.seconds
    saved_per_step = fly_summary["step_s"] - shards_summary["step_s"]
    return {
        "setup": {
            "level": LEVEL,
            "level_config": str(setup.config.relative_to(ROOT) if setup.config.is_relative_to(ROOT) else setup.config),
            "batch": setup.batch,
            "device": torch.cuda.get_device_name(setup.device) if setup.device.type == "cuda" else "cpu",
            "denoiser_precision": "bf16 autocast" if mixed else "float32",
            "window": model.window,
            "context_mult": model.context_mult,
            "window_samples": fly.window,
            "context_samples": fly.context,
            "denoiser_parameters": sum(p.numel() for p in train.module.denoiser.parameters()),
            "codec": "Jukebox 5b VQ-VAE architecture, random weights",
            "warmup_steps": plan.warmup,
            "timed_steps": plan.steps,
        },
        "encode_once": {
            "files": plan.files,
            "audio_s": audio_s,
            "encode_s": encode_s,
            "x_realtime": audio_s / encode_s,
            "shard_bytes": sum(path.stat().st_size for path in (latents / "shards").iterdir()),
        },
        "shards": shards_summary,
        "on_the_fly": fly_summary,
        "work": {
            "train_tflop": train_tflop,
            "vqvae_tflop": vqvae_tflop,
            "train_tflop_per_s": train_tflop / shards_summary["train_s"],
            "vqvae_tflop_per_s": vqvae_tflop / fly_summary["vqvae_s"],
            "vqvae_over_train_time": fly_summary["vqvae_s"] / shards_summary["train_s"],
        },
        "speedup": fly_summary["step_s"] / shards_summary["step_s"],
        "break_even_steps": encode_s / saved_per_step if saved_per_step > 0 else None,
        "steps": steps,
    }


def notes() -> list[str]:
    return [
        (
            "the VQ-VAE time per step grows with the audio per batch (window and context), not with the denoiser:"
            " the ratio is (train + VQ-VAE + audio read) / (train + shard read), so it falls as the denoiser grows."
        ),
        (
            "on the fly = 5 VQ-VAE passes per step, as JBDiffusion.training_step (jbdiff/utils.py): level-1"
            " encode of the target and of the 2-window context, level-2 encode, level-2 decode, level-1 re-encode."
        ),
        (
            "data reading runs in the training process for both paths here; a DataLoader worker can hide the"
            " shard reads, while JB-Diffusion's VQ-VAE passes ran inside training_step and could not be hidden."
        ),
        "once-off encode = encode_folder: all 3 levels plus the two upsampler start tracks, same codec and thread.",
        (
            "TFLOP: one step's convolutions and matrix products as torch.utils.flop_counter counts them (attention"
            " kernels it does not know are left out), counted once outside the timed steps."
        ),
    ]


def format_table(result: dict[str, Any]) -> str:
    setup, encode, machine, work = result["setup"], result["encode_once"], result["machine"], result["work"]
    lines = [
        (
            f"Level-{setup['level']} training step, {setup['level_config']} denoiser"
            f" ({setup['denoiser_parameters'] / 1e6:.1f}M parameters, window {setup['window']},"
            f" context {setup['context_mult']}x{setup['window']}), batch {setup['batch']};"
            f" {setup['device']} ({setup['denoiser_precision']} denoiser), {machine['torch_threads']} torch"
            f" thread(s); load average {machine['load_average_before'][0]:.1f}"
            f" before, {machine['load_average_after'][0]:.1f} after"
        ),
        f"median of {setup['timed_steps']} steps each after {setup['warmup_steps']} warm-up, alternating paths (seconds):",
        "",
        "| path                          | data  | VQ-VAE | train | step  | steps/s |",
        "|-------------------------------|------:|-------:|------:|------:|--------:|",
    ]
    for name, label in (("shards", "pre-encoded shards (jbdiff)"), ("on_the_fly", "on the fly (JB-Diffusion v1)")):
        row = result[name]
        lines.append(
            f"| {label:<29} | {row['data_s']:5.3f} | {row['vqvae_s']:6.3f} | {row['train_s']:5.3f}"
            f" | {row['step_s']:5.3f} | {row['steps_per_s']:7.2f} |"
        )
    break_even = result["break_even_steps"]
    lines += [
        "",
        f"speed-up: {result['speedup']:.2f}x (goal: >= 3x)",
        (
            f"work per step: denoiser {work['train_tflop']:.4f} TFLOP at {work['train_tflop_per_s']:.3f} TFLOP/s,"
            f" VQ-VAE {work['vqvae_tflop']:.4f} TFLOP at {work['vqvae_tflop_per_s']:.3f} TFLOP/s; the VQ-VAE takes"
            f" {work['vqvae_over_train_time']:.2f}x the denoiser's time (3x needs 2x)"
        ),
        (
            f"once-off encode_folder: {encode['audio_s']:g} s of audio in {encode['files']} files,"
            f" {encode['encode_s']:.1f} s ({encode['x_realtime']:.2f}x real time), {encode['shard_bytes'] / 1e3:.0f} kB"
            " of shards" + (f"; repaid after {break_even:.0f} steps" if break_even is not None else "")
        ),
        "",
        *(f"- {note}" for note in result["notes"]),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--json", type=Path, help="where to write the results (default benchmarks/results/level_training_<config>_<device>.json)"
    )
    parser.add_argument("--quick", action="store_true", help="less audio and fewer steps (about 1-2 minutes)")
    parser.add_argument("--config", default="tiny", help="level-1 config: tiny, full (the v1 anchor) or a YAML path")
    parser.add_argument("--batch", type=int, default=4, help="items per step (default 4; full.yaml trains with 32)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where both paths run (default cpu)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    setup = Setup(resolve_config(args.config), args.batch, torch.device(args.device))

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=r".*self\.log\(\).*")  # training_step logs; there is no Trainer here
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_level_training.") as workdir:
        result = benchmark(QUICK if args.quick else FULL, setup, Path(workdir))
    result = {
        "machine": machine_info(load_before),
        **result,
        "notes": notes(),
    }
    print(format_table(result))
    write_result(args.json or RESULTS / f"level_training_{setup.name}.json", result)


if __name__ == "__main__":
    main()
