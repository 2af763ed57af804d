"""The demo bundle shipped inside the package, and the example seed the README continues."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import yaml

from jbdiff.bundle import DEMO_BUNDLE
from jbdiff.core.audio import audio_info, load_audio
from jbdiff.core.stages import SAMPLING_STAGES
from jbdiff.pipeline import Pipeline

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "examples" / "knolls_seed.ogg"


def test_the_bundle_is_complete_small_and_documented() -> None:
    manifest = yaml.safe_load((DEMO_BUNDLE / "bundle.yaml").read_text())
    assert manifest["stages"] == ["codec", "level2", "level1", "level0", "dance"]
    assert all((DEMO_BUNDLE / f"{stage}.safetensors").is_file() for stage in manifest["stages"])
    assert sum(p.stat().st_size for p in DEMO_BUNDLE.iterdir()) <= 40 * 2**20
    card = (DEMO_BUNDLE / "MODEL_CARD.md").read_text()
    assert "GPL" in card and "knolls" in card
    assert manifest["sampling"] == yaml.safe_load((ROOT / "configs" / "sampling" / "demo.yaml").read_text())


def test_the_example_seed_is_ten_seconds_of_stereo() -> None:
    info = audio_info(SEED)
    assert info.channels == 2 and info.sample_rate == 44100 and 9.9 < info.duration < 10.1


def test_the_demo_model_continues_the_example_seed() -> None:
    pipe = Pipeline.from_pretrained(device="cpu")
    seed = load_audio(SEED, channels=None)
    quick = {name: pipe.settings.stage(name).__class__(2, init_strength=pipe.settings.stage(name).init_strength)
             for name in ("level2", "level1", "level0", "dance")}
    result = pipe.continue_(seed, 44100, 1.0, settings=pipe.settings.replace(window_multiplier=1, **quick))
    assert result.audio is not None and result.audio.shape == (1, 44100)  # the bundle runs level 2 only: mono
    assert np.isfinite(result.audio).all() and 1e-3 < result.audio.std() < 1.0
    every = pipe.continue_(seed, 44100, 1.0, settings=pipe.settings.replace(window_multiplier=1, levels=SAMPLING_STAGES, **quick))
    assert every.audio is not None and every.audio.shape == (2, 44100)


def test_a_regular_install_ships_the_bundle(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True)
    wheel = next(tmp_path.glob("jbdiff-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"jbdiff/demo_model/{stage}.safetensors" for stage in ("codec", "level2", "level1", "level0", "dance")} <= names
    assert "jbdiff/demo_model/bundle.yaml" in names and "jbdiff/metrics/weights/musicnn_mtt.safetensors" in names
