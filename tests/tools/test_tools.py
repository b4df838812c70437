"""tools/: the import rule and each DVC stage's code dependencies (stage_deps.py), the results splice."""

from __future__ import annotations

import os
from pathlib import Path

from tests.conftest import REPO

from tools import stage_deps as sd


def test_the_library_has_no_import_circle_and_no_upward_import():
    graph = sd.library_graph(REPO)
    assert sd.layer_violations(graph) == []
    assert sd.cycles(graph) == []


def test_every_stage_declares_exactly_its_import_closure_in_dvc_yaml():
    assert sd.check(REPO) == {}, "run: python -m tools.stage_deps --fix"


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _toy_repo(root: Path) -> None:
    _write(root, "src/distillery/__init__.py", "")
    _write(root, "src/distillery/types.py", "X = 1\n")
    _write(root, "src/distillery/registry.py", "")
    _write(root, "src/distillery/envs/__init__.py", "")
    _write(root, "src/distillery/envs/base.py", "from distillery import registry\nfrom distillery.types import X\n")
    _write(root, "src/distillery/envs/toy.py", "from typing import TYPE_CHECKING\n"
                                               "if TYPE_CHECKING:\n    from distillery.rollout import Y\n"
                                               "from .base import registry\n")
    _write(root, "src/distillery/rollout.py", "def run():\n    from distillery.envs import base\n")
    _write(root, "src/distillery/lm.py", "from distillery.envs import base\n")   # layer 1 -> layer 2: upward
    _write(root, "stages/__init__.py", "")
    _write(root, "stages/go.py", "from distillery.rollout import run\n")
    _write(root, "pyproject.toml", '[project]\nname = "x"\n[project.entry-points."distillery.envs"]\n'
                                   'toy = "distillery.envs.toy:ENV"\n')


def test_closure_follows_lazy_imports_and_parent_packages_but_not_type_only_ones(tmp_path):
    _toy_repo(tmp_path)
    modules = sd.index_modules(tmp_path)
    graph = sd.import_graph(modules, tmp_path)
    assert "distillery.rollout" not in graph["distillery.envs.toy"]          # under TYPE_CHECKING
    got = sd.expected_code_deps({"cmd": "python -m stages.go", "meta": {"envs": ["toy"]}}, modules, graph, tmp_path)
    assert got == sorted(["src/distillery/__init__.py", "src/distillery/envs/__init__.py",
                          "src/distillery/envs/base.py", "src/distillery/envs/toy.py", "src/distillery/registry.py",
                          "src/distillery/rollout.py", "src/distillery/types.py", "stages/__init__.py",
                          "stages/go.py"])


def test_a_stage_that_can_load_plugins_must_name_its_environments(tmp_path):
    _toy_repo(tmp_path)
    modules = sd.index_modules(tmp_path)
    graph = sd.import_graph(modules, tmp_path)
    try:
        sd.expected_code_deps({"cmd": "python -m stages.go"}, modules, graph, tmp_path)
    except ValueError as e:
        assert "meta: {envs:" in str(e)
    else:
        raise AssertionError("a stage importing the registry without meta.envs was accepted")


def test_upward_imports_and_circles_are_found(tmp_path):
    _toy_repo(tmp_path)
    _write(tmp_path, "src/distillery/types.py", "from distillery import registry\n")
    _write(tmp_path, "src/distillery/registry.py", "from distillery.types import X\n")
    graph = sd.library_graph(tmp_path)
    assert ["distillery.lm (layer 1) imports distillery.envs.base (layer 2), a layer above it"] == \
        [v for v in sd.layer_violations(graph) if v.startswith("distillery.lm ")]
    assert ["distillery.registry", "distillery.types"] in sd.cycles(graph)
    # type-only imports count for the rule: toy -> rollout runs upward (layer 2 -> 3)
    assert any(v.startswith("distillery.envs.toy (layer 2) imports distillery.rollout") for v in sd.layer_violations(graph))


def test_results_splice_replaces_only_the_marked_part():
    from tools.results import END, START, splice

    doc = f"# Results\n\nintro\n\n{START}\nold\n{END}\n\n## Notes\n"
    page = "# Claims\n\nlead\n\n## pghs\n\n| a |\n\n## rl\n\n| b |\n"
    out = splice(doc, page)
    assert out == f"# Results\n\nintro\n\n{START}\n### pghs\n\n| a |\n\n### rl\n\n| b |\n{END}\n\n## Notes\n"
    assert splice(out, page) == out


