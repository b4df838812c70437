"""Stage `tasks`: generate STAGE tasks from the family hints, validate them, gate them.

Reads `params.yaml:tasks`; writes `data/tasks/tasks.parquet` (kept tasks, both splits) and
`data/tasks/validation.json` (kept and rejected counts, with every rejection's reasons, the
family check's plan and each family's result). A family that fails validation fails the
stage, but `validation.json` is written first, with each failing family's reasons.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from distillery.config import TasksConfig, load_section
from distillery.io import write_json, write_parquet
from distillery.quality import SUITES, GateError, gate
from distillery.tasks.generate import GenerationResult, ValidationFailed, generate_tasks
from distillery.types import tasks_to_frame

OUT = "data/tasks/tasks.parquet"
VALIDATION = "data/tasks/validation.json"
REPORTS = "reports/quality/tasks"
QUARANTINE = "data/quarantine/tasks"


def _write_validation(result: GenerationResult, seconds: float) -> dict:
    report = dict(result.report)
    report["seconds"] = round(seconds, 2)
    report["rejected"] = [
        {"task_id": r.task_id, "family": r.family, "split": r.split, "reasons": r.reasons}
        for r in result.rejected
    ]
    write_json(report, VALIDATION)
    return report


def main() -> int:
    cfg = load_section(TasksConfig, "tasks")
    t0 = time.perf_counter()
    try:
        result = generate_tasks(cfg)
    except ValidationFailed as e:
        # The reasons are what a person needs to fix the family: record them, then fail.
        _write_validation(e.result, time.perf_counter() - t0)
        print(f"{e}\n-> {VALIDATION}", file=sys.stderr)
        return 1
    frame = tasks_to_frame(result.tasks)
    Path(QUARANTINE).mkdir(parents=True, exist_ok=True)  # a declared out, even when empty
    try:
        gate(frame, SUITES["tasks"], source=OUT, report_dir=REPORTS, quarantine_dir=QUARANTINE)
    except GateError as e:
        print(e, file=sys.stderr)
        return 1
    write_parquet(frame, OUT)
    report = _write_validation(result, time.perf_counter() - t0)
    counts = frame.group_by("split").len().sort("split").rows()
    print(f"tasks: kept {dict(counts)}, rejected {len(result.rejected)} "
          f"in {report['seconds']} s -> {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
