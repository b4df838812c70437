"""Every stage (and `tools.results`) answers `--help` with its usage and touches nothing: asking
a stage what it does must never run it (a training stage would overwrite its outputs)."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import pytest

STAGES = sorted(p.stem for p in (Path(__file__).parents[1] / "stages").glob("*.py")
                if p.stem not in {"__init__", "track", "usage"})


def test_every_stage_module_is_listed():
    assert {"claims", "warmup", "sql_real", "sql_collect", "table_rl"} <= set(STAGES)


def stage_help(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
               capsys: pytest.CaptureFixture[str]) -> tuple[ModuleType, str]:
    """The stage module and what `python -m stages.<name> --help` printed, run in the empty
    `tmp_path` (were the stage to run, it would find no inputs there): it exits 0 with its usage."""
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(f"stages.{name}")
    with pytest.raises(SystemExit) as done:
        module.main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m stages.{name}")
    return module, out


@pytest.mark.parametrize("name", STAGES)
def test_help_prints_usage_and_writes_nothing(name, tmp_path, monkeypatch, capsys):
    module, out = stage_help(name, tmp_path, monkeypatch, capsys)
    # The first line of the module's docstring says what the stage does (argparse may rewrap it).
    assert " ".join(module.__doc__.split("\n")[0].split()) in " ".join(out.split())
    assert list(tmp_path.iterdir()) == []


def test_tools_results_help_leaves_the_docs_alone(capsys):
    from tools import results

    before = (results.ROOT / "docs" / "results.md").read_bytes()
    with pytest.raises(SystemExit) as done:
        results.main(["--help"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("usage: python -m tools.results")
    assert (results.ROOT / "docs" / "results.md").read_bytes() == before


def test_sql_real_takes_only_download(capsys):
    from stages import sql_real

    with pytest.raises(SystemExit) as done:
        sql_real.main(["upload"])
    assert done.value.code == 2
    assert "invalid choice: 'upload'" in capsys.readouterr().err


def test_warmup_refuses_a_section_params_yaml_lacks(tmp_path, monkeypatch, capsys):
    """`--section` names the output too: a typo must fail, not train a default model under it."""
    import shutil

    from stages import warmup

    shutil.copy(Path(__file__).parents[1] / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as done:
        warmup.main(["--section", "studnet_weak"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "no section 'studnet_weak'" in err and "--section takes student_weak, twx_warmup, warmup" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


@pytest.mark.parametrize("name", ["track", "usage"])
def test_the_helper_modules_say_they_are_not_stages(name, tmp_path):
    """`python -m stages.track --help` (a module beside the stages) answers in one line, exit 2,
    rather than printing nothing and exiting 0."""
    import os
    import subprocess
    import sys

    root = Path(__file__).parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "src"), str(root)])}
    done = subprocess.run([sys.executable, "-m", f"stages.{name}", "--help"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"python -m stages.{name}: error: a helper module") and "not a stage" in line
    assert list(tmp_path.iterdir()) == []
