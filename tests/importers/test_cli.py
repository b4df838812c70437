"""The user's commands: `distillery import`, `distillery eval`, `distillery tasks --env`.

`eval` runs for real against `distillery serve` started as its own process on 127.0.0.1 (a
tiny Llama trained here on oracle episodes, the one `tests/agents/test_serve_parity.py`
builds), and in-process with the `hf` policy on the same model directory and tasks: greedy,
the two must score the same and play the same actions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import polars as pl
import pytest
from typer.testing import CliRunner

from distillery.cli import app
from distillery.io import write_parquet
from distillery.types import tasks_from_frame, tasks_to_frame

LOGS = Path(__file__).resolve().parents[1] / "fixtures" / "logs"
ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(app, list(args), catch_exceptions=False)
    return result


# ---------------------------------------------------------------------------------------
# import
# ---------------------------------------------------------------------------------------


def test_import_cli_reports_counts_reasons_and_is_idempotent(tmp_path):
    out = tmp_path / "imp"
    args = ["import", "openai", str(LOGS / "openai"), "--out", str(out), "--tasks", str(LOGS / "tasks.parquet"),
            "--env", "stage", "--no-progress", "--show", "100"]
    first = invoke(*args)
    assert first.exit_code == 0, first.output
    text = " ".join(first.output.split())
    assert "corrupt.jsonl line 6: the record reads as its format says" in text
    assert "stage_chat.jsonl line 13: no two tool calls share an id" in text
    assert "14 episodes (10 successes)" in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["verdicts"] == {"kept": 13, "kept_as_failure": 1, "rejected": 17}
    again = invoke(*args)
    assert again.exit_code == 0, again.output
    assert "nothing new" in again.output


def test_an_interrupted_import_leaves_the_folder_as_it_was_and_says_so(tmp_path):
    out = tmp_path / "imp"
    assert invoke("import", "openai", str(LOGS / "openai"), "--out", str(out), "--tasks",
                  str(LOGS / "tasks.parquet"), "--env", "stage", "--no-progress").exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    big = tmp_path / "big.jsonl"      # a log long enough to be stopped half-way (minutes to import whole)
    big.write_text((LOGS / "openai" / "stage_chat.jsonl").read_text() * 1000)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    proc = subprocess.Popen([sys.executable, "-m", "distillery.cli", "import", "openai", str(big), "--out", str(out),
                             "--env", "stage", "--assume-success", "--no-progress"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    while "no task table" not in (line := proc.stderr.readline()):    # printed as the import starts
        assert line, "the import ended before it started reading"
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted before the import finished; the same command imports whatever" in " ".join(err.split())
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_import_cli_inspect_and_assume_success(tmp_path):
    out = tmp_path / "imp"
    result = invoke("import", "inspect", str(LOGS / "inspect"), "--out", str(out), "--tasks",
                    str(LOGS / "tasks.parquet"), "--assume-success", "--no-progress")
    assert result.exit_code == 0, result.output
    verdicts = json.loads((out / "summary.json").read_text())["verdicts"]
    # s07 errored: --assume-success gives it an outcome, the error still rejects it
    assert verdicts == {"kept": 8, "rejected": 4}


def test_import_cli_clear_errors(tmp_path):
    bad = invoke("import", "langsmith", str(LOGS), "--out", str(tmp_path / "o"))
    assert bad.exit_code == 2 and "unknown format 'langsmith'" in bad.output
    missing = invoke("import", "openai", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o"))
    assert missing.exit_code == 2 and "nope.jsonl: no such file or folder" in missing.output
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "run1").mkdir()
    shutil.copy(LOGS / "inspect" / "stage_epochs.json", empty / "run1")
    none = invoke("import", "inspect", str(empty), "--out", str(tmp_path / "o"))
    said = " ".join(none.output.split())
    assert none.exit_code == 2 and "no .eval or .json files in this folder (its subfolders are not read" in said


def test_help_says_how(tmp_path):
    for cmd, words in ((["import", "--help"], ["--assume-success", "rejects.parquet", "openai"]),
                       (["eval", "--help"], ["--base-url", "benchmark.html", "--policy"]),
                       (["tasks", "--help"], ["--env", "--family", "draft", "schema"])):
        result = invoke(*cmd)
        assert result.exit_code == 0
        text = " ".join(result.output.split())
        for w in words:
            assert w in text, (cmd, w)


# ---------------------------------------------------------------------------------------
# tasks --env --family
# ---------------------------------------------------------------------------------------


def test_tasks_generate_and_validate(tmp_path):
    out = tmp_path / "tasks"
    result = invoke("tasks", "--env", "stage", "--family", "save_note", "--n-train", "2", "--n-test", "1",
                    "--out", str(out), "--no-progress")
    assert result.exit_code == 0, result.output
    tasks = tasks_from_frame(pl.read_parquet(out / "tasks.parquet"))
    assert sorted((t.family, t.split) for t in tasks) == [("save_note", "test"), ("save_note", "train"),
                                                          ("save_note", "train")]
    assert json.loads((out / "validation.json").read_text())["kept"] == {"train": 2, "test": 1}
    unknown = invoke("tasks", "--env", "stage", "--family", "no_such_family", "--out", str(out))
    assert unknown.exit_code == 2 and "--family no_such_family: not a family of environment 'stage'" in unknown.output
    assert "tasks.families" not in unknown.output          # a params.yaml key the command line has no use for
    env = invoke("tasks", "--env", "no_such_env", "--out", str(out))
    assert env.exit_code == 2 and "--env no_such_env: not a registered environment" in env.output


def test_tasks_options_without_env_are_a_usage_error(tmp_path):
    """--family (or any generating option) without --env is refused, not answered with the help."""
    r = invoke("tasks", "--family", "file_invoice", "--out", str(tmp_path / "o"))
    assert r.exit_code == 2 and "--family, --out need --env" in r.output and "Usage" not in r.output
    r = invoke("tasks", "--family", "file_invoice")
    assert r.exit_code == 2 and "distillery tasks: --family needs --env" in r.output
    assert not (tmp_path / "o").exists()
    assert invoke("tasks", "--help").exit_code == 0


def _nodraft_family(monkeypatch):
    """A stage family that never has a task: its draft raises NoDraft."""
    from distillery.envs.base import NoDraft
    from distillery.envs.stage import families as fam_mod
    from distillery.envs.stage.families import stage_family

    def never(rng, profile):
        raise NoDraft("no question of this family here")

    monkeypatch.setitem(fam_mod.FAMILIES, "never", stage_family("never", "never drafts", never, ("files",)))


def test_tasks_max_attempts_factor_is_an_option_and_the_failure_names_it(tmp_path, monkeypatch):
    _nodraft_family(monkeypatch)
    out = tmp_path / "t"
    r = invoke("tasks", "--env", "stage", "--family", "never", "--n-train", "2", "--n-test", "0",
               "--max-attempts-factor", "3", "--out", str(out), "--no-progress")
    assert r.exit_code == 1, r.output
    text = " ".join(r.output.split())
    assert "only 0 of 2 drafts validated after 6 attempts (no question of this family here x6)" in text
    assert "raise --max-attempts-factor or fix the family" in text and "tasks.max_attempts_factor" not in text
    report = json.loads((out / "failed" / "validation.json").read_text())
    assert [r["reasons"] for r in report["rejected"]] == [["no question of this family here"]] * 6
    assert invoke("tasks", "--env", "stage", "--max-attempts-factor", "0").exit_code == 2
    from distillery.config import TasksConfig

    # The option's default is the stage's.
    assert f"[default: {TasksConfig().max_attempts_factor}]" in " ".join(invoke("tasks", "--help").output.split())


def test_a_failed_tasks_run_leaves_the_last_good_output_whole(tmp_path, monkeypatch):
    """A failed run writes only OUT/failed/; OUT's tasks.parquet and the reports beside it stay
    the last successful run's; the next successful run removes OUT/failed/."""
    from distillery.agents import evaluate_policy
    from distillery.tasks.generate import GenerationResult, ValidationFailed

    out = tmp_path / "t"
    args = ["tasks", "--env", "stage", "--family", "save_note", "--n-train", "1", "--n-test", "0",
            "--out", str(out), "--no-progress"]
    assert invoke(*args).exit_code == 0
    good = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert {Path("tasks.parquet"), Path("validation.json"), Path("quality/tasks.json")} <= set(good)
    real = evaluate_policy.generate
    result = real("stage", ["save_note"], n_train=1, n_test=0)

    def fails(*a, **k):
        raise ValidationFailed("task validation failed for 1 of 1 families", result)

    monkeypatch.setattr(evaluate_policy, "generate", fails)
    r = invoke(*args)
    assert r.exit_code == 1 and "the last successful run's, unchanged" in r.output, r.output
    assert (out / "failed" / "validation.json").is_file()
    assert {p: (out / p).read_bytes() for p in good} == good
    # Tasks that fail their gate (a repeated task_id): the gate's reports go under failed/ too.
    twice = GenerationResult(result.tasks * 2, [], result.report)
    monkeypatch.setattr(evaluate_policy, "generate", lambda *a, **k: twice)
    r = invoke(*args)
    assert r.exit_code == 1 and "fail their gate" in r.output, r.output
    assert (out / "failed" / "quality" / "tasks.json").is_file() and (out / "failed" / "validation.json").is_file()
    assert {p: (out / p).read_bytes() for p in good} == good
    assert sorted(p.name for p in out.iterdir()) == ["failed", "quality", "tasks.parquet", "validation.json"]
    monkeypatch.setattr(evaluate_policy, "generate", real)
    r = invoke(*args)
    assert r.exit_code == 0 and "removed" in r.output and not (out / "failed").exists()


