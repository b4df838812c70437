"""The flows' command lines refuse argument mistakes with one line and exit 2 before any
Prefect server starts or any DVC experiment is queued, and the grid never replaces its
recorded runs with an empty record (or, without --replace, with another tag's runs).
In-process and fast: no Prefect server, no `dvc exp run`, no `dvc repro`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import flows.grid as G
import flows.pipeline as P
import pytest

GRID_FLOW = G.experiment_grid       # before the fixture below puts a stand-in in its place


def _no_flow(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("the flow must not start")


@pytest.fixture(autouse=True)
def _flows_never_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(G, "experiment_grid", _no_flow)
    monkeypatch.setattr(P, "pipeline", _no_flow)
    monkeypatch.setattr(G, "_dvc", _no_flow)


RECORDED = {"tag": "main", "sets": [], "runs": [{"experiment": "ig-main-pr-sw-off-s0", "granularity": "principle",
                                                "injection": "stepwise", "regime": "off_policy", "seed": 0,
                                                "metrics": {}}]}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A Git repository with a DVC layout (dvc.yaml, .dvc/) and a recorded internalize grid."""
    r = tmp_path / "repo"
    (r / ".dvc").mkdir(parents=True)
    (r / "dvc.yaml").write_text("stages:\n  hello:\n    cmd: echo hi\n")
    (r / "experiments").mkdir()
    (r / "experiments/internalize_grid.json").write_text(json.dumps(RECORDED, indent=2) + "\n")
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], cwd=r, check=True)
    subprocess.run([*git, "add", "-A"], cwd=r, check=True)
    subprocess.run([*git, "commit", "-qm", "init"], cwd=r, check=True)
    return r


