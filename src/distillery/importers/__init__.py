"""Importers: agent logs users bring -> the project's tasks, episodes and steps, gated.

Two formats: OpenAI chat JSONL (the fine-tuning format, with a documented `metadata` block or
a side file for the task id and outcome; `openai_jsonl`) and inspect_ai eval logs (read
through `inspect_ai.log`'s API; `inspect_log`). Every record is judged against the import
rules (`quality.import_suites.IMPORT_RULES`, gated by its `IMPORT_RECORDS` suite); nothing is
dropped silently and the inputs are only read (`core`). Imported trajectories cannot be replayed: they feed the
warm-up, mining and off-policy internalization, and `offline.next_action_accuracy` scores a
model on them. docs/importing.md has the formats, the rules and the command line.

    from distillery.importers import ImportConfig, import_logs
    result = import_logs("inspect", ["logs/"], "data/imports/inspect", ImportConfig(env="stage"))
"""

from distillery.importers.core import (
    ImportConfig,
    ImportedLogs,
    ImportResult,
    import_logs,
    input_files,
    judge,
)
from distillery.importers.offline import AccuracyResult, held_out_tasks, next_action_accuracy

__all__ = ["AccuracyResult", "ImportConfig", "ImportResult", "ImportedLogs", "held_out_tasks",
           "import_logs", "input_files", "judge", "next_action_accuracy"]