# ---------------------------------------------------------------------------------------
# eval: `distillery serve` + the openai policy == the hf policy, greedy
# ---------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def model_and_tasks(tmp_path_factory: pytest.TempPathFactory, parity_model_dir: Path) -> Iterator[tuple[Path, Path]]:
    """The serve-parity test's tiny model (tests/conftest.py) and its evaluation tasks as a
    table; in-process evaluation on one torch thread, as the server's."""
    import torch
    from tests.agents.test_serve_parity import parity_tasks

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    # The benchmark reads the test split: the tasks the model memorised count as test tasks here
    # (so that some episodes succeed), beside unseen ones (which mostly fail).
    table = tmp_path_factory.mktemp("eval") / "tasks.parquet"
    write_parquet(tasks_to_frame([dataclasses.replace(t, split="test") for t in parity_tasks()[1]]), table)
    yield parity_model_dir, table
    torch.set_num_threads(before)


@contextlib.contextmanager
def serving(model_dir: Path) -> Iterator[str]:
    """`distillery serve MODEL_DIR` as its own process on 127.0.0.1 (a free port), named `tiny`:
    its /v1 base URL once /health answers."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "distillery.cli", "serve", str(model_dir), "--port", str(port),
                             "--device", "cpu", "--model-name", "tiny", "--log-level", "warning"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"distillery serve exited {proc.returncode}: {proc.stdout.read().decode()[-2000:]}")
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("distillery serve did not answer /health within 180 s")
            time.sleep(0.5)
        yield f"{base}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def served(model_and_tasks: tuple[Path, Path]) -> Iterator[str]:
    with serving(model_and_tasks[0]) as base_url:
        yield base_url


def assert_eval_parity(env: str, model_dir: Path, table: Path, base_url: str, out: Path) -> dict:
    """`distillery eval --policy openai` against the served model and `--policy hf` on the same
    model directory and tasks, greedy: the same benchmark numbers and the same actions step by
    step, on a model that solves some tasks and fails others. Returns the overall row."""
    common = ["--env", env, "--tasks", str(table), "--max-tokens", "40", "--label", "tiny", "--no-progress"]
    api = invoke("eval", "--policy", "openai", "--base-url", base_url, "--model", "tiny", "--concurrency", "8",
                 "--max-retries", "0", "--out", str(out / "api"), *common)
    assert api.exit_code == 0, api.output
    hf = invoke("eval", "--policy", "hf", "--model", str(model_dir), "--device", "cpu",
                "--out", str(out / "hf"), *common)
    assert hf.exit_code == 0, hf.output

    def numbers(folder: Path) -> dict:
        details = json.loads((folder / "benchmark.json").read_text())["tiny"]
        keep = ("episodes", "success_rate", "mean_score", "mean_steps", "validity_rate", "mean_tokens_in",
                "mean_tokens_out")
        return {fam: {k: row[k] for k in keep} for fam, row in details.items()}

    assert numbers(out / "api") == numbers(out / "hf")
    eps = {name: pl.read_parquet(out / name / "episodes.parquet").sort("task_id") for name in ("api", "hf")}
    # not vacuous: the model solves some test tasks and fails others
    assert 0 < eps["hf"]["success"].sum() < eps["hf"].height, eps["hf"].select("task_id", "success")
    assert eps["api"].select("task_id", "success", "score", "n_steps").equals(
        eps["hf"].select("task_id", "success", "score", "n_steps"))
    cols = ["action_text", "valid", "observation"]
    steps = {name: pl.read_parquet(out / name / "steps.parquet").sort("episode_id", "t").select(cols)
             for name in ("api", "hf")}
    for a, b in zip(steps["hf"].iter_rows(named=True), steps["api"].iter_rows(named=True), strict=True):
        assert a == b, f"first differing step:\n hf     {a}\n openai {b}"
    assert (out / "api" / "benchmark.html").read_text().count("<table") >= 1
    return numbers(out / "hf")["all"]


@pytest.mark.slow
def test_eval_through_distillery_serve_scores_as_the_hf_policy(model_and_tasks, served, tmp_path):
    model_dir, table = model_and_tasks
    overall = assert_eval_parity("stage", model_dir, table, served, tmp_path)
    print(f"eval via serve == hf on STAGE: success {overall['success_rate']:.3f} on {overall['episodes']} episodes")


# The same on TextWorldExpress: a tiny model trained here on the coin game's gold paths.
TWX_PROMPT = dict(max_prompt_tokens=1024, max_observation_tokens=400, max_history_turns=8)  # whole rooms fit
TWX_STEPS = 200


@pytest.fixture(scope="module")
def twx_model_and_tasks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    pytest.importorskip("textworld_express", reason="TextWorldExpress is an optional extra: "
                                                    "pip install -e '.[textworld]' (needs Java 17)")
    import torch
    from tests.agents.test_serve_parity import build_model_dir

    from distillery.agents.prompts import PromptConfig
    from distillery.tasks.generate import draft_task

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("eval-twx")
    train = [draft_task("twx_coin", "train", "default", i, seed=0, max_steps=12) for i in range(6)]
    unseen = [draft_task("twx_coin", "test", "default-test", i, seed=0, max_steps=12) for i in range(2)]
    model_dir = build_model_dir(root / "model", train, steps=TWX_STEPS, prompt=PromptConfig(**TWX_PROMPT))
    table = root / "tasks.parquet"
    write_parquet(tasks_to_frame([dataclasses.replace(t, split="test") for t in train[::2] + unseen]), table)
    yield model_dir, table
    torch.set_num_threads(before)



@pytest.mark.slow
@pytest.mark.heavy_env
def test_eval_through_distillery_serve_scores_as_the_hf_policy_on_textworldexpress(twx_model_and_tasks, tmp_path):
    model_dir, table = twx_model_and_tasks
    with serving(model_dir) as base_url:
        overall = assert_eval_parity("textworldexpress", model_dir, table, base_url, tmp_path)
    print(f"eval via serve == hf on TextWorldExpress: success {overall['success_rate']:.3f} "
          f"on {overall['episodes']} episodes")


def test_eval_needs_what_its_policy_needs(tmp_path):
    r = invoke("eval", "--policy", "openai", "--model", "x")
    assert r.exit_code == 2 and "--base-url and --model" in r.output
    r = invoke("eval", "--policy", "hf", "--model", str(tmp_path / "nowhere"))
    assert r.exit_code == 2 and "no such model directory" in r.output
    r = invoke("eval", "--env", "nope", "--policy", "oracle", "--tasks", str(LOGS / "tasks.parquet"))
    assert r.exit_code == 2 and "named 'nope'" in r.output
    r = invoke("eval", "--env", "sql", "--policy", "oracle", "--tasks", str(LOGS / "tasks.parquet"))
    assert r.exit_code == 2 and "no test tasks of environment 'sql'" in r.output and "--tasks ''" in r.output
    r = invoke("eval", "--env", "nope")            # the name, not the default policy's missing options
    assert r.exit_code == 2 and "named 'nope'" in r.output and "--base-url" not in r.output
    r = invoke("eval", "--policy", "opnai", "--tasks", "")    # before any task is generated
    assert r.exit_code == 2 and "unknown policy kind 'opnai'" in r.output and "generating" not in r.output


def test_eval_that_measured_nothing_fails(tmp_path):
    # Nothing listens on the port: every episode errors, and the run must not look like a score of 0.
    r = invoke("eval", "--env", "stage", "--policy", "openai", "--base-url", f"http://127.0.0.1:{free_port()}/v1",
               "--model", "tiny", "--max-retries", "0", "--tasks", "", "--family", "save_note",
               "--generate-per-family", "1", "--out", str(tmp_path / "down"), "--no-progress")
    assert r.exit_code == 1, r.output
    assert "every episode ended with an error" in r.output and "cannot connect" in r.output
    assert "1 episodes ended with a policy error" in r.output and "of the environment" not in r.output


def test_eval_passes_policy_kwargs_to_the_policy(tmp_path):
    def actions(out: str, *extra: str) -> list[str]:
        r = invoke("eval", "--env", "stage", "--policy", "random", "--tasks", "", "--family", "save_note",
                   "--generate-per-family", "2", "--out", str(tmp_path / out), "--no-progress", *extra)
        assert r.exit_code == 0, r.output
        return pl.read_parquet(tmp_path / out / "steps.parquet")["action_text"].to_list()

    seeded = actions("a", "--policy-kwargs", '{"seed": 3}')
    assert actions("b", "--policy-kwargs", '{"seed": 3}') == seeded != actions("c")
    for bad, says in (("{seed: 3}", "--policy-kwargs: not JSON"), ("[3]", "expected a JSON object")):
        r = invoke("eval", "--env", "stage", "--policy", "random", "--policy-kwargs", bad, "--tasks", "")
        assert r.exit_code == 2 and says in r.output and "generating" not in r.output, r.output


def test_eval_without_a_task_table_generates_and_validates_test_tasks(tmp_path):
    out = tmp_path / "oracle"
    r = invoke("eval", "--env", "stage", "--policy", "oracle", "--tasks", "", "--family", "save_note",
               "--generate-per-family", "2", "--out", str(out), "--no-progress")
    assert r.exit_code == 0, r.output
    details = json.loads((out / "benchmark.json").read_text())
    assert details["oracle"]["all"]["episodes"] == 2 and details["oracle"]["all"]["success_rate"] == 1.0
    assert json.loads((out / "headline.json").read_text()) == {"success_oracle": 1.0, "valid_oracle": 1.0}
    assert {t.split for t in tasks_from_frame(pl.read_parquet(out / "tasks.parquet"))} == {"test"}
    assert "save_note" in (out / "benchmark.html").read_text()


def test_import_context_check_defaults_to_the_students_own(tmp_path):
    from distillery.importers.core import student_context
    from distillery.lm.tokenizer import TokenizerConfig, train_tokenizer

    student = tmp_path / "student"
    tok = train_tokenizer(["list the files in docs", "save the note"] * 20, TokenizerConfig(vocab_size=300))
    tok.save_pretrained(student)
    (student / "card.json").write_text(json.dumps({"model": {"max_position_embeddings": 64}}))
    assert student_context(student) == 64
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text(json.dumps({"max_position_embeddings": 2048}))
    assert student_context(tmp_path / "hf") == 2048 and student_context(tmp_path) is None

    out = tmp_path / "imp"
    r = invoke("import", "openai", str(LOGS / "openai"), "--out", str(out), "--tasks", str(LOGS / "tasks.parquet"),
               "--env", "stage", "--no-progress", "--tokenizer", str(student))
    assert r.exit_code == 0, r.output
    assert "context check: 64 tokens (the student's" in " ".join(r.output.split())
    reasons = pl.read_parquet(out / "rejects.parquet")["reason"].to_list()
    assert any("over the student's context of 64" in x for x in reasons), reasons
    # an explicit bound wins; without a student the default stays
    wide = invoke("import", "openai", str(LOGS / "openai"), "--out", str(tmp_path / "wide"), "--tasks",
                  str(LOGS / "tasks.parquet"), "--env", "stage", "--no-progress", "--tokenizer", str(student),
                  "--max-context-tokens", "100000")
    assert wide.exit_code == 0 and not any(
        "student's context" in x for x in pl.read_parquet(tmp_path / "wide" / "rejects.parquet")["reason"].to_list())


# ---------------------------------------------------------------------------------------
# user mistakes: one clear line and exit 2, never a traceback
# ---------------------------------------------------------------------------------------

GOOD_LINE = {"messages": [{"role": "user", "content": "Find file number 0"},
                          {"role": "assistant", "content": None, "tool_calls": [
                              {"id": "c0", "type": "function", "function": {"name": "list_dir", "arguments": "{}"}}]},
                          {"role": "tool", "tool_call_id": "c0", "content": "a.txt"},
                          {"role": "assistant", "content": "done"}], "metadata": {"success": True}}


def _line(**metadata: object) -> str:
    return json.dumps({**GOOD_LINE, "metadata": {"success": True, **metadata}})


def _import(tmp_path: Path, *extra: str, lines: list[str] | None = None, out: str = "o"):
    log = tmp_path / "log.jsonl"
    if lines is not None:
        log.write_text("".join(x + "\n" for x in lines))
    elif not log.exists():
        log.write_text(_line() + "\n")
    return invoke("import", "openai", str(log), "--out", str(tmp_path / out), "--tasks", "", "--no-progress", *extra)


def test_import_quarantines_numbers_too_big_for_a_float_with_their_line(tmp_path):
    big = 10 ** 400
    r = _import(tmp_path, "--show", "10", lines=[
        _line(score=big), _line(wall_s=big), _line(epoch=0), _line(task_id=""), _line(usage={"prompt_tokens": big}),
        _line(score=0.5, success=False)])
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "log.jsonl line 1: " in text and "metadata.score: expected a number, got an integer 1000" in text
    assert "log.jsonl line 2: " in text and "metadata.wall_s: expected a number >= 0, got an integer 1000" in text
    assert "metadata.epoch: expected an integer >= 1, got an integer 0" in text
    assert "metadata.task_id: expected a string, got a string ''" in text
    assert "log.jsonl line 5: " in text and "metadata.usage" in text
    records = pl.read_parquet(tmp_path / "o" / "records.parquet")
    assert records.height == 6 and records.filter(pl.col("verdict") == "rejected").height == 5


def test_import_refuses_a_missing_or_folder_outcomes_file(tmp_path):
    r = _import(tmp_path, "--outcomes", str(tmp_path / "nope.outcomes.jsonl"))
    assert r.exit_code == 2 and "--outcomes" in r.output and "nope.outcomes.jsonl: no such file" in r.output
    r = _import(tmp_path, "--outcomes", str(tmp_path))
    assert r.exit_code == 2 and f"--outcomes {tmp_path}: a folder, not a file" in r.output
    assert not (tmp_path / "o").exists()
    side = tmp_path / "bad.outcomes.jsonl"
    side.write_bytes(b"\xff\xfe{}\n")
    r = _import(tmp_path, "--outcomes", str(side))
    assert r.exit_code == 2 and "bad.outcomes.jsonl: not UTF-8 text" in r.output


def test_import_outcomes_is_for_openai_logs_only(tmp_path):
    side = tmp_path / "log.outcomes.jsonl"
    side.write_text('{"line": 1, "success": true}\n')
    r = invoke("import", "inspect", str(LOGS / "inspect" / "stage_epochs.json"), "--out", str(tmp_path / "o"),
               "--outcomes", str(side), "--tasks", "", "--no-progress")
    said = " ".join(r.output.split())
    assert r.exit_code == 2 and "--outcomes is for the openai format only: inspect logs carry their own scores" in said
    assert not (tmp_path / "o").exists()


def test_a_rejection_is_undone_by_importing_again_with_the_right_options(tmp_path):
    """A misspelt --scorer rejects every sample; the same import with the right scorer judges
    them again instead of calling them imported before."""
    args = ["import", "inspect", str(LOGS / "inspect" / "stage_epochs.json"), "--out", str(tmp_path / "o"),
            "--tasks", str(LOGS / "tasks.parquet"), "--no-progress"]
    wrong = invoke(*args, "--scorer", "stage_verfy")
    assert wrong.exit_code == 0 and "no score named 'stage_verfy'; the sample has stage_verify" in wrong.output
    right = invoke(*args)
    assert right.exit_code == 0 and "nothing new" not in right.output, right.output
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["records"] == 2 and summary["verdicts"] == {"kept": 1, "rejected": 1}    # epoch 2 repeats epoch 1
    assert summary["rejects_by_kind"] == {"duplicate": 1}
    again = invoke(*args)
    assert again.exit_code == 0 and "nothing new" in again.output


def test_import_user_mistakes_are_one_line_errors(tmp_path):
    (tmp_path / "afile").write_text("x")
    r = _import(tmp_path, out="afile")
    assert r.exit_code == 2 and "--out" in r.output and "exists and is not a folder" in r.output
    r = _import(tmp_path, "--tasks", str(tmp_path / "log.jsonl"))
    assert r.exit_code == 2 and "--tasks" in r.output and "not a parquet task table" in r.output
    r = _import(tmp_path, "--tasks", str(tmp_path))
    assert r.exit_code == 2 and "a folder, not a task table file" in r.output
    r = _import(tmp_path, "--tokenizer", str(tmp_path / "nosuchdir"))
    assert r.exit_code == 2 and "--tokenizer" in r.output and "not a model/tokenizer folder" in r.output
    card = tmp_path / "student"
    card.mkdir()
    (card / "card.json").write_text("{not json")
    r = _import(tmp_path, "--tokenizer", str(card))
    assert r.exit_code == 2 and f"--tokenizer {card}: card.json: not valid JSON" in " ".join(r.output.split())
    (card / "card.json").unlink()
    (card / "tokenizer.json").write_text("{}")       # JSON, not a tokenizer: the tokenizers library's own error kind
    r = _import(tmp_path, "--tokenizer", str(card))
    assert r.exit_code == 2 and f"--tokenizer {card}: cannot load the tokenizer" in " ".join(r.output.split())
    assert not (tmp_path / "o").exists()


def test_import_of_an_empty_file_says_so(tmp_path):
    r = _import(tmp_path, lines=[])
    assert r.exit_code == 0, r.output
    assert "log.jsonl: no records" in "".join(r.output.split()).replace("norecords", " no records")
    assert "unchanged" not in r.output
    assert (tmp_path / "o" / "records.parquet").is_file()
    again = _import(tmp_path, lines=[])
    assert again.exit_code == 0 and "unchanged" in again.output and "every record" not in again.output


def test_output_that_cannot_be_written_and_bad_eval_options(tmp_path):
    r = invoke("tasks", "schema", "--out", str(tmp_path))
    assert r.exit_code == 2 and f"cannot write {tmp_path}" in r.output
    (tmp_path / "afile").write_text("x")
    r = invoke("eval", "--policy", "oracle", "--tasks", str(tmp_path / "afile"))
    assert r.exit_code == 2 and "--tasks" in r.output and "not a parquet task table" in r.output
    table = tmp_path / "tasks.parquet"
    pl.DataFrame({"task_id": ["t"], "env": ["stage"], "split": ["test"], "family": ["f"]}).write_parquet(table)
    r = invoke("eval", "--policy", "oracle", "--tasks", str(table), "--out", str(tmp_path / "o"))
    assert r.exit_code == 2 and f"--tasks {table}: not a task table: no column profile" in " ".join(r.output.split())
    assert not (tmp_path / "o").exists()
    # a table of the right columns whose task departs from STAGE's task format: named before any episode
    good = pl.read_parquet(LOGS / "tasks.parquet").filter(pl.col("split") == "test").head(1)
    good.with_columns(pl.lit('{"files": 5}').alias("initial_state")).write_parquet(table)
    r = invoke("eval", "--policy", "oracle", "--tasks", str(table), "--out", str(tmp_path / "o"))
    said = " ".join(r.output.split())
    assert r.exit_code == 2 and f"task '{good['task_id'][0]}' is not in the stage task format" in said, said
    assert "initial_state.files: 5 is not of type 'object'" in said and not (tmp_path / "o").exists()
    model = tmp_path / "model"
    model.mkdir()
    r = invoke("eval", "--policy", "hf", "--model", str(model), "--imported", str(tmp_path), "--held-out", "5")
    assert r.exit_code == 2 and "--held-out 5" in r.output
    imp = tmp_path / "imp"
    imp.mkdir()
    (imp / "records.parquet").write_text("")
    r = invoke("eval", "--policy", "hf", "--model", str(model), "--imported", str(imp), "--out", str(tmp_path / "afile"))
    assert r.exit_code == 2 and "--out" in r.output and "exists and is not a folder" in r.output


def test_tasks_and_eval_refuse_an_output_that_is_a_file_before_any_work(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    r = invoke("tasks", "--env", "stage", "--family", "file_invoice", "--n-test", "1", "--out", str(afile))
    assert r.exit_code == 2 and "--out" in r.output and "exists and is not a folder" in r.output
    r = invoke("eval", "--policy", "random", "--out", str(afile / "sub"))
    assert r.exit_code == 2 and "not a writable folder" in r.output
    assert afile.read_text() == "keep me"
