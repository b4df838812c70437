"""The RL and distillation grid's pure pieces: cells, names, per-run numbers, findings."""

from __future__ import annotations

import math

import pytest

from distillery.evaluate.objectives_grid import (
    Cell,
    cells,
    claim_rows,
    control_rows,
    exp_name,
    markdown,
    parse_exp_name,
    plot,
    run_numbers,
    runs_from_record,
)


def rl_metrics(curve):
    return {"method": "x", "before": {"test_success": curve[0]}, "curve": curve, "seconds": 3.0}


def distill_metrics(curve, teacher):
    return {"before": {"student_before": curve[0], "teacher": teacher}, "curve": curve, "seconds": 4.0}


def test_cells_names_round_trip_and_overrides():
    cs = cells()
    assert [c.label for c in cs[:3]] == ["rl/grpo", "rl/gigpo", "rl/siri"]
    assert len(cs) == 12 and len({c.label for c in cs}) == 12 and cs[-1].label == "selskill/selskill"
    for c in cs:
        assert parse_exp_name(exp_name(c, 1, "t2"), "t2") == (c, 1)
        assert parse_exp_name(exp_name(c, 1, "t2"), "t3") is None
    assert Cell("distill", "aopd", "weak").overrides(2) == ["distill.method=aopd", "distill.seed=2", "distill.start=weak"]
    assert Cell("rl", "siri").target == "rl" and Cell("rl", "siri").metrics_file == "reports/details/rl.json"
    assert parse_exp_name("og-t2-ds-aopd-medium-s1", "t2") is None
    # SelSkill has one method: only its seed is overridden (a `selskill.method` key would be refused)
    assert Cell("selskill", "selskill").overrides(2) == ["selskill.seed=2"]
    assert Cell("selskill", "selskill").metrics_file == "reports/details/selskill.json"


def test_run_numbers_gain_and_gap_closed():
    r = run_numbers(distill_metrics([0.5, 0.55, 0.6], 0.9))
    assert r.final == 0.6 and r.gain == pytest.approx(0.1) and r.gap_closed == pytest.approx(0.25)
    assert math.isnan(run_numbers(rl_metrics([0.5, 0.6])).gap_closed)
    assert math.isnan(run_numbers(distill_metrics([0.5, 0.6], 0.4)).gap_closed)     # no gap
    with pytest.raises(ValueError, match="rl/distill/selskill metrics"):
        run_numbers({"before": {}})


def _record():
    runs = []
    for seed, (grpo, gigpo) in enumerate([(0.61, 0.66), (0.60, 0.65), (0.62, 0.66)]):
        runs.append({"stage": "rl", "method": "grpo", "start": "", "seed": seed, "metrics": rl_metrics([0.58, grpo])})
        runs.append({"stage": "rl", "method": "gigpo", "start": "", "seed": seed, "metrics": rl_metrics([0.58, gigpo])})
        runs.append({"stage": "distill", "method": "opd", "start": "weak", "seed": seed,
                     "metrics": distill_metrics([0.1, 0.3 + 0.01 * seed], 0.9)})
    return {"runs": runs}


