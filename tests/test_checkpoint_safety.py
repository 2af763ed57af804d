"""Hostile checkpoint files: no path that reads a checkpoint runs code stored in it.

Each file carries a payload that creates a marker file when unpickled with ordinary pickle.
Every entry point that reads checkpoints (``read_checkpoint``, ``--codec FILE`` of reconstruct,
encode and eval codec, the v1 and Dance importers of ``jbdiff export``, training resume) must
refuse it in one sentence, and the marker must never appear.
"""

from __future__ import annotations

import io
import os
import pickle
import shlex
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from jbdiff.cli import EXIT_ERROR, main
from jbdiff.core.audio import save_audio
from jbdiff.core.errors import JbdiffError
from jbdiff.core.state_dict import read_checkpoint
from jbdiff.core.synth import synth_music
from jbdiff.core.training import AtomicCheckpointIO, checkpoint_step
from tests.conftest import TINY_CODEC_CONFIG


class _Payload:
    """Unpickled by plain pickle, this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., object], tuple[str]]:
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def _short(text: str) -> bytes:
    data = text.encode()
    return b"\x8c" + bytes([len(data)]) + data  # SHORT_BINUNICODE


def _dotted_gadget(marker: Path) -> bytes:
    """Protocol 4: ``torch._utils._rebuild_tensor.__builtins__.get('exec')(code)``, which names a
    ``torch`` module and a ``_rebuild_`` prefix but reaches ``exec`` through a dotted path."""
    code = f"open({str(marker)!r}, 'w').close()"
    return (
        b"\x80\x04" + _short("torch._utils") + _short("_rebuild_tensor.__builtins__.get") + b"\x93"
        + _short("exec") + b"\x85R" + _short(code) + b"\x85R" + b"."
    )


def _replace_pickle(zipped: Path, pickled: bytes) -> None:
    """Swap the main pickle inside a torch zip checkpoint (what a hand-made malicious file does)."""
    with zipfile.ZipFile(zipped) as source:
        entries = [(info.filename, source.read(info)) for info in source.infolist()]
    with zipfile.ZipFile(zipped, "w", zipfile.ZIP_STORED) as target:
        for name, data in entries:
            target.writestr(name, pickled if name.endswith("/data.pkl") else data)


def _prezip_first_record(path: Path, marker: Path) -> None:
    """A pre-zip (legacy) file whose first record, the magic number, is the payload."""
    path.write_bytes(pickle.dumps(_Payload(marker), protocol=2) + pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2))


def _prezip_body(path: Path, marker: Path) -> None:
    torch.save({"model": {"w": torch.zeros(2)}, "hps": _Payload(marker)}, path, _use_new_zipfile_serialization=False)


def _zip_reduce(path: Path, marker: Path) -> None:
    torch.save({"model": {"w": torch.zeros(2)}, "extra": _Payload(marker)}, path)


def _zip_dotted(path: Path, marker: Path) -> None:
    torch.save({"model": {"w": torch.zeros(2)}}, path)
    _replace_pickle(path, _dotted_gadget(marker))


def _lightning_payload(path: Path, marker: Path) -> None:
    torch.save({"global_step": 3, "state_dict": {"w": torch.zeros(2)}, "callbacks": {"x": _Payload(marker)}}, path)


MALICIOUS: dict[str, Callable[[Path, Path], None]] = {
    "prezip-first-record": _prezip_first_record,
    "prezip-reduce": _prezip_body,
    "zip-reduce": _zip_reduce,
    "zip-dotted-rebuild": _zip_dotted,
    "lightning-payload": _lightning_payload,
}


def assert_one_sentence(message: str) -> None:
    """A single short line, not a traceback or torch's paragraph of advice."""
    assert message and "\n" not in message.strip(), message
    assert len(message) < 400, message
    assert "Traceback" not in message and "weights_only" not in message, message


def assert_refused_as_unsafe(message: str) -> None:
    """The refusal is the weights-only reader's, not a later complaint about the file's contents."""
    assert "refused: it" in message or "not a readable PyTorch checkpoint" in message, message


@pytest.fixture(params=sorted(MALICIOUS))
def hostile(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, Path]:
    """(malicious checkpoint, marker path that must never be created)."""
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth.tar"
    MALICIOUS[request.param](path, marker)
    assert not marker.exists()
    return path, marker


def test_read_checkpoint_refuses_in_one_sentence(hostile: tuple[Path, Path]) -> None:
    path, marker = hostile
    with pytest.raises(JbdiffError) as info:
        read_checkpoint(path)
    assert not marker.exists(), "reading the checkpoint ran code from it"
    assert_one_sentence(str(info.value))
    assert_refused_as_unsafe(str(info.value))
    assert str(path) in str(info.value)


