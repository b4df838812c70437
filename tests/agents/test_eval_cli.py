"""`distillery eval` refuses what it cannot run in one line, before any episode where it can,
and never replaces an earlier run's tables with a failed run's."""

from __future__ import annotations

import hashlib
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from distillery.agents.base import PolicySpec, check_policy_kwargs
from distillery.cli import app

LOGS = Path(__file__).resolve().parents[1] / "fixtures" / "logs"
TASKS = str(LOGS / "tasks.parquet")
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def said(result) -> str:
    return " ".join(result.output.split())


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.parametrize(("kind", "kwargs", "message"), [
    ("oracle", {"bogus": 1}, "the oracle policy takes no argument 'bogus' (it takes none)"),
    ("random", {"bogus": 1}, "the random policy takes no argument 'bogus' (its arguments: seed, finish_prob)"),
    ("random", {"finish_prob": "x"}, "the random policy's finish_prob must be a finite number, got 'x'"),
    ("random", {"seed": float("nan")}, "the random policy's seed must be an integer, got nan"),
    ("random", {"seed": [1]}, "the random policy's seed must be an integer, got [1]"),
    ("hf", {"model_dir": "m", "prompt": 3}, "the hf policy's prompt must be an object or null, got 3"),
    ("hf", {}, "the hf policy needs 'model_dir'"),
])
def test_policy_arguments_are_checked_against_the_policys_constructor(kind, kwargs, message):
    with pytest.raises(ValueError) as e:
        check_policy_kwargs(PolicySpec(kind, kwargs))
    assert str(e.value) == message


def test_arguments_that_fit_pass():
    check_policy_kwargs(PolicySpec("random", {"seed": 3, "finish_prob": 1}))        # an int is a number
    check_policy_kwargs(PolicySpec("hf", {"model_dir": "m", "prompt": None, "top_p": 0.5}))
    check_policy_kwargs(PolicySpec("openai", {"base_url": "u", "model": "m", "prices": {"m": {"in": 1.0}}}))


def test_wrong_policy_kwargs_are_one_line_before_any_episode(tmp_path):
    for kwargs, message in (('{"bogus": 1}', "--policy-kwargs: the random policy takes no argument 'bogus'"),
                            ('{"finish_prob": "x"}', "--policy-kwargs: the random policy's finish_prob must be a "
                                                     "finite number, got 'x'")):
        r = invoke("eval", "--policy", "random", "--tasks", TASKS, "--out", str(tmp_path / "o"),
                   "--policy-kwargs", kwargs, "--no-progress")
        assert r.exit_code == 2 and message in said(r), r.output
        assert "Traceback" not in r.output and not (tmp_path / "o").exists()


def test_an_import_folder_is_not_an_eval_output(tmp_path):
    imp = tmp_path / "imp"
    assert invoke("import", "openai", str(LOGS / "openai" / "stage_chat.jsonl"), "--out", str(imp), "--tasks", TASKS,
                  "--env", "stage", "--no-progress").exit_code == 0
    before = digests(imp)
    r = invoke("eval", "--policy", "oracle", "--tasks", TASKS, "--out", str(imp), "--no-progress")
    assert r.exit_code == 2 and f"--out {imp}: an import folder" in said(r), r.output
    assert digests(imp) == before


def test_a_run_that_cannot_write_every_file_replaces_none(tmp_path):
    out = tmp_path / "o"
    assert invoke("eval", "--policy", "oracle", "--tasks", TASKS, "--out", str(out), "--no-progress").exit_code == 0
    before = digests(out)
    (out / "headline.json").unlink()
    (out / "headline.json").mkdir()         # a folder where one of the files belongs
    r = invoke("eval", "--policy", "random", "--tasks", TASKS, "--out", str(out), "--no-progress")
    assert r.exit_code == 2 and f"{out / 'headline.json'}: a folder stands where this file is to be written" in said(r)
    assert {k: v for k, v in digests(out).items() if k != "episodes.partial.jsonl"} == \
        {k: v for k, v in before.items() if k != "headline.json"}
    assert (out / "episodes.partial.jsonl").is_file()       # the episodes played are kept for the next try
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_a_run_that_measured_nothing_leaves_the_last_tables(tmp_path):
    out = tmp_path / "o"
    assert invoke("eval", "--policy", "oracle", "--tasks", TASKS, "--out", str(out), "--no-progress").exit_code == 0
    before = digests(out)
    # Port 9 (discard) has no listener here: every request is refused.
    r = invoke("eval", "--policy", "openai", "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--max-retries",
               "0", "--tasks", TASKS, "--out", str(out), "--no-progress")
    assert r.exit_code == 1 and f"nothing was measured and {out} was left as it was" in said(r), r.output
    assert "episodes ended with a policy error" in said(r) and digests(out) == before


