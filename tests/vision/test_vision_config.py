"""The vision and table tracks' params sections refuse, at load and with the key named, what
would crash or run wrong later: a zero grid, model sizes that do not fit together, a patch
side that does not divide the image (checked by the stage that reads both sections), a weak
checkpoint after the last step, a typo in a tuning grid, out-of-range RL settings."""

from __future__ import annotations

import importlib

import pytest
import yaml
from tests.conftest import REPO

from distillery.config import ConfigError, exit_on_config_error, load_section, read_params
from distillery.vision.config import (
    GRID_PARAMS,
    METHODS,
    ITMConfig,
    SceneConfig,
    VisionEvalConfig,
    VisionTrainConfig,
    VLMConfig,
    check_patches,
)
from distillery.vision.table_rl import TableRLConfig, TableTrainConfig
from distillery.vision.tables import TableDataConfig


@pytest.mark.parametrize("cls, section", [(SceneConfig, "vision_data"), (TableDataConfig, "table_data")])
@pytest.mark.parametrize("data", [{"grid": 0}, {"grid": -2}, {"image_size": 0}])
def test_a_zero_grid_or_image_size_is_a_config_error_not_a_division_by_zero(cls, section, data):
    with pytest.raises(ConfigError, match=rf"^{section}: {section}.grid and {section}.image_size must be at least 1"):
        load_section(cls, section, {section: data})


@pytest.mark.parametrize("section, cls", [("vision_train", VisionTrainConfig), ("table_train", TableTrainConfig)])
@pytest.mark.parametrize("vlm, fragment", [
    ({"n_heads": 0}, r"vlm sizes must all be >= 1: n_heads=0"),
    ({"patch_size": 0, "vision_layers": -1}, r"vlm sizes must all be >= 1: patch_size=0, vision_layers=-1"),
    ({"hidden_size": 96, "n_heads": 7}, r"vlm.hidden_size \(96\) must be divisible by vlm.n_heads \(7\)"),
    ({"n_heads": 8, "n_kv_heads": 3}, r"vlm.n_heads \(8\) must be divisible by vlm.n_kv_heads \(3\)"),
    ({"vision_hidden": 64, "vision_heads": 3}, r"vlm.vision_hidden \(64\) must be divisible by vlm.vision_heads \(3\)"),
    ({"init_std": -0.1}, r"vlm.init_std and vlm.projector_std must be >= 0"),
])
def test_the_vlm_sizes_must_fit_together(section, cls, vlm, fragment):
    with pytest.raises(ConfigError, match=rf"^{section}.vlm: {fragment}"):
        load_section(cls, section, {section: {"vlm": vlm}})


