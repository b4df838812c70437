"""Judging records, building trajectories, and the import's output folder.

    result = import_logs("openai", ["logs/run1.jsonl"], "data/imports/run1", ImportConfig())

reads every record (`openai_jsonl`, `inspect_log`), judges it against the import rules
(`quality.import_suites.IMPORT_RULES`), gates the records with `quality.import_suites.IMPORT_RECORDS` and the
kept trajectories with the project's own `episodes` and `steps` suites, and writes the folder:

    tasks.parquet  episodes.parquet  steps.parquet   the project's schemas: ready to mine, warm up on
    tools.json          the tool definitions the records declared, by toolset key
    records.parquet     every record read, kept or not, with its provenance and findings
    rejects.parquet     one row per broken rule of a record: file, record, kind, reason
    summary.json        counts by file, verdict and rule (a function of the two tables above)
    quality/  quarantine/   the gates' reports and quarantined rows

An import adds to what the folder holds: a record kept before (the same episode id and
content) is skipped; one rejected before is judged again, and its rows replaced when the verdict
or its reasons changed (other options, another task table). Importing the same files again with
the same options changes nothing. Inputs are only read.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from distillery.envs.base import env_names, tool_specs
from distillery.evaluate.failures import classify_failure
from distillery.importers.openai_jsonl import SideFile, read_openai, read_outcomes
from distillery.importers.records import (
    Analysis,
    Outcome,
    RawRecord,
    analyse,
    episode_id,
    normalise,
    toolset_key,
)
from distillery.io import error_line, json_error, write_json, write_parquet
from distillery.quality import SUITES, GateError, gate
from distillery.quality.import_suites import (
    IMPORT_RECORD_SCHEMA,
    IMPORT_RECORDS,
    IMPORT_REJECT_SCHEMA,
    IMPORT_RULE_KINDS,
    IMPORT_RULES,
    IMPORTED_TASKS,
    expected_verdict,
)
from distillery.types import (
    Episode,
    Step,
    Task,
    ToolCall,
    episodes_to_frame,
    steps_to_frame,
    tasks_from_frame,
    tasks_to_frame,
)

FORMATS = {"openai": (".jsonl",), "inspect": (".eval", ".json")}
OUTCOMES_SUFFIX = ".outcomes.jsonl"
TEST_SPLITS = ("test", "heldout_test")
RULE_TEXT = dict(IMPORT_RULES)
OUTPUTS = ("tasks.parquet", "episodes.parquet", "steps.parquet", "tools.json", "records.parquet",
           "rejects.parquet", "summary.json")


DEFAULT_CONTEXT = 8192   # the context check's bound when no student says its own


@dataclass
class ImportConfig:
    """How records are judged. Every field has a CLI option of the same name."""

    env: str = "imported"             # the environment of records whose metadata names none
    assume_success: bool = False      # a record with no outcome counts as a success
    scorer: str = ""                  # inspect: the score to read ('' = the only one, or the first)
    max_context_tokens: int = DEFAULT_CONTEXT   # the student's context: longer episodes are rejected; 0 = no check
    tokenizer: str = ""               # count tokens with this tokenizer (a model dir); '' = estimate
    chars_per_token: float = 4.0      # the estimate without a tokenizer
    policy: str = "imported"          # the policy name episodes record when the record names none
    min_score: float = 0.0            # the reward filter: a lower score is rejected (0 = keep every score)

    def __post_init__(self) -> None:
        if self.max_context_tokens < 0:
            raise ValueError("max_context_tokens must be >= 0 (0 turns the check off)")
        if self.chars_per_token <= 0:
            raise ValueError("chars_per_token must be > 0")
        if not 0 <= self.min_score <= 1:
            raise ValueError(f"min_score must be in [0, 1], got {self.min_score}")


# ---------------------------------------------------------------------------------------
# The output folder
# ---------------------------------------------------------------------------------------


def _empty(schema: dict[str, pl.DataType]) -> pl.DataFrame:
    return pl.DataFrame(schema=schema)


@dataclass
class ImportedLogs:
    """What an import folder holds (empty frames for a new folder)."""

    tasks: pl.DataFrame
    episodes: pl.DataFrame
    steps: pl.DataFrame
    records: pl.DataFrame
    rejects: pl.DataFrame
    tools: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @classmethod
    def empty(cls) -> ImportedLogs:
        return cls(tasks_to_frame([]), episodes_to_frame([]), steps_to_frame([]),
                   _empty(IMPORT_RECORD_SCHEMA), _empty(IMPORT_REJECT_SCHEMA), {})

    @classmethod
    def read(cls, out_dir: str | Path, option: str = "--out") -> ImportedLogs:
        """The folder's content; a new folder reads as empty. A folder an import did not write
        (some files, not all) is refused rather than overwritten; `option` is the command-line
        option that named the folder, for the advice."""
        out = Path(out_dir)
        present = [n for n in OUTPUTS if (out / n).exists()]
        if not present:
            return cls.empty()
        missing = [n for n in OUTPUTS if n not in present]
        if missing:
            raise ValueError(f"{out} holds {', '.join(present)} but not {', '.join(missing)}: not a complete "
                             "import folder (a first import into it killed before it finished, or another "
                             f"program's files); choose another {option}, or remove the folder and import again")
        fix = f"the import folder is damaged: remove it and import again, or choose another {option}"

        def part(name: str) -> pl.DataFrame:
            try:
                return pl.read_parquet(out / name)
            except (pl.exceptions.PolarsError, OSError) as e:
                raise ValueError(f"{out / name}: cannot be read ({error_line(e)}); {fix}") from e

        try:
            tools = json.loads((out / "tools.json").read_bytes())
        except (ValueError, OSError) as e:      # not JSON, not UTF-8, a number too long to convert
            why = json_error(e) if isinstance(e, ValueError) else str(e)   # json_error keeps a decode error's text
            raise ValueError(f"{out / 'tools.json'}: cannot be read ({why}); {fix}") from e
        records = part("records.parquet")
        try:
            # records.parquet is written last: it is the commit point. An import killed after
            # writing some files but not it leaves the others ahead of it, so they are read as of
            # the records it lists, and the next import redoes the rest instead of doubling it.
            kept = records.filter(pl.col("verdict") != "rejected").select("episode_id")
            episodes = part("episodes.parquet").join(kept, on="episode_id", how="semi")
            steps = part("steps.parquet").join(kept, on="episode_id", how="semi")
            tasks = part("tasks.parquet").join(episodes.select("task_id").unique(), on="task_id", how="semi")
            rejects = part("rejects.parquet").join(records.select("episode_id", "sha256"),
                                                   on=["episode_id", "sha256"], how="semi")
        except pl.exceptions.PolarsError as e:     # a column missing or of another type
            raise ValueError(f"{out}: its tables are not an import's ({error_line(e)}); {fix}") from e
        if not isinstance(tools, dict):
            raise ValueError(f"{out / 'tools.json'}: expected a JSON object of tool sets; {fix}")
        return cls(tasks, episodes, steps, records, rejects, tools)


# ---------------------------------------------------------------------------------------
# Judging
# ---------------------------------------------------------------------------------------


@dataclass
class Judged:
    """One run's new records (rows of IMPORT_RECORD_SCHEMA: records read for the first time, and
    records rejected before whose verdict or reasons changed, which replace their old rows), the
    trajectories of those kept, the tasks they name, their tool definitions, and how many
    records the folder already holds as this run judged them (kept before, or rejected again for
    the same reasons)."""

    records: list[dict[str, Any]] = field(default_factory=list)
    episodes: list[Episode] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    tasks: dict[str, Task] = field(default_factory=dict)
    tools: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    already: Counter[str] = field(default_factory=Counter)     # by source
    replaced: set[tuple[str, str]] = field(default_factory=set)   # (episode_id, sha256) of re-judged records


def dup_key(instruction: str, actions: Sequence[str]) -> str:
    blob = json.dumps([normalise(instruction), list(actions)], ensure_ascii=False)
    return hashlib.blake2b(blob.encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()


def derived_task_id(instruction: str) -> str:
    """The task id of a record that names none: a function of its instruction."""
    return "imported-" + hashlib.blake2b(normalise(instruction).encode("utf-8", "surrogatepass"),
                                         digest_size=6).hexdigest()


def student_context(model_dir: str | Path) -> int | None:
    """A student's context in tokens: `max_position_embeddings` from its model card
    (`card.json`'s model section, written by the warm-up) or, for a local HF checkpoint, its
    `config.json`; None when neither says."""
    for name, keys in (("card.json", ("model", "max_position_embeddings")),
                       ("config.json", ("max_position_embeddings",))):
        f = Path(model_dir) / name
        if not f.is_file():
            continue
        try:
            value: Any = json.loads(f.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{name}: not valid JSON ({e.msg} at line {e.lineno})") from e
        except UnicodeDecodeError as e:
            raise ValueError(f"{name}: not UTF-8 text") from e
        for k in keys:
            value = value.get(k) if isinstance(value, dict) else None
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def token_counter(cfg: ImportConfig) -> Callable[[Sequence[str]], int]:
    """How the context check measures an episode: the tokenizer's count of every text in it,
    or without one an estimate of `chars_per_token` characters a token."""
    if cfg.tokenizer:
        from transformers import AutoTokenizer

        from distillery.lm.model import read_checkpoint

        tok = read_checkpoint(f"--tokenizer {cfg.tokenizer}", "tokenizer",
                              lambda: AutoTokenizer.from_pretrained(cfg.tokenizer),
                              hint="Give a model or tokenizer folder")
        return lambda texts: sum(len(tok.encode(t, add_special_tokens=False)) for t in texts if t)
    return lambda texts: math.ceil(sum(len(t) for t in texts) / cfg.chars_per_token)


def findings(row: dict[str, Any]) -> tuple[tuple[str, ...], ...]:
    """A record's findings, rule by rule: what decides whether a re-judged record changed."""
    return tuple(tuple(row[f"rule_{k}"] or ()) for k in IMPORT_RULE_KINDS)


def judge(raws: Iterable[RawRecord], cfg: ImportConfig, known: dict[str, Task] | None = None,
          previous: ImportedLogs | None = None,
          count_tokens: Callable[[Sequence[str]], int] | None = None) -> Judged:
    """Judge every record against the rules; build the kept ones' episodes and steps.

    `known` are the project's tasks (by id): a record naming one takes its environment,
    family and split, and the test split's tasks and instructions are refused. `previous` is
    what the output folder holds already: its kept records are skipped and count for
    duplicates; its rejected ones are judged again (the options or the task table may have
    changed), and count as already imported when rejected again for the same reasons.
    """
    known = known or {}
    previous = previous or ImportedLogs.empty()
    count_tokens = count_tokens or token_counter(cfg)
    registered = set(env_names())
    test_instructions = {normalise(t.instruction): t.task_id for t in known.values() if t.split in TEST_SPLITS}
    kept_before = previous.records.filter(pl.col("verdict") != "rejected")
    skipped = set(kept_before.select("episode_id", "sha256").iter_rows())
    rejected = previous.records.filter(pl.col("verdict") == "rejected")
    rejected_before = {(r["episode_id"], r["sha256"]): findings(r) for r in rejected.iter_rows(named=True)}
    # Where in its file each rejected record stood: a record read there now with other content
    # (its file mended, or a side file of outcomes added) supersedes it.
    rejected_at = {(s, r): (e, sha) for s, r, e, sha in
                   rejected.select("source", "record", "episode_id", "sha256").iter_rows()}
    # episode id -> (sha256, "<source> <record>") of the record kept under it, before or in this
    # run: another record under that id is a conflict whichever run kept the first, so that a
    # record judged again gets the verdict it got the first time.
    kept_ids = {e: (sha, f"{s} {r}") for e, sha, s, r in
                kept_before.select("episode_id", "sha256", "source", "record").iter_rows()}
    dups: dict[str, str] = {k: f"{s} {r}" for k, s, r in kept_before.select("dup_key", "source", "record").iter_rows()}
    ids_now: dict[str, str] = {}
    out = Judged()

    for raw in raws:
        eid = episode_id(raw.format, raw.source, raw.sample, raw.epoch)
        if (eid, raw.sha256) in skipped:
            out.already[raw.source] += 1
            continue
        # The same record again in this run (a line repeated in its file): one row holds it.
        skipped.add((eid, raw.sha256))
        problems: dict[str, list[str]] = {}
        row: dict[str, Any] = {
            "episode_id": eid, "format": raw.format, "source": raw.source, "record": raw.record,
            "position": raw.position, "line": raw.line, "sample": raw.sample, "epoch": raw.epoch,
            "sha256": raw.sha256, "task_id": raw.task_id, "env": raw.env, "model": raw.model,
            "toolset": toolset_key(raw.tools), "n_steps": 0, "n_tokens": 0,
            "logged_success": raw.outcome.success, "logged_score": raw.outcome.score,
            "scorer": raw.outcome.scorer, "limit": raw.limit, "answer": "", "dup_key": "",
        }
        analysis = None
        if raw.malformed:
            problems["malformed"] = list(raw.malformed)
        else:
            task = known.get(raw.task_id)
            env = task.env if task else raw.env or cfg.env
            specs = tool_specs(env) if env in registered else []
            analysis = analyse(raw, specs)
            problems.update(analysis.problems)
            task_id = raw.task_id or derived_task_id(analysis.instruction)
            _judge_run(raw, cfg, problems)
            _judge_task(task, task_id, raw, analysis, test_instructions, problems)
            n_tokens = count_tokens(analysis.texts)
            if cfg.max_context_tokens and n_tokens > cfg.max_context_tokens:
                how = "tokens" if cfg.tokenizer else f"tokens (estimated at {cfg.chars_per_token:g} characters a token)"
                problems["too_long"] = [f"{n_tokens} {how}, over the student's context of {cfg.max_context_tokens}"]
            if eid in kept_ids and kept_ids[eid][0] != raw.sha256:
                sha, where = kept_ids[eid]
                problems["conflict"] = [f"{where} was kept under this id with other content (sha256 {sha[:12]}, "
                                        f"now {raw.sha256[:12]}): import a changed file under another name"]
            key = dup_key(analysis.instruction, [s.action_text for s in analysis.steps])
            hard = [k for k in problems if k not in ("truncated_success",)]
            if not hard:
                if eid in ids_now:
                    problems["duplicate"] = [f"sample {raw.sample!r} epoch {raw.epoch} again (first: {ids_now[eid]})"]
                elif key in dups:
                    problems["duplicate"] = [f"the same instruction and actions as {dups[key]}"]
                else:
                    dups[key] = f"{raw.source} {raw.record}"
                    ids_now[eid] = raw.record
                    kept_ids[eid] = (raw.sha256, f"{raw.source} {raw.record}")
            row.update(task_id=task_id, env=env, n_steps=len(analysis.steps), n_tokens=n_tokens,
                       answer=analysis.answer, dup_key=key)
        verdict = expected_verdict([k for k in IMPORT_RULE_KINDS if problems.get(k)])
        row["verdict"] = verdict
        row.update({f"rule_{k}": list(problems.get(k, [])) for k in IMPORT_RULE_KINDS})
        before = rejected_before.get((eid, raw.sha256))
        if before == findings(row):
            out.already[raw.source] += 1        # rejected again, for the same reasons: nothing to write
            continue
        if before is not None:
            out.replaced.add((eid, raw.sha256))
        stale = rejected_at.get((raw.source, raw.record))
        if stale is not None and stale != (eid, raw.sha256):
            out.replaced.add(stale)
        out.records.append(row)
        if verdict != "rejected" and analysis is not None:
            _keep(raw, row, analysis, known, cfg, out)
    return out


def kept_outcome(outcome: Outcome, limit: str) -> tuple[bool, float, bool]:
    """(success, score, truncated): the outcome a record's episode is kept with. No outcome is a
    success of score 1 (only --assume-success keeps such a record). A run that hit a limit yet
    is a success, logged or assumed, is truncated: kept as a failure of score 0, for a success
    that never finished cannot be trusted."""
    success = bool(outcome.success) if not outcome.missing else True
    score = float(outcome.score) if outcome.score is not None else 1.0
    if limit and success:
        return False, 0.0, True
    return success, score, False


def _judge_run(raw: RawRecord, cfg: ImportConfig, problems: dict[str, list[str]]) -> None:
    """The run's own verdicts: an error, the outcome, a limit, and the reward filter, which
    judges the score the episode would be kept with (a truncated success's 0, not the logged 1)."""
    if raw.error:
        problems["errored"] = [f"the run ended in an error: {raw.error}"]
    o = raw.outcome
    if o.problems:
        problems["bad_outcome"] = list(o.problems)
        return
    if o.missing and not cfg.assume_success:
        problems["no_outcome"] = ["no score or success label (give one in the metadata block or a side file, "
                                  "or import with --assume-success)"]
        return
    _, score, truncated = kept_outcome(o, raw.limit)
    if truncated:
        problems["truncated_success"] = [f"{raw.limit}, yet logged as a success: it counts as a failure, score 0"]
    if cfg.min_score > 0 and score < cfg.min_score:
        why = " (the run hit a limit, so its logged success counts as a failure of score 0)" if truncated else ""
        problems["low_score"] = [f"score {score:g} is below --min-score {cfg.min_score:g}{why}"]


def _judge_task(task: Task | None, task_id: str, raw: RawRecord, analysis: Analysis,
                test_instructions: dict[str, str], problems: dict[str, list[str]]) -> None:
    """A known task is taken at its word (its split decides); an unknown one is refused when
    its instruction is a test task's: the project's own tasks may share an instruction across
    splits (their states differ), a log's task cannot show that it is not the test task."""
    if task is not None and analysis.instruction and normalise(task.instruction) != normalise(analysis.instruction):
        problems["task_conflict"] = [f"task {task_id} is known with another instruction than the record's"]
    split = task.split if task is not None else raw.split or "train"
    if split in TEST_SPLITS:
        problems["test_task"] = [f"task {task_id} is in the {split} split"]
    elif task is None and normalise(analysis.instruction) in test_instructions:
        problems["test_task"] = [f"the instruction is that of test task {test_instructions[normalise(analysis.instruction)]}"]


def _keep(raw: RawRecord, row: dict[str, Any], analysis: Analysis, known: dict[str, Task], cfg: ImportConfig,
          out: Judged) -> None:
    eid, env, task_id = row["episode_id"], row["env"], row["task_id"]
    task = known.get(task_id)
    o = raw.outcome
    success, score, truncated = kept_outcome(o, raw.limit)
    failed: list[str] = []
    if truncated:
        failed = [f"truncated: {raw.limit} (logged as a success)"]
    elif not success:
        failed = list(o.failed_checks) or [f"imported outcome: {o.value or 'not a success'}"]
    steps = analysis.steps
    specs = tool_specs(env) if env in set(env_names()) else []
    mutating_tools = {s.name for s in specs if s.mutates}
    mode = classify_failure(
        success=success, failed_check_types=[], actions=[s.action_text for s in steps],
        valid=[s.valid for s in steps], mutating=[s.valid and s.call.name in mutating_tools for s in steps],
        finished=analysis.finished, n_ref_mutations=sum(c.tool in mutating_tools for c in task.reference_solution)
        if task else 0)
    out.episodes.append(Episode(
        episode_id=eid, env=env, task_id=task_id, family=task.family if task else raw.family or "imported",
        split=task.split if task else raw.split or "train", profile=task.profile if task else raw.profile or "imported",
        policy=raw.policy or cfg.policy, model=raw.model or "-", iteration=0, group=task_id, sample=raw.epoch - 1,
        seed=0, success=success, score=score, n_steps=len(steps), invalid_actions=sum(not s.valid for s in steps),
        tokens_in=raw.tokens_in, tokens_out=raw.tokens_out, cost_usd=0.0, wall_s=raw.wall_s,
        finished=analysis.finished, failure_mode=mode, failed_checks=failed))
    for t, s in enumerate(steps):
        out.steps.append(Step(
            episode_id=eid, t=t, observation=s.observation, action_text=s.action_text, tool=s.call.name,
            args_json=s.args_json, valid=s.valid, error=s.error, feedback=s.feedback,
            reward=score if t == len(steps) - 1 else 0.0, state_hash=""))
    if task_id not in out.tasks:
        out.tasks[task_id] = task if task is not None else Task(
            task_id=task_id, env=env, family=raw.family or "imported", split=raw.split or "train",
            profile=raw.profile or "imported", hint="", instruction=analysis.instruction, initial_state={},
            reference_solution=[], checks=[], max_steps=1)
    if row["toolset"]:
        out.tools.setdefault(row["toolset"], raw.tools)


# ---------------------------------------------------------------------------------------
# Merging and writing
# ---------------------------------------------------------------------------------------


def reject_rows(records: pl.DataFrame) -> pl.DataFrame:
    """One row per broken rule of each record that is not plainly kept."""
    rows = []
    for r in records.filter(pl.col("verdict") != "kept").iter_rows(named=True):
        for kind in IMPORT_RULE_KINDS:
            for detail in r[f"rule_{kind}"] or []:
                rows.append({"source": r["source"], "record": r["record"], "position": r["position"],
                             "line": r["line"], "episode_id": r["episode_id"], "sha256": r["sha256"],
                             "kind": kind, "verdict": r["verdict"],
                             "reason": f"{r['source']} {r['record']}: {RULE_TEXT[kind]}: {detail}"})
    return pl.DataFrame(rows, schema=IMPORT_REJECT_SCHEMA, orient="row") if rows else _empty(IMPORT_REJECT_SCHEMA)


def _derived(row: dict[str, Any]) -> bool:
    """A task an import made up from its logs (no state, no checks), not one of the project's."""
    return row["checks"] == "[]" and row["initial_state"] == "{}"


def assemble_tasks(tasks: pl.DataFrame, episodes: pl.DataFrame, steps: pl.DataFrame) -> pl.DataFrame:
    """Tasks of the kept episodes. A derived task's reference solution is the valid calls of its
    successful episode with the smallest id (none: empty), and its step limit the longest
    episode's: the same whatever order the logs were imported in."""
    longest = dict(episodes.group_by("task_id").agg(pl.col("n_steps").max()).iter_rows())
    solved = (episodes.filter("success").sort("episode_id").group_by("task_id", maintain_order=True)
              .agg(pl.col("episode_id").first()))
    first_success = dict(solved.iter_rows())
    calls: dict[str, list[ToolCall]] = {}
    wanted = set(first_success.values())
    for eid, tool, args_json, valid in steps.filter(pl.col("episode_id").is_in(sorted(wanted))).sort(
            "episode_id", "t").select("episode_id", "tool", "args_json", "valid").iter_rows():
        if valid and args_json:
            calls.setdefault(eid, []).append(ToolCall(tool, json.loads(args_json)))
    out = []
    for task in tasks_from_frame(tasks.filter(pl.col("task_id").is_in(sorted(longest)))):
        row = task.to_row()
        if _derived(row):
            task.reference_solution = calls.get(first_success.get(task.task_id, ""), [])
            task.max_steps = max(1, longest[task.task_id], len(task.reference_solution))
        out.append(task)
    return tasks_to_frame(out).sort("task_id")


def _concat(frames: list[pl.DataFrame], schema: dict[str, pl.DataType]) -> pl.DataFrame:
    return pl.concat([f.select(list(schema)).cast(schema) for f in frames], how="vertical")


@dataclass
class ImportResult:
    """One import run: what it read, what it judged, and the folder it wrote."""

    out_dir: Path
    # per input file: source, read, kept, kept_as_failure, rejected, already_imported (read = the
    # other four: already_imported are the records the folder holds as this run judged them)
    files: list[dict[str, Any]]
    new_rejects: pl.DataFrame               # this run's rows of rejects.parquet
    logs: ImportedLogs                      # the whole folder after the run
    gates: dict[str, Any] = field(default_factory=dict)   # suite -> GateResult
    written: bool = True                    # False: nothing new, the folder was left as it was
    warnings: list[str] = field(default_factory=list)     # for the user: e.g. side-file rows that matched no record

    @property
    def totals(self) -> dict[str, int]:
        keys = ("read", "kept", "kept_as_failure", "rejected", "already_imported")
        return {k: sum(f[k] for f in self.files) for k in keys}


def summary(logs: ImportedLogs) -> dict[str, Any]:
    """Counts of the whole folder, by file, verdict and rule: a function of records and rejects."""
    by_source: dict[str, dict[str, int]] = {}
    for source, verdict, n in logs.records.group_by("source", "verdict").len().sort("source", "verdict").iter_rows():
        by_source.setdefault(source, {}).update({verdict: n})
    kinds = dict(logs.rejects.group_by("kind").len().sort("kind").iter_rows())
    eps = logs.episodes
    return {"records": logs.records.height, "episodes": eps.height, "steps": logs.steps.height,
            "tasks": logs.tasks.height, "successes": int(eps["success"].sum()) if eps.height else 0,
            "verdicts": dict(logs.records.group_by("verdict").len().sort("verdict").iter_rows()),
            "rejects_by_kind": kinds, "by_source": by_source, "toolsets": len(logs.tools)}


def _without(frame: pl.DataFrame, keys: set[tuple[str, str]]) -> pl.DataFrame:
    """`frame` less the rows of these (episode_id, sha256) keys."""
    if not keys:
        return frame
    drop = pl.DataFrame(sorted(keys), schema={"episode_id": pl.String, "sha256": pl.String}, orient="row")
    return frame.join(drop, on=["episode_id", "sha256"], how="anti")


def write_imported(out_dir: str | Path, previous: ImportedLogs, judged: Judged) -> tuple[ImportedLogs, dict[str, Any]]:
    """Merge this run into the folder, gate everything, then write it (only if the gates of the
    trajectories pass; the records gate quarantines the records it rejects). A record judged
    again replaces its old row in records.parquet and its old rows in rejects.parquet."""
    out = Path(out_dir)
    new_records = pl.DataFrame(judged.records, schema=IMPORT_RECORD_SCHEMA, orient="row") if judged.records \
        else _empty(IMPORT_RECORD_SCHEMA)
    records = _concat([_without(previous.records, judged.replaced), new_records], IMPORT_RECORD_SCHEMA
                      ).sort("source", "position", "sha256")
    episodes = _concat([previous.episodes, episodes_to_frame(judged.episodes)], dict(episodes_to_frame([]).schema)
                       ).sort("episode_id")
    steps = _concat([previous.steps, steps_to_frame(judged.steps)], dict(steps_to_frame([]).schema)
                    ).sort("episode_id", "t")
    base = [previous.tasks] + ([tasks_to_frame([t for tid, t in sorted(judged.tasks.items())
                                                if tid not in set(previous.tasks["task_id"])])] if judged.tasks else [])
    tasks = assemble_tasks(pl.concat(base), episodes, steps)
    rejects = (pl.concat([_without(previous.rejects, judged.replaced), reject_rows(new_records)])
               .unique(maintain_order=True).sort("source", "position", "sha256", "kind", "reason"))
    tools = {**previous.tools, **judged.tools}
    logs = ImportedLogs(tasks, episodes, steps, records, rejects, dict(sorted(tools.items())))

    reports, quarantine = out / "quality", out / "quarantine"
    where = {"report_dir": reports, "quarantine_dir": quarantine}
    _remove_leftovers(out)
    with _reports_put_back_on_failure(out, (reports, quarantine)):
        gates = {"import_records": gate(records, IMPORT_RECORDS, source=str(out / "records.parquet"),
                                        raise_on_failure=False, **where)}
        _check_records_gate(gates["import_records"], records)
        refs = {"episodes": episodes, "steps": steps}
        gates["imported_tasks"] = gate(tasks, IMPORTED_TASKS, source=str(out / "tasks.parquet"), **where)
        gates["episodes"] = gate(episodes, SUITES["episodes"], source=str(out / "episodes.parquet"), refs=refs,
                                 **where)
        gates["steps"] = gate(steps, SUITES["steps"], source=str(out / "steps.parquet"), refs=refs, **where)

        write_parquet(tasks, out / "tasks.parquet")
        write_parquet(episodes, out / "episodes.parquet")
        write_parquet(steps, out / "steps.parquet")
        write_json(logs.tools, out / "tools.json")
        write_parquet(rejects, out / "rejects.parquet")
        write_json(summary(logs), out / "summary.json")
        write_parquet(records, out / "records.parquet")      # last: a record listed here is fully written
    return logs, gates


# The saved copy of the reports while the tables are written: `.reports.<random>.tmp`.
_SAVED_REPORTS = (".reports.", ".tmp")


def _remove_leftovers(out: Path) -> None:
    """An import killed outright (no chance to clean up) leaves its temporaries in the folder:
    the saved copy of the reports and half-written tables (`io.atomic_path`'s
    `.<name>.<random>.tmp`). Their names are ours alone."""
    prefix, suffix = _SAVED_REPORTS
    for saved in out.glob(f"{prefix}*{suffix}"):
        shutil.rmtree(saved, ignore_errors=True)
    for name in OUTPUTS:
        for partial in out.glob(f".{name}.*.tmp"):
            partial.unlink(missing_ok=True)


@contextmanager
def _reports_put_back_on_failure(out: Path, folders: Sequence[Path]) -> Iterator[None]:
    """The gates must pass before the tables are written, so their reports are written first:
    should the tables then fail to be written (or the import be interrupted), the report folders
    are put back as they were, and no report counts rows the folder does not hold. A failed
    gate's reports stay: they say why nothing was written."""
    present = [f for f in folders if f.is_dir()]
    prefix, suffix = _SAVED_REPORTS
    saved = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=out)) if present else None
    try:
        for f in present:
            shutil.copytree(f, saved / f.name)
        try:
            yield
        except GateError:
            raise
        except BaseException:
            for f in folders:
                shutil.rmtree(f, ignore_errors=True)
                if saved is not None and (saved / f.name).is_dir():
                    os.replace(saved / f.name, f)
            raise
    finally:
        if saved is not None:
            shutil.rmtree(saved, ignore_errors=True)


