"""The stages' command lines end a user's mistake as argparse ends a usage error: one line
`python -m stages.<name>: error: ...` and exit 2, never a traceback (a params.yaml typo, a bad
or unknown `--track`, an empty track section), and the track stages' `--help` prints their whole
docstring (what they read and write), as the other stages' does."""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from stages.track import Track
from tests.conftest import REPO
from tests.test_stage_help import stage_help

from distillery.config import ConfigError, TasksConfig, exit_on_config_error
from tools import stage_deps as sd

TRACK_STAGES = ["tasks", "collect", "warmup", "mine", "internalize", "rl"]
# argv of each track stage beyond `--track` (collect runs one named policy).
STAGE_ARGS = {"collect": ["oracle"]}
SECTIONS = {"tasks": "tasks", "collect": "collect", "warmup": "warmup", "mine": "mine",
            "internalize": "internalize", "rl": "rl"}


def _run_stage(name: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """`python -m stages.<name> ARGS` in `cwd` (its own params.yaml), the repository importable."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    return subprocess.run([sys.executable, "-m", f"stages.{name}", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def _params_with_typo(tmp_path: Path) -> None:
    text = (REPO / "params.yaml").read_text()
    assert "\n  max_steps: 15\n" in text
    (tmp_path / "params.yaml").write_text(text.replace("\n  max_steps: 15\n", "\n  max_step: 15\n", 1))


def _one_error_line(err: str, name: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith(f"python -m stages.{name}: error: ")
    return lines[0]


# ---------------------------------------------------------------------------------------
# The `__main__` guard, run as the user runs it
# ---------------------------------------------------------------------------------------


def test_a_typo_in_params_yaml_is_one_line_and_exit_2(tmp_path):
    _params_with_typo(tmp_path)
    done = _run_stage("tasks", [], tmp_path)
    assert done.returncode == 2, done.stderr
    line = _one_error_line(done.stderr, "tasks")
    assert "unknown key(s) ['max_step']" in line and "max_steps" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_a_bad_track_name_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    done = _run_stage("mine", ["--track", "TWX/../x"], tmp_path)
    assert done.returncode == 2, done.stderr
    assert "a track name is lower-case letters and digits" in _one_error_line(done.stderr, "mine")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def _main_call(path: Path) -> ast.Call | None:
    """The call in `sys.exit(...)` of a module's `if __name__ == "__main__":` block."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
            (stmt,) = node.body
            assert isinstance(stmt, ast.Expr) and ast.unparse(stmt.value.func) == "sys.exit", path
            return stmt.value.args[0]
    return None


def test_every_stage_that_reads_params_guards_its_main_with_exit_on_config_error():
    modules = sd.index_modules(REPO)
    graph = sd.import_graph(modules, REPO)
    stages = sorted(n for n in modules if n.startswith("stages.") and n not in {"stages.track", "stages.usage"})
    assert "stages.tasks" in stages and "stages.claims" in stages
    for name in stages:
        short = name.removeprefix("stages.")
        call = _main_call(REPO / modules[name].path)
        assert call is not None, name
        if "distillery.config" in sd.closure([name], graph, modules):
            assert ast.unparse(call) == f"exit_on_config_error('python -m stages.{short}', main, sys.argv[1:])", name
        else:   # it cannot raise a ConfigError (and must not import the config only to catch one)
            assert ast.unparse(call) == "main(sys.argv[1:])", name


# ---------------------------------------------------------------------------------------
# Tracks: a bad name, a missing section, an empty section
# ---------------------------------------------------------------------------------------


def test_a_bad_track_name_is_a_config_error():
    for bad in ("TWX", "twx/../x", "1twx", "twx_a"):
        with pytest.raises(ConfigError, match="a track name is lower-case letters and digits"):
            Track(bad)


def test_an_empty_track_section_is_refused_not_the_agent_tracks_defaults():
    params = {"tasks": {"n_test_per_family": 3}, "twx_tasks": None}
    with pytest.raises(ConfigError, match="empty section 'twx_tasks'"):
        Track("twx").load(TasksConfig, "tasks", params)
    # The agent track's own section may still be empty or missing: every default.
    assert Track().load(TasksConfig, "tasks", {"tasks": None}) == Track().load(TasksConfig, "tasks", {})


@pytest.mark.parametrize("name", TRACK_STAGES)
def test_each_track_stage_refuses_an_unknown_or_empty_track_section_in_one_line(name, tmp_path, monkeypatch, capsys):
    module = importlib.import_module(f"stages.{name}")
    section = SECTIONS[name]
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text() + f"\nempty_{section}:\n")
    monkeypatch.chdir(tmp_path)
    for track, says in (("foo", f"no section 'foo_{section}'"), ("empty", f"empty section 'empty_{section}'")):
        argv = [*STAGE_ARGS.get(name, []), "--track", track]
        assert exit_on_config_error(f"python -m stages.{name}", module.main, argv) == 2
        assert says in _one_error_line(capsys.readouterr().err, name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


# ---------------------------------------------------------------------------------------
# --help of the stages whose parser is stages/track.py's
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [*TRACK_STAGES, "env_table"])
def test_help_prints_the_whole_docstring(name, tmp_path, monkeypatch, capsys):
    module, out = stage_help(name, tmp_path, monkeypatch, capsys)
    # Every paragraph, the 'Reads ...; writes ...' ones included, as written.
    paragraphs = [p for p in module.__doc__.split("\n\n") if p.strip()]
    assert len(paragraphs) >= 2, name
    for p in paragraphs:
        assert p.strip() in out, (name, p)
    assert "Reads " in out or "reads " in out
    assert ("--track" in out) == (name != "env_table")
    assert list(tmp_path.iterdir()) == []


