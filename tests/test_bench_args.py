"""The benchmarks' arguments: a count or duration below its bound, a device that is not one, or
a model directory that is not one is refused when the arguments are parsed (exit 2, usage and
one error line), before any task generation, model or measuring; every option says what it is.

In-process through each script's `parse_args` / `build_parser` (importing bench/ costs a few
seconds of torch, once); two scripts also as subprocesses, the way `make bench` runs them."""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys

import pytest
from tests.conftest import REPO

BENCH = REPO / "bench"
sys.path.insert(0, str(BENCH))   # the scripts import their sibling machine.py, as when run from bench/

SCRIPTS = ("env_throughput", "sql_env_throughput", "gate_throughput", "pghs_scale", "train_throughput",
           "rollout_throughput", "vision_decoding", "serve_load", "serve_parity", "gpu_check")


def parse(name: str, argv: list[str]) -> argparse.Namespace:
    """The script's own parsing: its checks after argparse's included where it has them."""
    module = importlib.import_module(name)
    if hasattr(module, "parse_args"):
        return module.parse_args(argv)
    return module.build_parser().parse_args(argv)


BAD = [
    ("env_throughput", ["--seconds", "0"]),
    ("env_throughput", ["--seconds", "-5"]),
    ("env_throughput", ["--seconds", "nan"]),
    ("env_throughput", ["--seconds", "inf"]),
    ("sql_env_throughput", ["--seconds", "0"]),
    ("gate_throughput", ["--repeats", "0"]),
    ("gate_throughput", ["--episodes", "0"]),
    ("gate_throughput", ["--episodes", "2.5"]),
    ("pghs_scale", ["--repeats", "0"]),
    ("pghs_scale", ["--rows", "0"]),
    ("pghs_scale", ["--rounds", "0"]),
    ("pghs_scale", ["--strategies", "-1"]),
    ("pghs_scale", ["--threads", "0"]),
    ("train_throughput", ["--rounds", "0"]),
    ("train_throughput", ["--episodes", "0"]),
    ("train_throughput", ["--steps", "0"]),
    ("train_throughput", ["--batch-size", "0"]),
    ("train_throughput", ["--max-len", "0"]),
    ("train_throughput", ["--lr", "0"]),
    ("train_throughput", ["--warmup", "-1"]),
    ("train_throughput", ["--threads", "-1"]),
    ("rollout_throughput", ["--rounds", "0"]),
    ("rollout_throughput", ["--n-tasks", "0"]),
    ("rollout_throughput", ["--batch-size", "0"]),
    ("rollout_throughput", ["--max-new-tokens", "0"]),
    ("rollout_throughput", ["--naive-budget", "0"]),
    ("rollout_throughput", ["--max-seconds", "-1"]),
    ("rollout_throughput", ["--threads", "-1"]),
    ("rollout_throughput", ["--device", "gpu"]),
    ("rollout_throughput", ["--model-dir", "/nonexistent"]),
    ("vision_decoding", ["--rounds", "0"]),
    ("vision_decoding", ["--threads", "0"]),
    ("vision_decoding", ["--batch", "0"]),
    ("vision_decoding", ["--tokens", "0"]),
    ("vision_decoding", ["--model", "/nonexistent"]),
    ("vision_decoding", ["--itm", "/nonexistent"]),
    ("serve_load", ["--time-limit", "0"]),
    ("serve_load", ["--max-tokens", "0"]),
    ("serve_load", ["--max-batch", "0"]),
    ("serve_load", ["--threads", "-1"]),
    ("serve_load", ["--clients", "0"]),
    ("serve_load", ["--model-dir", "/nonexistent"]),
    ("serve_parity", ["--n-tasks", "0"]),
    ("serve_parity", ["--concurrency", "0"]),
    ("serve_parity", ["--batch-size", "0"]),
    ("serve_parity", ["--max-new-tokens", "0"]),
    ("serve_parity", ["--threads", "-1"]),
    ("gpu_check", ["--device", "gpu"]),
    ("gpu_check", ["--warmup-steps", "0"]),
    ("gpu_check", ["--induction-steps", "-1"]),
    ("gpu_check", ["--rl-iterations", "-1"]),
    ("gpu_check", ["--rl-tasks-per-family", "0"]),
]


