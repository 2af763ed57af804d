"""``jbdiff studio``: a local web app (Gradio) over :class:`jbdiff.pipeline.Pipeline`.

One tab per move (Continue, Remix, Repaint, Extend, Loop, Generate), the bundle's sampling
settings in an "advanced" panel, a seed with a dice button, several takes side by side, a
progress bar per stage with the time left, a Stop button, and for each take a player, the
spectrogram, downloads (WAV, FLAC, OGG, the manifest) and "use as input". Jobs run one at a
time; a second browser tab waits with its place in the queue shown. The app samples nothing itself: every move is one ``Pipeline``
call that streams to a file, whose progress callback reports and cancels. It binds the loopback
address by default and sends nothing anywhere (no analytics, no share link).
"""

from __future__ import annotations

import dataclasses
import html
import itertools
import logging
import os
import queue
import random
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import soundfile as sf

from jbdiff.core.audio import SAMPLE_RATE, audio_info, load_audio
from jbdiff.core.audio_stream import AudioStreamWriter
from jbdiff.core.crossfade import CROSSFADES
from jbdiff.core.errors import JbdiffError
from jbdiff.core.noise import NOISE_STYLES
from jbdiff.core.samplers import SAMPLERS
from jbdiff.core.stages import SAMPLING_STAGES
from jbdiff.editing import DEFAULT_FADE_SECONDS
from jbdiff.pipeline import Generation, Pipeline, StageProgress
from jbdiff.sampling_settings import PRESETS, SamplingSettings, StageSettings

logger = logging.getLogger(__name__)

MAX_TAKES = 4
DOWNLOAD_FORMATS = (".wav", ".flac", ".ogg")
_STAGE_FIELDS = ("steps", "guidance", "init_strength", "sampler")
_GLOBAL_FIELDS = ("levels", "noise_style", "noise_step", "window_multiplier", "crossfade", "crossfade_samples", "match_loudness", "seed_echo", "match_tone")
_PRESET_CHOICES = {"the bundle's own": None, "jbdiff default": "default", "Jukebox-Diffusion v1": "v1"}


class Cancelled(JbdiffError):
    """The user pressed Stop."""


def _say(error: BaseException, uploads: list[str | None]) -> str:
    """One sentence for the page: a JbdiffError as the CLI prints it, uploads named by their file name."""
    if not isinstance(error, JbdiffError):
        logger.exception("studio job failed", exc_info=error)
        return f"Something went wrong ({type(error).__name__}: {error}); the details are in the terminal."
    text = str(error)
    for upload in uploads:
        if upload:
            text = text.replace(str(Path(upload)), Path(upload).name)
    return text


def describe_upload(path: str | None) -> str:
    """What the file's header says (or why it cannot be used), in one line."""
    if not path:
        return ""
    try:
        info = audio_info(path)
    except JbdiffError as error:
        return f"⚠️ {_say(error, [path])}"
    minutes, seconds = divmod(info.duration, 60)
    channels = {1: "mono", 2: "stereo"}.get(info.channels, f"{info.channels} channels")
    return f"{Path(path).name}: {int(minutes)}:{seconds:04.1f}, {channels}, {info.sample_rate} Hz"


def _progress_html(stages: tuple[StageProgress, ...], note: str = "") -> str:
    """One bar per stage with its evaluations and time left, then the whole run's time left."""
    rows = []
    for stage in stages:
        left = stage.remaining
        eta = "done" if stage.done == stage.total else ("…" if left is None else f"{left:.0f} s left")
        rows.append(
            f'<div class="jb-stage"><span class="jb-name">{stage.stage}</span>'
            f'<progress value="{stage.done}" max="{max(stage.total, 1)}"></progress>'
            f'<span class="jb-count">{stage.done}/{stage.total} · {eta}</span></div>'
        )
    left = [s.remaining for s in stages if s.done < s.total]
    total = f"<div class='jb-total'>about {sum(t or 0.0 for t in left):.0f} s left</div>" if left and None not in left else ""
    return f"<div class='jb-progress'>{''.join(rows)}{total}<div class='jb-note'>{html.escape(note)}</div></div>"


