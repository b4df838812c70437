"""card.json: resolved configs, input hashes, metrics, versions; it loads back with the model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from distillery.agents.prompts import PromptConfig
from distillery.train.card import CARD_FORMAT, build_card, hash_inputs, sha256_path
from distillery.train.config import TrainConfig


def test_card_records_where_a_model_came_from(tmp_path):
    data = tmp_path / "episodes.parquet"
    data.write_bytes(b"rows")
    folder = tmp_path / "traj"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "steps.parquet").write_bytes(b"steps")
    card = build_card(prompt=PromptConfig(max_prompt_tokens=320), seed=7, data_files=[data, folder],
                      metrics={"eval_loss": 0.5}, params={"lr": 1e-3}, train_cfg=TrainConfig(lr=1e-3),
                      extra={"tokenizer": {"whole_fraction": 1.0}})
    assert card["format"] == CARD_FORMAT
    assert PromptConfig(**card["prompt"]).max_prompt_tokens == 320      # what HFPolicy does with it
    assert card["data"][str(data)] == hashlib.sha256(b"rows").hexdigest()
    assert card["seed"] == 7 and card["metrics"] == {"eval_loss": 0.5}
    assert card["train"]["lr"] == 1e-3 and card["params"] == {"lr": 1e-3}
    assert card["versions"]["torch"] and card["versions"]["python"]
    assert card["tokenizer"] == {"whole_fraction": 1.0}


def test_directory_hash_follows_content_and_names(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "a").write_text("1")
    h1 = sha256_path(d)
    (d / "a").write_text("2")
    h2 = sha256_path(d)
    (d / "a").rename(d / "b")
    assert len({h1, h2, sha256_path(d)}) == 3
    assert list(hash_inputs([d])) == [str(d)]


def test_card_errors_are_specific(tmp_path):
    with pytest.raises(ValueError, match="PromptConfig"):
        build_card(prompt={"max_prompt_tokens": 3}, seed=0)
    with pytest.raises(FileNotFoundError, match="missing.parquet"):
        build_card(prompt=PromptConfig(), seed=0, data_files=[tmp_path / "missing.parquet"])
    with pytest.raises(ValueError, match="overwrite the card's own 'seed'"):
        build_card(prompt=PromptConfig(), seed=0, extra={"seed": 1})


def test_iteration_log_puts_the_starting_model_at_step_0(tmp_path):
    from distillery.train.card import iteration_log

    with iteration_log(tmp_path / "live") as log:
        log({"test_success": 0.5}, -1)
        log({"test_success": 0.75}, 0)
    rows = (tmp_path / "live/plots/metrics/test_success.tsv").read_text().split()
    assert rows == ["step", "test_success", "0", "0.5", "1", "0.75"]
    assert not list(tmp_path.rglob("dvc.yaml"))


def test_card_prompt_is_what_the_card_records(tmp_path):
    from distillery.train.card import card_prompt

    assert card_prompt(tmp_path) == {}
    (tmp_path / "card.json").write_text(json.dumps({"prompt": {"style": "compact", "max_prompt_tokens": 64}}))
    assert card_prompt(tmp_path) == {"style": "compact", "max_prompt_tokens": 64}


def test_source_fingerprint_follows_the_code_and_ignores_bytecode(tmp_path):
    import shutil

    import distillery
    from distillery.train.card import source_fingerprint

    package = Path(distillery.__file__).parent
    copy = tmp_path / "distillery"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert source_fingerprint(copy) == source_fingerprint()           # the default is the package itself
    (copy / "__pycache__").mkdir(exist_ok=True)
    (copy / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"bytecode")
    assert source_fingerprint(copy) == source_fingerprint()
    loss = copy / "train" / "losses.py"
    loss.write_text(loss.read_text() + "\n# a one-line change\n")
    assert source_fingerprint(copy) != source_fingerprint()


def test_a_run_resumes_only_the_same_config_code_and_inputs(tmp_path, monkeypatch):
    from distillery.train import card

    data = tmp_path / "pool.jsonl"
    data.write_text("a\n")
    root = tmp_path / "ckpt"
    first = card.resumable_run_dir(root, TrainConfig(lr=1e-3), [data])
    first.mkdir(parents=True)
    assert card.resumable_run_dir(root, TrainConfig(lr=1e-3), [data]) == first and first.is_dir()

    monkeypatch.setattr(card, "source_fingerprint", lambda: "other code")
    changed = card.resumable_run_dir(root, TrainConfig(lr=1e-3), [data])
    assert changed != first and not first.exists()                    # the stale run is deleted
    monkeypatch.undo()
    assert card.resumable_run_dir(root, TrainConfig(lr=3e-4), [data]) not in (first, changed)
    data.write_text("b\n")
    assert card.resumable_run_dir(root, TrainConfig(lr=1e-3), [data]) != first
