"""Headline metrics: a few flat numbers picked from a stage's record, errors that name the path."""

from __future__ import annotations

import math

import pytest

from distillery.evaluate.headline import (
    MAX_VALUES,
    RL,
    benchmark_headline,
    count_leaves,
    pick,
    sql_headline,
)


def test_pick_reads_dotted_paths_and_keeps_not_measured_as_none():
    record = {"before": {"test_success": 0.5}, "final": {"test_success": 0.75, "gain": 0.25,
                                                          "best_test_success": 0.8}, "seconds": 12.3}
    assert pick(record, RL) == {"success_start": 0.5, "success": 0.75, "gain": 0.25, "best_success": 0.8,
                                "seconds": 12.3}
    assert pick({"a": {"b": None}, "c": math.nan}, {"x": "a.b", "y": "c"}) == {"x": None, "y": None}


def test_pick_names_a_missing_path_and_refuses_text_and_too_many_values():
    with pytest.raises(KeyError, match="'success': 'final.test_success' is not in the record"):
        pick({"final": {}}, {"success": "final.test_success"})
    with pytest.raises(TypeError, match="is not a number"):
        pick({"method": "grpo"}, {"method": "method"})
    with pytest.raises(ValueError, match=f"at most {MAX_VALUES}"):
        pick({}, {f"v{i}": "x" for i in range(MAX_VALUES + 1)})


def test_benchmark_headline_is_success_and_validity_per_policy():
    details = {p: {"all": {"success_rate": r, "validity_rate": 1.0}, "files": {"success_rate": 0.0}}
               for p, r in (("oracle", 1.0), ("random", 0.0))}
    assert benchmark_headline(details) == {"success_oracle": 1.0, "valid_oracle": 1.0,
                                           "success_random": 0.0, "valid_random": 1.0}


def test_count_leaves_counts_what_dvc_prints():
    assert count_leaves({"a": 1, "b": {"c": [1, 2, {"d": 3}]}, "e": None}) == 5


def test_sql_headline_is_the_final_student_against_its_warm_up():
    record = {"test": {"sql_warmup": {"accuracy": 0.25}, "sql_rl": {"accuracy": 0.5}},
              "heldout": {"sql_rl": {"accuracy": 0.4}},
              "real": {"sql_rl": {"chinook": {"accuracy": 0.2}, "lahman": {"accuracy": 0.4}}}, "seconds": 10.0}
    h = sql_headline(record)
    assert h == {"success": 0.5, "success_start": 0.25, "success_heldout": 0.4, "gain": 0.25,
                 "success_real": pytest.approx(0.3), "seconds": 10.0}
    assert sql_headline({"test": {}, "seconds": 1.0})["gain"] is None      # no student evaluated