def _transcode(wav: Path, target: Path) -> Path:
    """``wav`` as ``target``'s format, block by block (atomic, scaled like every other save)."""
    info = sf.info(wav)
    with AudioStreamWriter(target, info.channels, info.samplerate) as writer:
        for block in sf.blocks(wav, blocksize=1 << 16, dtype="float32", always_2d=True):
            writer.write(block.T)
    return target


@dataclasses.dataclass
class _Run:
    """A job's worker thread: the latest progress, and the result or error when it ends."""

    updates: queue.Queue[tuple[str, Any]] = dataclasses.field(default_factory=queue.Queue)
    stop: threading.Event = dataclasses.field(default_factory=threading.Event)


class Studio:
    """The app's state: one loaded pipeline, an output folder, one job at a time."""

    def __init__(self, pipe: Pipeline, outputs: Path) -> None:
        self.pipe, self.outputs = pipe, outputs
        self._busy = threading.Lock()  # held by the job that runs the pipeline
        self._runs: dict[str, _Run] = {}  # session -> its running job
        self._names = itertools.count(1)

    # ---- settings -------------------------------------------------------------------------------

    def settings_from(self, values: list[Any]) -> SamplingSettings:
        """SamplingSettings from the advanced panel's values (in :meth:`settings_values` order)."""
        fields = dict(zip(_GLOBAL_FIELDS, values[: len(_GLOBAL_FIELDS)], strict=True))
        stage_values = values[len(_GLOBAL_FIELDS) :]
        stages = {}
        for index, name in enumerate(SAMPLING_STAGES):
            own = dict(zip(_STAGE_FIELDS, stage_values[index * 4 : index * 4 + 4], strict=True))
            stages[name] = StageSettings(
                steps=int(own["steps"]), guidance=float(own["guidance"]), init_strength=float(own["init_strength"]), sampler=own["sampler"]
            )
        return dataclasses.replace(
            self.pipe.settings, levels=tuple(fields["levels"]), noise_style=fields["noise_style"], noise_step=float(fields["noise_step"]),
            window_multiplier=int(fields["window_multiplier"]), crossfade=fields["crossfade"],
            crossfade_samples=int(fields["crossfade_samples"]), match_loudness=bool(fields["match_loudness"]),
            seed_echo=float(fields["seed_echo"]), match_tone=bool(fields["match_tone"]), **stages,
        )

    def settings_values(self, preset: str | None) -> list[Any]:
        """The advanced panel's values for a preset (``None``: the bundle's own settings)."""
        settings = PRESETS[preset] if preset else self.pipe.settings
        values: list[Any] = [getattr(settings, name) for name in _GLOBAL_FIELDS]
        values[0] = list(settings.levels)
        for name in SAMPLING_STAGES:
            values += [getattr(settings.stage(name), field) for field in _STAGE_FIELDS]
        return values

    # ---- jobs -----------------------------------------------------------------------------------

    def job(
        self, move: str, call: Callable[[SamplingSettings, Path, Callable[[tuple[StageProgress, ...]], None]], Generation],
        settings: Callable[[], SamplingSettings], uploads: list[str | None], session: str,
    ) -> Iterator[dict[str, Any]]:
        """Run one move in a worker thread; yield the progress, then the takes (or one sentence)."""
        run = _Run()
        self._runs[session] = run

        def report(stages: tuple[StageProgress, ...]) -> None:
            if run.stop.is_set():
                raise Cancelled("stopped; nothing was written")
            run.updates.put(("progress", stages))

        def work() -> None:
            try:
                chosen = settings()
                out = self.outputs / f"{time.strftime('%Y%m%d-%H%M%S')}-{next(self._names):03d}-{move.lower()}.wav"
                with self._busy:
                    result = call(chosen, out, report)
                run.updates.put(("done", (result, out)))
            except BaseException as error:  # noqa: BLE001 - every failure becomes one sentence in the page
                run.updates.put(("error", error))

        threading.Thread(target=work, name=f"jbdiff-studio-{move}", daemon=True).start()
        yield {"status": "", "progress": _progress_html((), f"{move}: loading the input…")}
        try:
            while True:
                kind, value = run.updates.get()
                while kind == "progress" and not run.updates.empty():
                    kind, value = run.updates.get()  # only the latest progress matters
                if kind == "progress":
                    finished = all(stage.done == stage.total for stage in value)
                    yield {"progress": _progress_html(value, "writing the spectrogram and the downloads…" if finished else f"{move} running…")}
                elif kind == "done":
                    yield {"status": "", "progress": "", "result": self._result(*value)}
                    return
                else:
                    note = "⏹ Stopped; nothing was written." if isinstance(value, Cancelled) else f"⚠️ {_say(value, uploads)}"
                    yield {"status": note, "progress": ""}
                    return
        finally:
            run.stop.set()  # a page that went away stops its job
            self._runs.pop(session, None)

    def stop(self, session: str) -> str:
        """Ask this browser session's job to stop at its next network evaluation."""
        run = self._runs.get(session)
        if run is None:
            return "Nothing is running."
        run.stop.set()
        return "Stopping…"

    def _result(self, result: Generation, out: Path) -> dict[str, Any]:
        """Per take: its WAV, spectrogram and downloads (WAV, FLAC, OGG, manifest); the manifest."""
        manifest_path = out.with_suffix(".json")
        takes = []
        for path in result.paths:
            downloads = [str(path)] + [str(_transcode(path, path.with_suffix(suffix))) for suffix in DOWNLOAD_FORMATS[1:]]
            takes.append({"audio": str(path), "image": str(path.with_suffix(".png")), "files": [*downloads, str(manifest_path)]})
        return {"takes": takes, "manifest": result.manifest}


