"""What the distill stage reports: the metrics record of a run and its claim beside the paper."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from distillery.train.distill import DistillConfig, DistillIteration, gap_closed
from distillery.types import Claim

PAPERS = {"gkd": "GKD (arXiv 2306.13649; TRL)", "opd": "On-policy distillation (Thinking Machines, 2025)",
          "aopd": "AOPD (arXiv 2605.06387)", "scope": "SCOPE (arXiv 2604.10688)"}
PAPER_VALUES = {"aopd": "+4.09 (strong) / +8.34 (weak) points over OPD", "scope": "+11.42% rel. Avg@32 over OPD"}


def distill_metrics(cfg: DistillConfig, refs: dict[str, float], results: Sequence[DistillIteration],
                    seconds: float) -> dict[str, Any]:
    """`reports/details/distill.json`: the student's greedy test success before and after every
    iteration, the teacher's, and the share of the gap between them closed."""
    curve = [refs["student_before"]] + [r.test_success for r in results]
    closed = gap_closed(curve[0], curve[-1], refs["teacher"])
    return {
        "method": cfg.method, "start": cfg.start, "seed": cfg.seed,
        "before": refs, "curve": curve,
        "iterations": [asdict(r) for r in results],
        "final": {"test_success": curve[-1], "teacher": refs["teacher"],
                  # None when the teacher is no better than the student: there is no gap
                  "gap_closed": closed if math.isfinite(closed) else None},
        "config": {**{k: v for k, v in asdict(cfg).items() if k != "train"}, "lr": cfg.train.lr},
        "seconds": seconds,
    }


def distill_claims(m: dict[str, Any]) -> list[Claim]:
    """One run (`distill_metrics`: one method, start and seed) beside the paper; the
    comparisons between methods, over seeds, are the objectives grid's."""
    f = m["final"]
    closed = f["gap_closed"]
    return [Claim(
        paper=PAPERS[m["method"]],
        finding=f"{m['method']} closes part of the student-teacher gap ({m['start']} start)",
        paper_value=PAPER_VALUES.get(m["method"], "-"),
        measured=f"{m['curve'][0]:.3f} -> {f['test_success']:.3f} (teacher {f['teacher']:.3f}): "
                 + (f"{100 * closed:.0f}% of the gap" if closed is not None else "no gap: the teacher is not better"),
        holds=bool(closed is not None and closed > 0),
        detail=f"greedy success on the test split, {len(m['curve']) - 1} iterations, seed {m['seed']}; "
               "one seed: spread is the grid's",
        seeds=str(m["seed"]), command="dvc repro distill",
    )]
