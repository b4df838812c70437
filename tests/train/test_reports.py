"""The on-policy stages' metrics records and claims (train/*_report.py) from hand-made
results: the numbers the stages write, the claims' wording and verdicts, and the new
Claim fields (spread, seeds, command)."""

from __future__ import annotations

import math

import pytest

from distillery.train.distill import DistillConfig, DistillIteration
from distillery.train.distill_report import distill_claims, distill_metrics
from distillery.train.internalize import InternalizeConfig, IterationResult
from distillery.train.internalize_report import internalize_claims, internalize_metrics
from distillery.train.rl import RLConfig, RLIteration
from distillery.train.rl_report import rl_claims, rl_metrics
from distillery.train.selskill import SelSkillConfig, SelSkillRound
from distillery.train.selskill_report import selskill_claims, selskill_metrics
from distillery.types import Claim, Experience, Task


def _task(split: str) -> Task:
    return Task(task_id=f"{split}-1", family="f", split=split, profile="p", hint="", instruction="",
                initial_state={}, reference_solution=[], checks=[])


def test_internalize_claims_read_the_reference_points_and_the_curve():
    before = {"heldout_plain": 0.5, "heldout_with_experience": 0.7, "heldout_with_true_principles": 0.8,
              "others_with_principles": 0.9,
              "sampled": {"0": {"plain": 0.5, "with_experience": 0.75}, "1": {"plain": 0.55, "with_experience": 0.8}}}
    results = [IterationResult(0, 0.55, 0.7, 0.6, 3, 10), IterationResult(1, 0.6, 0.72, 0.65, 4, 12)]
    tasks = [_task("heldout_test"), _task("test")]
    m = internalize_metrics(InternalizeConfig(), tasks, before, results, others_after=0.86, seconds=1.0)
    assert m["final"] == {"heldout_plain": 0.6, "heldout_with_experience": 0.72, "others_with_principles": 0.86}
    assert m["n_test"] == 1 and m["config"] == {"granularity": "principle", "injection": "stepwise",
                                                 "regime": "off_policy", "iterations": 3, "seed": 0}
    teacher, curve, forgetting = internalize_claims(m)
    assert all(isinstance(c, Claim) for c in (teacher, curve, forgetting))
    assert teacher.measured == ("held-out user, warm-up model, principles stepwise: 0.775 ± 0.035 vs plain "
                                "0.525 ± 0.035")
    assert teacher.holds is True and teacher.seeds == "sampling 0, 1" and teacher.command == "dvc repro internalize"
    assert teacher.spread == "seed std 0.035 with experience, 0.035 plain"
    assert curve.measured == "0.500 -> 0.550 -> 0.600" and curve.holds is True and curve.seeds == "training 0"
    assert forgetting.measured == "0.900 -> 0.860" and forgetting.holds is True
    assert forgetting.detail.endswith("a drop of 4.0 points")


def test_rl_metrics_and_claim():
    it = [RLIteration(i, s, 0.5, 0.4, 10, 0, 0.5, 0, True) for i, s in enumerate((0.4, 0.3))]
    m = rl_metrics(RLConfig(method="grpo", seed=2), 0.35, it, seconds=1.0)
    assert m["curve"] == [0.35, 0.4, 0.3] and m["final"]["best_test_success"] == 0.4
    assert m["final"]["gain"] == pytest.approx(-0.05) and "train" not in m["config"]
    (claim,) = rl_claims(m)
    assert claim.paper.startswith("GRPO") and claim.paper_value == "-" and claim.holds is False
    assert claim.measured == "0.350 -> 0.400 -> 0.300" and (claim.seeds, claim.command) == ("2", "dvc repro rl")


def test_selskill_metrics_and_claim():
    stats = {"success": 0.5, "calls_per_episode": 1.0, "precision": None, "episodes": 4}
    before = {"free": {**stats, "success": 0.25}, "always": {**stats, "success": 0.4}, "never": stats,
              "warmup_never": stats, "init": {"steps": 0}}
    rounds = [SelSkillRound(0, {**stats, "precision": 1.0}, 0.5, 0.5, 1, 1, 1, 0, 0, True)]
    skills = [Experience("sk", "skill", "do it", family="f", utility=0.2, status="retired")]
    m = selskill_metrics(SelSkillConfig(), skills, before, rounds, seconds=1.0)
    assert m["curve"] == [0.25, 0.5] and m["library"] == {"f": {"skill": "sk", "status": "retired", "utility": 0.2}}
    (claim,) = selskill_claims(m)
    assert claim.holds is True and (claim.seeds, claim.command) == ("0", "dvc repro selskill")
    assert "precision 1.000 vs always n/a (no call attempted)" in claim.measured


def test_distill_metrics_and_claim_with_and_without_a_gap():
    its = [DistillIteration(0, 0.6, 0.5, 10, 0)]
    m = distill_metrics(DistillConfig(method="aopd", start="weak"), {"student_before": 0.5, "teacher": 0.9}, its, 1.0)
    assert m["final"]["gap_closed"] == pytest.approx(0.25) and m["config"]["lr"] == DistillConfig().train.lr
    (claim,) = distill_claims(m)
    assert claim.measured == "0.500 -> 0.600 (teacher 0.900): 25% of the gap" and claim.holds is True
    assert claim.paper_value.startswith("+4.09") and claim.command == "dvc repro distill"
    m = distill_metrics(DistillConfig(), {"student_before": 0.5, "teacher": 0.4}, its, 1.0)
    assert m["final"]["gap_closed"] is None and not math.isnan(m["curve"][-1])
    assert distill_claims(m)[0].measured.endswith("no gap: the teacher is not better")
