"""Convert musicnn's ``MTT_musicnn`` TensorFlow checkpoint for :mod:`jbdiff.metrics.musicnn`.

Writes the weights as safetensors (torch layout) and a JSON fixture of the original
TensorFlow model's outputs on a few deterministic clips, which ``tests/test_musicnn.py``
compares the torch port against. TensorFlow is needed here only, in a separate environment::

    python3.11 -m venv /tmp/tfenv
    /tmp/tfenv/bin/pip install tensorflow-cpu==2.21.0 "tf-keras~=2.21.0" librosa safetensors
    /tmp/tfenv/bin/pip install --no-deps musicnn==0.1.0   # its metadata pins numpy<1.17
    TF_USE_LEGACY_KERAS=1 PYTHONPATH=. /tmp/tfenv/bin/python scripts/convert_musicnn.py

The spectrogram follows musicnn's ``extractor.batch_data`` except that it stays in float32
(musicnn casts it to float16, which overflows at normal loudness).
"""

from __future__ import annotations

import argparse
import json
import os
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from jbdiff.core.synth import synth_music

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS_OUT = ROOT / "jbdiff" / "metrics" / "weights" / "musicnn_mtt.safetensors"
FIXTURE_OUT = ROOT / "tests" / "data" / "musicnn_reference.json"

# Deterministic clips: music-like audio at 44.1 kHz, a harmonic tone at 22.05 kHz (another
# resampling ratio) and white noise at 16 kHz (no resampling).
CLIPS: tuple[dict[str, Any], ...] = (
    {"name": "synth_seed0", "kind": "synth", "seed": 0, "seconds": 7.0, "sample_rate": 44100},
    {"name": "synth_seed1", "kind": "synth", "seed": 1, "seconds": 7.0, "sample_rate": 44100},
    {"name": "synth_seed2_fast", "kind": "synth", "seed": 2, "seconds": 7.0, "sample_rate": 44100, "beat": 0.2},
    {"name": "tone_220hz", "kind": "tone", "frequency": 220.0, "seconds": 4.0, "sample_rate": 22050},
    {"name": "white_noise", "kind": "noise", "seed": 0, "seconds": 4.0, "sample_rate": 16000},
)

# TensorFlow variable scope -> torch module prefix, in the order tf.compat.v1.layers named them.
_CONVS = ["timbral.0", "timbral.1", "temporal.0", "temporal.1", "temporal.2", "mid.0", "mid.1", "mid.2"]
_NORMS = ["input_norm", *_CONVS, "pool_norm", "dense_norm"]
_DENSES = ["dense", "classifier"]


def reference_clip(spec: dict[str, Any]) -> np.ndarray:
    """The mono float32 ``(samples,)`` clip that ``spec`` (an entry of :data:`CLIPS`) describes."""
    n = round(spec["seconds"] * spec["sample_rate"])
    if spec["kind"] == "synth":
        return synth_music(spec["seconds"], spec["sample_rate"], seed=spec["seed"], beat=spec.get("beat", 0.5))[0]
    if spec["kind"] == "tone":
        t = np.arange(n) / spec["sample_rate"]
        tone = sum(np.sin(2 * np.pi * spec["frequency"] * k * t) / k for k in (1, 2, 3))
        return (0.4 * tone).astype(np.float32)
    if spec["kind"] == "noise":
        return (0.2 * np.random.default_rng(spec["seed"]).standard_normal(n)).astype(np.float32)
    raise ValueError(f"unknown clip kind {spec['kind']!r}")


