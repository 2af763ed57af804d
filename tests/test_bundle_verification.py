"""A bundle is verified when it loads: digests of the stage files, codec fingerprints, finite
weights, no unknown keys; each refusal is one sentence that names the stage."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from jbdiff.bundle import DEMO_BUNDLE, export_bundle, load_bundle
from jbdiff.cli import EXIT_ERROR, main
from jbdiff.core.errors import JbdiffError
from levels.codec_io import load_codec

CPU = torch.device("cpu")


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _load(folder: Path) -> None:
    load_bundle(folder, device=CPU, dtype=torch.float32)


def _manifest(folder: Path) -> dict:
    return yaml.safe_load((folder / "bundle.yaml").read_text())


def _write_manifest(folder: Path, manifest: dict) -> None:
    (folder / "bundle.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))


def _redigest(folder: Path, *stages: str) -> None:
    """Record the current digests, as someone who edits files and bundle.yaml together would."""
    manifest = _manifest(folder)
    for stage in stages:
        manifest[stage]["sha256"] = file_sha256(folder / f"{stage}.safetensors")
    _write_manifest(folder, manifest)


@pytest.fixture()
def bundle(tiny_bundle: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny bundle to tamper with."""
    return Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))


def assert_one_sentence(message: str, folder: Path) -> None:
    """One line, short once the folder's path is left out."""
    assert "\n" not in message and len(message.replace(str(folder), "B")) < 220, message


def _swap_levels(folder: Path) -> None:
    a, b = folder / "level1.safetensors", folder / "level2.safetensors"
    a.rename(folder / "swap"), b.rename(a), (folder / "swap").rename(b)


def _nudge_codec(folder: Path) -> None:
    state = load_file(str(folder / "codec.safetensors"))
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = state[key] + 0.01
    save_file(state, str(folder / "codec.safetensors"))


def _nudge_codec_and_redigest(folder: Path) -> None:
    _nudge_codec(folder)
    _redigest(folder, "codec")


def _edit(stage: str, key: str, value: object) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        manifest = _manifest(folder)
        (manifest if stage == "" else manifest[stage])[key] = value
        _write_manifest(folder, manifest)

    return edit


def _nan_weights(folder: Path) -> None:
    state = load_file(str(folder / "level0.safetensors"))
    save_file({k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in state.items()},
              str(folder / "level0.safetensors"))
    _redigest(folder, "level0")


def _misshapen(folder: Path) -> None:
    state = load_file(str(folder / "dance.safetensors"))
    key = next(k for k, v in state.items() if v.dim() >= 2)
    state[key] = torch.zeros(state[key].shape[0] + 1, *state[key].shape[1:])
    save_file(state, str(folder / "dance.safetensors"))
    _redigest(folder, "dance")


def _drop_digest(folder: Path) -> None:
    manifest = _manifest(folder)
    del manifest["level1"]["sha256"]
    _write_manifest(folder, manifest)


TAMPERING: dict[str, tuple[Callable[[Path], None], str]] = {
    "swapped-levels": (_swap_levels, r"level2\.safetensors: does not match the sha256 digest bundle\.yaml records for stage level2"),
    "codec-weights": (_nudge_codec, r"codec\.safetensors: does not match the sha256 digest bundle\.yaml records for stage codec"),
    "codec-weights-redigested": (_nudge_codec_and_redigest, r"stage codec records fingerprint \w+, but its weights are codec \w+"),
    "level-fingerprint": (_edit("level1", "codec_fingerprint", "0123456789abcdef"),
                          r"stage level1 was trained on latents of codec 0123456789abcdef, but the bundle's codec is"),
    "codec-fingerprint": (_edit("codec", "fingerprint", "0123456789abcdef"), r"stage codec records fingerprint 0123456789abcdef"),
    "nan-weights": (_nan_weights, r"level0\.safetensors: tensor \S+ holds NaN or infinite values"),
    "unknown-top-level-key": (_edit("", "extra", 1), r"bundle\.yaml: unknown top-level key\(s\) extra"),
    "unknown-stage-key": (_edit("dance", "guidance", 3.0), r"bundle\.yaml: stage dance has unknown key\(s\) guidance"),
    "unlisted-section": (lambda f: _write_manifest(f, {**_manifest(f), "stages": ["codec", "level2", "level1", "level0"]}),
                         r"has a section for stage dance, which 'stages' does not list"),
    "misshapen": (_misshapen, (r"dance\.safetensors: tensor shapes do not match the dance model that bundle\.yaml describes "
                               r"\(1 of \d+; first \S+: \(\d+, .*\) in the file, \(\d+, .*\) in the model\)")),
    "missing-digest": (_drop_digest, r"stage level1 records no sha256 digest of level1\.safetensors"),
}


