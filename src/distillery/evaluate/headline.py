"""Headline metrics: the few flat, stable numbers of a stage that `dvc metrics show` and
`dvc exp show` print. A stage writes its full record to `reports/details/<stage>.json`
(what its report, its claims and the grids read) and these numbers to `metrics/<stage>.json`.

Names mean the same thing in every track: `success` is the final greedy success on the
stage's test tasks, `success_start` the same before the stage trained, `gain` their
difference, `teacher` a reference model's success, `error` a simulation error, `loss` a
held-out loss, `seconds` the stage's wall time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

MAX_VALUES = 12


def pick(record: Mapping[str, Any], paths: Mapping[str, str]) -> dict[str, float | None]:
    """{name: the number at dotted `path` of `record`} for each (name, path); None stays None
    (not measured), NaN becomes None. A path missing from the record is an error naming it."""
    if len(paths) > MAX_VALUES:
        raise ValueError(f"a headline holds at most {MAX_VALUES} values, not {len(paths)}: {sorted(paths)}")
    out: dict[str, float | None] = {}
    for name, path in paths.items():
        node: Any = record
        for key in path.split("."):
            if not isinstance(node, Mapping) or key not in node:
                raise KeyError(f"headline {name!r}: {path!r} is not in the record (no {key!r})")
            node = node[key]
        out[name] = number(node, f"headline {name!r} ({path})")
    return out


def number(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{where}: {value!r} is not a number")
    return None if math.isnan(value) else round(float(value), 6)


def count_leaves(obj: Any) -> int:
    """How many values `dvc metrics show` prints for a JSON-like object."""
    if isinstance(obj, Mapping):
        return sum(count_leaves(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(count_leaves(v) for v in obj)
    return 1


TRAINING = {"loss": "eval_loss", "tokens_per_s": "tokens_per_s", "seconds": "wall_s"}
MINE = {"success": "success", "principles": "principles", "instances": "instances",
        "skills_active": "skills_active", "seconds": "seconds"}
INTERNALIZE = {"success_start": "before.heldout_plain", "success": "final.heldout_plain",
               "success_with_experience": "final.heldout_with_experience", "teacher": "before.heldout_with_experience",
               "others_start": "before.others_with_principles", "others": "final.others_with_principles",
               "seconds": "seconds"}
WORDING = {"success_start": "greedy.plain", "success_phrasebook": "greedy.environment",
           "success_neutral": "greedy.neutral", "seconds": "seconds"}
RL = {"success_start": "before.test_success", "success": "final.test_success", "gain": "final.gain",
      "best_success": "final.best_test_success", "seconds": "seconds"}
DISTILL = {"success_start": "before.student_before", "success": "final.test_success", "teacher": "final.teacher",
           "gap_closed": "final.gap_closed", "seconds": "seconds"}
SQL_RL = {"success_start": "before.validation_accuracy", "success": "final.validation_accuracy",
          "gain": "final.gain", "seconds": "seconds"}
SELSKILL = {"success": "final.selskill.success", "success_always": "final.always.success",
            "success_never": "final.never.success", "precision": "final.selskill.precision",
            "calls_per_episode": "final.selskill.calls_per_episode", "seconds": "seconds"}


def benchmark_headline(details: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> dict[str, float | None]:
    """`success_<policy>` and `valid_<policy>` (share of valid actions) over every family."""
    out: dict[str, float | None] = {}
    for policy, families in sorted(details.items()):
        out[f"success_{policy}"] = number(families["all"]["success_rate"], f"benchmark {policy}")
        out[f"valid_{policy}"] = number(families["all"]["validity_rate"], f"benchmark {policy}")
    if len(out) > MAX_VALUES:
        raise ValueError(f"the benchmark headline holds at most {MAX_VALUES} values ({len(details)} policies)")
    return out


PGHS_ERRORS = {"error": "pghs", "error_reasoning_only": "reasoning_only", "error_fitting_only": "fitting_only"}


def pghs_headline(summary: Mapping[str, Any]) -> dict[str, float | None]:
    """The held-out merchants' error of the fused simulator and of the two single-branch
    baselines on the headline target (the ablations are in the record), and the fused one's
    ranking of candidate strategies."""
    head = summary["headline_target"]
    out = {name: number(summary["errors"][m]["test_merchants"][head]["mean"], f"pghs {m}")
           for name, m in PGHS_ERRORS.items()}
    if summary.get("ranking"):
        out["spearman"] = number(summary["ranking"]["pghs"]["spearman"]["mean"], "pghs spearman")
    out["seconds"] = number(summary.get("seconds", math.nan), "pghs seconds")
    return out


def sql_headline(record: Mapping[str, Any], start: str = "sql_warmup", final: str = "sql_rl") -> dict[str, float | None]:
    """The SQL evaluation's headline: the final student's execution accuracy on the test split
    (`success`) and on held-out databases, the warm-up's (`success_start`), the gain, the mean
    over real databases and the seconds (the rest is in the details). A student not evaluated is None."""
    def acc(part: str, policy: str) -> float | None:
        row = record.get(part, {}).get(policy)
        return number(row["accuracy"], f"sql {part} {policy}") if row else None

    out = {"success": acc("test", final), "success_start": acc("test", start),
           "success_heldout": acc("heldout", final)}
    out["gain"] = None if out["success"] is None or out["success_start"] is None else \
        round(out["success"] - out["success_start"], 6)
    real = record.get("real", {}).get(final) or {}
    accs = [v["accuracy"] for v in real.values() if isinstance(v, Mapping) and "accuracy" in v]
    out["success_real"] = number(sum(accs) / len(accs), "sql real") if accs else None
    out["seconds"] = number(record.get("seconds"), "sql seconds")
    return out