def test_the_dotted_gadget_is_refused_by_the_unpickler(tmp_path: Path) -> None:
    path, marker = tmp_path / "gadget.pt", tmp_path / "pwned"
    _zip_dotted(path, marker)
    with pytest.raises(JbdiffError, match=r"gadget\.pt: not a readable PyTorch checkpoint \(damaged, or holding more than tensors"):
        read_checkpoint(path)
    assert not marker.exists()


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run the command line in-process; return its one line of stderr after checking exit status 2."""
    assert main(list(argv)) == EXIT_ERROR
    err = capsys.readouterr().err.strip()
    assert err.startswith("jbdiff: error: ")
    assert_one_sentence(err)
    return err


@pytest.fixture(scope="module")
def music(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("music")
    save_audio(folder / "clip.wav", synth_music(1.0))
    return folder


@pytest.mark.parametrize("command", ["reconstruct", "encode", "eval-codec", "export-codec"])
def test_codec_option_refuses_hostile_files(
    command: str, hostile: tuple[Path, Path], music: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, marker = hostile
    argv = {
        "reconstruct": ["reconstruct", str(music / "clip.wav"), str(tmp_path / "out.wav"), "--codec", str(path)],
        "encode": ["encode", str(music), "--codec", str(path), "--out", str(tmp_path / "latents"), "--no-progress"],
        "eval-codec": ["eval", "codec", "--codec", str(path), "--data", str(music), "--no-progress"],
        "export-codec": ["export", "--codec", str(path), "--out", str(tmp_path / "bundle")],
    }[command]
    err = _cli(capsys, *argv)
    assert str(path) in err
    assert_refused_as_unsafe(err)
    assert not marker.exists()
    assert not (tmp_path / "out.wav").exists() and not (tmp_path / "bundle").exists()


@pytest.mark.parametrize("stage", ["level2", "level1", "level0", "dance"])
def test_importers_refuse_hostile_files(
    stage: str, hostile: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, marker = hostile
    ckpt = path.rename(path.with_suffix(".ckpt"))
    err = _cli(capsys, "export", "--codec", str(tmp_path / "codec-run"), f"--{stage}", str(ckpt), "--out", str(tmp_path / "bundle"))
    assert str(ckpt) in err
    assert_refused_as_unsafe(err)
    assert not marker.exists()
    assert not (tmp_path / "bundle").exists()


def test_resume_refuses_a_hostile_last_checkpoint(
    hostile: tuple[Path, Path], music: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A shared run folder whose ``last.ckpt`` carries a payload: ``jbdiff train`` refuses to resume."""
    path, marker = hostile
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(TINY_CODEC_CONFIG.read_text())
    path.rename(run / "checkpoints" / "last.ckpt")
    err = _cli(capsys, "train", "codec", "--data", str(music), "--config", str(TINY_CODEC_CONFIG), "--out", str(run),
               "--max-steps", "1", "--accelerator", "cpu", "--no-progress")
    assert "last.ckpt" in err and "resum" in err
    assert not marker.exists()


def test_lightning_loads_checkpoints_weights_only(hostile: tuple[Path, Path]) -> None:
    """Lightning's own resume reads through the run's checkpoint plugin, which never unpickles objects."""
    path, marker = hostile
    with pytest.raises(JbdiffError):
        AtomicCheckpointIO().load_checkpoint(path)
    with pytest.raises(JbdiffError):
        checkpoint_step(path)
    assert not marker.exists()


def test_lightning_checkpoints_still_load(tmp_path: Path) -> None:
    path = tmp_path / "last.ckpt"
    torch.save({"global_step": 7, "state_dict": {"w": torch.ones(2)}, "hyper_parameters": {"lr": 0.1},
                "loops": {"fit_loop": {"state_dict": {}}}, "optimizer_states": [{"state": {}, "param_groups": []}]}, path)
    assert checkpoint_step(path) == 7
    assert torch.equal(AtomicCheckpointIO().load_checkpoint(path)["state_dict"]["w"], torch.ones(2))


# --------------------------------------------------------------------------- what still loads


def test_jukebox_hyperparams_load_as_a_plain_dict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file holding a real ``jukebox.hparams.Hyperparams`` (a dict subclass with attribute access)
    reads weights-only, as a plain dict, without importing ``jukebox``."""
    package = tmp_path / "src" / "jukebox"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    trace = tmp_path / "imported"
    (package / "hparams.py").write_text(
        f"open({str(trace)!r}, 'w').close()\n"
        "class Hyperparams(dict):\n"
        "    def __getattr__(self, attr):\n        return self[attr]\n"
        "    def __setattr__(self, attr, value):\n        self[attr] = value\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    import jukebox.hparams  # type: ignore[import-not-found]

    hps = jukebox.hparams.Hyperparams()
    hps.sr, hps.levels, hps.downs_t = 44100, 3, (3, 2, 2)
    path = tmp_path / "vqvae.pth.tar"
    torch.save({"hps": hps, "model": {"module.w": torch.ones(2)}, "step": 0}, path)
    for name in [m for m in list(__import__("sys").modules) if m == "jukebox" or m.startswith("jukebox.")]:
        monkeypatch.delitem(__import__("sys").modules, name)
    trace.unlink()
    data = read_checkpoint(path)
    assert type(data["hps"]) is dict and data["hps"] == {"sr": 44100, "levels": 3, "downs_t": (3, 2, 2)}
    assert torch.equal(data["model"]["module.w"], torch.ones(2))
    assert not trace.exists(), "the checkpoint's package was imported"


def test_refusal_names_the_foreign_class(tmp_path: Path) -> None:
    path = tmp_path / "meta.ckpt"
    buffer = io.BytesIO()
    torch.save({"state_dict": {"w": torch.ones(1)}, "data_dir": Path("/music")}, buffer)
    path.write_bytes(buffer.getvalue())
    with pytest.raises(JbdiffError, match=r"meta\.ckpt: refused: it refers to pathlib\.\w*PosixPath, but jbdiff reads only tensors") as info:
        read_checkpoint(path)
    assert_one_sentence(str(info.value))

