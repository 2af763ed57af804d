"""Typed YAML configs: the shipped codec configs, strict keys and types, clear file errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from jbdiff.core.config import TrainConfig, from_dict, load_config, load_yaml, to_dict
from jbdiff.core.errors import JbdiffError
from levels.codec_config import CodecConfig, load_codec_config
from levels.codec_loss import CodecLossConfig
from levels.vqvae import VQVAEConfig

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "codec" / "tiny.yaml"
FULL = ROOT / "configs" / "codec" / "full.yaml"


def _write(tmp_path: Path, data: object, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _full_data() -> dict:
    return yaml.safe_load(FULL.read_text())


# --------------------------------------------------------------------------- shipped configs


def test_tiny_config_loads() -> None:
    cfg = load_codec_config(TINY)
    assert isinstance(cfg, CodecConfig)
    assert cfg.model.hops == (8, 32, 128)
    assert cfg.model.emb_width == 64
    assert cfg.model.l_bins == 512 and cfg.model.width == 16 and cfg.model.depth == 3
    assert isinstance(cfg.model.downs_t, tuple) and cfg.model.downs_t == (3, 2, 2)
    assert cfg.loss.n_fft == (2048, 1024, 512)  # defaults fill what the file leaves out
    assert cfg.train.batch_size == 4 and cfg.train.max_steps == 2000
    assert isinstance(cfg.train.lr, float) and cfg.train.lr == pytest.approx(3e-4)


def test_full_config_is_the_5b_vqvae() -> None:
    cfg = load_codec_config(FULL)
    assert cfg.model == VQVAEConfig()
    assert cfg.model.hops == (8, 32, 128)
    assert cfg.loss == CodecLossConfig()
    assert cfg.train.batch_size == 32 and cfg.train.precision == "16-mixed"
    assert cfg.train.sample_seconds == pytest.approx(0.3715)
    assert cfg.train.accumulate_grad_batches == TrainConfig().accumulate_grad_batches


def test_every_field_in_the_shipped_configs_has_the_declared_type() -> None:
    for path in (TINY, FULL):
        cfg = load_codec_config(path)
        for section in (cfg.model, cfg.loss, cfg.train):
            for name, value in vars(section).items():
                default = getattr(type(section)(), name)
                if default is not None:
                    assert type(value) is type(default), f"{path.name}: {name} is {type(value).__name__}"


def test_to_dict_round_trip() -> None:
    cfg = load_codec_config(TINY)
    data = to_dict(cfg)
    assert data["model"]["downs_t"] == [3, 2, 2]  # tuples become lists
    assert yaml.safe_load(yaml.safe_dump(data)) == data
    assert from_dict(CodecConfig, data) == cfg


def test_empty_sections_give_defaults(tmp_path: Path) -> None:
    assert load_config(CodecConfig, _write(tmp_path, {"model": {}})) == CodecConfig()
    assert from_dict(TrainConfig, {}) == TrainConfig()


# --------------------------------------------------------------------------- unknown keys


def test_unknown_top_level_key(tmp_path: Path) -> None:
    data = _full_data()
    data["optimiser"] = {"lr": 1}
    path = _write(tmp_path, data)
    with pytest.raises(JbdiffError, match=r"unknown key\(s\) optimiser") as info:
        load_codec_config(path)
    assert str(path) in str(info.value)
    assert "allowed: loss, model, train" in str(info.value)


def test_unknown_nested_key(tmp_path: Path) -> None:
    data = _full_data()
    data["model"]["emb_widht"] = 64
    path = _write(tmp_path, data)
    with pytest.raises(JbdiffError, match=r"cfg\.yaml\.model: unknown key\(s\) emb_widht") as info:
        load_codec_config(path)
    assert "emb_width" in str(info.value)  # the allowed names are listed


def test_several_unknown_keys_are_all_named() -> None:
    with pytest.raises(JbdiffError, match=r"unknown key\(s\) bar, foo"):
        from_dict(TrainConfig, {"foo": 1, "bar": 2, "lr": 0.1})


# --------------------------------------------------------------------------- types


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("model", "levels", "three", r"model\.levels: expected int, got 'three'"),
        ("model", "levels", 3.0, r"model\.levels: expected int"),
        ("model", "width", True, r"model\.width: expected int, got True"),
        ("model", "downs_t", 3, r"model\.downs_t: expected a list"),
        ("model", "downs_t", [3, "2", 2], r"model\.downs_t: expected int, got '2'"),
        ("model", "reverse_decoder_dilation", "yes", r"reverse_decoder_dilation: expected bool"),
        ("model", "dilation_cycle", "4", r"dilation_cycle: expected int"),
        ("train", "precision", 16, r"train\.precision: expected str, got 16"),
        ("train", "batch_size", None, r"train\.batch_size: expected int, got None"),
        ("loss", "n_fft", {"a": 1}, r"loss\.n_fft: expected a list"),
    ],
)
def test_wrong_types_are_refused(tmp_path: Path, section: str, key: str, value: object, message: str) -> None:
    data = _full_data()
    data[section][key] = value
    with pytest.raises(JbdiffError, match=message):
        load_codec_config(_write(tmp_path, data))


def test_section_that_is_not_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(JbdiffError, match=r"model: expected a mapping, got int"):
        load_codec_config(_write(tmp_path, {"model": 5}))


def test_numbers_are_converted() -> None:
    cfg = from_dict(VQVAEConfig, {"l_mu": 1, "m_conv": 2})
    assert cfg.l_mu == 1.0 and isinstance(cfg.l_mu, float)
    assert isinstance(cfg.m_conv, float)
    assert from_dict(VQVAEConfig, {"dilation_cycle": None}).dilation_cycle is None
    assert from_dict(VQVAEConfig, {"dilation_cycle": 4}).dilation_cycle == 4
    assert from_dict(VQVAEConfig, {"downs_t": (3, 2, 2)}).downs_t == (3, 2, 2)


@pytest.mark.parametrize("value", ["abc", "3e-4", True, None, [1.0]])
def test_float_fields_refuse_non_numbers(value: object) -> None:
    # A numeric string could reasonably be converted instead; silently keeping it is the bug.
    try:
        cfg = from_dict(TrainConfig, {"lr": value})
    except JbdiffError:
        return
    assert isinstance(cfg.lr, float), f"lr={cfg.lr!r} accepted as {type(cfg.lr).__name__}"


def test_yaml_exponent_without_dot_in_a_config(tmp_path: Path) -> None:
    # YAML 1.1 needs a dot for a float ("3.0e-4"); how the loader sees "3e-4" is pinned here.
    path = tmp_path / "lr.yaml"
    path.write_text("train:\n  lr: 3.0e-4\n")
    assert load_codec_config(path).train.lr == pytest.approx(3e-4)
    assert load_yaml(path) == {"train": {"lr": 3e-4}}


def test_invalid_values_become_jbdiff_errors(tmp_path: Path) -> None:
    data = _full_data()
    data["model"]["downs_t"] = [3, 2]
    with pytest.raises(JbdiffError, match=r"model: downs_t has 2 entries but levels is 3"):
        load_codec_config(_write(tmp_path, data))
    data = _full_data()
    data["loss"]["n_fft"] = [2048, 1024]
    with pytest.raises(JbdiffError, match=r"loss: n_fft, hop_length and window_size"):
        load_codec_config(_write(tmp_path, data))


# --------------------------------------------------------------------------- files


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(JbdiffError, match="config file not found") as info:
        load_codec_config(tmp_path / "nope.yaml")
    assert "nope.yaml" in str(info.value)
    with pytest.raises(JbdiffError, match="config file not found"):
        load_yaml(tmp_path)  # a folder is not a config file


def test_malformed_yaml(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  levels: [3, 2\n  width: 4\n")
    with pytest.raises(JbdiffError, match=r"bad\.yaml: not valid YAML"):
        load_codec_config(path)
    path.write_text("model: {levels: 3\n")
    with pytest.raises(JbdiffError, match="not valid YAML"):
        load_codec_config(path)


@pytest.mark.parametrize("text", ["", "- 1\n- 2\n", "just a string\n", "42\n"])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    path = tmp_path / "list.yaml"
    path.write_text(text)
    with pytest.raises(JbdiffError, match="expected a YAML mapping at the top level"):
        load_codec_config(path)
