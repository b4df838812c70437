"""The phrasebook-wording claim: the same lessons in two wordings, judged by the seed rule."""

from __future__ import annotations

from distillery.train.wording import wording_claims


def _metrics(env_scores: list[float], neutral_scores: list[float]) -> dict:
    return {"env": "stage", "n_test": 120, "temperature": 0.7, "reworded": 4, "pool": ["a", "b", "c", "d"],
            "greedy": {"plain": 0.475, "environment": 0.658, "neutral": 0.5},
            "sampled": {str(i): {"plain": 0.47, "environment": e, "neutral": n}
                        for i, (e, n) in enumerate(zip(env_scores, neutral_scores, strict=True))}}


def test_wording_holds_when_the_arms_are_apart_by_more_than_two_seed_stds():
    (row,) = wording_claims(_metrics([0.70, 0.67, 0.64], [0.50, 0.52, 0.48]))
    assert row.holds is True and row.seeds == "sampling 0, 1, 2" and row.command == "dvc repro wording"
    assert row.measured.startswith("phrasebook 0.670 ± 0.030 vs neutral 0.500 ± 0.020")
    assert "greedy: phrasebook 0.658, neutral 0.500, plain 0.475" in row.detail


def test_wording_does_not_hold_within_the_spread():
    (row,) = wording_claims(_metrics([0.60, 0.70, 0.50], [0.58, 0.52, 0.55]))
    assert row.holds is False