def _upload(path: str | None, what: str) -> str:
    """The path of an upload (or recording), refused when there is none."""
    if not path:
        raise JbdiffError(f"no {what}: upload a file or record one first")
    return path


def _load_input(path: str | None, what: str) -> np.ndarray:
    """An upload read as the CLI reads its input files."""
    return load_audio(_upload(path, what), channels=None)


_CSS = """
.jb-progress { font-variant-numeric: tabular-nums; }
.jb-stage { display: flex; align-items: center; gap: 0.6em; margin: 0.15em 0; }
.jb-stage .jb-name { width: 4.5em; font-family: monospace; }
.jb-stage progress { flex: 1; height: 0.9em; }
.jb-stage .jb-count { width: 12em; text-align: right; }
.jb-total { font-weight: 600; margin-top: 0.3em; }
#jb-status { min-height: 1.5em; }
"""


def _audio_input(what: str, elem_id: str) -> gr.Audio:
    return gr.Audio(label=f"{what} (upload or record)", sources=["upload", "microphone"], type="filepath", buttons=["download"], elem_id=elem_id)


def _edit_options(fade: str) -> tuple[gr.Number, gr.Number]:
    """The editing commands' --fade and --jumps, at their defaults."""
    with gr.Row():
        return (
            gr.Number(value=DEFAULT_FADE_SECONDS, minimum=0, label=f"Fade ({fade})"),
            gr.Number(value=0, precision=0, minimum=0, label="RePaint jumps per step (each adds the first level's cost again)"),
        )