def test_track_stages_keep_their_own_options(capsys):
    from stages import collect, internalize, warmup

    for module, options in ((collect, ["policy", "--section"]), (warmup, ["--section"]), (internalize, ["--seed"])):
        with pytest.raises(SystemExit):
            module.main(["--help"])
        out = capsys.readouterr().out
        assert all(o in out for o in options), (module.__name__, out)


def test_env_table_envs_needs_at_least_one_name(tmp_path, monkeypatch, capsys):
    from stages import env_table

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as done:
        env_table.main(["--envs"])
    assert done.value.code == 2
    assert "--envs: expected at least one argument" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_every_missing_input_hint_names_a_dvc_stage():
    """`read_parquet(path, what)` and `require(path, what)` say `run dvc repro <what>`: `what` must be a stage of
    dvc.yaml as DVC spells it (`sql_collect@oracle`, never `sql_collect oracle`, which DVC
    reads as two targets and refuses: "Stage 'oracle' not found")."""
    import yaml

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    foreach = {name for name, body in stages.items() if "foreach" in body}
    bad = []
    for path in sorted((REPO / "stages").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("read_parquet", "require")
                    and len(node.args) >= 2):
                continue
            what = node.args[1]
            if isinstance(what, ast.Constant) and isinstance(what.value, str):
                name, at, item = what.value.partition("@")
                if not (name in stages and (name in foreach) == bool(at) and (item or not at)):
                    bad.append(f"{path.name}:{node.lineno}: {what.value!r}")
            elif isinstance(what, ast.JoinedStr):
                head = what.values[0]
                prefix = head.value if isinstance(head, ast.Constant) else ""
                if not (prefix.endswith("@") and prefix[:-1] in foreach):
                    bad.append(f"{path.name}:{node.lineno}: {ast.unparse(what)}")
    assert not bad, bad


@pytest.mark.parametrize(("name", "made_by"), [("table_train", "table_data"), ("vision_train", "vision_data"),
                                               ("table_rl", "table_data"), ("vision_eval", "vision_data")])
def test_a_missing_input_is_named_with_its_stage_before_any_work(name, made_by, tmp_path, monkeypatch):
    """The training stages read their data in worker processes: a missing file must still say
    which stage makes it (`require`, as `read_parquet` does elsewhere), not end in a process pool's
    traceback of polars' `No such file or directory`."""
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(f"stages.{name}")
    with pytest.raises(FileNotFoundError, match=f"not found \\(made by the `{made_by}` stage: run `dvc repro {made_by}`\\)"):
        module.main([])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


@pytest.mark.parametrize(("name", "present", "missing", "made_by"), [
    ("selskill", [], "data/tasks/tasks.parquet", "tasks"),
    ("table_rl", ["data/tables/items.parquet", "data/tables/images/"], "models/tables/sft", "table_train"),
    ("vision_eval", ["data/vision/scenes.parquet", "data/vision/pope.parquet", "data/vision/images/"],
     "models/vision", "vision_train"),
    ("sql_rl", [], "data/sql/tasks.parquet", "sql_tasks"),
])
def test_a_missing_input_is_one_line_naming_the_stage_that_makes_it(name, present, missing, made_by, tmp_path,
                                                                     monkeypatch, capsys):
    """Run outside DVC, a stage whose input is not built says which and how to build it, in
    one line with exit 1 (not a traceback), and writes nothing."""
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    for path in present:        # existence is all these stages check before the missing one
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).mkdir() if path.endswith("/") else (tmp_path / path).write_bytes(b"")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(f"stages.{name}")
    assert exit_on_config_error(f"python -m stages.{name}", module.main, []) == 1
    line = _one_error_line(capsys.readouterr().err, name)
    assert line.endswith(f"{missing}: not found (made by the `{made_by}` stage: run `dvc repro {made_by}`)")
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("name", ["collect", "sql_collect"])
def test_an_unknown_policy_is_named_before_a_missing_input(name, tmp_path, monkeypatch, capsys):
    """`stages.collect nosuch` and `stages.sql_collect nosuch` both say the policy is unknown, in
    one line with exit 2, even where their task table is not built yet."""
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(f"stages.{name}")
    assert exit_on_config_error(f"python -m stages.{name}", module.main, ["nosuch"]) == 2
    assert "policies.nosuch: not defined in params.yaml" in _one_error_line(capsys.readouterr().err, name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]
