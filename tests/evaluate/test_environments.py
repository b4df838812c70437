"""The cross-environment table: figures read from a track's files, rows side by side."""

from __future__ import annotations

import polars as pl
import pytest

from distillery.evaluate.environments import EnvTableConfig, environment_claims, environment_figures


def _eps(success: list[bool], split: str = "test") -> pl.DataFrame:
    return pl.DataFrame({"success": success, "split": [split] * len(success)}, schema={"success": pl.Boolean,
                                                                                      "split": pl.Utf8})


REPORT = {"before": {"heldout_plain": 0.2, "heldout_with_experience": 0.3},
          "final": {"heldout_plain": 0.25}, "iterations": [{}, {}, {}], "n_test": 20}


def test_figures_are_read_from_the_tracks_files():
    f = environment_figures("twx", _eps([True] * 5), pl.concat([_eps([True, False, False, True]),
                                                                 _eps([True], split="train")]), REPORT, 2)
    assert f.oracle == 1.0 and f.n_oracle == 5
    assert f.warmup_test == 0.5 and f.n_test == 4               # the train-split episode is not counted
    assert f.drop == pytest.approx(0.3)                         # 0.5 on test -> 0.2 held out
    assert (f.teacher_heldout, f.internalized_heldout, f.iterations, f.n_heldout) == (0.3, 0.25, 3, 20)


def test_rows_put_the_environments_side_by_side_and_judge_only_where_there_is_a_rule():
    a = environment_figures("stage", _eps([True] * 4), _eps([True, True]), REPORT, 3)
    b = environment_figures("twx", _eps([True, False]), _eps([False, False]),
                            {**REPORT, "before": {"heldout_plain": 0.4, "heldout_with_experience": 0.1}}, 0)
    rows = environment_claims([a, b], "1 (seed 0)", "make x")
    assert len(rows) == 5 and all(r.seeds == "1 (seed 0)" and r.command == "make x" for r in rows)
    oracle, warm, drop, teacher, internalized = rows
    assert oracle.measured == "stage: 1.000 (n=4) · twx: 0.500 (n=2)" and oracle.holds is False
    assert drop.measured.startswith("stage: +0.800 (1.000 -> 0.200) · twx: -0.400") and drop.holds is None
    assert teacher.holds is False                               # twx: 0.1 < 0.4
    assert internalized.holds is False and warm.holds is None
    assert environment_claims([a], "1", "c")[3].holds is True   # STAGE alone: 0.3 > 0.2


def test_missing_pieces_are_named():
    with pytest.raises(ValueError, match="no oracle episodes"):
        environment_figures("twx", _eps([]), _eps([True]), REPORT, 0)
    with pytest.raises(ValueError, match="test-split"):
        environment_figures("twx", _eps([True]), _eps([True], split="train"), REPORT, 0)
    with pytest.raises(ValueError, match="lacks"):
        environment_figures("twx", _eps([True]), _eps([True]), {"before": {}}, 0)
    with pytest.raises(ValueError, match="one entry per environment"):
        EnvTableConfig(envs=["a"], tracks=["", "twx"], play=["w"])
