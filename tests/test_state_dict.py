"""Reading foreign checkpoints weights-only, never importing their packages; strict loading with clear refusals."""

from __future__ import annotations

import contextlib
import datetime
import importlib
import pathlib
import sys
import uuid
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from jbdiff.core.errors import JbdiffError
from jbdiff.core.state_dict import load_strict, read_checkpoint, strip_prefix

FOREIGN_SOURCE = '''
import os
from pathlib import Path

# Importing this module leaves a trace, so a test can tell whether a loader imported it.
_trace = os.environ.get("JBDIFF_TEST_IMPORT_TRACE")
if _trace:
    with open(_trace, "a") as fh:
        fh.write("imported\\n")


class Hyperparams(dict):
    """Like jukebox.hparams.Hyperparams: a dict with attribute access."""

    def __getattr__(self, attr):
        return self[attr]

    def __setattr__(self, attr, value):
        self[attr] = value


class Settings:
    def __init__(self, lr, names):
        self.lr = lr
        self.names = names
'''


@pytest.fixture()
def foreign_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """(path, module name, import-trace file): a checkpoint pickling classes of a throwaway package."""
    name = f"jbdiff_foreign_{uuid.uuid4().hex[:8]}"
    src = tmp_path / "src"
    src.mkdir()
    (src / f"{name}.py").write_text(FOREIGN_SOURCE)
    trace = tmp_path / "imports.txt"
    monkeypatch.setenv("JBDIFF_TEST_IMPORT_TRACE", str(trace))
    sys.path.insert(0, str(src))
    try:
        importlib.invalidate_caches()
        module = importlib.import_module(name)
        hps = module.Hyperparams()
        hps.sr = 44100
        hps.levels = 3
        hps.downs_t = (3, 2, 2)
        state = OrderedDict()
        state["module.layer.weight"] = torch.arange(6.0).reshape(2, 3)
        state["module.layer.bias"] = torch.tensor([0.5, -0.5])
        path = tmp_path / "foreign.pth.tar"
        torch.save({"model": state, "hps": hps, "settings": module.Settings(0.1, ["a", "b"]), "step": 7}, path)
    finally:
        sys.path.remove(str(src))
        sys.modules.pop(name, None)
    trace.unlink()
    yield path, name, src, trace
    sys.modules.pop(name, None)


def test_refuses_a_foreign_class_whose_package_is_not_importable(foreign_checkpoint) -> None:
    path, name, _, _ = foreign_checkpoint
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(name)
    with pytest.raises(JbdiffError, match=rf"foreign\.pth\.tar: refused: it refers to {name}\.Hyperparams"):
        read_checkpoint(path)
    assert name not in sys.modules


def test_does_not_import_the_package_even_when_it_is_importable(foreign_checkpoint) -> None:
    path, name, src, trace = foreign_checkpoint
    sys.path.insert(0, str(src))
    try:
        importlib.invalidate_caches()
        with pytest.raises(JbdiffError, match="refused"):
            read_checkpoint(path)
    finally:
        sys.path.remove(str(src))
    assert name not in sys.modules
    assert not trace.exists(), "the checkpoint's package was imported"


def test_plain_checkpoints_load_with_torch_types(tmp_path: Path) -> None:
    path = tmp_path / "plain.pt"
    state = OrderedDict([("a", torch.ones(2, dtype=torch.float16)), ("b", torch.arange(3))])
    torch.save({"state_dict": state, "epoch": 2, "name": "x", "sizes": (1, 2)}, path)
    data = read_checkpoint(path)
    assert data["epoch"] == 2 and data["name"] == "x" and data["sizes"] == (1, 2)
    assert isinstance(data["state_dict"], OrderedDict)
    assert data["state_dict"]["a"].dtype == torch.float16
    assert torch.equal(data["state_dict"]["b"], torch.arange(3))


def test_numpy_values_are_refused(tmp_path: Path) -> None:
    """numpy arrays are rebuilt by numpy's own unpickling code, which a weights-only load never runs."""
    path = tmp_path / "np.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "stats": np.arange(4, dtype=np.float32)}, path)
    with pytest.raises(JbdiffError, match=r"np\.pt: refused: it refers to numpy\.\S*_reconstruct"):
        read_checkpoint(path)


def test_legacy_format_files_still_load(tmp_path: Path) -> None:
    path = tmp_path / "old.pth.tar"
    state = {"model": {"module.w": torch.arange(3.0)}, "hps": {"sr": 44100}, "step": 2}
    torch.save(state, path, _use_new_zipfile_serialization=False)
    data = read_checkpoint(path)
    assert torch.equal(data["model"]["module.w"], torch.arange(3.0)) and data["hps"] == {"sr": 44100}


def test_tensors_land_on_the_cpu(tmp_path: Path) -> None:
    path = tmp_path / "cpu.pt"
    torch.save({"w": torch.ones(3)}, path)
    assert read_checkpoint(path)["w"].device.type == "cpu"


def test_read_checkpoint_refusals(tmp_path: Path) -> None:
    with pytest.raises(JbdiffError, match="checkpoint file not found"):
        read_checkpoint(tmp_path / "absent.pt")
    with pytest.raises(JbdiffError, match="checkpoint file not found"):
        read_checkpoint(tmp_path)  # a folder
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00\x01not a pickle at all" * 10)
    with pytest.raises(JbdiffError, match=r"garbage\.pt: not a readable PyTorch checkpoint \(damaged"):
        read_checkpoint(garbage)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(JbdiffError, match="not a readable PyTorch checkpoint"):
        read_checkpoint(empty)
    listed = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(JbdiffError, match="expected a checkpoint dictionary, found list"):
        read_checkpoint(listed)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("protocol", [2, 4])
