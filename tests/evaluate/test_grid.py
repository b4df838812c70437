"""The internalization grid's pure pieces: cells, names, per-run numbers, paired verdicts."""

from __future__ import annotations

import pytest

from distillery.evaluate.grid import (
    Cell,
    cells,
    claim_rows,
    exp_name,
    markdown,
    parse_exp_name,
    plot,
    run_numbers,
    verdict,
)


def record(plain: list[float], taught: list[float], teacher: float, plain_s: float = 0.5,
           others: tuple[float, float] = (0.8, 0.78)) -> dict:
    """A reports/details/internalize.json as the stage writes it (only what the grid reads)."""
    return {
        "before": {"heldout_plain": plain[0], "heldout_with_experience": taught[0],
                   "others_with_principles": others[0],
                   "sampled": {"0": {"plain": plain_s, "with_experience": teacher},
                               "1": {"plain": plain_s, "with_experience": teacher + 0.02}}},
        "iterations": [{"iteration": i, "success_plain": p, "success_with_experience": t}
                       for i, (p, t) in enumerate(zip(plain[1:], taught[1:], strict=True))],
        "final": {"others_with_principles": others[1]},
        "seconds": 12.0,
    }


def test_eight_cells_with_names_that_round_trip():
    cs = cells()
    assert len(cs) == 8 and len({c.label for c in cs}) == 8
    assert cs[0] == Cell("principle", "stepwise", "off_policy")
    for c in cs:
        name = exp_name(c, 2, "t1")
        assert parse_exp_name(name, "t1") == (c, 2)
        assert parse_exp_name(name, "other") is None
    assert parse_exp_name("ig-t1-pr-sw-off-sx", "t1") is None
    assert cs[0].overrides(1) == ["internalize.granularity=principle", "internalize.injection=stepwise",
                                  "internalize.regime=off_policy", "internalize.seed=1"]


def test_run_numbers_gain_worst_drop_and_forgetting():
    r = run_numbers(record([0.5, 0.4, 0.6, 0.55], [0.3, 0.3, 0.5, 0.5], teacher=0.6))
    assert r.plain_curve == (0.5, 0.4, 0.6, 0.55)
    assert r.gain == pytest.approx(0.05)
    assert r.worst_drop == pytest.approx(0.1)
    assert r.teacher_sampled == pytest.approx(0.61)
    assert r.forgetting == pytest.approx(0.02)
    assert run_numbers(record([0.5, 0.6], [0.5, 0.6], 0.5)).worst_drop == 0.0
    with pytest.raises(ValueError, match="internalize metrics"):
        run_numbers({"before": {}})


def test_verdict_is_the_paired_rule():
    assert verdict([0.1, 0.12, 0.08])[0] is True           # margin 0.10 > std 0.02
    assert verdict([0.3, -0.2, 0.1])[0] is False           # margin 0.067 < std 0.25
    assert verdict([-0.1, -0.1])[0] is False
    assert verdict([0.1])[0] is None


def test_claim_rows_pair_runs_on_the_other_axes_and_seed():
    runs = {}
    for c in cells():
        for seed in (0, 1):
            # principles gain 0.1 over iterations, instances lose 0.1; step-wise teachers are
            # better by 0.2; on-policy dips by 0.3 in the middle.
            g = 0.1 if c.granularity == "principle" else -0.1
            dip = 0.3 if c.regime == "on_policy" else 0.0
            teacher = (0.7 if c.injection == "stepwise" else 0.5) + 0.01 * seed
            runs[(c, seed)] = run_numbers(record([0.5, 0.5 - dip, 0.5 + g], [0.5, 0.5, 0.5], teacher))
    rows = claim_rows(runs)
    by = {r.finding: r for r in rows}
    assert by["principles are more durable than instances over iterations"].holds is True
    assert by["step-wise beats global injection"].holds is True
    assert by["off-policy distillation is more stable than on-policy"].holds is True
    assert "over 8 pairs" in by["step-wise beats global injection"].detail
    assert sum(r.finding.startswith("cell ") for r in rows) == 8
    # A cell without runs is said to be missing, not dropped.
    del runs[(cells()[-1], 0)], runs[(cells()[-1], 1)]
    missing = [r for r in claim_rows(runs) if r.finding == f"cell {cells()[-1].label}"]
    assert missing[0].measured == "no finished run"


def test_report_and_plot(tmp_path):
    runs = {(c, s): run_numbers(record([0.5, 0.55, 0.6], [0.4, 0.5, 0.6], 0.6)) for c in cells() for s in (0, 1, 2)}
    md = markdown(runs, "# grid", "grid.png")
    assert md.count("\n| principle/") == 12 and md.count("\n| instance/") == 12 and "![" in md
    plot(runs, str(tmp_path / "g.png"))
    assert (tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG"