@pytest.mark.parametrize("stage, params, message", [
    ("vision_train", {"vision_data": {"image_size": 64}, "vision_train": {"workers": 1, "vlm": {"patch_size": 12}}},
     "vision_train.vlm.patch_size (12) must divide vision_data.image_size (64)"),
    ("table_train", {"table_data": {"image_size": 80}, "table_train": {"workers": 1, "vlm": {"patch_size": 32}}},
     "table_train.vlm.patch_size (32) must divide table_data.image_size (80)"),
])
def test_a_patch_size_that_does_not_divide_the_image_stops_the_stage_at_its_config(
        stage, params, message, tmp_path, monkeypatch, capsys):
    """The patch side (the training section) and the image side (the data section) are read
    together only by the training stage: it refuses the pair there, one line naming both keys,
    before any data is read or model built."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(f"stages.{stage}")
    assert exit_on_config_error(f"python -m stages.{stage}", module.main, []) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"python -m stages.{stage}: error: {message}: ") and err.count("\n") == 1, err
    assert [p.name for p in tmp_path.iterdir()] == ["params.yaml"]


def test_a_patch_size_that_divides_the_image_passes():
    for patch in (1, 8, 16, 32, 64):
        check_patches(VLMConfig(patch_size=patch), "vision_train", 64, "vision_data")
    params = read_params(REPO / "params.yaml")
    for (model_cls, model), (data_cls, data) in (((VisionTrainConfig, "vision_train"), (SceneConfig, "vision_data")),
                                                 ((TableTrainConfig, "table_train"), (TableDataConfig, "table_data"))):
        check_patches(load_section(model_cls, model, params).vlm, model, load_section(data_cls, data, params).image_size,
                      data)
    with pytest.raises(ConfigError, match=r"^vision_train.vlm.patch_size \(48\) must divide vision_data.image_size"):
        check_patches(VLMConfig(patch_size=48), "vision_train", 64, "vision_data")


@pytest.mark.parametrize("itm, fragment", [
    ({"heads": 0}, r"itm sizes must all be >= 1: heads=0"),
    ({"text_hidden": 64, "heads": 5}, r"itm.vision_hidden \(64\) must be divisible by itm.heads \(5\)"),
    ({"vision_hidden": 64, "text_hidden": 30, "heads": 4}, r"itm.text_hidden \(30\) must be divisible by itm.heads \(4\)"),
    ({"itc_weight": -1.0}, r"itm.init_std, itm.align_weight, itm.itc_weight and itm.questions_per_image must be >= 0"),
])
def test_the_itm_sizes_must_fit_together(itm, fragment):
    with pytest.raises(ConfigError, match=rf"^vision_train.itm: {fragment}"):
        load_section(VisionTrainConfig, "vision_train", {"vision_train": {"itm": itm}})


def test_the_weak_checkpoint_must_be_within_the_run():
    with pytest.raises(ConfigError, match=r"^vision_train: vision_train.weak_step \(5000\) is after the last step: "
                                          r"it must be at most vision_train.train.max_steps \(3000\)"):
        load_section(VisionTrainConfig, "vision_train",
                     {"vision_train": {"weak_step": 5000, "train": {"max_steps": 3000}}})
    cfg = load_section(VisionTrainConfig, "vision_train", {"vision_train": {"weak_step": 3000, "train": {"max_steps": 3000}}})
    assert cfg.weak_step == cfg.train.max_steps == 3000
    assert VisionTrainConfig().train.max_steps == 0       # epochs-based: not checked here (train_vlm says so)


@pytest.mark.parametrize("grids, fragment", [
    ({"vcdd": {"alpha": [1.0]}}, r"vision_eval.grids.vcdd: unknown method; choose from \['greedy', 'vcd'"),
    ({"vcd": {"alfa": [1.0]}}, r"vision_eval.grids.vcd: unknown hyper-parameter\(s\) \['alfa'\]; "
                               r"vcd's are \['alpha', 'beta'\]"),
    ({"pnd_attn": {"lam": [0.1]}}, r"vision_eval.grids.pnd_attn: unknown hyper-parameter\(s\) \['lam'\]"),
    ({"m3id": {"lam": []}}, r"vision_eval.grids.m3id.lam: empty; list at least one value"),
])
def test_a_typo_in_a_tuning_grid_fails_at_load(grids, fragment):
    with pytest.raises(ConfigError, match=rf"^vision_eval: {fragment}"):
        load_section(VisionEvalConfig, "vision_eval", {"vision_eval": {"grids": grids}})


def test_the_grid_hyper_parameters_are_the_decoders_and_the_default_grids_pass():
    """GRID_PARAMS repeats vision/decoding.py's DEFAULTS so that the config need not import
    the decoder: the two must agree (pnd_attn is pnd), and run.py's own grids must load."""
    from distillery.vision.decoding import DEFAULTS
    from distillery.vision.run import default_grids

    assert set(GRID_PARAMS) == set(METHODS)
    for method in METHODS:
        assert set(GRID_PARAMS[method]) == set(DEFAULTS["pnd" if method == "pnd_attn" else method]), method
    cfg = load_section(VisionEvalConfig, "vision_eval", {"vision_eval": {"grids": default_grids()}})
    assert cfg.grids == default_grids()


def test_vision_eval_batch_size_must_be_positive():
    with pytest.raises(ConfigError, match=r"^vision_eval: vision_eval.batch_size must be at least 1, got 0"):
        load_section(VisionEvalConfig, "vision_eval", {"vision_eval": {"batch_size": 0}})


@pytest.mark.parametrize("data, fragment", [
    ({"batch_size": 0}, r"table_rl.batch_size must be at least 1, got 0"),
    ({"minibatches": 0}, r"table_rl.minibatches must be at least 1, got 0"),
    ({"epochs": 0}, r"table_rl.epochs must be at least 1, got 0"),
    ({"temperature": -1.0}, r"table_rl.temperature must be > 0 \(the rollouts sample\), got -1.0"),
    ({"temperature": 0.0}, r"table_rl.temperature must be > 0"),
    ({"clip_low": 1.0}, r"table_rl.clip_low must be in \[0, 1\) and table_rl.clip_high >= 0"),
    ({"clip_high": -0.2}, r"table_rl.clip_low must be in \[0, 1\) and table_rl.clip_high >= 0"),
])
def test_table_rl_refuses_out_of_range_settings(data, fragment):
    with pytest.raises(ConfigError, match=rf"^table_rl: {fragment}"):
        load_section(TableRLConfig, "table_rl", {"table_rl": data})


def test_an_asymmetric_clip_either_way_is_allowed():
    assert load_section(TableRLConfig, "table_rl", {"table_rl": {"clip_low": 0.5, "clip_high": 0.1}}).clip_low == 0.5


def test_the_configs_built_in_code_by_default_still_build():
    for cls in (SceneConfig, TableDataConfig, VLMConfig, ITMConfig, VisionTrainConfig, VisionEvalConfig,
                TableTrainConfig, TableRLConfig):
        cls()