def _check_records_gate(result: Any, records: pl.DataFrame) -> None:
    """The records gate must quarantine exactly the records not plainly kept, and only for
    their broken rules: anything else is a bug of the importer, not of the logs."""
    allowed = {f"_ok_{k}" for k in IMPORT_RULE_KINDS}
    other = [f["reason"] for f in result.failures if f["column"] not in allowed]
    if other:
        raise RuntimeError(f"the import_records gate failed on more than the import rules: {other}")
    quarantined: set[tuple[str, str]] = set()
    if result.quarantine_path is not None:
        quarantined = set(pl.read_parquet(result.quarantine_path).select("episode_id", "sha256").iter_rows())
    expected = set(records.filter(pl.col("verdict") != "kept").select("episode_id", "sha256").iter_rows())
    if quarantined != expected:
        raise RuntimeError(f"the import_records gate quarantined {len(quarantined)} records, the verdicts "
                           f"say {len(expected)}")


# ---------------------------------------------------------------------------------------
# The whole import
# ---------------------------------------------------------------------------------------


def source_name(path: Path) -> str:
    """How records name their file: relative to the current folder when inside it."""
    rel = os.path.relpath(path.resolve())
    return (rel if not rel.startswith("..") else str(path.resolve())).replace(os.sep, "/")