def original_patches(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """musicnn's ``batch_data`` on an array, in float32: non-overlapping ``(n, 187, 96)`` patches."""
    import librosa
    from musicnn import configuration as config

    y = librosa.resample(audio, orig_sr=sample_rate, target_sr=config.SR, res_type="soxr_hq")  # as librosa.load
    rep = librosa.feature.melspectrogram(
        y=y, sr=config.SR, hop_length=config.FFT_HOP, n_fft=config.FFT_SIZE, n_mels=config.N_MELS
    ).T
    rep = np.log10(10000 * rep.astype(np.float32) + 1)
    n_frames = librosa.time_to_frames(3, sr=config.SR, n_fft=config.FFT_SIZE, hop_length=config.FFT_HOP) + 1
    return np.stack([rep[start : start + n_frames] for start in range(0, rep.shape[0] - n_frames + 1, n_frames)])


def checkpoint_prefix() -> str:
    """The checkpoint prefix of the installed musicnn package's ``MTT_musicnn`` model."""
    import musicnn

    return os.path.join(os.path.dirname(musicnn.__file__), "MTT_musicnn", "")


def tf_outputs(patches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The original TensorFlow model's tag probabilities and penultimate embeddings of ``patches``."""
    import tensorflow as tf
    from musicnn import models

    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        with tf.name_scope("model"):
            x = tf.compat.v1.placeholder(tf.float32, [None, *patches.shape[1:]])
            is_training = tf.compat.v1.placeholder(tf.bool)
            logits, *_, penultimate = models.define_model(x, is_training, "MTT_musicnn", 50)
        tf.compat.v1.train.Saver().restore(session, checkpoint_prefix())
        probabilities, embeddings = session.run(
            [tf.nn.sigmoid(logits), penultimate], feed_dict={x: patches, is_training: False}
        )
    return probabilities, embeddings


def torch_state(prefix: str) -> dict[str, np.ndarray]:
    """The checkpoint's model variables renamed and transposed into :class:`jbdiff.metrics.musicnn.MusicnnMTT`'s layout."""
    import tensorflow as tf

    reader = tf.compat.v1.train.NewCheckpointReader(prefix)

    def scope(name: str, index: int) -> str:
        return name if index == 0 else f"{name}_{index}"

    state: dict[str, np.ndarray] = {}
    for index, module in enumerate(_CONVS):
        kernel = reader.get_tensor(f"{scope('conv2d', index)}/kernel")  # (time, freq, in, out)
        if module.startswith("mid"):  # a full-width 2-D conv is a 1-D conv over the channels
            kernel = kernel[:, :, 0, :].transpose(2, 1, 0)
        else:
            kernel = kernel.transpose(3, 2, 0, 1)
        state[f"{module}.conv.weight"] = kernel
        state[f"{module}.conv.bias"] = reader.get_tensor(f"{scope('conv2d', index)}/bias")
    for index, module in enumerate(_NORMS):
        prefix_norm = module if module.endswith("_norm") else f"{module}.norm"
        name = scope("batch_normalization", index)
        state[f"{prefix_norm}.weight"] = reader.get_tensor(f"{name}/gamma")
        state[f"{prefix_norm}.bias"] = reader.get_tensor(f"{name}/beta")
        state[f"{prefix_norm}.running_mean"] = reader.get_tensor(f"{name}/moving_mean")
        state[f"{prefix_norm}.running_var"] = reader.get_tensor(f"{name}/moving_variance")
        state[f"{prefix_norm}.num_batches_tracked"] = np.zeros((), dtype=np.int64)
    for index, module in enumerate(_DENSES):
        state[f"{module}.weight"] = reader.get_tensor(f"{scope('dense', index)}/kernel").T
        state[f"{module}.bias"] = reader.get_tensor(f"{scope('dense', index)}/bias")
    return {key: np.ascontiguousarray(value) for key, value in state.items()}


def reference_fixture() -> dict[str, Any]:
    """TensorFlow outputs on every clip of :data:`CLIPS`, with the versions that produced them."""
    from musicnn import configuration as config

    clips = []
    for spec in CLIPS:
        probabilities, embeddings = tf_outputs(original_patches(reference_clip(spec), spec["sample_rate"]))
        mean = probabilities.mean(axis=0)
        clips.append(
            {
                **spec,
                "top_tags": [config.MTT_LABELS[i] for i in np.argsort(-mean)[:5]],
                "probabilities": np.round(probabilities.astype(np.float64), 7).tolist(),
                "embeddings": np.round(embeddings.astype(np.float64), 6).tolist(),
            }
        )
    return {
        "source": "musicnn 0.1.0 MTT_musicnn (TensorFlow checkpoint), spectrogram in float32",
        "versions": {name: version(name) for name in ("tensorflow-cpu", "librosa", "numpy")},
        "tags": list(config.MTT_LABELS),
        "clips": clips,
    }


def main() -> None:
    from safetensors.numpy import save_file

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, default=WEIGHTS_OUT, help="safetensors file to write")
    parser.add_argument("--fixture", type=Path, default=FIXTURE_OUT, help="JSON reference outputs to write")
    args = parser.parse_args()

    state = torch_state(checkpoint_prefix())
    args.weights.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        state,
        str(args.weights),
        metadata={"source": "musicnn 0.1.0 MTT_musicnn, Pons & Serra 2019", "licence": "ISC"},
    )
    parameters = sum(value.size for key, value in state.items() if not key.endswith("num_batches_tracked"))
    print(f"wrote {args.weights} ({parameters} values, {args.weights.stat().st_size / 1e6:.2f} MB)")

    args.fixture.parent.mkdir(parents=True, exist_ok=True)
    args.fixture.write_text(json.dumps(reference_fixture(), indent=1) + "\n")
    print(f"wrote {args.fixture}")


if __name__ == "__main__":
    main()
