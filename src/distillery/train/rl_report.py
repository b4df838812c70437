"""What the rl stage reports: the metrics record of a run and its claim beside the paper."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from distillery.train.rl import RLConfig, RLIteration
from distillery.types import Claim

PAPERS = {"grpo": "GRPO (DeepSeekMath, arXiv 2402.03300)", "gigpo": "GiGPO (arXiv 2505.10978)",
          "siri": "SIRI (arXiv 2606.02355)"}
PAPER_VALUES = {"gigpo": "ALFWorld: above GRPO by more than 12 points", "siri": "ALFWorld 0.908 -> 0.930 (over GiGPO)"}


def rl_metrics(cfg: RLConfig, before: float, results: Sequence[RLIteration], seconds: float) -> dict[str, Any]:
    """`reports/details/rl.json`: greedy test success before and after every iteration, each
    iteration's record and the config (its training loop's apart)."""
    curve = [before] + [r.test_success for r in results]
    return {
        "method": cfg.method, "seed": cfg.seed,
        "before": {"test_success": before},
        "iterations": [asdict(r) for r in results],
        "final": {"test_success": curve[-1], "best_test_success": max(curve[1:]), "gain": curve[-1] - before},
        "curve": curve,
        "config": {k: v for k, v in asdict(cfg).items() if k != "train"},
        "seconds": seconds,
    }


def rl_claims(m: dict[str, Any], command: str = "dvc repro rl") -> list[Claim]:
    """One run (`rl_metrics`: one method, one seed) beside the paper, reproduced by `command`;
    the comparisons between methods, over seeds, are the objectives grid's
    (`evaluate.objectives_grid`)."""
    curve = m["curve"]
    return [Claim(
        paper=PAPERS[m["method"]],
        finding=f"{m['method']} raises the held-out user's test success above the warm-up model's",
        paper_value=PAPER_VALUES.get(m["method"], "-"),
        measured=" -> ".join(f"{c:.3f}" for c in curve),
        holds=bool(curve[-1] > curve[0]),
        detail=f"greedy success before and after each of {len(curve) - 1} iterations, seed {m['seed']}; "
               "one seed: spread is the grid's",
        seeds=str(m["seed"]), command=command,
    )]
