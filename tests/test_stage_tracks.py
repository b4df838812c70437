"""Tracks (stages/track.py): the agent track's paths and sections unchanged, another track's
under its own folders and sections, and a track's missing section an error."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from stages.track import Track

from distillery.config import ConfigError, TasksConfig


def test_the_agent_track_keeps_every_path_and_section():
    t = Track()
    for p in ("data/tasks/tasks.parquet", "models/warmup", "reports/claims/internalize.json"):
        assert t.path(p) == Path(p)
    assert t.section("warmup") == "warmup"


def test_another_track_has_its_own_folders_sections_and_claims_files():
    t = Track("twx")
    assert t.path("data/tasks/tasks.parquet") == Path("data/twx/tasks/tasks.parquet")
    assert t.path("models/warmup") == Path("models/twx/warmup")
    assert t.path(Path("data/rollouts") / "twx_warmup") == Path("data/twx/rollouts/twx_warmup")
    assert t.path("reports/claims/internalize.json") == Path("reports/claims/twx_internalize.json")
    assert t.section("warmup") == "twx_warmup"
    with pytest.raises(ValueError, match="track name"):
        Track("TWX/../x")


def test_a_track_reads_its_own_section_and_never_falls_back_to_the_defaults():
    params = {"tasks": {"n_test_per_family": 3}, "twx_tasks": {"base": "tasks", "env": "textworldexpress"}}
    cfg = Track("twx").load(TasksConfig, "tasks", params)
    assert cfg.env == "textworldexpress" and cfg.n_test_per_family == 3
    with pytest.raises(ConfigError, match="no section 'sql2_tasks'"):
        Track("sql2").load(TasksConfig, "tasks", params)


def test_every_twx_stage_in_dvc_yaml_runs_its_module_with_the_track_and_declares_its_sections():
    from tests.conftest import REPO

    doc = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    twx = {k: v.get("do", v) for k, v in doc.items() if k.startswith("twx_")}
    assert {"twx_tasks", "twx_collect", "twx_warmup", "twx_rollout", "twx_mine", "twx_internalize", "twx_rl"} <= set(twx)
    for name, d in twx.items():
        assert "--track twx" in d["cmd"] and d["meta"]["envs"] == ["textworldexpress"], name
        declared = {p if isinstance(p, str) else next(iter(p)) for p in d["params"]}
        assert name in declared and name in params, name
        base = params[name].get("base")
        assert base is None or base in declared, f"{name} is base: {base}, which its params must declare"
        outs = [o if isinstance(o, str) else next(iter(o)) for o in d.get("outs", [])]
        assert all("/twx/" in o or o.startswith("reports/claims/twx_") for o in outs), (name, outs)


@pytest.mark.parametrize("track", ["", "twx"])
@pytest.mark.parametrize("stage", ["internalize", "rl"])
def test_a_tracks_claims_name_the_stage_that_writes_them(track, stage):
    from tests.conftest import REPO

    doc = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    t = Track(track)
    outs = [o if isinstance(o, str) else next(iter(o)) for o in doc[t.stage(stage)].get("outs", [])]
    assert t.path(f"reports/claims/{stage}.json").as_posix() in outs
