"""The torch port of musicnn reproduces the original TensorFlow model's outputs.

``tests/data/musicnn_reference.json`` holds the TensorFlow model's tag probabilities and
penultimate embeddings on the clips of ``scripts/convert_musicnn.py``, which wrote it.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from jbdiff.metrics import musicnn
from tests.conftest import ROOT

FIXTURE = Path(__file__).parent / "data" / "musicnn_reference.json"


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("convert_musicnn", ROOT / "scripts" / "convert_musicnn.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


convert = _load_script()
REFERENCE: dict[str, Any] = json.loads(FIXTURE.read_text())


pytestmark = pytest.mark.usefixtures("one_thread")


def test_fixture_covers_the_script_clips_and_tags() -> None:
    specs = [{k: v for k, v in clip.items() if k not in ("top_tags", "probabilities", "embeddings")} for clip in REFERENCE["clips"]]
    assert specs == list(convert.CLIPS)
    assert list(musicnn.MTT_TAGS) == REFERENCE["tags"]


def test_shipped_weights_are_the_full_network() -> None:
    state = musicnn.load_musicnn().state_dict()
    values = sum(t.numel() for key, t in state.items() if not key.endswith("num_batches_tracked"))
    assert values == 792_079  # every variable of the MTT_musicnn checkpoint, optimiser state excluded
    assert 3.0e6 < musicnn.WEIGHTS_PATH.stat().st_size < 3.4e6


@pytest.mark.parametrize("clip", REFERENCE["clips"], ids=lambda clip: clip["name"])
def test_port_reproduces_tensorflow_outputs(clip: dict[str, Any]) -> None:
    out = musicnn.analyse(convert.reference_clip(clip), clip["sample_rate"])
    expected = np.asarray(clip["probabilities"])
    assert out.probabilities.shape == expected.shape
    np.testing.assert_allclose(out.probabilities, expected, rtol=0, atol=2e-5)  # measured: 2.1e-6
    np.testing.assert_allclose(out.embeddings, np.asarray(clip["embeddings"]), rtol=0, atol=1e-4)  # measured 1.5e-5
    top = np.argsort(-out.probabilities.mean(axis=0))[:5]
    assert [musicnn.MTT_TAGS[i] for i in top] == clip["top_tags"]


def test_stereo_is_mixed_and_batches_are_independent() -> None:
    clip = convert.reference_clip(REFERENCE["clips"][0])
    mono = musicnn.analyse(clip, 44100)
    stereo = musicnn.analyse(np.stack([clip, clip]), 44100, batch_size=1)
    np.testing.assert_allclose(stereo.probabilities, mono.probabilities, atol=1e-6)
    np.testing.assert_allclose(musicnn.embeddings(clip, 44100), mono.embeddings)
    np.testing.assert_allclose(musicnn.tag_probabilities(clip, 44100), mono.probabilities)


def test_short_clip_is_repeat_padded_to_one_patch() -> None:
    tone = np.sin(2 * np.pi * 440 * np.arange(16000) / 16000).astype(np.float32)
    spectrogram = musicnn.log_mel(tone, 16000)
    patch = musicnn.patches(spectrogram)
    assert patch.shape == (1, musicnn.PATCH_FRAMES, 96)
    np.testing.assert_array_equal(patch[0, : len(spectrogram)], spectrogram)
    np.testing.assert_array_equal(patch[0, len(spectrogram) : 2 * len(spectrogram)], spectrogram)
    with pytest.raises(ValueError, match="too short"):
        musicnn.patches(spectrogram[:0])


def test_port_matches_tensorflow_directly() -> None:
    """With TensorFlow and musicnn installed (the conversion environment), compare live."""
    pytest.importorskip("tensorflow")
    pytest.importorskip("musicnn")
    clip = REFERENCE["clips"][1]
    audio = convert.reference_clip(clip)
    batch = convert.original_patches(audio, clip["sample_rate"])
    np.testing.assert_allclose(batch, musicnn.patches(musicnn.log_mel(audio, clip["sample_rate"])), atol=1e-5)
    probabilities, embeddings = convert.tf_outputs(batch)
    out = musicnn.analyse(audio, clip["sample_rate"])
    np.testing.assert_allclose(out.probabilities, probabilities, atol=2e-5)
    np.testing.assert_allclose(out.embeddings, embeddings, atol=1e-4)