def test_findings_are_paired_by_seed_and_every_cell_gets_a_row(tmp_path):
    runs = runs_from_record(_record())
    rows = {r.finding: r for r in claim_rows(runs)}
    gig = rows["gigpo over grpo (held-out user)"]
    assert gig.holds is True and "+0.047" in gig.detail          # diffs .05 .05 .04
    assert rows["siri over gigpo (held-out user)"].holds is None
    grpo_bar = rows["grpo raises the held-out user's test success above the warm-up model's"]
    assert grpo_bar.holds is True and grpo_bar.measured.startswith("0.580 ± 0.000 -> 0.610 ± 0.010")
    opd = rows["opd (weak start) closes part of the student-teacher gap"]
    assert opd.holds is True and "0.26 ± 0.01" in opd.detail
    md = markdown(runs, "# grid", "g.png")
    assert "| rl/gigpo | 0 | 0.580 0.660 |" in md
    plot(runs, str(tmp_path / "g.png"))
    assert (tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG"


def test_gkd_is_judged_against_its_no_teacher_control_by_seed():
    record = {"runs": [{"stage": "distill", "method": "gkd", "start": "strong", "seed": s,
                        "metrics": distill_metrics([0.70, f], 0.75)} for s, f in ((0, 0.74), (1, 0.76), (2, 0.80))]}
    runs = runs_from_record(record)
    control = {"runs": [{"seed": 0, "final": 0.75}, {"seed": 1, "final": 0.77}, {"seed": 2, "final": 0.76}]}
    (row,) = control_rows(runs, control)
    # diffs -0.01 -0.01 +0.04: mean +0.007 below their std, so the teacher's share does not hold
    assert row.holds is False and "+0.007" in row.detail
    assert row.measured == "gkd 0.767 ± 0.031 vs no-teacher control 0.760 ± 0.010"
    assert control_rows(runs, None) == [] and control_rows({}, control) == []


def selskill_metrics(curve, always, never, precision, calls):
    arm = {"success": curve[-1], "precision": precision, "calls_per_episode": calls}
    return {"before": {"free": {"success": curve[0]}}, "curve": curve, "seconds": 5.0,
            "final": {"selskill": arm, "always": {"success": always}, "never": {"success": never},
                      "warmup_never": {"success": never}}}


def test_selskill_is_judged_against_always_invoke_within_each_seed(tmp_path):
    record = {"runs": [
        {"stage": "selskill", "method": "selskill", "seed": 0, "metrics": selskill_metrics([0.40, 0.45], 0.30, 0.42, 1.0, 0.2)},
        {"stage": "selskill", "method": "selskill", "seed": 1, "metrics": selskill_metrics([0.40, 0.47], 0.32, 0.42, None, 0.0)},
    ]}
    runs = runs_from_record(record)
    assert runs[(Cell("selskill", "selskill"), 1)].arms["always"] == 0.32
    assert math.isnan(runs[(Cell("selskill", "selskill"), 1)].arms["precision"])
    rows = {r.finding: r for r in claim_rows(runs)}
    success = rows["selskill's success over always-invoke"]
    assert success.holds is True and "+0.150" in success.detail        # diffs .15 .15
    precision = rows["selskill's execution precision over always-invoke"]
    assert precision.holds is True and "over 1 of 2 seeds" in precision.measured
    assert "selskill/selskill" in markdown(runs, "# grid", None)
    plot(runs, str(tmp_path / "g.png"))
    assert (tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG"


def test_a_bad_record_names_the_run():
    with pytest.raises(ValueError, match="run 0"):
        runs_from_record({"runs": [{"method": "gigpo", "seed": 0, "metrics": {}}]})


def test_the_grid_flow_refuses_an_only_prefix_that_names_no_cell(tmp_path):
    from flows.grid import queue_runs

    with pytest.raises(ValueError, match="no cell of the objectives grid"):
        queue_runs.fn(str(tmp_path), [0], [], "t", "objectives", "distill/nope")


def test_only_takes_several_comma_separated_prefixes():
    from flows.grid import select_cells

    from distillery.evaluate.objectives_grid import cells

    got = [c.label for c in select_cells(cells(), "distill/opd/strong,distill/gkd/strong,rl/gi")]
    assert got == ["rl/gigpo", "distill/opd/strong", "distill/gkd/strong"]
    assert len(select_cells(cells(), "")) == len(cells())


def test_a_distill_row_names_the_set_up_each_run_learned_under():
    def run(seed, cfg):
        return {"stage": "distill", "method": "opd", "start": "strong", "seed": seed,
                "metrics": {**distill_metrics([0.5, 0.6], 0.7), "config": cfg}}

    new = {"teacher_dir": "t", "learn_split": "heldout_train", "tasks_per_family": 5, "lr": 1e-4}
    old = {"teacher_dir": "t", "learn_split": "train", "tasks_per_family": 3}     # written before lr was recorded
    rows = claim_rows(runs_from_record({"runs": [run(0, new), run(1, old)]}))
    detail = next(r.detail for r in rows if r.finding.startswith("opd (strong start) closes"))
    assert "student samples on heldout_train tasks, 5 per family an iteration, lr 0.0001" in detail
    assert "student samples on train tasks, 3 per family an iteration, lr not recorded" in detail
    assert run_numbers(rl_metrics([0.5, 0.6])).setup == ""
