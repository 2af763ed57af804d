"""The ``jbdiff`` command line.

Errors are one sentence on stderr with a non-zero exit; ``--debug`` shows the traceback.
Heavy modules are imported inside each command so ``jbdiff --help`` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jbdiff import __version__
from jbdiff.core.audio import SAMPLE_RATE
from jbdiff.core.errors import JbdiffError
from jbdiff.core.stages import SAMPLING_STAGES, STAGES

if TYPE_CHECKING:
    from jbdiff.core.training import FitOptions

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


def _devices(value: str) -> int | str:
    return int(value) if value.isdigit() else value


def _positive_float(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {value}")
    return number


def _add_trainer_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-steps", type=int, help="stop after this many optimizer steps (default: the config's max_steps)")
    p.add_argument(
        "--max-minutes", type=_positive_float,
        help="stop once the run has trained this long, counted across resumes like --max-steps; it saves and exports as at the step limit (default: no limit)",
    )
    p.add_argument("--accelerator", default="auto", help="Lightning accelerator: auto, cpu, gpu, mps (default: auto)")
    p.add_argument("--devices", type=_devices, default="auto", help="number of devices, e.g. 2 for DDP (default: auto)")
    p.add_argument("--strategy", default="auto", help="Lightning strategy, e.g. ddp (default: auto)")
    p.add_argument("--precision", help="override the config's precision, e.g. 16-mixed or bf16-mixed")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _fit_options(args: argparse.Namespace) -> FitOptions:
    from jbdiff.core.training import FitOptions

    return FitOptions(
        max_steps=args.max_steps, max_minutes=args.max_minutes, accelerator=args.accelerator, devices=args.devices,
        strategy=args.strategy, precision=args.precision, progress=not args.no_progress,
    )


def _say_once(message: str) -> None:
    """Print from the first process only (DDP runs the command once per process)."""
    from lightning_fabric.utilities.rank_zero import rank_zero_only

    if rank_zero_only.rank == 0:
        print(message)


def _output_path(path: str, overwrite: bool, inputs: Sequence[str | None], batch: int | None = None) -> Path:
    """OUT checked before any work (with every file a sampling run writes beside it, given its ``batch``)."""
    from jbdiff.core.outputs import check_outputs

    out = Path(path)
    if batch is None:
        paths = [out]
    else:
        from jbdiff.pipeline import run_outputs

        paths = run_outputs(out, max(1, batch))
    check_outputs(paths, overwrite=overwrite, inputs=[p for p in inputs if p])
    return out


def cmd_train_codec(args: argparse.Namespace) -> None:
    from jbdiff.train import train_codec

    run = train_codec(args.data, args.config, args.out, options=_fit_options(args))
    _say_once(f"codec saved in {run}")


def cmd_train_level(args: argparse.Namespace) -> None:
    from jbdiff.train import train_level

    run = train_level(
        args.stage,
        args.latents,
        args.config,
        args.out,
        codec_path=args.codec,
        val_latents_dir=args.val_latents,
        options=_fit_options(args),
    )
    _say_once(f"{args.stage} saved in {run}")


def cmd_train_dance(args: argparse.Namespace) -> None:
    from jbdiff.train import train_dance

    run = train_dance(args.data, args.config, args.out, val_data_dir=args.val_data, options=_fit_options(args))
    _say_once(f"dance stage saved in {run}")


def _parse_levels(text: str) -> list[int]:
    """``"2"`` or ``"1,2"`` -> [2] or [1, 2]; anything else is one clear error."""
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise JbdiffError(f"--levels {text}: expected level numbers separated by commas, e.g. 2 or 1,2") from None


def cmd_encode(args: argparse.Namespace) -> None:
    from jbdiff.core.device import resolve_device
    from levels.codec_io import load_codec
    from levels.latent_shards import encode_folder

    codec = load_codec(args.codec).to(resolve_device(args.device))
    levels = _parse_levels(args.levels) if args.levels else None
    report = encode_folder(
        args.data_dir, codec, args.out, codec_source=str(args.codec), progress=not args.no_progress, levels=levels
    )
    print(
        f"encoded {report.encoded} file(s), {report.skipped_unchanged} unchanged, "
        f"{len(report.failed)} failed, {report.removed} removed -> {args.out}"
    )
    for path, reason in report.failed:
        print(f"  skipped {path}: {reason}", file=sys.stderr)


def cmd_export(args: argparse.Namespace) -> None:
    from jbdiff.bundle import export_bundle
    from jbdiff.core.config import load_yaml
    from jbdiff.core.training import BEST
    from levels.denoiser_training import load_level_config
    from upsampler.dance_training import load_dance_config

    runs = {name: getattr(args, name) for name in STAGES if getattr(args, name)}
    if args.best:
        for name, run in runs.items():
            best = Path(run) / BEST
            if (best / f"{name}.yaml").is_file():
                runs[name] = str(best)
                print(f"{name}: the best checkpoint by validation loss ({best})")
    sampling = load_yaml(args.sampling) if args.sampling else None
    level_config = load_level_config(args.level_config).model if args.level_config else None
    dance_config = load_dance_config(args.dance_config).model if args.dance_config else None
    out = export_bundle(
        runs, args.out, data_note=args.data_note, overwrite=args.overwrite, half=args.half, sampling=sampling,
        level_config=level_config, dance_config=dance_config,
    )
    print(f"bundle with {', '.join(runs)} written to {out}")


def cmd_reconstruct(args: argparse.Namespace) -> None:
    import torch

    from jbdiff.core.audio import load_audio, save_audio
    from jbdiff.core.device import resolve_device
    from jbdiff.core.outputs import claim_outputs
    from levels.codec_io import load_codec

    out = _output_path(args.output, args.overwrite, [args.input])
    with claim_outputs([out], overwrite=args.overwrite, inputs=[args.input]):
        codec = load_codec(args.codec).to(resolve_device(args.device))
        if not 0 <= args.level < codec.levels:
            raise JbdiffError(f"level {args.level} does not exist; this codec has levels 0..{codec.levels - 1}")
        audio = load_audio(args.input, channels=1, min_duration=codec.hops[args.level] / codec.sample_rate)
        decoded = codec.reconstruct(torch.from_numpy(audio)[None], args.level)
        save_audio(out, decoded[0].cpu(), codec.sample_rate)
    print(f"level {args.level} reconstruction written to {out}")


def cmd_eval_codec(args: argparse.Namespace) -> None:
    from jbdiff.core.device import resolve_device
    from jbdiff.evaluate_codec import evaluate_codec
    from levels.codec_io import load_codec

    with _claimed_report([Path(args.json)] if args.json else [], args.overwrite):
        codec = load_codec(args.codec).to(resolve_device(args.device))
        report = evaluate_codec(codec, args.data, seconds=args.seconds, max_files=args.max_files, progress=not args.no_progress)
        print(report.table())
        if args.json:
            report.write_json(args.json)
            print(f"metrics written to {args.json}")


def _claimed_report(paths: list[Path], overwrite: bool) -> contextlib.AbstractContextManager[None]:
    """Refuse an existing report before a long evaluation starts (unless ``overwrite``), and hold it until written."""
    from jbdiff.core.outputs import claim_outputs

    return claim_outputs(paths, overwrite=overwrite)


def cmd_eval_generation(args: argparse.Namespace) -> None:
    with _claimed_report([Path(args.json).with_suffix(s) for s in (".json", ".md")] if args.json else [], args.overwrite):
        _eval_generation(args)


def _eval_generation(args: argparse.Namespace) -> None:
    from jbdiff import evaluate_generation as ev
    from jbdiff.pipeline import Pipeline

    pipe = Pipeline.from_pretrained(args.model, device=args.device, dtype=args.dtype)
    common = {"settings": _sampling_settings(args, pipe.settings), "seconds": getattr(args, "seconds", None),
              "max_files": args.max_files, "seed": args.seed, "progress": not args.no_progress}
    if args.target == "continuation":
        report = ev.evaluate_continuation(args.data, pipe, seed_seconds=args.seed_seconds, **common)
    elif args.target == "inpaint":
        common.pop("seconds")
        regions = _numbers("--regions", args.regions)
        report = ev.evaluate_inpaint(
            args.data, pipe, regions=regions, context_seconds=args.context_seconds, loop_seconds=args.loop_seconds,
            fade=args.fade, jumps=args.jumps, **common,
        )
    else:
        report = ev.evaluate_remix(args.data, pipe, strengths=_numbers("--strengths", args.strengths), **common)
    print(ev.report_markdown(report))
    if args.json:
        written = ev.write_report(report, Path(args.json).with_suffix(""))
        print(f"report written to {', '.join(str(p) for p in written[:2])} and {len(written) - 2} plot(s)")


def _numbers(option: str, text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise JbdiffError(f"{option}: '{text}' is not a comma-separated list of numbers") from None


def _sampling_settings(args: argparse.Namespace, defaults: Any) -> Any:
    """The bundle's (or the preset's) sampling settings with the command-line options applied."""
    from jbdiff.sampling_settings import PRESETS, with_options

    fields = ("noise_style", "noise_step", "window_multiplier", "crossfade", "crossfade_samples", "match_loudness", "match_tone", "seed_echo", "batch", "seed")
    return with_options(
        PRESETS[args.preset] if args.preset else defaults,
        levels=args.levels, steps=args.steps, guidance=args.guidance, init_strength=args.init_strength, sampler=args.sampler,
        **{field: getattr(args, field) for field in fields if getattr(args, field, None) is not None},
    )


def _run_sampling(args: argparse.Namespace, run: Callable[[Any, Any], Any], inputs: Sequence[str | None] = ()) -> None:
    """Shared by continue / remix / generate: check the outputs, load the model, run, report.

    The outputs are checked against the ``inputs`` (files the run reads) before anything loads;
    the pipeline claims them for the run.
    """
    from jbdiff.core.audio import save_format
    from jbdiff.pipeline import Pipeline

    save_format(args.output)
    out = _output_path(args.output, args.overwrite, inputs, batch=args.batch or 1)
    pipe = Pipeline.from_pretrained(args.model, device=args.device, dtype=args.dtype)
    settings = _sampling_settings(args, pipe.settings)
    result = run(pipe, settings)
    manifest = result.manifest
    seconds = manifest["samples"] / manifest["sample_rate"]
    kind = "stereo" if manifest["channels"] == 2 else "mono"
    for path in result.paths:
        print(f"wrote {path} ({seconds:.1f} s, {kind}) in {manifest['wall_s']:.0f} s; spectrogram {path.with_suffix('.png')}")
    print(f"manifest {out.with_suffix('.json')}")


def cmd_continue(args: argparse.Namespace) -> None:
    from jbdiff.core.audio import load_audio

    _run_sampling(args, lambda pipe, settings: pipe.continue_(
        load_audio(args.seed_audio, channels=None), SAMPLE_RATE, args.seconds, include_seed=args.include_seed,
        settings=settings, out=args.output, overwrite=args.overwrite, progress=not args.no_progress), [args.seed_audio])


def cmd_remix(args: argparse.Namespace) -> None:
    def run(pipe: Any, settings: Any) -> Any:  # the input is read a block per pass, the context only near its end
        return pipe.remix(args.input, SAMPLE_RATE, args.strength, context=args.context, settings=settings, out=args.output,
                          overwrite=args.overwrite, progress=not args.no_progress)

    _run_sampling(args, run, [args.input, args.context])


def cmd_generate(args: argparse.Namespace) -> None:
    _run_sampling(args, lambda pipe, settings: pipe.generate(
        args.seconds, settings=settings, out=args.output, overwrite=args.overwrite, progress=not args.no_progress))


def cmd_studio(args: argparse.Namespace) -> None:
    try:
        from jbdiff.studio import serve
    except ModuleNotFoundError as error:
        if error.name != "gradio":
            raise
        raise JbdiffError("jbdiff studio needs Gradio: pip install 'jbdiff[studio]'") from None
    serve(args.model, host=args.host, port=args.port, device=args.device, dtype=args.dtype, outputs=args.outputs)




def cmd_inpaint(args: argparse.Namespace) -> None:
    from jbdiff.core.audio import load_audio

    audio = load_audio(args.input, channels=None)
    _run_sampling(args, lambda pipe, settings: pipe.inpaint(
        audio, SAMPLE_RATE, args.start, args.end, fade=args.fade, jumps=args.jumps, settings=settings, out=args.output,
        progress=not args.no_progress), [args.input])


def cmd_extend(args: argparse.Namespace) -> None:
    from jbdiff.core.audio import load_audio

    audio = load_audio(args.input, channels=None)
    _run_sampling(args, lambda pipe, settings: pipe.extend(
        audio, SAMPLE_RATE, before=args.before, after=args.after, fade=args.fade, jumps=args.jumps, settings=settings,
        out=args.output, progress=not args.no_progress), [args.input])


def cmd_loop(args: argparse.Namespace) -> None:
    from jbdiff.core.audio import load_audio

    audio = load_audio(args.input, channels=None)
    _run_sampling(args, lambda pipe, settings: pipe.loop(
        audio, SAMPLE_RATE, args.seconds, fade=args.fade, jumps=args.jumps, settings=settings, out=args.output,
        progress=not args.no_progress), [args.input])


def cmd_morph(args: argparse.Namespace) -> None:
    from jbdiff.core.audio import load_audio

    a, b = load_audio(args.a, channels=None), load_audio(args.b, channels=None)
    _run_sampling(args, lambda pipe, settings: pipe.morph(
        a, b, SAMPLE_RATE, args.clips, settings=settings, out=args.output, progress=not args.no_progress), [args.a, args.b])


def _add_edit_options(p: argparse.ArgumentParser, fade: str) -> None:
    p.add_argument("--fade", type=float, help=fade)
    p.add_argument("--jumps", type=int, default=0, help="RePaint resamplings per step at the first level (default: 0; each one adds that level's cost again)")


def _add_sampling_options(p: argparse.ArgumentParser, steps_flag: str = "--steps") -> None:
    p.add_argument("-o", "--output", required=True, help="audio file to write (.wav, .flac or .ogg); a .png and a .json go beside it")
    p.add_argument("--model", help="model bundle folder (default: the demo bundle shipped with jbdiff)")
    _add_recipe_options(p, steps_flag)
    p.add_argument("--seed", type=int, help="random seed; the same seed on the same device gives the same audio (default: 0)")
    p.add_argument("--batch", type=int, help="takes generated together; more than one writes OUT_take1, OUT_take2, ...")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default: auto)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def _add_recipe_options(p: argparse.ArgumentParser, steps_flag: str = "--steps") -> None:
    """How to sample (on top of the bundle's own settings): shared by the sampling and evaluation commands.

    ``steps_flag`` names the sampling-steps option where a command uses ``--steps`` otherwise (morph).
    """
    from jbdiff.core.crossfade import CROSSFADES
    from jbdiff.core.noise import NOISE_STYLES

    p.add_argument("--preset", choices=("default", "v1"), help="start from jbdiff's default recipe or Jukebox-Diffusion v1's (default: the bundle's own)")
    p.add_argument("--levels", help="stages to run, coarsest first: 2,1,0,dance (default), or e.g. 2,1 to stop at level 1")
    p.add_argument(steps_flag, dest="steps", help="sampling steps: one number for every stage, or per stage as 2=50,1=18,0=8,dance=20")
    p.add_argument("--guidance", help="classifier-free guidance scale, e.g. 2=4,1=2,0=1.3")
    p.add_argument("--init-strength", dest="init_strength", help="fraction of each stage's steps skipped, e.g. 1=0.67,0=0.5,dance=0.23")
    p.add_argument("--sampler", help="dpm (DPM-Solver++(2M)), dpm3 (DPM-Solver++(3M)) or v (the reference sampler), for every stage or e.g. 2=dpm3")
    p.add_argument("--noise-style", dest="noise_style", choices=NOISE_STYLES, help="starting noise of consecutive windows (default: random)")
    p.add_argument("--noise-step", dest="noise_step", type=float, help="step size of the region and walk noise styles (default: 0.05)")
    p.add_argument("--window-multiplier", dest="window_multiplier", type=int, help="base windows generated per pass")
    p.add_argument("--crossfade", choices=CROSSFADES, help="crossfade between passes (default: constant-power)")
    p.add_argument("--crossfade-samples", dest="crossfade_samples", type=int, help="crossfade length in samples (default: 1536)")
    p.add_argument(
        "--match-loudness", dest="match_loudness", action=argparse.BooleanOptionalAction,
        help="scale a continuation to the seed's loudness, by at most 12 dB (default: the bundle's setting)",
    )
    p.add_argument(
        "--match-tone", dest="match_tone", action=argparse.BooleanOptionalAction,
        help="equalise a continuation to the seed's long-term spectrum, cutting each band by at most 24 dB (default: the bundle's setting)",
    )
    p.add_argument(
        "--seed-echo", dest="seed_echo", type=float,
        help="continuations start from the seed's last 10 s looped and re-noised, keeping this much of it: 0 (from noise) to below 1 (default: the bundle's setting)",
    )
    p.add_argument("--dtype", default="float32", help="float32, float16 or bfloat16 for the diffusion stages (default: float32)")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (subcommands and their options)."""
    parser = argparse.ArgumentParser(prog="jbdiff", description="Hierarchical latent diffusion for music.")
    parser.add_argument("--version", action="version", version=f"jbdiff {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument("-q", "--quiet", action="store_true", help="only print warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser("train", help="train one stage").add_subparsers(dest="stage", required=True, metavar="STAGE")
    codec = train.add_parser("codec", help="train the 3-level VQ-VAE codec on a folder of audio")
    codec.add_argument("--data", required=True, help="folder of audio files (searched recursively)")
    codec.add_argument("--config", required=True, help="codec YAML config, e.g. configs/codec/tiny.yaml")
    codec.add_argument("--out", required=True, help="run folder; training resumes from its last checkpoint")
    _add_trainer_options(codec)
    codec.set_defaults(func=cmd_train_codec)

    for stage, role in (("level2", "the level-2 base prior"), ("level1", "the level-1 residual upsampler"),
                        ("level0", "the level-0 residual upsampler")):
        lv = train.add_parser(stage, help=f"train {role} from pre-encoded latents")
        lv.add_argument("--latents", required=True, help="latents folder written by 'jbdiff encode'")
        lv.add_argument("--config", required=True, help=f"level YAML config, e.g. configs/{stage}/tiny.yaml")
        lv.add_argument("--out", required=True, help="run folder; training resumes from its last checkpoint")
        lv.add_argument("--codec", help="codec the latents were encoded with (default: the one in their manifest)")
        lv.add_argument(
            "--val-latents",
            help="latents of files kept out of training (same codec): held-out loss by noise level in RUN/val.jsonl, "
            "best weights in RUN/best/",
        )
        _add_trainer_options(lv)
        lv.set_defaults(func=cmd_train_level)

    dance = train.add_parser("dance", help="train the stereo Dance-Diffusion refiner on a folder of audio")
    dance.add_argument("--data", required=True, help="folder of audio files (searched recursively; stereo kept)")
    dance.add_argument("--config", required=True, help="dance YAML config, e.g. configs/dance/tiny.yaml")
    dance.add_argument("--out", required=True, help="run folder; training resumes from its last checkpoint")
    dance.add_argument(
        "--val-data",
        help="folder of audio kept out of training: held-out loss by noise level on fixed crops in RUN/val.jsonl, "
        "best weights in RUN/best/",
    )
    _add_trainer_options(dance)
    dance.set_defaults(func=cmd_train_dance)

    enc = sub.add_parser("encode", help="pre-encode a folder of audio into latent shards for training")
    enc.add_argument("data_dir", help="folder of audio files (searched recursively)")
    enc.add_argument("--codec", required=True, help="codec run folder, model bundle or vqvae.pth.tar")
    enc.add_argument("--out", required=True, help="latents folder; a rerun encodes only new or changed files")
    enc.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default: auto)")
    enc.add_argument("--levels", help="levels to store, e.g. 2 for the base prior only (default: all)")
    enc.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    enc.set_defaults(func=cmd_encode)

    exp = sub.add_parser("export", help="collect trained stages into one model bundle")
    exp.add_argument("--codec", required=True, help="codec run folder, bundle, or OpenAI Jukebox vqvae.pth.tar")
    for name in SAMPLING_STAGES:
        published = "Dance Diffusion" if name == "dance" else "Jukebox-Diffusion v1"
        exp.add_argument(f"--{name}", help=f"{name} run folder, bundle, or {published} .ckpt file")
    exp.add_argument(
        "--best",
        action="store_true",
        help="take each run's best weights by held-out validation loss (RUN/best/, written when trained "
        "with --val-latents) instead of its last",
    )
    exp.add_argument("--level-config", help="level YAML whose model is the architecture of v1 .ckpt levels (default: v1's)")
    exp.add_argument("--dance-config", help="Dance YAML whose model is the architecture of a Dance .ckpt (default: published)")
    exp.add_argument("--out", required=True, help="bundle folder to write")
    exp.add_argument("--data-note", default="", help="what the models were trained on (kept in bundle.yaml)")
    exp.add_argument("--overwrite", action="store_true", help="replace the stages of an existing bundle")
    exp.add_argument("--half", action="store_true", help="store the diffusion stages as float16 (half the size)")
    exp.add_argument(
        "--sampling",
        help="YAML of the bundle's recommended sampling settings (steps, guidance, ...); default: none, or v1's preset for v1 .ckpt levels",
    )
    exp.set_defaults(func=cmd_export)

    rec = sub.add_parser("reconstruct", help="encode a file at one level and decode it back")
    rec.add_argument("input", help="audio file to reconstruct")
    rec.add_argument("output", help="output file (.wav, .flac or .ogg)")
    rec.add_argument("--codec", required=True, help="codec run folder, model bundle or vqvae.pth.tar")
    rec.add_argument("--level", type=int, choices=(0, 1, 2), default=2, help="latent level (default: 2, the coarsest)")
    rec.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default: auto)")
    rec.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    rec.set_defaults(func=cmd_reconstruct)

    cont = sub.add_parser("continue", help="continue a seed clip")
    cont.add_argument("seed_audio", metavar="SEED", help="audio file to continue (any format and sample rate)")
    cont.add_argument("--seconds", type=float, required=True, help="seconds of music to add")
    cont.add_argument("--include-seed", action="store_true", help="write the seed and its continuation as one file")
    _add_sampling_options(cont)
    cont.set_defaults(func=cmd_continue)

    rmx = sub.add_parser("remix", help="re-noise a recording and denoise it (keeps its length)")
    rmx.add_argument("input", help="audio file to remix")
    rmx.add_argument("--strength", type=float, required=True, help="0 keeps the input, 1 replaces it entirely")
    rmx.add_argument("--context", help="audio file whose end serves as the context before the input")
    _add_sampling_options(rmx)
    rmx.set_defaults(func=cmd_remix)

    gen = sub.add_parser("generate", help="generate music from nothing")
    gen.add_argument("--seconds", type=float, required=True, help="seconds of music to generate")
    _add_sampling_options(gen)
    gen.set_defaults(func=cmd_generate)

    std = sub.add_parser("studio", help="open the web app: every move (continue, remix, repaint, extend, loop, morph, generate) in a browser")
    std.add_argument("--model", help="model bundle folder (default: the demo bundle shipped with jbdiff)")
    std.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    std.add_argument("--port", type=int, default=7860, help="port to listen on (default: 7860)")
    std.add_argument("--outputs", help="folder where every result is also saved (default: a new temporary folder)")
    std.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default: auto)")
    std.add_argument("--dtype", default="float32", help="float32, float16 or bfloat16 for the diffusion stages (default: float32)")
    std.set_defaults(func=cmd_studio)

    inp = sub.add_parser("inpaint", help="regenerate a region of a recording so that it joins what is around it")
    inp.add_argument("input", help="audio file to edit")
    inp.add_argument("--start", type=float, required=True, help="start of the region, seconds")
    inp.add_argument("--end", type=float, required=True, help="end of the region, seconds (at most the file's end)")
    _add_edit_options(inp, "equal-power fades at both ends of the region, inside it, seconds (default: 0.05, at most half the region)")
    _add_sampling_options(inp)
    inp.set_defaults(func=cmd_inpaint)

    ext = sub.add_parser("extend", help="add new music before the start or after the end of a recording")
    ext.add_argument("input", help="audio file to extend")
    side = ext.add_mutually_exclusive_group(required=True)
    side.add_argument("--before", type=float, help="seconds of new music before the start, leading into it")
    side.add_argument("--after", type=float, help="seconds of new music after the end (a continuation that includes the input)")
    _add_edit_options(ext, "fade from the new music into the input with --before, seconds (default: 0.05)")
    _add_sampling_options(ext)
    ext.set_defaults(func=cmd_extend)

    lp = sub.add_parser("loop", help="a piece continuing a recording whose end flows into its start")
    lp.add_argument("input", help="audio file whose end the loop continues (at least one window long)")
    lp.add_argument("--seconds", type=float, required=True, help="length of the loop, seconds")
    _add_edit_options(lp, "fades at the ends of the regenerated wrap-around, seconds (default: 0.05)")
    _add_sampling_options(lp)
    lp.set_defaults(func=cmd_loop)

    mo = sub.add_parser("morph", help="one file walking from recording A to recording B")
    mo.add_argument("a", metavar="A", help="audio file to start from (at least one pass long)")
    mo.add_argument("b", metavar="B", help="audio file to end at (at least one pass long)")
    mo.add_argument("--steps", dest="clips", type=int, required=True, help="clips (passes) from A to B, both included")
    _add_sampling_options(mo, steps_flag="--sampling-steps")
    mo.set_defaults(func=cmd_morph)

    ev = sub.add_parser("eval", help="evaluate a model").add_subparsers(dest="target", required=True, metavar="TARGET")
    evc = ev.add_parser("codec", help="reconstruction metrics per level on a folder of audio")
    evc.add_argument("--codec", required=True, help="codec run folder, model bundle or vqvae.pth.tar")
    evc.add_argument("--data", required=True, help="folder of audio files")
    evc.add_argument("--json", help="also write the metrics to this JSON file")
    evc.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    evc.add_argument("--seconds", type=float, default=30.0, help="seconds evaluated per file, from its start (default: 30)")
    evc.add_argument("--max-files", type=int, help="evaluate at most this many files")
    evc.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default: auto)")
    evc.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    evc.set_defaults(func=cmd_eval_codec)

    for target, what in (("continuation", "continue a seed from every file and score it, after every stage, against real music and baselines"),
                         ("remix", "remix a clip of every file at several strengths and score output against input"),
                         ("inpaint", "inpaint regions of every file and score them and their seams against the real region and baselines")):
        evg = ev.add_parser(target, help=what)
        evg.add_argument("--data", required=True, help="folder of audio files (held-out music)")
        evg.add_argument("--model", help="model bundle (default: the demo bundle shipped with jbdiff)")
        evg.add_argument("--json", help="write OUT.json, OUT.md (markdown table) and OUT_<metric>.png plots")
        evg.add_argument("--overwrite", action="store_true", help="replace an existing report (OUT.json, OUT.md and its plots)")
        if target != "inpaint":
            evg.add_argument("--seconds", type=float, default=20.0, help="seconds generated per file (default: 20)")
        if target == "continuation":
            evg.add_argument("--seed-seconds", type=float, default=10.0, help="seconds of seed, from one third in (default: 10)")
        elif target == "inpaint":
            evg.add_argument("--regions", default="1,3,10", help="lengths of the regions inpainted, seconds (default: 1,3,10)")
            evg.add_argument("--context-seconds", type=float, default=6.0, help="seconds of music before each region, from one third in (default: 6)")
            evg.add_argument("--loop-seconds", type=float, default=6.0, help="length of the loop whose wrap is measured; 0: none (default: 6)")
            evg.add_argument("--fade", type=float, default=0.05, help="fades either side of each region, seconds (default: 0.05)")
            evg.add_argument("--jumps", type=int, default=0, help="RePaint resamplings per step (default: 0)")
        else:
            evg.add_argument("--strengths", default="0.25,0.5,0.75,1", help="remix strengths (default: 0.25,0.5,0.75,1)")
        evg.add_argument("--max-files", type=int, help="evaluate at most this many files")
        evg.add_argument("--seed", type=int, default=0, help="random seed; file i uses seed + i (default: 0)")
        evg.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default: auto)")
        evg.add_argument("--no-progress", action="store_true", help="hide the progress bar")
        _add_recipe_options(evg)
        evg.set_defaults(func=cmd_eval_generation)
    return parser


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C so that the same cleanup runs."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Terminated


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    func: Callable[[argparse.Namespace], None] = args.func
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if main_thread else None
    try:
        func(args)
    except JbdiffError as err:
        if args.debug:
            raise
        print(f"jbdiff: error: {err}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt as stop:
        if args.debug:
            raise
        what = "terminated" if isinstance(stop, _Terminated) else "interrupted"
        print(f"jbdiff: {what}; no partial output was written", file=sys.stderr)
        return EXIT_TERMINATED if isinstance(stop, _Terminated) else EXIT_INTERRUPTED
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
