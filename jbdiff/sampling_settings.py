"""Settings for sampling a piece: which stages run, how each one samples, windows and seams.

``PRESETS["default"]`` is jbdiff's recipe: DPM-Solver++(2M), which needs far fewer steps than the
reference sampler (50 / 6 / 4 / 15 network evaluations per window at levels 2 / 1 / 0 / Dance,
against v1's 250 / 23 / 10 / 116), no guidance at level 0 (whose start tensor already carries
the music; guidance doubles a stage's cost), and four base windows per pass.
``PRESETS["v1"]`` is Jukebox-Diffusion v1's: the reference v-sampler, 250 / 70 / 20 / 150 steps
from init strengths 0 / 0.67 / 0.5 / 0.23, two base windows per pass (its
``--token-multiplier`` default).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jbdiff.core.crossfade import CROSSFADES
from jbdiff.core.errors import JbdiffError
from jbdiff.core.noise import NOISE_STYLES
from jbdiff.core.samplers import SAMPLERS, schedule
from jbdiff.core.stages import DANCE_STAGE, LATENT_STAGES, SAMPLING_STAGES, stage_level

MAX_STEPS = 10_000
"""The most sampling steps a stage takes (v1's recipe uses 250)."""
MAX_GUIDANCE = 100.0
MAX_WINDOW_MULTIPLIER = 64
MAX_CROSSFADE_SAMPLES = 1 << 20
MAX_BATCH = 64
"""The most takes of one run: each take holds its own staging file and working memory."""
MAX_SEED = 2**63 - 2
"""The largest seed (the Dance stage draws from ``seed + 1``, and a generator takes 64 bits)."""


def _between(what: str, value: float, low: float, high: float) -> None:
    """Refuse ``value`` unless it is a finite number within [low, high] (NaN and infinity included)."""
    if not (isinstance(value, (int, float)) and math.isfinite(value) and low <= value <= high):
        raise JbdiffError(f"{what} must be a number from {low:g} to {high:g}, got {value}")


@dataclass(frozen=True)
class StageSettings:
    """How one stage samples. ``init_strength`` is the fraction of ``steps`` skipped."""

    steps: int
    guidance: float = 1.0
    init_strength: float = 0.0
    sampler: str = "dpm"

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or not 1 <= self.steps <= MAX_STEPS:
            raise JbdiffError(f"steps must be a whole number from 1 to {MAX_STEPS}, got {self.steps}")
        if not 0.0 <= self.init_strength < 1.0:
            raise JbdiffError(f"init strength must be in [0, 1), got {self.init_strength}")
        _between("guidance", self.guidance, 0.0, MAX_GUIDANCE)
        if self.sampler not in SAMPLERS:
            raise JbdiffError(f"unknown sampler '{self.sampler}'; use one of {', '.join(SAMPLERS)}")

    def evaluations(self, init_strength: float | None = None) -> int:
        """Network evaluations per window (the steps left after the skipped head)."""
        strength = self.init_strength if init_strength is None else init_strength
        return len(schedule(self.steps, strength)) - 1


@dataclass(frozen=True)
class SamplingSettings:
    """Everything that decides the audio a run produces, besides the models and the input."""

    levels: tuple[str, ...] = SAMPLING_STAGES
    level2: StageSettings = field(default_factory=lambda: StageSettings(50, guidance=4.0))
    level1: StageSettings = field(default_factory=lambda: StageSettings(18, guidance=2.0, init_strength=0.67))
    level0: StageSettings = field(default_factory=lambda: StageSettings(8, guidance=1.0, init_strength=0.5))
    dance: StageSettings = field(default_factory=lambda: StageSettings(20, init_strength=0.23))
    noise_style: str = "random"
    noise_step: float = 0.05
    window_multiplier: int = 4
    crossfade: str = "constant-power"
    crossfade_samples: int = 1536
    match_loudness: bool = False
    """Scale a continuation to the seed's loudness (RMS of its last 10 s), by at most 12 dB.

    One gain per take, set by the first 10 s generated (held back until then)."""
    match_tone: bool = False
    """Give a continuation the seed's tone colour: an equaliser that brings the first 10 s generated
    to the long-term third-octave spectrum of the seed's last 10 s (bands cut by at most 24 dB,
    none lifted, total power kept), applied to the whole take."""
    seed_echo: float = 0.0
    """How much of the seed a continuation starts from: each pass starts from the seed's last
    10 s, looped and re-noised to strength ``1 - seed_echo`` (a remix of the loop, with the
    music before it as context). 0 generates from noise; 0.1 keeps the seed's harmony and colour."""
    batch: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [name for name in self.levels if name not in SAMPLING_STAGES]
        if unknown or not self.levels:
            raise JbdiffError(f"unknown level(s) {', '.join(unknown) or '(none given)'}; use some of 2,1,0,dance")
        object.__setattr__(self, "levels", tuple(name for name in SAMPLING_STAGES if name in self.levels))
        if self.levels == (DANCE_STAGE,):
            raise JbdiffError("the dance stage needs at least one latent level before it")
        if self.noise_style not in NOISE_STYLES:
            raise JbdiffError(f"unknown noise style '{self.noise_style}'; use one of {', '.join(NOISE_STYLES)}")
        if not 0.0 <= self.noise_step <= 1.0:
            raise JbdiffError(f"noise step size must be in [0, 1], got {self.noise_step}")
        if self.crossfade not in CROSSFADES:
            raise JbdiffError(f"unknown crossfade '{self.crossfade}'; use one of {', '.join(CROSSFADES)}")
        _between("crossfade length (samples)", self.crossfade_samples, 0, MAX_CROSSFADE_SAMPLES)
        _between("window multiplier", self.window_multiplier, 1, MAX_WINDOW_MULTIPLIER)
        _between("batch", self.batch, 1, MAX_BATCH)
        _between("seed", self.seed, 0, MAX_SEED)
        if not 0.0 <= self.seed_echo < 1.0:
            raise JbdiffError(f"seed echo must be at least 0 and below 1, got {self.seed_echo}")
        for name in ("match_loudness", "match_tone"):
            if not isinstance(getattr(self, name), bool):
                raise JbdiffError(f"{name} must be true or false, got {getattr(self, name)!r}")

    def stage(self, name: str) -> StageSettings:
        """The settings of stage ``name`` (``level2``, ``level1``, ``level0`` or ``dance``)."""
        settings: StageSettings = getattr(self, name)
        return settings

    @property
    def latent_levels(self) -> list[int]:
        """The latent levels that run, coarsest first."""
        return [stage_level(name) for name in self.levels if name != DANCE_STAGE]

    def replace(self, **changes: object) -> SamplingSettings:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def preset_section(name: str) -> dict[str, Any]:
    """Preset ``name`` as a bundle's ``sampling`` section (every field but the per-run batch and seed)."""
    settings = dataclasses.asdict(PRESETS[name])
    return {key: value for key, value in settings.items() if key not in ("batch", "seed", "levels")}


PRESETS: dict[str, SamplingSettings] = {
    "default": SamplingSettings(),
    "v1": SamplingSettings(
        level2=StageSettings(250, guidance=4.0, sampler="v"),
        level1=StageSettings(70, guidance=2.0, init_strength=0.67, sampler="v"),
        level0=StageSettings(20, guidance=1.3, init_strength=0.5, sampler="v"),
        dance=StageSettings(150, init_strength=0.23, sampler="v"),
        window_multiplier=2,
    ),
}


STAGE_KEYS: dict[str, str] = {**{str(stage_level(name)): name for name in LATENT_STAGES}, **{name: name for name in SAMPLING_STAGES}}
"""What a stage may be called in options: ``2`` or ``level2``, ..., ``dance``."""


def per_stage(option: str, text: str, convert: Callable[[str], Any]) -> dict[str, Any]:
    """``50`` (every stage) or ``2=50,0=8,dance=20`` -> {stage: value}."""
    values: dict[str, Any] = {}
    for item in text.split(","):
        key, _, value = item.strip().rpartition("=")
        stage = STAGE_KEYS.get(key.strip()) if key else None
        if key and stage is None:
            raise JbdiffError(f"{option}: unknown stage '{key}'; use 2, 1, 0 or dance")
        try:
            converted = convert(value.strip())
        except ValueError:
            raise JbdiffError(f"{option}: '{value}' is not a valid value") from None
        values.update(dict.fromkeys([stage] if stage else SAMPLING_STAGES, converted))
    return values


def with_options(
    settings: SamplingSettings,
    *,
    levels: str | None = None,
    steps: str | None = None,
    guidance: str | None = None,
    init_strength: str | None = None,
    sampler: str | None = None,
    **fields: Any,
) -> SamplingSettings:
    """``settings`` with options given as text applied: ``levels`` (``2,1,0,dance``), the
    per-stage ``steps`` / ``guidance`` / ``init_strength`` / ``sampler`` (:func:`per_stage`)
    and any other field by name."""
    changes: dict[str, Any] = dict(fields)
    if levels is not None:  # "" names no stage, which is refused rather than read as "all"
        changes["levels"] = tuple(STAGE_KEYS.get(key.strip(), key.strip()) for key in levels.split(",") if key.strip())
    per_field: dict[str, dict[str, Any]] = {}
    for option, field_name, text, convert in (
        ("--steps", "steps", steps, int), ("--guidance", "guidance", guidance, float),
        ("--init-strength", "init_strength", init_strength, float), ("--sampler", "sampler", sampler, str),
    ):
        for stage, value in (per_stage(option, text, convert) if text else {}).items():
            per_field.setdefault(stage, {})[field_name] = value
    for stage, values in per_field.items():
        changes[stage] = dataclasses.replace(settings.stage(stage), **values)
    return settings.replace(**changes)