def input_files(fmt: str, paths: Sequence[str | Path]) -> list[Path]:
    """The files to read: each path given, or a folder's files of the format (sorted; side
    files of outcomes and an import folder's own outputs left out)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; formats: {', '.join(FORMATS)}")
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.name.endswith(FORMATS[fmt])
                           and not f.name.endswith(OUTCOMES_SUFFIX) and f.name not in OUTPUTS)
            if not found:
                raise FileNotFoundError(f"{p}: no {' or '.join(FORMATS[fmt])} files in this folder (its "
                                        "subfolders are not read: give them as paths of their own)")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    seen: set[Path] = set()
    return [f for f in files if not (f.resolve() in seen or seen.add(f.resolve()))]


def _refuse_overlap(paths: Sequence[str | Path], files: Sequence[Path], out: Path) -> None:
    """The import never writes where it reads: no input file inside the output folder, and no
    output folder inside (or being) an input folder. Inputs are only read: writing into a
    folder of logs would change what a tool tracking it (DVC, a checksum) sees as the input."""
    o = out.resolve()
    for f in files:
        if o in f.resolve().parents:
            raise ValueError(f"{f} is inside the output folder {out}: choose an --out apart from the inputs")
    for folder in (Path(p) for p in paths if Path(p).is_dir()):
        if o == folder.resolve() or folder.resolve() in o.parents:
            raise ValueError(f"--out {out} is inside the input folder {folder}: choose an --out apart from the "
                             "inputs")


def unused_rows_warning(side: SideFile, source: str) -> str | None:
    """What to tell the user of a side file's rows that no record of `source` took (a mistyped
    line or sample id), or None."""
    keys = side.unused()
    if not keys:
        return None
    shown = ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
    rows = "1 row" if len(keys) == 1 else f"{len(keys)} rows"
    return f"{side.path}: {rows} matched no record read from {source} ({shown}): their metadata was not used"


def side_file(log: Path, outcomes: str | Path | None) -> SideFile | None:
    """The side file of outcomes of an OpenAI log, read: `outcomes` when given, else
    `<name>.outcomes.jsonl` beside it when there is one."""
    path = Path(outcomes) if outcomes else log.with_name(log.name.removesuffix(".jsonl") + OUTCOMES_SUFFIX)
    return read_outcomes(path) if path.is_file() else None


def import_logs(fmt: str, paths: Sequence[str | Path], out_dir: str | Path, cfg: ImportConfig | None = None,
                *, tasks: str | Path | None = None, outcomes: str | Path | None = None,
                on_record: Callable[[RawRecord], None] | None = None) -> ImportResult:
    """Import `paths` (files or folders) of format `fmt` (openai | inspect) into `out_dir`.

    `tasks` is a tasks parquet (the project's task table): records naming its tasks take their
    environment, family and split, and its test split is refused. `outcomes` is a side file of
    metadata blocks for a single OpenAI file (otherwise `<file>.outcomes.jsonl` beside each
    file is used when present). `on_record` is called with each record as it is read.
    """
    from distillery.importers.inspect_log import read_inspect

    cfg = cfg or ImportConfig()
    out = Path(out_dir)
    files = input_files(fmt, paths)
    _refuse_overlap(paths, files, out)
    if outcomes and fmt != "openai":
        raise ValueError(f"--outcomes is for the openai format only: {fmt} logs carry their own scores"
                         + (" (--scorer picks one)" if fmt == "inspect" else ""))
    if outcomes and len(files) != 1:
        raise ValueError("--outcomes names the side file of one OpenAI JSONL file; with several, put "
                         f"<name>{OUTCOMES_SUFFIX} beside each")
    if outcomes and not Path(outcomes).is_file():
        raise FileNotFoundError(f"--outcomes {outcomes}: " + ("a folder, not a file" if Path(outcomes).is_dir()
                                                              else "no such file"))
    known: dict[str, Task] = {}
    if tasks:
        if not Path(tasks).is_file():
            raise FileNotFoundError(f"--tasks {tasks}: " + ("a folder, not a task table file" if Path(tasks).is_dir()
                                                            else "no such file"))
        try:
            frame = pl.read_parquet(tasks)
        except (pl.exceptions.PolarsError, OSError) as e:
            raise ValueError(f"--tasks {tasks}: not a parquet task table ({error_line(e)})") from e
        known = {t.task_id: t for t in tasks_from_frame(frame, f"--tasks {tasks}")}
    previous = ImportedLogs.read(out)
    warnings: list[str] = []

    def records() -> Iterable[RawRecord]:
        for f in files:
            source = source_name(f)
            side = None
            if fmt == "openai":
                side = side_file(f, outcomes)
                stream = read_openai(f, source, side)
            else:
                stream = read_inspect(f, source, cfg.scorer)
            for raw in stream:
                if on_record is not None:
                    on_record(raw)
                yield raw
            if side is not None and (warning := unused_rows_warning(side, source)):
                warnings.append(warning)

    judged = judge(records(), cfg, known, previous)
    written = bool(judged.records) or not (out / "records.parquet").exists()
    if written:
        logs, gates = write_imported(out, previous, judged)
    else:
        # Every record was imported before: nothing is written, so a repeated import leaves
        # the folder byte for byte (and mtime for mtime) as it was, and `dvc repro` sees no change.
        logs, gates = previous, {}
    new = pl.DataFrame(judged.records, schema=IMPORT_RECORD_SCHEMA, orient="row") if judged.records \
        else _empty(IMPORT_RECORD_SCHEMA)
    per_file = []
    for f in files:
        source = source_name(f)
        mine = new.filter(pl.col("source") == source)
        verdicts = Counter(mine["verdict"].to_list())
        per_file.append({"source": source, "read": mine.height + judged.already[source],
                         "kept": verdicts["kept"], "kept_as_failure": verdicts["kept_as_failure"],
                         "rejected": verdicts["rejected"], "already_imported": judged.already[source]})
    return ImportResult(out, per_file, reject_rows(new), logs, gates, written, warnings)
