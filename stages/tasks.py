"""Stage `tasks`: generate an environment's tasks from its family hints, validate them, gate them.

    python -m stages.tasks [--track NAME]

Reads `params.yaml:tasks`; writes `data/tasks/tasks.parquet` (kept tasks, both splits) and
`data/tasks/validation.json` (kept and rejected counts, with every rejection's reasons, the
family check's plan and each family's result). A family that fails validation fails the
stage, but `validation.json` is written first, with each failing family's reasons. With
`--track twx` the section is `twx_tasks` and the files are under `data/twx/` (stages/track.py).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from distillery.config import TasksConfig, exit_on_config_error
from distillery.io import write_json, write_parquet
from distillery.quality import SUITES, GateError, gate
from distillery.tasks.generate import GenerationResult, ValidationFailed, generate_tasks
from distillery.types import tasks_to_frame
from stages.track import Track, track_parser

OUT = "data/tasks/tasks.parquet"
VALIDATION = "data/tasks/validation.json"
REPORTS = "reports/quality/tasks"
QUARANTINE = "data/quarantine/tasks"


def _write_validation(result: GenerationResult, seconds: float, path: Path) -> dict:
    report = result.validation_report(seconds=round(seconds, 2))
    write_json(report, path)
    return report


def main(argv: list[str] | None = None) -> int:
    ap = track_parser("tasks", __doc__)
    track = Track(ap.parse_args([] if argv is None else argv).track)   # main() alone: the agent track
    out, validation = track.path(OUT), track.path(VALIDATION)
    reports, quarantine = track.path(REPORTS), track.path(QUARANTINE)
    cfg = track.load(TasksConfig, "tasks")
    t0 = time.perf_counter()
    try:
        result = generate_tasks(cfg, attempts_hint=f"{track.section('tasks')}.max_attempts_factor")
    except ValidationFailed as e:
        # The reasons are what a person needs to fix the family: record them, then fail.
        _write_validation(e.result, time.perf_counter() - t0, validation)
        print(f"{e}\n-> {validation}", file=sys.stderr)
        return 1
    frame = tasks_to_frame(result.tasks)
    quarantine.mkdir(parents=True, exist_ok=True)  # a declared out, even when empty
    try:
        gate(frame, SUITES["tasks"], source=str(out), report_dir=reports, quarantine_dir=quarantine)
    except GateError as e:
        print(e, file=sys.stderr)
        return 1
    write_parquet(frame, out)
    report = _write_validation(result, time.perf_counter() - t0, validation)
    counts = frame.group_by("split").len().sort("split").rows()
    print(f"tasks: kept {dict(counts)}, rejected {len(result.rejected)} "
          f"in {report['seconds']} s -> {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_config_error("python -m stages.tasks", main, sys.argv[1:]))