def test_a_checkpoint_cannot_run_code(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "ran.txt"

    class Payload:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('ran')",))

    path = tmp_path / "payload.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "extra": Payload()}, path, pickle_protocol=protocol)
    with contextlib.suppress(JbdiffError):
        read_checkpoint(path)
    assert not marker.exists(), "reading the checkpoint executed code from it"


@pytest.mark.parametrize("value", [pathlib.PurePosixPath("/data/music"), datetime.datetime(2024, 1, 2)], ids=["path", "datetime"])
def test_other_objects_in_metadata_are_refused_by_name(tmp_path: Path, value: object) -> None:
    path = tmp_path / "meta.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "hyper_parameters": {"data": value, "lr": 0.1}}, path)
    with pytest.raises(JbdiffError, match=rf"refused: it refers to {type(value).__module__}\.{type(value).__name__}"):
        read_checkpoint(path)


# --------------------------------------------------------------------------- strip_prefix


def test_strip_prefix() -> None:
    w = torch.zeros(2)
    state = {"module.a.weight": w, "module.b": 1, "c.module.d": 2, "modulex": 3}
    out = strip_prefix(state, "module.")
    assert out == {"a.weight": w, "b": 1, "c.module.d": 2, "modulex": 3}
    assert out["a.weight"] is w  # values are not copied
    assert list(out) == ["a.weight", "b", "c.module.d", "modulex"]  # order kept
    assert strip_prefix(state, "") == state
    assert strip_prefix({}, "module.") == {}
    assert strip_prefix({"module.module.x": 1}, "module.") == {"module.x": 1}  # once only
    assert "module.a.weight" in state  # the input is untouched


# --------------------------------------------------------------------------- load_strict


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(3, 2)
        self.norm = nn.BatchNorm1d(2)


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: torch.randn(v.shape) if v.is_floating_point() else v.clone() for k, v in module.state_dict().items()}


def test_load_strict_loads_matching_state() -> None:
    torch.manual_seed(0)
    model = Tiny()
    state = _state(model)
    load_strict(model, state, "good.pt")
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_load_strict_names_missing_keys() -> None:
    model = Tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = _state(model)
    del state["layer.bias"]
    del state["norm.running_var"]
    with pytest.raises(JbdiffError) as info:
        load_strict(model, state, "ckpt.pt")
    message = str(info.value)
    assert message.startswith("ckpt.pt: does not match the model")
    assert "2 missing key(s): layer.bias, norm.running_var" in message
    assert "unexpected" not in message
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # untouched


def test_load_strict_names_unexpected_keys() -> None:
    model = Tiny()
    state = _state(model)
    state["head.weight"] = torch.zeros(1)
    with pytest.raises(JbdiffError, match=r"ckpt\.pt: does not match the model \(1 unexpected key\(s\): head\.weight\)"):
        load_strict(model, state, "ckpt.pt")


def test_load_strict_names_both() -> None:
    model = Tiny()
    state = strip_prefix({"module." + k: v for k, v in _state(model).items()}, "modul.")  # wrong prefix
    with pytest.raises(JbdiffError) as info:
        load_strict(model, state, "x")
    message = str(info.value)
    assert "missing key(s): layer.bias" in message
    assert "unexpected key(s): module.layer.bias" in message


def test_load_strict_shortens_long_lists() -> None:
    model = nn.Sequential(*(nn.Linear(1, 1) for _ in range(10)))
    with pytest.raises(JbdiffError) as info:
        load_strict(model, {}, "empty")
    message = str(info.value)
    assert "20 missing key(s): " in message
    assert message.count(", ") == 7 and "and 12 more" in message


def test_load_strict_names_wrong_shapes() -> None:
    model = Tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = _state(model)
    state["layer.weight"] = torch.zeros(3, 2)
    with pytest.raises(JbdiffError, match=r"x\.pt: tensor shapes do not match the model \(1 of 7; first layer\.weight: \(3, 2\) in the file, \(2, 3\) in the model\)"):
        load_strict(model, state, "x.pt")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_load_strict_shape_refusal_is_short_however_many_differ() -> None:
    model = nn.Sequential(*(nn.Linear(4, 4) for _ in range(30)))
    state = {k: torch.zeros(v.shape[0] + 1, *v.shape[1:]) for k, v in model.state_dict().items()}
    with pytest.raises(JbdiffError) as info:
        load_strict(model, state, "w.safetensors", model="the level1 model that bundle.yaml describes")
    message = str(info.value)
    assert message == ("w.safetensors: tensor shapes do not match the level1 model that bundle.yaml describes "
                       "(60 of 60; first 0.weight: (5, 4) in the file, (4, 4) in the model)")


def test_load_strict_refuses_non_finite_weights() -> None:
    model = Tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = _state(model)
    state["norm.running_var"][0] = float("inf")
    with pytest.raises(JbdiffError, match=r"x\.pt: tensor norm\.running_var holds NaN or infinite values"):
        load_strict(model, state, "x.pt")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
