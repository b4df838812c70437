"""POPE's and CHAIR's definitions, worked by hand; the paired comparisons."""

from __future__ import annotations

import pytest

from distillery.evaluate.headline import MAX_VALUES
from distillery.vision.evaluate import chair, parse_yes_no, pope_metrics
from distillery.vision.run import HEADLINE, eval_headline, grid_points, paired, prior_check
from distillery.vision.train import train_headline


def test_parse_yes_no_follows_pope():
    assert parse_yes_no("yes .") == "yes"
    assert parse_yes_no("no") == "no"
    assert parse_yes_no("There is not a circle.") == "no"
    assert parse_yes_no("Yes. No circles were harmed") == "yes"      # only the first sentence counts
    assert parse_yes_no("") == "yes"
    assert parse_yes_no("nothing") == "yes"                          # words, not substrings


def test_pope_metrics_by_hand():
    labels = ["yes", "yes", "yes", "no", "no", "no", "no", "no"]
    answers = ["yes", "yes", "no", "yes", "no", "no", "no", "yes"]
    m = pope_metrics(labels, answers)
    # tp 2, fn 1, fp 2, tn 3
    assert m["accuracy"] == pytest.approx(5 / 8)
    assert m["precision"] == pytest.approx(2 / 4)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert m["yes_ratio"] == pytest.approx(4 / 8)
    with pytest.raises(ValueError):
        pope_metrics(["yes"], [])


def test_chair_by_hand():
    caps = ["a red circle , a blue square and a green star .", "a white ring and a white ring ."]
    truths = [{"circle", "square"}, {"ring", "moon"}]
    m = chair(caps, truths)
    # mentions: circle square star | ring ring -> 5; hallucinated: star -> 1
    assert m["chair_i"] == pytest.approx(1 / 5)
    assert m["chair_s"] == pytest.approx(1 / 2)
    assert m["recall"] == pytest.approx(3 / 4)                      # circle, square, ring of 4


def test_grid_points_keep_the_defaults_first():
    pts = grid_points({"alpha": [1.0, 0.5], "beta": [0.2, 0.1]})
    assert pts[0] == {"alpha": 1.0, "beta": 0.2} and len(pts) == 4


def _run(train_seed, noise_seed, adv, chair_i, rnd=0.9):
    return {"train_seed": train_seed, "noise_seed": noise_seed,
            "pope": {"adversarial": {"accuracy": adv}, "random": {"accuracy": rnd}, "popular": {"accuracy": rnd}},
            "chair": {"chair_i": chair_i}}


def test_paired_differences_favour_the_first_method_when_positive():
    runs = {"pnd": [_run(0, 0, 0.80, 0.10), _run(1, 0, 0.82, 0.20)],
            "greedy": [_run(1, 0, 0.80, 0.25), _run(0, 0, 0.75, 0.20)]}
    assert paired(runs, "pnd", "greedy", "adversarial") == pytest.approx([0.05, 0.02])
    assert paired(runs, "pnd", "greedy", "chair_i") == pytest.approx([0.10, 0.05])


def test_prior_check_uses_two_seed_stds():
    runs = {"trained": {"greedy": [_run(s, 0, a, 0.1, rnd=0.9) for s, a in ((0, 0.80), (1, 0.81), (2, 0.79))]},
            "weak": {"greedy": [_run(s, 0, 0.89, 0.1, rnd=0.9) for s in range(3)]}}
    p = prior_check(runs)
    assert p["trained"]["gap"] == pytest.approx(0.10) and p["trained"]["visible"]
    assert not p["weak"]["visible"] or p["weak"]["gap"] > 0


def _entry(adv: float, chair_i: float) -> dict:
    ms = lambda v: {"mean": v, "std": 0.0, "runs": [v]}       # noqa: E731
    return {ps: {"accuracy": ms(adv + (0.1 if ps == "random" else 0.0))} for ps in ("random", "popular", "adversarial")} \
        | {"chair": {"chair_i": ms(chair_i)}}


def test_eval_headline_picks_the_test_means_and_marks_methods_not_run():
    table = {"greedy": _entry(0.70, 0.30), "pnd": _entry(0.75, 0.20)}      # VCD not run
    metrics = {"table": {"trained": table, "weak": table}, "seconds": {"total": 12.5}}
    h = eval_headline(metrics)
    assert list(h) == list(HEADLINE) and len(h) <= MAX_VALUES
    assert h["pope_adv_greedy"] == 0.7
    assert h["pope_adv_pnd"] == 0.75 and h["chair_i_pnd"] == 0.2 and h["weak_pope_adv_pnd"] == 0.75
    assert h["pope_adv_vcd"] is None and h["seconds"] == 12.5


def test_train_headline_means_the_vlms_held_out_loss():
    details = {"models": [{"kind": "vlm", "eval_loss": 0.2, "steps": 900}, {"kind": "vlm", "eval_loss": 0.4, "steps": 900},
                          {"kind": "itm", "steps": 1000}], "seconds": 60.0}
    assert train_headline(details) == {"loss": pytest.approx(0.3), "steps": 900.0, "seconds": 60.0}
    with pytest.raises(ValueError, match="no VLM"):
        train_headline({"models": [{"kind": "itm", "steps": 1}], "seconds": 1.0})