def test_generated_tasks_follow_per_family_split_and_family(tmp_path):
    def run(*extra: str):
        return invoke("eval", "--policy", "oracle", "--tasks", "", "--family", "save_note", "--out",
                      str(tmp_path / "o"), "--no-progress", *extra)

    r = run("--generate-per-family", "3", "--per-family", "1")
    assert r.exit_code == 0 and "generating 1 test tasks per family" in said(r), r.output
    assert pl.read_parquet(tmp_path / "o" / "tasks.parquet").height == 1
    r = run("--generate-per-family", "1", "--split", "train")
    assert r.exit_code == 0, r.output
    assert pl.read_parquet(tmp_path / "o" / "tasks.parquet")["split"].to_list() == ["train"]
    r = run("--split", "valid")
    assert r.exit_code == 2 and "generated tasks are of the test or train split, not 'valid'" in said(r)
    r = invoke("eval", "--policy", "oracle", "--tasks", "", "--family", "nosuch", "--no-progress")
    assert r.exit_code == 2 and "--family nosuch: not a task family of stage" in said(r)


def test_a_table_with_a_task_twice_is_refused(tmp_path):
    table = pl.read_parquet(TASKS).filter(pl.col("split") == "test")
    pl.concat([table, table.head(1)]).write_parquet(tmp_path / "t.parquet")
    r = invoke("eval", "--policy", "oracle", "--tasks", str(tmp_path / "t.parquet"), "--out", str(tmp_path / "o"),
               "--no-progress")
    assert r.exit_code == 2 and "task ids must be unique; 1 appear more than once" in said(r), r.output
    assert not (tmp_path / "o").exists()


def test_held_out_is_for_imported_logs_and_a_share(tmp_path):
    r = invoke("eval", "--policy", "oracle", "--tasks", TASKS, "--held-out", "0.5")
    assert r.exit_code == 2 and "--held-out applies to --imported only" in said(r)
    model = tmp_path / "model"
    model.mkdir()
    for bad in ("0", "-0.5", "1.5"):
        r = invoke("eval", "--policy", "hf", "--model", str(model), "--imported", str(tmp_path), "--held-out", bad)
        assert r.exit_code == 2 and f"--held-out {float(bad):g}: expected a share of the tasks in (0, 1]" in said(r)


def test_imported_scoring_with_an_empty_model_folder_is_one_line(tmp_path):
    imp = tmp_path / "imp"
    assert invoke("import", "openai", str(LOGS / "openai" / "stage_chat.jsonl"), "--out", str(imp), "--tasks", TASKS,
                  "--env", "stage", "--no-progress").exit_code == 0
    model = tmp_path / "model"
    model.mkdir()
    r = invoke("eval", "--policy", "hf", "--model", str(model), "--imported", str(imp), "--out", str(tmp_path / "o"))
    assert r.exit_code == 2 and f"{model}: not a model directory (no config.json)" in said(r), r.output
    assert "Traceback" not in r.output and not (tmp_path / "o").exists()


def test_options_that_name_the_wrong_thing_are_said_so(tmp_path):
    r = invoke("eval", "--imported", str(tmp_path))          # the default policy cannot score imported logs
    assert r.exit_code == 2 and "--imported scores a local model: give --policy hf" in said(r)
    r = invoke("eval", "--policy", "oracle", "--tasks", TASKS, "--label", "a/../../x")
    assert r.exit_code == 2 and "--label a/../../x: it names the output folder" in said(r)
    r = invoke("eval", "--policy", "oracle", "--tasks", str(LOGS))
    assert r.exit_code == 2 and f"--tasks {LOGS}: a folder; give its task table file" in said(r)