def test_results_splice_points_the_claims_pages_images_at_reports():
    from tools.results import END, START, splice

    page = "# Claims\n\n## grid\n\n![grid](internalize_grid.png)\n![web](https://x.org/a.png)\n"
    out = splice(f"{START}\n{END}\n", page)
    assert "![grid](../reports/internalize_grid.png)" in out and "![web](https://x.org/a.png)" in out
    assert splice(out, page) == out


def test_metrics_view_puts_each_file_on_its_own_lines_and_never_splits_a_pair():
    from tools.metrics_view import render

    shown = {"": {"data": {"metrics/rl.json": {"data": {"success": 0.708333, "seconds": 339.0}},
                           "metrics/a_long_one.json": {"data": {f"value_{i}": i / 3 for i in range(12)}},
                           "metrics/unbuilt.json": {"error": {"type": "FileNotFoundError"}},
                           "metrics/broken.json": {"error": {"type": "JSONDecodeError"}}}}}
    text = render(shown, width=80)
    lines = text.splitlines()
    assert lines[0].startswith("metrics/a_long_one.json") and all(len(line) <= 80 for line in lines)
    assert "success 0.7083  seconds 339" in text and "error.type JSONDecodeError" in text
    assert any(line.split() == ["metrics/unbuilt.json", "not", "built", "yet"] for line in lines)
    assert "FileNotFoundError" not in text
    assert text.count("value_") == 12 and len(lines) > 4
    pairs = " ".join(lines).split()
    assert pairs[pairs.index("value_11") + 1] == "3.667"        # a name and its value stay together
    assert render({}) == "no metrics yet: make repro"


