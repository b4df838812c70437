"""Writing a task-generation run into an output folder (`distillery tasks`) so that a failed
run never overwrites the last successful one.

A successful run writes, together, `tasks.parquet` (gated by the tasks suite),
`validation.json` (every rejection and why), and the gate's `quality/` and `quarantine/`,
then removes `failed/`. A failed run (a family that did not validate, or tasks that fail
their gate) writes only `failed/`: its `validation.json`, and the gate's `quality/` and
`quarantine/` when the gate failed. `failed/` holds the latest failed run only.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from distillery.io import write_json, write_parquet
from distillery.quality import SUITES, GateError, gate
from distillery.tasks.generate import GenerationResult
from distillery.types import tasks_to_frame

TASKS_FILE = "tasks.parquet"
VALIDATION_FILE = "validation.json"
FAILED_FOLDER = "failed"


class TasksGateFailed(GateError):
    """The generated tasks fail their gate; the run's reports are under `.failed`."""

    def __init__(self, message: str, failed: Path) -> None:
        super().__init__(message)
        self.failed = failed

    def __reduce__(self):  # keep `.failed` when pickled across a process pool
        return (type(self), (str(self), self.failed))


@dataclass(frozen=True)
class Published:
    """A successful run: its files, the tasks as written, and the earlier failed run's folder
    it removed (None if there was none)."""

    tasks: Path
    validation: Path
    frame: pl.DataFrame
    removed_failed: Path | None


def previous_run(folder: str | Path) -> str:
    """What a failed run leaves in `folder`: the last successful run's tasks, unchanged, or none."""
    tasks = Path(folder) / TASKS_FILE
    if tasks.exists():
        return f"{tasks} and the reports beside it are the last successful run's, unchanged"
    return f"no {tasks} written"


def clear_failed(folder: str | Path) -> bool:
    """Remove `folder/failed/` (a link is removed, never followed); whether there was one."""
    failed = Path(folder) / FAILED_FOLDER
    if failed.is_dir() and not failed.is_symlink():
        shutil.rmtree(failed)
    elif failed.exists() or failed.is_symlink():
        failed.unlink()
    else:
        return False
    return True


def record_failure(result: GenerationResult, folder: str | Path) -> Path:
    """A run whose families did not validate: its `validation.json` under `folder/failed/`
    (replacing an earlier failed run's); returns that file."""
    clear_failed(folder)
    return write_json(result.validation_report(), Path(folder) / FAILED_FOLDER / VALIDATION_FILE)


def publish(result: GenerationResult, folder: str | Path) -> Published:
    """Gate `result.tasks` and write them into `folder` (module docstring). Raises
    `TasksGateFailed` when the gate fails, with nothing in `folder` changed but `failed/`."""
    folder = Path(folder)
    frame = tasks_to_frame(result.tasks)
    source = str(folder / TASKS_FILE)
    # A gate's reports name the folders they were written to, so they cannot be moved after
    # the fact: a dry gate first decides, then the real one writes where its verdict belongs.
    with tempfile.TemporaryDirectory() as dry:
        passes = gate(frame, SUITES["tasks"], source=source, report_dir=Path(dry) / "quality",
                      quarantine_dir=Path(dry) / "quarantine", raise_on_failure=False).success
    if not passes:
        failed = record_failure(result, folder).parent
        try:
            gate(frame, SUITES["tasks"], source=source, report_dir=failed / "quality",
                 quarantine_dir=failed / "quarantine")
        except GateError as e:
            raise TasksGateFailed(f"the generated tasks fail their gate: {e}", failed) from e
    gate(frame, SUITES["tasks"], source=source, report_dir=folder / "quality", quarantine_dir=folder / "quarantine")
    tasks = write_parquet(frame, folder / TASKS_FILE)
    validation = write_json(result.validation_report(), folder / VALIDATION_FILE)
    return Published(tasks, validation, frame, folder / FAILED_FOLDER if clear_failed(folder) else None)
