"""What drafting leaves behind, and how kept drafts join the task table.

Under `out_dir` (default `data/tasks/drafted/`), appended run after run:
- `attempts.parquet`: every reply judged (`types.DRAFT_ATTEMPT_SCHEMA`), gated by the
  `draft_attempts` suite;
- `kept.parquet`: the kept tasks (`types.TASK_SCHEMA`), gated by the `tasks` suite; the
  file `params.yaml: tasks.drafted` names to merge them into the task table;
- `report.json`: the summary over all attempts, and the last run's family-level probes.
`reports/drafted.md` is the same summary as a page.

The three files and the page are one run's result, written together (`io.write_together`).
`check_out_dir` checks an output folder before a run asks for anything.

`read_kept` is how the `tasks` stage reads kept drafts back: each is screened again (a
parquet file is data anyone can edit), so nothing unscreened reaches an environment.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from distillery.io import MissingInput, error_line, read_parquet, write_together
from distillery.quality import SUITES, gate
from distillery.tasks.schema import draft_of
from distillery.tasks.screen import screen_draft
from distillery.types import (
    DRAFT_ATTEMPT_SCHEMA,
    TASK_SCHEMA,
    DraftAttempt,
    Task,
    draft_attempts_to_frame,
    tasks_from_frame,
    tasks_to_frame,
)

DEFAULT_OUT = "data/tasks/drafted"
DEFAULT_REPORT = "reports/drafted.md"
ATTEMPTS = "attempts.parquet"
KEPT = "kept.parquet"
REPORT_JSON = "report.json"


@dataclass(frozen=True)
class FamilyPower:
    """The random probes a drafted family's kept tasks survived, pooled: with `episodes`
    random episodes and none solved, a random policy's success rate on the family is below
    `bound` with confidence 1 - alpha."""

    family: str
    tasks: int
    episodes: int
    needed: int          # episodes that bound the rate below the target
    rejected: int        # kept drafts the family-level probes solved (now rejected)
    bound: float | None  # None: no kept task left to bound
    alpha: float = 0.05

    def sentence(self) -> str:
        if self.bound is None:
            return f"{self.family}: no kept task left ({self.rejected} solved by the family-level probes)"
        return (f"{self.family}: {self.tasks} task(s) survived {self.episodes} random episodes "
                f"(random success rate < {self.bound:.1%} at {1 - self.alpha:.0%} confidence)"
                + (f"; {self.rejected} solved by the family-level probes and rejected" if self.rejected else ""))


def rate_bound(episodes: int, alpha: float) -> float | None:
    """Exact one-sided upper bound on a success rate after `episodes` trials and no success."""
    return 1.0 - alpha ** (1.0 / episodes) if episodes > 0 else None


def episodes_needed(rate: float, alpha: float) -> int:
    """Trials without a success that push the bound on the success rate below `rate`."""
    return math.ceil(math.log(alpha) / math.log(1.0 - rate))


@dataclass
class DraftSummary:
    """Acceptance, repair rounds and cost, over a set of attempts.

    A draft is one conversation (a hint's draft number); it is kept when its last reply was.
    `repair_rounds_per_kept` is the mean round of the kept replies (0: kept at once);
    `tokens_per_kept` and `cost_per_kept` spread every attempt's tokens and cost (the
    rejected ones too) over the kept tasks.
    """

    drafts: int
    kept: int
    attempts: int
    errors: int
    acceptance_rate: float
    kept_first_try: int
    repair_rounds_per_kept: float | None
    tokens: int
    cost_usd: float
    tokens_per_kept: float | None
    cost_per_kept: float | None
    reasons: dict[str, int] = field(default_factory=dict)
    families: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        def num(x: float | None, fmt: str) -> str:
            if x is None:
                return "n/a (nothing kept)"
            return "$" + format(x, fmt[1:]) if fmt.startswith("$") else format(x, fmt)

        return [
            f"drafts: {self.drafts}, kept: {self.kept} (acceptance {self.acceptance_rate:.1%}; "
            f"{self.kept_first_try} at the first reply), replies judged: {self.attempts}, endpoint errors: {self.errors}",
            f"repair rounds per kept task: {num(self.repair_rounds_per_kept, '.2f')}",
            f"tokens per kept task: {num(self.tokens_per_kept, ',.0f')} ({self.tokens:,} in all); "
            f"cost per kept task: {num(self.cost_per_kept, '$.4f')} (${self.cost_usd:.4f} in all)",
        ]


def summarize(attempts: pl.DataFrame) -> DraftSummary:
    if attempts.is_empty():
        return DraftSummary(0, 0, 0, 0, 0.0, 0, None, 0, 0.0, None, None)
    last = (attempts.sort("round").group_by("run_id", "draft_no", maintain_order=True)
            .agg(pl.col("family").last(), pl.col("verdict").last(), pl.col("round").last()))
    kept = last.filter(pl.col("verdict") == "kept")
    tokens = int(attempts["tokens_in"].sum() + attempts["tokens_out"].sum())
    cost = float(attempts["cost_usd"].sum())
    n_kept = kept.height
    reasons = (attempts.select(pl.col("reason_kinds").list.first().alias("kind")).drop_nulls()
               .group_by("kind").len().sort(["len", "kind"], descending=[True, False]))
    families = {}
    for fam in last["family"].unique(maintain_order=True).to_list():
        rows = last.filter(pl.col("family") == fam)
        k = int((rows["verdict"] == "kept").sum())
        families[fam] = {"drafts": rows.height, "kept": k, "acceptance_rate": k / rows.height}
    return DraftSummary(
        drafts=last.height, kept=n_kept, attempts=attempts.height,
        errors=int((attempts["verdict"] == "error").sum()),
        acceptance_rate=n_kept / last.height,
        kept_first_try=int((kept["round"] == 0).sum()),
        repair_rounds_per_kept=float(kept["round"].mean()) if n_kept else None,
        tokens=tokens, cost_usd=cost,
        tokens_per_kept=tokens / n_kept if n_kept else None,
        cost_per_kept=cost / n_kept if n_kept else None,
        reasons={k: int(n) for k, n in reasons.iter_rows()},
        families=families,
    )


def render_markdown(total: DraftSummary, run: DraftSummary, power: list[FamilyPower], run_id: str,
                    model: str) -> str:
    out = ["# Drafted tasks", "",
           "Tasks a model drafted from hints (`distillery tasks draft`), each judged: screened as data, "
           "built in a real sandbox, reference solution run, random probes. Regenerated on every run.", "",
           f"## Last run ({run_id}, model `{model}`)", "", *[f"- {line}" for line in run.lines()], ""]
    if power:
        out += ["Family-level random probes:", "", *[f"- {p.sentence()}" for p in power], ""]
    out += ["## All runs", "", *[f"- {line}" for line in total.lines()], "",
            "| family | drafts | kept | acceptance |", "|---|---:|---:|---:|"]
    out += [f"| {f} | {v['drafts']} | {v['kept']} | {v['acceptance_rate']:.1%} |" for f, v in total.families.items()]
    out += ["", "| first rejection reason | replies |", "|---|---:|"]
    out += [f"| {k} | {n} |" for k, n in total.reasons.items()]
    return "\n".join(out) + "\n"


@dataclass(frozen=True)
class DraftOutputs:
    attempts: Path
    kept: Path
    report_json: Path
    report_md: Path
    total: DraftSummary
    run: DraftSummary


FIX_OUT = "move it away or choose another --out"


def _read_table(path: Path, fix: str = "") -> pl.DataFrame:
    """The parquet table at `path`; ValueError naming it (and `fix`, what to do) when it is a
    folder or a file polars cannot read as parquet."""
    then = f"; {fix}" if fix else ""
    if path.is_dir():
        raise ValueError(f"{path}: a folder, not a parquet table{then}")
    try:
        return read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as e:
        raise ValueError(f"{path}: not a parquet table ({error_line(e)}){then}") from e


def _existing(path: Path, schema: dict[str, pl.DataType], what: str) -> pl.DataFrame | None:
    """The table a run appends to, None when there is none yet; ValueError naming the file
    when it is not a readable `what` table."""
    if not path.exists() and not path.is_symlink():
        return None
    old = _read_table(path, FIX_OUT)
    if dict(old.schema) != schema:
        raise ValueError(f"{path}: not a {what} table (columns {old.columns}); {FIX_OUT}")
    return old


def _append(old: pl.DataFrame | None, frame: pl.DataFrame, key: str) -> pl.DataFrame:
    """`old` with `frame`'s rows appended; a row of the same `key` is replaced, so a run written
    again (one interrupted while writing, then resumed) is not doubled."""
    if old is None:
        return frame
    return pl.concat([old.filter(~pl.col(key).is_in(frame[key].implode())), frame])


def check_out_dir(out_dir: str | Path, env: str) -> list[Task]:
    """Before a drafting run asks for anything: the tasks earlier runs kept in `out_dir` (they
    count as duplicates), after checking that both tables there are ones this run can append
    to. ValueError naming the file (a folder or a damaged file where a table belongs, another
    table's columns, a kept task that fails the screen) otherwise."""
    out = Path(out_dir)
    _existing(out / ATTEMPTS, DRAFT_ATTEMPT_SCHEMA, "draft attempts")
    if _existing(out / KEPT, TASK_SCHEMA, "tasks") is None:
        return []
    return read_kept(out / KEPT, env)


def write_outputs(attempts: list[DraftAttempt], kept: list[Task], power: list[FamilyPower], *, run_id: str,
                  model: str, out_dir: str | Path = DEFAULT_OUT, report_md: str | Path = DEFAULT_REPORT,
                  quality_dir: str | Path = "reports/quality/drafted",
                  quarantine_dir: str | Path = "data/quarantine/drafted") -> DraftOutputs:
    """Append this run's attempts and kept tasks to `out_dir` (replacing rows of the same
    attempt or task id: writing a run twice leaves it once), gate both, write the reports.

    The four files are one result, written together (`io.write_together`): each to a temp
    file first, renamed into place only once all are written, so a failure (a folder where
    the report page belongs, a full disk) leaves every one of them as it was.

    Raises `quality.GateError` (naming file, column and rows) when a table breaks its
    contract, ValueError naming the file when a table already in `out_dir` is not one this
    appends to (`check_out_dir` says so before a run), OSError when a file cannot be
    written; nothing is written then.
    """
    out = Path(out_dir)
    old_attempts = _existing(out / ATTEMPTS, DRAFT_ATTEMPT_SCHEMA, "draft attempts")
    old_kept = _existing(out / KEPT, TASK_SCHEMA, "tasks")
    run_frame = draft_attempts_to_frame(attempts)
    all_attempts = _append(old_attempts, run_frame, "attempt_id")
    all_kept = _append(old_kept, tasks_to_frame(kept), "task_id")
    gate(all_attempts, SUITES["draft_attempts"], source=str(out / ATTEMPTS), report_dir=quality_dir,
         quarantine_dir=quarantine_dir)
    gate(all_kept, SUITES["tasks"], source=str(out / KEPT), report_dir=quality_dir, quarantine_dir=quarantine_dir)
    total, run = summarize(all_attempts), summarize(run_frame)
    report = {"total": total.to_dict(), "last_run": {"run_id": run_id, "model": model, **run.to_dict(),
                                                     "family_power": [asdict(p) for p in power]}}
    write_together({out / ATTEMPTS: all_attempts, out / KEPT: all_kept, out / REPORT_JSON: report,
                    Path(report_md): render_markdown(total, run, power, run_id, model)})
    return DraftOutputs(out / ATTEMPTS, out / KEPT, out / REPORT_JSON, Path(report_md), total, run)


def read_kept(path: str | Path, env: str) -> list[Task]:
    """Kept drafted tasks of environment `env`, each screened again; ValueError naming the
    file when it is not a parquet table of tasks, and the task when one is of another
    environment or fails the screen."""
    if not Path(path).exists():
        raise MissingInput(f"tasks.drafted: {path} not found (`distillery tasks draft` writes it)")
    tasks = tasks_from_frame(_read_table(Path(path)), str(path))
    for t in tasks:
        if t.env != env:
            raise ValueError(f"{path}: task {t.task_id} is a {t.env!r} task, not {env!r}")
        reasons = screen_draft(draft_of(t), env)
        if reasons:
            raise ValueError(f"{path}: task {t.task_id} fails the draft screen: "
                             + "; ".join(str(r) for r in reasons))
    return tasks
