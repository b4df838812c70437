"""The cross-environment table: figures read from a track's files and internalize reports
(one per seed, or a grid's record), rows side by side, judged by the paired rule."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from distillery.envs.throughput import replay_throughput
from distillery.evaluate.environments import (
    EnvTableConfig,
    environment_claims,
    environment_figures,
    grid_runs,
)

REPO = Path(__file__).resolve().parents[2]


def _eps(success: list[bool], split: str = "test") -> pl.DataFrame:
    return pl.DataFrame({"success": success, "split": [split] * len(success)}, schema={"success": pl.Boolean,
                                                                                      "split": pl.Utf8})


def report(seed: int, final: float, start: float = 0.2, teacher: float = 0.3,
           sampled: dict[str, tuple[float, float]] | None = None, others: tuple[float, float] = (0.7, 0.68)) -> dict:
    sampled = sampled or {"0": (0.2, 0.4), "1": (0.25, 0.35), "2": (0.2, 0.3)}
    return {"before": {"heldout_plain": start, "heldout_with_experience": teacher,
                       "others_with_principles": others[0],
                       "sampled": {s: {"plain": p, "with_experience": w} for s, (p, w) in sampled.items()}},
            "final": {"heldout_plain": final, "others_with_principles": others[1]},
            "iterations": [{}, {}, {}], "n_test": 20, "config": {"seed": seed}}


RUNS = [report(0, 0.5), report(1, 0.45), report(2, 0.55)]


def test_figures_are_read_from_the_tracks_files_and_one_report_per_seed():
    f = environment_figures("twx", _eps([True] * 5), pl.concat([_eps([True, False, False, True]),
                                                                 _eps([True], split="train")]), RUNS[0], RUNS, 2)
    assert f.oracle == 1.0 and f.n_oracle == 5
    assert f.warmup_test == 0.5 and f.n_test == 4               # the train-split episode is not counted
    assert f.drop == pytest.approx(0.3)                         # 0.5 on test -> 0.2 held out
    assert f.seeds == [0, 1, 2] and f.sampling_seeds == [0, 1, 2]
    assert [r.final for r in f.runs] == [0.5, 0.45, 0.55] and f.start.iterations == 3
    assert f.runs[1].forgetting == pytest.approx(0.02)


def test_rows_say_their_seeds_and_judge_by_the_paired_rule():
    a = environment_figures("stage", _eps([True] * 4), _eps([True, True]), RUNS[0], RUNS, 3, steps_per_s=1000.0)
    # twx: the teacher is below plain on every sampling seed, internalization moves nothing
    flat = {"0": (0.1, 0.0), "1": (0.1, 0.05), "2": (0.0, 0.0)}
    twx = [report(s, 0.0, start=0.0, teacher=0.0, sampled=flat) for s in (0, 1, 2)]
    b = environment_figures("twx", _eps([True, False]), _eps([False, False]), twx[0], twx, 0, steps_per_s=1500.0)
    rows = environment_claims([a, b], "make x")
    assert len(rows) == 7 and all(r.command == "make x" for r in rows)
    oracle, warm, drop, teacher, internalized, forgetting, speed = rows
    assert oracle.measured == "stage: 1.000 (n=4) · twx: 0.500 (n=2)" and oracle.holds is False
    assert oracle.seeds.startswith("one run") and warm.holds is None and drop.holds is None
    assert drop.measured.startswith("stage: +0.800 (1.000 -> 0.200, n=20) · twx: +0.000")
    assert teacher.seeds == "stage: sampling 0,1,2 · twx: sampling 0,1,2"
    assert teacher.measured.startswith("stage: 0.350 ± 0.050 vs 0.217 ± 0.029 (3 principles)")
    assert teacher.holds is False and "paired margin" in teacher.detail            # twx fails
    assert internalized.seeds == "stage: internalization 0,1,2 · twx: internalization 0,1,2"
    assert internalized.measured.startswith("stage: 0.500 ± 0.050 vs 0.200 (3 it.)")
    assert internalized.holds is False
    assert forgetting.holds is True and forgetting.measured.startswith("stage: 0.020 ± 0.000")
    assert speed.measured == "stage: 1,000 · twx: 1,500 (1.50x stage)" and speed.holds is None
    alone = environment_claims([a], "c")
    assert alone[3].holds is True and alone[4].holds is True    # STAGE alone: both margins beat their spread
    assert len(environment_claims([environment_figures("stage", _eps([True]), _eps([True]), RUNS[0], RUNS, 3)],
                                  "c")) == 6


def test_one_seed_is_not_enough_for_a_verdict():
    one = environment_figures("stage", _eps([True]), _eps([True]), RUNS[0], RUNS[:1], 3)
    internalized = environment_claims([one], "c")[4]
    assert internalized.holds is None and "the rule needs at least 2" in internalized.detail


def test_the_grid_record_stands_for_its_runs_of_the_recipe():
    record = json.loads((REPO / "experiments/internalize_grid.json").read_text())
    runs = grid_runs(record, "principle/stepwise/off_policy", "grid")
    assert [r["seed"] for r in runs] == [0, 1, 2]
    # the drop is the track's own warm-up's; the seeded rows the record's runs (their own start)
    f = environment_figures("stage", _eps([True]), _eps([True]), report(0, 0.7, start=0.6), runs, 5)
    assert len({(r.start, r.teacher) for r in f.runs}) == 1 and f.start.n_test == 120
    assert f.drop == pytest.approx(0.4) and f.warmup_heldout == 0.6 != f.start.start
    with pytest.raises(ValueError, match="no run of the cell"):
        grid_runs(record, "principle/stepwise/sideways", "grid")


def test_missing_pieces_are_named():
    with pytest.raises(ValueError, match="no oracle episodes"):
        environment_figures("twx", _eps([]), _eps([True]), RUNS[0], RUNS, 0)
    with pytest.raises(ValueError, match="test-split"):
        environment_figures("twx", _eps([True]), _eps([True], split="train"), RUNS[0], RUNS, 0)
    with pytest.raises(ValueError, match="lacks"):
        environment_figures("twx", _eps([True]), _eps([True]), RUNS[0], [{"before": {}}], 0)
    with pytest.raises(ValueError, match="track's internalize report: the internalize report lacks"):
        environment_figures("twx", _eps([True]), _eps([True]), {"before": {}}, RUNS, 0)
    with pytest.raises(ValueError, match="same seed"):
        environment_figures("twx", _eps([True]), _eps([True]), RUNS[0], [RUNS[0], RUNS[0]], 0)
    with pytest.raises(ValueError, match="same model and pool"):
        environment_figures("twx", _eps([True]), _eps([True]), RUNS[0], [RUNS[0], report(1, 0.3, start=0.9)], 0)
    with pytest.raises(ValueError, match="one entry per environment"):
        EnvTableConfig(envs=["a"], tracks=["", "twx"], play=["w"], runs=[["x"]])


def test_throughput_replays_reference_solutions_and_refuses_a_replay_that_loses():
    from distillery.config import TasksConfig
    from distillery.envs.stage import StageEnv
    from distillery.tasks.generate import generate_tasks

    cfg = TasksConfig(families=["save_note"], n_train_per_family=0, n_test_per_family=2,
                      n_heldout_train_per_family=0, n_heldout_test_per_family=0, random_probes=0)
    tasks = generate_tasks(cfg, progress=False).tasks
    env = StageEnv()
    try:
        t = replay_throughput(env, tasks, 0.0)           # at least one pass
        assert t.episodes == len(tasks) and t.steps == sum(len(x.reference_solution) for x in tasks)
        assert t.steps_per_s > 0
        broken = [tasks[0].__class__(**{**tasks[0].__dict__, "reference_solution": []})]
        with pytest.raises(ValueError, match="did not win"):
            replay_throughput(env, broken, 0.0)
    finally:
        env.close()