@pytest.mark.parametrize(("name", "argv"), BAD, ids=[f"{n} {' '.join(a)}" for n, a in BAD])
def test_a_bad_argument_is_refused_when_parsed(name, argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse(name, argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"error: argument {argv[0]}" in err or f"error: {argv[0]} " in err, err
    assert "Traceback" not in err


def test_a_directory_without_config_json_is_not_a_model(tmp_path, capsys):
    for name, option in (("rollout_throughput", "--model-dir"), ("vision_decoding", "--model"),
                         ("vision_decoding", "--itm"), ("serve_load", "--model-dir")):
        with pytest.raises(SystemExit) as exit_:
            parse(name, [option, str(tmp_path)])
        assert exit_.value.code == 2
        assert "not a model directory (no config.json, no weights" in capsys.readouterr().err
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert parse("rollout_throughput", ["--model-dir", str(tmp_path)]).model_dir == str(tmp_path)
    assert parse("vision_decoding", ["--model", str(tmp_path), "--itm", str(tmp_path)]).model == str(tmp_path)


@pytest.mark.parametrize(("present", "missing"), [
    (["config.json"], "no weights: model.safetensors or pytorch_model.bin"),
    (["model.safetensors"], "no config.json"),
    ([], "no config.json, no weights: model.safetensors or pytorch_model.bin"),
])
def test_a_half_built_default_model_dir_is_refused_as_a_given_one_is(present, missing, tmp_path, monkeypatch,
                                                                      capsys):
    """rollout_throughput takes models/warmup when that folder exists: half-built (a warm-up
    killed while saving, a partial `dvc pull`), it is refused when the arguments are parsed."""
    monkeypatch.chdir(tmp_path)
    warmup = tmp_path / "models" / "warmup"
    warmup.mkdir(parents=True)
    for name in present:
        (warmup / name).write_text("{}")
    with pytest.raises(SystemExit) as exit_:
        parse("rollout_throughput", [])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(
        f"error: argument --model-dir: the default models/warmup is not a model directory ({missing})")
    for name in ("config.json", "model.safetensors"):
        (warmup / name).write_text("{}")
    assert parse("rollout_throughput", []).model_dir is None      # a complete one: main loads it


@pytest.mark.parametrize(("option", "default"), [("--model", "models/vision/vlm-s0"), ("--itm", "models/vision/itm")])
def test_vision_decoding_refuses_a_half_built_default_model_as_a_given_one(option, default, tmp_path, monkeypatch,
                                                                          capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / default).mkdir(parents=True)
    (tmp_path / default / "config.json").write_text("{}")
    with pytest.raises(SystemExit) as exit_:
        parse("vision_decoding", [])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(
        f"error: argument {option}: the default {default} is not a model directory "
        "(no weights: model.safetensors or pytorch_model.bin)")
    (tmp_path / default / "model.safetensors").write_text("{}")
    assert parse("vision_decoding", []).model is None       # complete: main loads it


def test_run_as_a_script_a_half_built_default_model_dir_exits_2_before_any_work(tmp_path):
    (tmp_path / "models" / "warmup").mkdir(parents=True)
    (tmp_path / "models" / "warmup" / "config.json").write_text("{}")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, str(BENCH / "rollout_throughput.py")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines()[-1].endswith("the default models/warmup is not a model directory "
                                                 "(no weights: model.safetensors or pytorch_model.bin)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models"]   # no tasks generated


def test_serve_parity_refuses_a_missing_model_before_its_imports(capsys):
    assert importlib.import_module("serve_parity").main(["--model-dir", "/nonexistent"]) == 2
    assert "not a model directory" in capsys.readouterr().err


def test_the_defaults_and_the_zeros_that_mean_something_still_parse():
    assert parse("env_throughput", []).seconds == 10.0
    assert parse("env_throughput", ["--seconds", "0.5"]).seconds == 0.5
    assert (parse("gate_throughput", []).episodes, parse("gate_throughput", []).repeats) == (2000, 3)
    assert vars(parse("pghs_scale", [])) == {"rows": 1_000_000, "rounds": 100, "repeats": 2,
                                             "strategies": 5000, "threads": 1}
    train = parse("train_throughput", ["--warmup", "0", "--threads", "0", "--seed", "-3", "--precision", "fp32"])
    assert (train.warmup, train.threads, train.seed, train.steps, train.lr) == (0, 0, -3, 30, 1e-3)
    assert not train.last_layer_at_targets
    assert parse("train_throughput", ["--last-layer-at-targets"]).last_layer_at_targets
    roll = parse("rollout_throughput", ["--threads", "0", "--max-seconds", "0", "--device", "auto"])
    assert (roll.threads, roll.max_seconds, roll.device, roll.model_dir, roll.n_tasks) == (0, 0.0, "auto", None, 120)
    # left at its default, a model that has not been trained falls back to an untrained one
    vision = parse("vision_decoding", [])
    assert (vision.model, vision.itm, vision.batch, vision.tokens, vision.rounds, vision.threads) == \
        (None, None, 64, 16, 3, 1)
    load = parse("serve_load", ["--threads", "0"])
    assert (load.threads, load.time_limit, load.max_tokens, load.model_dir) == (0, 600, 32, "")
    assert parse("serve_parity", ["--threads", "0"]).n_tasks == 30


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_option_says_what_it_is(name):
    parser = importlib.import_module(name).build_parser()
    assert parser.description
    silent = [a.option_strings[0] for a in parser._actions if a.option_strings and not a.help]
    assert not silent


def test_env_throughput_describes_itself_in_a_whole_sentence():
    description = importlib.import_module("env_throughput").build_parser().description
    assert description.endswith("TextWorld and ScienceWorld in one run."), description


@pytest.mark.parametrize(("script", "argv"), [("gate_throughput.py", ["--repeats", "0"]),
                                              ("serve_load.py", ["--time-limit", "0"])])
def test_run_as_a_script_a_bad_argument_exits_2_at_once(script, argv):
    # as `make bench` runs them: `python bench/X.py`, no PYTHONPATH (machine.py is found beside it)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, str(BENCH / script), *argv], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines()[-1].endswith(f"argument {argv[0]}: {argv[1]!r} is not a positive "
                                                 + ("integer" if argv[0] == "--repeats" else "number"))