def build_app(studio: Studio) -> gr.Blocks:
    """The page: moves in tabs, shared settings, progress and Stop, takes side by side."""
    pipe = studio.pipe
    defaults = studio.settings_values(None)
    with gr.Blocks(title="jbdiff studio", analytics_enabled=False, delete_cache=(3600, 86400)) as app:
        gr.Markdown(
            f"# jbdiff studio\nModel: `{pipe.path}` on {pipe.device} · results are also saved in `{studio.outputs}`"
        )
        inputs: dict[str, gr.Audio] = {}
        with gr.Row(equal_height=False):
            with gr.Column(scale=5, min_width=400):
                with gr.Tabs(elem_id="jb-moves") as tabs:
                    with gr.Tab("Continue", id="Continue", elem_id="jb-tab-continue"):
                        inputs["Continue"] = _audio_input("Seed", "jb-continue-input")
                        continue_info = gr.Markdown(elem_classes="jb-info")
                        with gr.Row():
                            continue_seconds = gr.Slider(1, 300, value=20, step=1, label="Seconds to add", elem_id="jb-continue-seconds")
                            include_seed = gr.Checkbox(label="Keep the seed at the start", value=True)
                        continue_button = gr.Button("Continue", variant="primary", elem_id="jb-run-continue")
                    with gr.Tab("Remix", id="Remix", elem_id="jb-tab-remix"):
                        inputs["Remix"] = _audio_input("Recording to remix", "jb-remix-input")
                        remix_info = gr.Markdown(elem_classes="jb-info")
                        strength = gr.Slider(0, 1, value=0.5, step=0.01, label="Strength (0 keeps the input, 1 replaces it)")
                        with gr.Accordion("Context (optional): music whose end comes before the input", open=False):
                            context = gr.Audio(label="Context", sources=["upload"], type="filepath", buttons=["download"])
                        remix_button = gr.Button("Remix", variant="primary", elem_id="jb-run-remix")
                    with gr.Tab("Repaint", id="Repaint", elem_id="jb-tab-repaint"):
                        inputs["Repaint"] = _audio_input("Recording to repaint", "jb-repaint-input")
                        repaint_info = gr.Markdown(elem_classes="jb-info")
                        with gr.Row():
                            region_start = gr.Number(value=0.0, minimum=0, label="Region start (s)", elem_id="jb-repaint-start")
                            region_end = gr.Number(value=2.0, minimum=0, label="Region end (s)", elem_id="jb-repaint-end")
                        repaint_fade, repaint_jumps = _edit_options("fade at each end of the region, inside it, seconds")
                        repaint_button = gr.Button("Repaint", variant="primary", elem_id="jb-run-repaint")
                    with gr.Tab("Extend", id="Extend", elem_id="jb-tab-extend"):
                        inputs["Extend"] = _audio_input("Recording to extend", "jb-extend-input")
                        extend_info = gr.Markdown(elem_classes="jb-info")
                        with gr.Row():
                            side = gr.Radio(["after the end", "before the start"], value="after the end", label="New music goes")
                            extend_seconds = gr.Slider(1, 300, value=10, step=1, label="Seconds", elem_id="jb-extend-seconds")
                        extend_fade, extend_jumps = _edit_options("fade into the input (before the start), seconds")
                        extend_button = gr.Button("Extend", variant="primary", elem_id="jb-run-extend")
                    with gr.Tab("Loop", id="Loop", elem_id="jb-tab-loop"):
                        inputs["Loop"] = _audio_input("Recording the loop continues", "jb-loop-input")
                        loop_info = gr.Markdown(elem_classes="jb-info")
                        loop_seconds = gr.Slider(1, 120, value=8, step=1, label="Loop length (s)", elem_id="jb-loop-seconds")
                        loop_fade, loop_jumps = _edit_options("fade around the wrap point, seconds")
                        loop_button = gr.Button("Loop", variant="primary", elem_id="jb-run-loop")
                    with gr.Tab("Morph", id="Morph", elem_id="jb-tab-morph"):
                        with gr.Row():
                            morph_a = _audio_input("From recording A", "jb-morph-a")
                            morph_b = _audio_input("To recording B", "jb-morph-b")
                        morph_info = gr.Markdown(elem_classes="jb-info")
                        morph_clips = gr.Slider(1, 32, value=4, step=1, label="Clips (passes) from A to B, both included", elem_id="jb-morph-clips")
                        morph_button = gr.Button("Morph", variant="primary", elem_id="jb-run-morph")
                    with gr.Tab("Generate", id="Generate", elem_id="jb-tab-generate"):
                        generate_seconds = gr.Slider(1, 300, value=20, step=1, label="Seconds", elem_id="jb-generate-seconds")
                        generate_button = gr.Button("Generate", variant="primary", elem_id="jb-run-generate")

                with gr.Row():
                    seed = gr.Number(value=pipe.settings.seed, precision=0, label="Seed", minimum=0, scale=3)
                    dice = gr.Button("🎲", scale=0, min_width=60, elem_id="jb-dice")
                    batch = gr.Slider(1, MAX_TAKES, value=1, step=1, label="Takes (generated together)", scale=4, elem_id="jb-batch")
                with gr.Accordion("Advanced: sampling settings (defaults: the bundle's own)", open=False):
                    preset = gr.Dropdown(list(_PRESET_CHOICES), value="the bundle's own", label="Start from")
                    with gr.Row():
                        levels = gr.CheckboxGroup(list(SAMPLING_STAGES), value=defaults[0], label="Stages to run (coarsest first)")
                        noise_style = gr.Dropdown(list(NOISE_STYLES), value=defaults[1], label="Noise style")
                        noise_step = gr.Number(value=defaults[2], label="Noise step", minimum=0, maximum=1)
                    with gr.Row():
                        window_multiplier = gr.Number(value=defaults[3], precision=0, minimum=1, label="Base windows per pass")
                        crossfade = gr.Dropdown(list(CROSSFADES), value=defaults[4], label="Crossfade")
                        crossfade_samples = gr.Number(value=defaults[5], precision=0, minimum=0, label="Crossfade samples")
                        match_loudness = gr.Checkbox(value=defaults[6], label="Continue at the seed's loudness")
                        seed_echo = gr.Slider(0, 0.9, value=defaults[7], step=0.05, label="Seed echo (continuations start from the seed looped)")
                        match_tone = gr.Checkbox(value=defaults[8], label="Continue in the seed's tone colour (equaliser)")
                    advanced: list[gr.components.Component] = [
                        levels, noise_style, noise_step, window_multiplier, crossfade, crossfade_samples, match_loudness, seed_echo, match_tone,
                    ]
                    for index, name in enumerate(SAMPLING_STAGES):
                        start = len(_GLOBAL_FIELDS) + 4 * index
                        with gr.Accordion(f"Stage {name}", open=False), gr.Row():
                            advanced += [
                                gr.Number(value=defaults[start], precision=0, minimum=1, label="Steps"),
                                gr.Number(value=defaults[start + 1], minimum=0, label="Guidance"),
                                gr.Slider(0, 0.99, value=defaults[start + 2], step=0.01, label="Init strength (fraction of steps skipped)"),
                                gr.Dropdown(list(SAMPLERS), value=defaults[start + 3], label="Sampler"),
                            ]

            with gr.Column(scale=6, min_width=400):
                with gr.Row():
                    progress = gr.HTML(elem_id="jb-progress")
                    stop = gr.Button("Stop", variant="stop", scale=0, min_width=100, elem_id="jb-stop")
                status = gr.Markdown(elem_id="jb-status")

                takes = []
                with gr.Row(equal_height=False):
                    for take in range(MAX_TAKES):
                        with gr.Column(visible=take == 0, min_width=260, elem_id=f"jb-take{take + 1}") as column:
                            takes.append({
                                "column": column,
                                "audio": gr.Audio(label=f"Take {take + 1}", type="filepath", interactive=False, buttons=["download"], elem_id=f"jb-take{take + 1}-audio"),
                                "image": gr.Image(label="Spectrogram", type="filepath", interactive=False, buttons=["download", "fullscreen"], elem_id=f"jb-take{take + 1}-image"),
                                "files": gr.File(label="Download (WAV, FLAC, OGG, manifest)", file_count="multiple", interactive=False, elem_id=f"jb-take{take + 1}-files"),
                                "use": gr.Button("Use as input", elem_id=f"jb-take{take + 1}-use"),
                            })
                with gr.Row():
                    target = gr.Radio(list(inputs), value="Continue", label="“Use as input” sends the take to", elem_id="jb-target")
                with gr.Accordion("Manifest of the last run", open=False):
                    manifest = gr.JSON(elem_id="jb-manifest")

        take_outputs = [c for take in takes for c in (take["column"], take["audio"], take["image"], take["files"])]
        outputs = [status, progress, *take_outputs, manifest]

        def page(update: dict[str, Any]) -> dict[gr.components.Component | gr.Column, Any]:
            shown: dict[Any, Any] = {}
            if "status" in update:
                shown[status] = update["status"]
            if "progress" in update:
                shown[progress] = update["progress"]
            if "result" in update:
                found = update["result"]["takes"]
                for index, take in enumerate(takes):
                    here = found[index] if index < len(found) else None
                    shown[take["column"]] = gr.Column(visible=here is not None)
                    shown[take["audio"]] = here and here["audio"]
                    shown[take["image"]] = here and here["image"]
                    shown[take["files"]] = here and here["files"]
                shown[manifest] = update["result"]["manifest"]
            return shown

        def start_job(move: str, call: Callable[..., Generation], uploads: list[str | None], seed_value: float, batch_value: float,
                  values: list[Any], request: gr.Request) -> Iterator[dict[Any, Any]]:
            def settings() -> SamplingSettings:
                if seed_value is None or batch_value is None:
                    raise JbdiffError("the seed and the number of takes must be numbers")
                return dataclasses.replace(studio.settings_from(values), seed=int(seed_value), batch=int(batch_value))

            for update in studio.job(move, call, settings, uploads, request.session_hash or "local"):
                yield page(update)

        def run_continue(request: gr.Request, path: str | None, seconds: float, keep: bool, seed_value: float, batch_value: float, *values: Any) -> Iterator[dict[Any, Any]]:
            def call(settings: SamplingSettings, out: Path, report: Callable[..., None]) -> Generation:
                audio = _load_input(path, "seed")
                return pipe.continue_(audio, SAMPLE_RATE, float(seconds), include_seed=keep, settings=settings, out=out, progress=report)

            yield from start_job("Continue", call, [path], seed_value, batch_value, list(values), request)

        def run_remix(request: gr.Request, path: str | None, amount: float, context_path: str | None, seed_value: float, batch_value: float, *values: Any) -> Iterator[dict[Any, Any]]:
            def call(settings: SamplingSettings, out: Path, report: Callable[..., None]) -> Generation:
                recording = _upload(path, "recording to remix")  # read a block per pass, as the CLI does
                before = (load_audio(context_path, channels=None), SAMPLE_RATE) if context_path else None
                return pipe.remix(recording, SAMPLE_RATE, float(amount), context=before, settings=settings, out=out, progress=report)

            yield from start_job("Remix", call, [path, context_path], seed_value, batch_value, list(values), request)

        def run_generate(request: gr.Request, seconds: float, seed_value: float, batch_value: float, *values: Any) -> Iterator[dict[Any, Any]]:
            def call(settings: SamplingSettings, out: Path, report: Callable[..., None]) -> Generation:
                return pipe.generate(float(seconds), settings=settings, out=out, progress=report)

            yield from start_job("Generate", call, [], seed_value, batch_value, list(values), request)

        shared = [seed, batch, *advanced]
        job = {"outputs": outputs, "concurrency_id": "jbdiff-job", "concurrency_limit": 1, "show_progress_on": [progress], "api_visibility": "private"}
        continue_button.click(run_continue, [inputs["Continue"], continue_seconds, include_seed, *shared], **job)
        remix_button.click(run_remix, [inputs["Remix"], strength, context, *shared], **job)
        generate_button.click(run_generate, [generate_seconds, *shared], **job)

        def run_repaint(request: gr.Request, path: str | None, start: float, end: float, fade: float | None, jumps: float,
                        seed_value: float, batch_value: float, *values: Any) -> Iterator[dict[Any, Any]]:
            def call(settings: SamplingSettings, out: Path, report: Callable[..., None]) -> Generation:
                audio = _load_input(path, "recording to repaint")
                return pipe.inpaint(audio, SAMPLE_RATE, float(start), float(end), fade=fade, jumps=int(jumps), settings=settings, out=out, progress=report)

            yield from start_job("Repaint", call, [path], seed_value, batch_value, list(values), request)

        def run_extend(request: gr.Request, path: str | None, where: str, seconds: float, fade: float | None, jumps: float,
                       seed_value: float, batch_value: float, *values: Any) -> Iterator[dict[Any, Any]]:
            def call(settings: SamplingSettings, out: Path, report: Callable[..., None]) -> Generation:
                audio = _load_input(path, "recording to extend")
                length = {"before": float(seconds)} if where.startswith("before") else {"after": float(seconds)}
                return pipe.extend(audio, SAMPLE_RATE, **length, fade=fade, jumps=int(jumps), settings=settings, out=out, progress=report)

            yield from start_job("Extend", call, [path], seed_value, batch_value, list(values), request)

        def run_loop(request: gr.Request, path: str | None, seconds: float, fade: float | None, jumps: float,
                     seed_value: float, batch_value: float, *values: Any) -> Iterator[dict[Any, Any]]:
            def call(settings: SamplingSettings, out: Path, report: Callable[..., None]) -> Generation:
                audio = _load_input(path, "recording the loop continues")
                return pipe.loop(audio, SAMPLE_RATE, float(seconds), fade=fade, jumps=int(jumps), settings=settings, out=out, progress=report)

            yield from start_job("Loop", call, [path], seed_value, batch_value, list(values), request)

        def run_morph(request: gr.Request, a_path: str | None, b_path: str | None, clips: float,
                      seed_value: float, batch_value: float, *values: Any) -> Iterator[dict[Any, Any]]:
            def call(settings: SamplingSettings, out: Path, report: Callable[..., None]) -> Generation:
                a, b = _load_input(a_path, "recording A"), _load_input(b_path, "recording B")
                return pipe.morph(a, b, SAMPLE_RATE, int(clips), settings=settings, out=out, progress=report)

            yield from start_job("Morph", call, [a_path, b_path], seed_value, batch_value, list(values), request)

        repaint_button.click(run_repaint, [inputs["Repaint"], region_start, region_end, repaint_fade, repaint_jumps, *shared], **job)
        extend_button.click(run_extend, [inputs["Extend"], side, extend_seconds, extend_fade, extend_jumps, *shared], **job)
        loop_button.click(run_loop, [inputs["Loop"], loop_seconds, loop_fade, loop_jumps, *shared], **job)
        morph_button.click(run_morph, [morph_a, morph_b, morph_clips, *shared], **job)

        def stop_job(request: gr.Request) -> str:
            return studio.stop(request.session_hash or "local")

        quick = {"concurrency_limit": None, "show_progress": "hidden", "api_visibility": "private"}
        stop.click(stop_job, None, status, **quick)
        dice.click(lambda: random.randrange(2**31), None, seed, **quick)
        preset.change(lambda name: studio.settings_values(_PRESET_CHOICES[name]), preset, advanced, **quick)
        for move, info in (("Continue", continue_info), ("Remix", remix_info), ("Repaint", repaint_info), ("Extend", extend_info), ("Loop", loop_info)):
            inputs[move].change(describe_upload, inputs[move], info, **quick)
        for ends in (morph_a, morph_b):
            ends.change(lambda a, b: "\n\n".join(f"{name}: {describe_upload(path)}" for name, path in (("A", a), ("B", b)) if path),
                        [morph_a, morph_b], morph_info, **quick)
        for take in takes:
            take["use"].click(
                lambda audio, move: (gr.Tabs(selected=move), *(audio if move == name else gr.skip() for name in inputs)),
                [take["audio"], target], [tabs, *inputs.values()], **quick,
            )
    return app


