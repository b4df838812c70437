"""distillery.io: writes that a killed process cannot leave half done, and missing inputs named with their stage."""

from __future__ import annotations

import hashlib
import json

import pytest
from tests.conftest import REPO

from distillery.io import (
    MODEL_FOLDERS,
    MissingInput,
    atomic_path,
    json_error,
    stage_writing,
    write_folder,
    write_json,
)


def test_write_folder_replaces_the_folder_whole_and_returns_each_files_sha256(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "stale.png").write_bytes(b"from an earlier run")
    sha = write_folder([("a", b"first"), ("b", b"second")], folder, ".png")
    assert sorted(p.name for p in folder.iterdir()) == ["a.png", "b.png"]
    assert (folder / "b.png").read_bytes() == b"second"
    assert sha == {"a": hashlib.sha256(b"first").hexdigest(), "b": hashlib.sha256(b"second").hexdigest()}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images"]   # no temp folder left


def test_write_folder_killed_while_writing_leaves_the_old_folder_as_it_was(tmp_path):
    folder = tmp_path / "images"
    write_folder([("old", b"kept")], folder)

    def files():
        yield "new", b"half"
        raise KeyboardInterrupt   # the run is stopped between two files

    with pytest.raises(KeyboardInterrupt):
        write_folder(files(), folder)
    assert [p.name for p in folder.iterdir()] == ["old"]
    assert (folder / "old").read_bytes() == b"kept"
    # the next run starts from a clean temp folder
    write_folder([("new", b"whole")], folder)
    assert [p.name for p in folder.iterdir()] == ["new"]


def test_a_failed_atomic_write_keeps_the_previous_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "out.json"
    write_json({"v": 1}, path)
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("{ torn")
        raise RuntimeError("killed mid-write")
    assert path.read_text() == '{\n  "v": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def _model_outs_in_dvc_yaml() -> dict[str, str]:
    """dvc.yaml's outputs under models/, each with its stage (foreach stages by their template)."""
    import yaml

    found = {}
    for name, stage in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].items():
        for out in (stage["do"] if "foreach" in stage else stage).get("outs", []):
            path = out if isinstance(out, str) else next(iter(out))
            if path.startswith("models/"):
                found[path] = name
    return found


def test_the_model_folders_and_their_stages_are_dvc_yamls():
    assert MODEL_FOLDERS == _model_outs_in_dvc_yaml()


def test_stage_writing_names_the_stage_for_a_folder_or_anything_inside_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert stage_writing("models/warmup") == "warmup"
    assert stage_writing("./models/twx/rl/") == "twx_rl"
    assert stage_writing("models/vision/vlm-seed0") == "vision_train"
    assert stage_writing(tmp_path / "models" / "distilled") == "distill"
    for elsewhere in ("models/warmup_copy", "models", "mine/models/warmup", "/elsewhere/models/rl", "models/twx"):
        assert stage_writing(elsewhere) == "", elsewhere


def test_a_missing_model_folder_names_the_stage_that_writes_it(tmp_path, monkeypatch):
    from distillery.lm.model import load_model_dir

    monkeypatch.chdir(tmp_path)
    with pytest.raises(MissingInput, match=r"^models/teacher: not found \(made by the `teacher` stage: "
                                           r"run `dvc repro teacher`\)$"):
        load_model_dir("models/teacher")
    with pytest.raises(MissingInput, match=r"^mine: not found$"):
        load_model_dir("mine")
    (tmp_path / "models" / "rl").mkdir(parents=True)     # there, but not a model
    with pytest.raises(MissingInput, match="models/rl: not a model directory"):
        load_model_dir("models/rl")


def test_json_error_says_what_the_decoder_said_or_that_a_number_is_too_long():
    with pytest.raises(ValueError) as broken:
        json.loads('{"a": ')
    assert json_error(broken.value) == "Expecting value"
    with pytest.raises(ValueError) as too_long:     # not a JSONDecodeError: Python's int limit
        json.loads("9" * 5000)
    assert not isinstance(too_long.value, json.JSONDecodeError)
    assert json_error(too_long.value) == ("Exceeds the limit (4300 digits) for integer string conversion: "
                                          "value has 5000 digits")


def test_error_line_is_the_first_line_or_the_type():
    from distillery.io import error_line

    assert error_line(ValueError("  parquet: out of spec\n  at byte 12\n")) == "parquet: out of spec"
    assert error_line(KeyError()) == "KeyError"