def _exit_code(main: Any, argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code
    return rc, capsys.readouterr().err


# ---------------------------------------------------------------------------------------- grid

@pytest.mark.parametrize(("argv", "message"), [
    (["--jobs", "0"], "--jobs 0: run at least 1"),
    (["--jobs", "-2"], "--jobs -2"),
    (["--seeds", "-1"], "non-negative integer, not -1"),
    (["--seeds", "0", "0"], "0 given more than once"),
    (["--only", "nosuch/"], "--only 'nosuch/' matches no cell of the internalize grid"),
    (["--grid", "sql", "--only", "rl/"], "matches no cell of the sql grid"),
    (["--collect-only"], "--collect-only needs the --tag"),
    (["--tag", "bad/tag"], "--tag 'bad/tag': use letters, digits"),
    (["--tag", "_x"], "--tag '_x'"),
    (["--set", "nokeyvalue"], "--set 'nokeyvalue': expected KEY=VALUE"),
    (["--set", "=1"], "expected KEY=VALUE"),
    (["--repo", "/nonexistent/repo"], "--repo /nonexistent/repo: no such directory"),
])
def test_grid_argument_mistakes_exit_2_with_one_line(argv, message, capsys):
    rc, err = _exit_code(G.main, argv, capsys)
    assert rc == 2
    assert message in err
    assert "Traceback" not in err


def test_grid_repo_must_be_a_dvc_pipeline_in_git(tmp_path, capsys):
    rc, err = _exit_code(G.main, ["--repo", str(tmp_path)], capsys)
    assert rc == 2 and "no dvc.yaml there" in err
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    rc, err = _exit_code(G.main, ["--repo", str(tmp_path)], capsys)
    assert rc == 2 and "not inside a DVC repository" in err
    (tmp_path / ".dvc").mkdir()
    rc, err = _exit_code(G.main, ["--repo", str(tmp_path), "--jobs", "2"], capsys)
    assert rc == 2 and "not a Git repository with a commit" in err


@pytest.mark.parametrize("argv", [
    ["--collect-only", "--tag", "1203typo"],
    ["--tag", "newtag", "--only", "principle/stepwise/off", "--seeds", "0"],
    [],                                     # the default tag (month-day-hour-minute) is another tag too
])
def test_grid_refuses_to_replace_another_tags_record_without_replace(repo, argv, capsys):
    before = (repo / G.RECORD).read_bytes()
    rc, err = _exit_code(G.main, ["--repo", str(repo), *argv], capsys)
    assert rc == 2
    assert "records 1 runs of tag 'main'" in err and "--replace" in err and "--tag main" in err
    assert (repo / G.RECORD).read_bytes() == before


@pytest.mark.parametrize("argv", [["--tag", "main"], ["--tag", "1203typo", "--replace"]])
def test_grid_collect_only_with_no_experiment_of_the_tag_writes_nothing(repo, argv, capsys):
    before = (repo / G.RECORD).read_bytes()
    rc, err = _exit_code(G.main, ["--repo", str(repo), "--collect-only", *argv], capsys)
    assert rc == 2
    assert "no experiment of tag" in err and "left as it is" in err
    assert (repo / G.RECORD).read_bytes() == before


def test_grid_valid_arguments_reach_the_flow_unchanged(repo, monkeypatch, capsys):
    seen = {}

    def flow(**kwargs: Any) -> dict[str, Any]:
        seen.update(kwargs)
        return {"tag": kwargs["tag"], "runs": 2, "expected": 2, "kept": 0}

    monkeypatch.setattr(G, "experiment_grid", flow)
    argv = ["--repo", str(repo), "--tag", "main", "--seeds", "0", "2", "--jobs", "2", "--only",
            "principle/stepwise/", "--set", "internalize.iterations=1", "--set", "a.b=c=d"]
    assert G.main(argv) == 0
    assert seen == {"repo": str(repo), "seeds": [0, 2], "sets": ["internalize.iterations=1", "a.b=c=d"],
                    "jobs": 2, "tag": "main", "collect_only": False, "grid": "internalize",
                    "only": "principle/stepwise/", "replace": False}
    assert "grid main: 2 finished runs of 2" in capsys.readouterr().out


def test_grid_a_refusal_from_the_flow_is_one_line_and_exit_2(repo, monkeypatch, capsys):
    def flow(**kwargs: Any) -> dict[str, Any]:
        raise G.RecordRefused("no finished run of tag 'main' was collected")

    monkeypatch.setattr(G, "experiment_grid", flow)
    rc, err = _exit_code(G.main, ["--repo", str(repo), "--tag", "main"], capsys)
    assert rc == 2 and err.strip() == "error: no finished run of tag 'main' was collected"


def test_record_refusal_rules():
    f = "experiments/internalize_grid.json"
    run = [{"experiment": "ig-x-pr-sw-off-s0"}]
    assert "no finished run of tag 'x'" in G.record_refusal(RECORDED, [], "x", f, replace=True)
    assert "no finished run of tag 'main'" in G.record_refusal(RECORDED, [], "main", f, replace=False)
    assert "--replace" in G.record_refusal(RECORDED, run, "x", f, replace=False)
    assert G.record_refusal(RECORDED, run, "x", f, replace=True) is None
    assert G.record_refusal(RECORDED, run, "main", f, replace=False) is None
    assert G.record_refusal({}, run, "x", f, replace=False) is None                     # no record yet
    assert G.record_refusal({"tag": "-", "runs": []}, run, "x", f, replace=False) is None  # an empty placeholder


def test_publish_never_writes_an_empty_record(tmp_path):
    record = tmp_path / G.RECORD
    record.parent.mkdir(parents=True)
    text = Path(G.__file__).resolve().parents[1].joinpath(G.RECORD).read_text()
    record.write_text(text)
    with pytest.raises(G.RecordRefused, match="left as it is"):
        G.publish.fn(str(tmp_path), [], "1203typo", [], "internalize")
    assert record.read_text() == text


def test_the_flow_refuses_before_publishing_when_nothing_was_collected(repo, monkeypatch):
    monkeypatch.setattr(G, "collect", lambda repo, tag, grid: [])
    monkeypatch.setattr(G, "publish", _no_flow)
    before = (repo / G.RECORD).read_bytes()
    with pytest.raises(G.RecordRefused, match="no finished run of tag 'main'"):
        GRID_FLOW.fn(repo=str(repo), tag="main", collect_only=True)
    with pytest.raises(G.RecordRefused, match="no finished run"):
        GRID_FLOW.fn(repo=str(repo), tag="other", collect_only=True)
    assert (repo / G.RECORD).read_bytes() == before


def test_the_flow_called_directly_still_replaces_another_tag_by_default(repo, monkeypatch):
    runs = [{"experiment": "ig-t0-pr-sw-off-s0"}]
    published = {}
    monkeypatch.setattr(G, "collect", lambda repo, tag, grid: runs)
    monkeypatch.setattr(G, "publish", lambda repo, runs, tag, sets, grid: published.update(runs=runs) or [])
    out = GRID_FLOW.fn(repo=str(repo), tag="t0", collect_only=True)
    assert out["runs"] == 1 and published["runs"] == runs
    with pytest.raises(G.RecordRefused, match="--replace"):
        GRID_FLOW.fn(repo=str(repo), tag="t0", collect_only=True, replace=False)


def test_grid_help_names_every_grid_and_option(capsys):
    with pytest.raises(SystemExit):
        G.main(["--help"])
    out = capsys.readouterr().out
    assert "internalize|objectives|sql" in out
    assert "the DVC repository to run the experiments in" in out
    assert "distinct and non-negative" in out and "--replace" in out


# ------------------------------------------------------------------------------------ pipeline

@pytest.mark.parametrize(("argv", "message"), [
    (["run", "--repo", "/nonexistent/repo"], "--repo /nonexistent/repo: no such directory"),
    (["serve", "--repo", "/nonexistent/repo"], "--repo /nonexistent/repo: no such directory"),
    (["serve", "--cron", "not a cron"], "--cron 'not a cron': Invalid cron string"),
    (["serve", "--cron", "0 3 * *"], "Invalid cron string"),
    (["serve", "--name", " "], "--name must not be empty"),
])
def test_pipeline_argument_mistakes_exit_2_with_one_line(argv, message, capsys, monkeypatch):
    monkeypatch.setattr(P.pipeline, "serve", _no_flow, raising=False)
    rc, err = _exit_code(P.main, argv, capsys)
    assert rc == 2 and message in err and "Traceback" not in err


def test_pipeline_repo_must_be_a_dvc_pipeline(tmp_path, capsys):
    for cmd in ("run", "serve"):
        rc, err = _exit_code(P.main, [cmd, "--repo", str(tmp_path)], capsys)
        assert rc == 2 and "no dvc.yaml there" in err
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    rc, err = _exit_code(P.main, ["run", "--repo", str(tmp_path)], capsys)
    assert rc == 2 and "not inside a DVC repository" in err


def _stage_list(monkeypatch: pytest.MonkeyPatch, names: str) -> None:
    def run_dvc(repo: Path, *args: str, env_extra: Any = None) -> subprocess.CompletedProcess[str]:
        assert args == ("stage", "list", "--name-only")
        return subprocess.CompletedProcess(args, 0, names, "")

    monkeypatch.setattr(P, "run_dvc", run_dvc)


def test_pipeline_run_refuses_an_unknown_stage(repo, monkeypatch, capsys):
    _stage_list(monkeypatch, "tasks\ncollect@oracle\ncollect@random\n")
    rc, err = _exit_code(P.main, ["run", "--repo", str(repo), "tasks", "no_such_stage"], capsys)
    assert rc == 2 and "no such stage in" in err and "no_such_stage" in err and "tasks," not in err
    assert P.unknown_targets(repo, ["tasks", "collect@oracle", "collect", "dvc.yaml:tasks"]) == []


def test_pipeline_run_known_stages_reach_the_flow(repo, monkeypatch):
    _stage_list(monkeypatch, "tasks\ncollect@oracle\n")
    seen = {}

    class State:
        state_details = type("D", (), {"flow_run_id": "id"})()

        def result(self) -> dict[str, Any]:
            return {"stages": []}

    def flow(**kwargs: Any) -> State:
        seen.update(kwargs)
        return State()

    monkeypatch.setattr(P, "pipeline", flow)
    monkeypatch.setattr(P, "wait_for_task_runs", lambda *a: None)
    assert P.main(["run", "--repo", str(repo), "--force", "tasks", "collect"]) == 0
    assert seen == {"repo": str(repo), "targets": ["tasks", "collect"], "force": True, "return_state": True}


def test_pipeline_run_startup_timeout_is_one_line(repo, monkeypatch, capsys):
    def flow(**kwargs: Any) -> Any:
        try:
            raise RuntimeError(P.STARTUP_TIMED_OUT + ". stdout: ...")
        except RuntimeError as e:
            raise ValueError("wrapped") from e

    monkeypatch.setattr(P, "pipeline", flow)
    rc, err = _exit_code(P.main, ["run", "--repo", str(repo)], capsys)
    assert rc == 1 and "make server" in err and "PREFECT_API_URL" in err


def test_startup_timeout_is_raised_unless_the_user_set_it(monkeypatch):
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS as setting

    monkeypatch.delenv(P.STARTUP_TIMEOUT_ENV, raising=False)
    with P.startup_timeout():
        assert setting.value() == P.STARTUP_TIMEOUT_S
    monkeypatch.setenv(P.STARTUP_TIMEOUT_ENV, "7")
    with P.startup_timeout():
        assert setting.value() != P.STARTUP_TIMEOUT_S


def test_serve_without_api_url_exits_2(repo, monkeypatch, capsys):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setattr(P.pipeline, "serve", _no_flow, raising=False)
    rc, err = _exit_code(P.main, ["serve", "--repo", str(repo)], capsys)
    assert rc == 2 and "PREFECT_API_URL is not set" in err


def test_serve_with_no_server_answering_is_one_line(repo, monkeypatch, capsys):
    url = "http://127.0.0.1:9/api"          # the discard port: nothing listens
    monkeypatch.setenv("PREFECT_API_URL", url)
    monkeypatch.setattr(P.pipeline, "serve", _no_flow, raising=False)
    rc, err = _exit_code(P.main, ["serve", "--repo", str(repo)], capsys)
    assert rc == 2 and err.count("\n") == 1
    assert f"no Prefect server answers at {url}" in err and "make server" in err


def test_cron_problem_accepts_what_prefect_accepts():
    assert P.cron_problem("0 3 * * *") is None
    assert P.cron_problem("*/5 * * * 1-5") is None
    assert "Invalid cron string" in P.cron_problem("not a cron")


def test_pipeline_help_explains_every_option(capsys):
    for cmd, texts in {"run": ["the DVC repository whose pipeline runs"],
                       "serve": ["the DVC repository whose pipeline the deployment runs",
                                 "the deployment's name on the server"]}.items():
        with pytest.raises(SystemExit):
            P.main([cmd, "--help"])
        out = " ".join(capsys.readouterr().out.split())
        assert all(t in out for t in texts), out