@pytest.mark.parametrize("case", sorted(TAMPERING))
def test_a_tampered_bundle_is_refused_naming_the_stage(case: str, bundle: Path) -> None:
    tamper, message = TAMPERING[case]
    tamper(bundle)
    with pytest.raises(JbdiffError, match=message) as info:
        _load(bundle)
    assert_one_sentence(str(info.value), bundle)


def test_the_command_line_refuses_a_tampered_bundle(bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _swap_levels(bundle)
    out = tmp_path / "out.wav"
    assert main(["generate", "--seconds", "1", "-o", str(out), "--model", str(bundle), "--device", "cpu", "--no-progress"]) == EXIT_ERROR
    err = capsys.readouterr().err.strip()
    assert err.startswith("jbdiff: error: ") and "stage level2" in err
    assert_one_sentence(err, bundle)
    assert not out.exists()


def test_export_records_every_digest_and_the_bundle_loads(tiny_bundle: Path) -> None:
    manifest = _manifest(tiny_bundle)
    for stage in manifest["stages"]:
        assert manifest[stage]["sha256"] == file_sha256(tiny_bundle / f"{stage}.safetensors")
    loaded = load_bundle(tiny_bundle, device=CPU, dtype=torch.float32)
    assert loaded.fingerprints["level2"] == manifest["level2"]["sha256"][:16]
    assert loaded.fingerprints["codec"] == manifest["codec"]["fingerprint"]


def test_an_older_bundle_is_exported_again_with_digests(bundle: Path, tmp_path: Path) -> None:
    manifest = _manifest(bundle)
    for stage in manifest["stages"]:
        del manifest[stage]["sha256"]
    _write_manifest(bundle, manifest)
    with pytest.raises(JbdiffError, match="export the bundle again"):
        _load(bundle)
    again = export_bundle({stage: bundle for stage in manifest["stages"]}, tmp_path / "again", sampling=manifest["sampling"])
    _load(again)
    assert all((again / f"{s}.safetensors").read_bytes() == (bundle / f"{s}.safetensors").read_bytes() for s in manifest["stages"])


def test_codec_option_checks_a_bundles_codec_digest(bundle: Path) -> None:
    """``--codec BUNDLE`` (reconstruct, encode, eval codec) reads the codec through the same check."""
    _nudge_codec(bundle)
    with pytest.raises(JbdiffError, match="stage codec"):
        load_codec(bundle)


def test_export_refuses_unknown_stage_keys(bundle: Path, tmp_path: Path) -> None:
    _edit("level0", "guidance", 1.0)(bundle)
    with pytest.raises(JbdiffError, match="stage level0 has unknown key"):
        export_bundle({"codec": bundle, "level0": bundle}, tmp_path / "out")


def test_half_export_refuses_weights_beyond_float16(bundle: Path, tmp_path: Path) -> None:
    state = load_file(str(bundle / "level0.safetensors"))
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = state[key] + 1e6
    run = tmp_path / "run"
    run.mkdir()
    save_file(state, str(run / "level0.safetensors"))
    section = _manifest(bundle)["level0"]
    del section["sha256"]
    (run / "level0.yaml").write_text(yaml.safe_dump(section))
    with pytest.raises(JbdiffError, match=r"does not fit in float16"):
        export_bundle({"codec": bundle, "level0": run}, tmp_path / "half", half=True)


def test_the_demo_bundle_records_its_digests() -> None:
    manifest = _manifest(DEMO_BUNDLE)
    assert all(manifest[s]["sha256"] == file_sha256(DEMO_BUNDLE / f"{s}.safetensors") for s in manifest["stages"])
    assert np.all([len(manifest[s]["sha256"]) == 64 for s in manifest["stages"]])
