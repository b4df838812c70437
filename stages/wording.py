"""Stage `wording`: the mined pool in the environment's phrasebook words against the same
lessons in neutral words, injected into the warm-up model (`train.wording`).

Reads the tasks, `data/experience/principles.jsonl`, the model and the injection settings of
`params.yaml:internalize`; writes `reports/details/wording.json`, its headline `metrics/wording.json` and
`reports/claims/wording.json`.
"""

from __future__ import annotations

import sys
import time

from distillery.config import exit_on_config_error, load_section
from distillery.evaluate.headline import WORDING, pick
from distillery.io import read_parquet, write_json
from distillery.mining.store import read_pool
from distillery.train.internalize import InternalizeConfig
from distillery.train.wording import wording_claims, wording_effect
from distillery.types import tasks_from_frame
from stages.usage import take_no_options


def main(argv: list[str] | None = None) -> int:
    take_no_options("wording", __doc__, argv)
    cfg = load_section(InternalizeConfig, "internalize")
    t0 = time.perf_counter()
    tasks = tasks_from_frame(read_parquet("data/tasks/tasks.parquet", "tasks"))
    pool = read_pool("data/experience/principles.jsonl")
    metrics = wording_effect(cfg, tasks, pool)
    metrics["seconds"] = round(time.perf_counter() - t0, 1)
    write_json(metrics, "reports/details/wording.json")
    write_json(pick(metrics, WORDING), "metrics/wording.json")
    write_json([c.to_dict() for c in wording_claims(metrics)], "reports/claims/wording.json")
    g = metrics["greedy"]
    print(f"wording: greedy phrasebook {g['environment']:.3f}, neutral {g['neutral']:.3f}, plain {g['plain']:.3f} "
          f"({metrics['reworded']} of {len(pool)} lessons reworded; {metrics['seconds']} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_config_error("python -m stages.wording", main, sys.argv[1:]))