def test_metrics_with_nothing_built_is_one_line_naming_what_to_run_and_exit_2(tmp_path, monkeypatch, capsys):
    """`make metrics` on a fresh clone: one line and exit 2, as `make metrics TRACK=sql` says it."""
    import io
    import json
    import shutil
    import subprocess

    from tools.metrics_view import main

    unbuilt = {"": {"data": {f"metrics/{n}.json": {"error": {"type": "FileNotFoundError", "msg": "[Errno 2]"}}
                             for n in ("rl", "sql_rl")}}}
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(unbuilt)))
    assert main(["--from-stdin"]) == 2
    out = capsys.readouterr()
    assert out.out == "" and out.err == "no metrics yet: make repro\n"
    shutil.copy(REPO / "Makefile", tmp_path / "Makefile")
    for args in ([], ["TRACK=sql"]):
        done = subprocess.run(["make", "-s", "metrics", *args, "BIN=/nonexistent"], cwd=tmp_path, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 2, done
        assert done.stderr.splitlines()[0].startswith("no metrics ") and "make repro" in done.stderr
        assert "FileNotFoundError" not in done.stdout + done.stderr


def test_metrics_with_some_built_names_the_rest_without_dvcs_summary(tmp_path):
    """`make metrics` part-way through a pipeline: the built file's numbers, a line for the
    unbuilt one, and not DVC's "failed to load some metrics" above them."""
    import subprocess
    import sys

    (tmp_path / "dvc.yaml").write_text("stages:\n  s:\n    cmd: 'true'\n    metrics:\n"
                                       "      - metrics/built.json\n      - metrics/unbuilt.json\n")
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "built.json").write_text('{"success": 0.5}')
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=tmp_path, check=True, timeout=120)
    done = subprocess.run([sys.executable, "-m", "tools.metrics_view"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done
    assert done.stderr == ""
    assert done.stdout.splitlines() == ["metrics/built.json    success 0.5", "metrics/unbuilt.json  not built yet"]


def test_push_depends_on_setup_as_pull_does():
    import re

    text = (REPO / "Makefile").read_text()
    assert re.search(r"^pull: setup\b", text, re.M) and re.search(r"^push: setup\b", text, re.M)


def test_clean_outputs_deletes_exactly_the_outputs_dvc_lock_records(tmp_path):
    from tools.clean_outputs import main

    lock = {"schema": "2.0", "stages": {
        "tasks": {"cmd": "x", "outs": [{"path": "data/tasks/tasks.parquet"}, {"path": "reports/tasks"}]},
        "warmup": {"cmd": "y", "outs": [{"path": "models/warmup"}, {"path": "metrics/warmup.json"}]}}}
    import yaml
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    for rel in ("data/tasks/tasks.parquet", "reports/tasks/a.json", "models/warmup/config.json",
                "data/imports/chat/records.parquet", "data/trajectories/imported/x.parquet"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    assert main(["--repo", str(tmp_path)]) == 0                    # lists, deletes nothing
    assert (tmp_path / "models/warmup/config.json").exists()
    assert main(["--repo", str(tmp_path), "--yes"]) == 0
    assert not (tmp_path / "data/tasks/tasks.parquet").exists() and not (tmp_path / "models/warmup").exists()
    assert not (tmp_path / "reports/tasks").exists()
    assert (tmp_path / "data/imports/chat/records.parquet").exists()          # imported logs stay
    assert (tmp_path / "data/trajectories/imported/x.parquet").exists()


def test_clean_outputs_refuses_an_output_outside_the_repository(tmp_path):
    import yaml
    from tools.clean_outputs import main

    (tmp_path / "dvc.lock").write_text(yaml.safe_dump({"stages": {"s": {"outs": [{"path": "../elsewhere"}]}}}))
    (tmp_path.parent / "elsewhere").mkdir(exist_ok=True)
    assert main(["--repo", str(tmp_path), "--yes"]) == 2
    assert (tmp_path.parent / "elsewhere").exists()


def test_push_check_names_the_outputs_not_in_the_dvc_cache(tmp_path, capsys):
    """A real git + DVC repository: of three recorded outputs, one gone from the workspace and
    the cache (named: `dvc push` cannot send it), one gone from the workspace only (still in
    the cache, so pushed), and a metrics file DVC does not cache (never pushed, not named)."""
    import shutil
    import subprocess
    import sys

    import yaml
    from tools.push_check import main, not_cached

    def sh(*cmd: str) -> None:
        subprocess.run(cmd, cwd=tmp_path, check=True, capture_output=True, text=True, timeout=120)

    sh("git", "init", "-q")
    sh(sys.executable, "-m", "dvc", "init", "-q")
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {
        "a": {"cmd": "mkdir -p data && echo a > data/a.txt", "outs": ["data/a.txt"]},
        "b": {"cmd": "mkdir -p data/b && echo b > data/b/x.txt", "outs": ["data/b"]},
        "m": {"cmd": "echo '{\"n\": 1}' > m.json", "metrics": [{"m.json": {"cache": False}}]}}}))
    sh(sys.executable, "-m", "dvc", "repro", "-q")
    assert not_cached(tmp_path) == ([], 3)
    assert main(["--repo", str(tmp_path)]) == 0 and capsys.readouterr().err == ""

    md5 = next(o["md5"] for o in yaml.safe_load((tmp_path / "dvc.lock").read_text())["stages"]["a"]["outs"])
    (tmp_path / ".dvc/cache/files/md5" / md5[:2] / md5[2:]).unlink()
    (tmp_path / "data/a.txt").unlink()
    shutil.rmtree(tmp_path / "data/b")
    assert not_cached(tmp_path) == (["data/a.txt"], 3)
    assert main(["--repo", str(tmp_path)]) == 0
    assert capsys.readouterr().err == ("not pushed, not in the DVC cache: 1 of the 3 outputs dvc.lock records "
                                       "(dvc repro makes them): data/a.txt\n")
    # Nothing left to send (a fresh clone: nothing built or pulled): one line, exit 2, no push.
    shutil.rmtree(tmp_path / ".dvc/cache")
    assert not_cached(tmp_path) == (["data/a.txt", "data/b"], 3)
    assert main(["--repo", str(tmp_path)]) == 2
    assert capsys.readouterr().err == ("nothing to push: none of the 3 outputs dvc.lock records is in the DVC "
                                       "cache (make repro builds them)\n")
    (tmp_path / "dvc.lock").unlink()
    assert main(["--repo", str(tmp_path)]) == 2 and capsys.readouterr().err.startswith("nothing to push: no dvc.lock")