def serve(
    model: str | None = None, *, host: str = "127.0.0.1", port: int = 7860, device: str = "auto", dtype: str = "float32",
    outputs: str | None = None, block: bool = True,
) -> tuple[gr.Blocks, str]:
    """Load the bundle, start the app on ``host``:``port`` and print its address; returns (app, url)."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # no telemetry, no version check (the page's Blocks say so too)
    pipe = Pipeline.from_pretrained(model, device=device, dtype=dtype)
    folder = Path(outputs) if outputs else Path(tempfile.mkdtemp(prefix="jbdiff-studio-"))
    if not folder.is_dir():
        raise JbdiffError(f"{folder}: the output folder does not exist")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio's own startup requests to itself
    app = build_app(Studio(pipe, folder))
    app.queue(default_concurrency_limit=1)
    try:
        app.launch(
            server_name=host, server_port=port, share=False, prevent_thread_lock=True, quiet=True, footer_links=[],
            ssr_mode=False, pwa=False, mcp_server=False, css=_CSS, allowed_paths=[str(folder)],
        )
    except OSError as error:  # gradio's own message names its environment variables
        raise JbdiffError(f"cannot listen on {host}:{port} (in use, or not an address of this machine); pass another --port or --host") from error
    url = f"http://{host}:{app.server_port}/"
    print(f"jbdiff studio: open {url} in a browser (results are saved in {folder}); Ctrl-C stops it", flush=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {host}: anyone who can reach this machine can use the app", flush=True)
    if block:
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            app.close()
    return app, url

