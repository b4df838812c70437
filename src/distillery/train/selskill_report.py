"""What the selskill stage reports: the metrics record of a run and its claim beside the paper."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from distillery.train.selskill import SelSkillConfig, SelSkillRound, skill_library
from distillery.types import Claim, Experience

PAPER = "SelSkill (arXiv 2606.00510)"


def precision_text(x: float | None) -> str:
    return "n/a (no call attempted)" if x is None else f"{x:.3f}"


def selskill_metrics(cfg: SelSkillConfig, skills: Sequence[Experience], before: dict[str, Any],
                     rounds: Sequence[SelSkillRound], seconds: float) -> dict[str, Any]:
    """`reports/details/selskill.json`: the library offered, the starting policy never / always
    invoking / deciding (`before`), then the trained policy after every round."""
    library = skill_library(skills, include_retired=cfg.include_retired)
    return {
        "seed": cfg.seed,
        "library": {fam: {"skill": s.exp_id, "status": s.status, "utility": s.utility} for fam, s in library.items()},
        "before": before,
        "curve": [before["free"]["success"]] + [r.test["success"] for r in rounds],
        "rounds": [asdict(r) for r in rounds],
        "final": {"selskill": rounds[-1].test, "always": before["always"], "never": before["never"],
                  "warmup_never": before["warmup_never"]},
        "config": asdict(cfg),
        "seconds": seconds,
    }


def selskill_claims(m: dict[str, Any]) -> list[Claim]:
    """One run (`selskill_metrics`, one seed) beside the paper's finding; the spread over
    seeds is the objectives grid's."""
    f = m["final"]
    sel, always = f["selskill"], f["always"]
    return [Claim(
        paper=PAPER,
        finding="selskill: success and execution precision over always-invoke",
        paper_value="ALFWorld Qwen3-8B: success 75.8% -> 86.7%, precision 70.9% -> 100%",
        measured=f"success {sel['success']:.3f} vs always {always['success']:.3f} (never {f['never']['success']:.3f}); "
                 f"precision {precision_text(sel['precision'])} vs always {precision_text(always['precision'])}; "
                 f"calls/episode {sel['calls_per_episode']:.2f} vs {always['calls_per_episode']:.2f}",
        holds=bool(sel["success"] > always["success"]),
        detail=f"greedy on the test split after {len(m['rounds'])} DPO rounds, seed {m['seed']}; always-invoke's "
               "calls are the harness's (valid by construction), so its precision counts only calls the "
               "policy wrote; one seed: spread is the grid's",
        seeds=str(m["seed"]), command="dvc repro selskill",
    )]
