"""The agent loop on several environments side by side: one table of claims rows.

Each environment's track (the agent track on STAGE, `--track twx` on TextWorldExpress:
stages/track.py) leaves the same files: the oracle's trajectories, the warm-up student's
greedy play on the test split (the training settings), and the internalize stage's reports
(`train.internalize_report.internalize_metrics`: the warm-up model on the held-out setting
plain and with the mined pool injected, then after each iteration of internalization, and
the other settings' success with their principles before and after).

What is seeded and what is not, on every environment alike:

- the oracle is deterministic, and the warm-up student is one training run measured
  greedily: one number each;
- the teacher (the warm-up model with the mined pool injected) against the same model plain
  is compared over the internalize stage's sampling seeds (`eval_seeds`, temperature as its
  rollouts), paired by seed;
- internalization is run once per internalization seed from the same start and pool
  (`stages.internalize --seed N`, or the internalize grid's record of the same recipe), and
  compared with its start, paired by seed.

A comparison holds by the project's paired rule (`evaluate.grid.verdict`): the mean paired
margin is positive and larger than the standard deviation of the paired differences. The
environments' own speeds (`envs.throughput`, oracle replay in one run) are a row too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from distillery.config import _f
from distillery.evaluate.grid import fmt, mean_std, verdict
from distillery.types import Claim

SOURCE = "Distillery: the agent loop across environments"
FORGET_BOUND = 0.05   # the internalize claims' bound on the other settings' drop


@dataclass(frozen=True)
class InternalizeRun:
    """One internalization seed's numbers (success rates in [0, 1], held-out test tasks)."""

    seed: int
    start: float                  # the warm-up model, greedy, plain
    teacher: float                # the same with the mined pool injected, greedy
    sampled: dict[int, tuple[float, float]]   # sampling seed -> (plain, with the pool)
    final: float                  # after the iterations, plain, greedy
    iterations: int
    n_test: int
    others_before: float          # the other settings' test tasks with their principles
    others_after: float

    @property
    def forgetting(self) -> float:
        return self.others_before - self.others_after


def internalize_run(report: Mapping[str, Any], where: str) -> InternalizeRun:
    """An internalize report (`reports/.../internalize*.json`, or one run of the grid's record)
    as an InternalizeRun; ValueError naming `where` and the missing key."""
    try:
        before, final = report["before"], report["final"]
        return InternalizeRun(
            seed=int(report.get("config", {}).get("seed", report.get("seed", 0))),
            start=float(before["heldout_plain"]), teacher=float(before["heldout_with_experience"]),
            sampled={int(s): (float(v["plain"]), float(v["with_experience"]))
                     for s, v in before.get("sampled", {}).items()},
            final=float(final["heldout_plain"]), iterations=len(report["iterations"]), n_test=int(report["n_test"]),
            others_before=float(before["others_with_principles"]), others_after=float(final["others_with_principles"]))
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{where}: the internalize report lacks {e} (expected internalize_metrics' keys)") from e


def grid_runs(record: Mapping[str, Any], cell: str, where: str) -> list[dict[str, Any]]:
    """The internalize reports of one cell (`granularity/injection/regime`) of the grid's record
    (experiments/internalize_grid.json), one per seed, each with its seed set."""
    try:
        granularity, injection, regime = cell.split("/")
    except ValueError:
        raise ValueError(f"grid cell {cell!r}: expected granularity/injection/regime") from None
    out = [{**r["metrics"], "seed": r["seed"]} for r in record.get("runs", [])
           if (r.get("granularity"), r.get("injection"), r.get("regime")) == (granularity, injection, regime)]
    if not out:
        raise ValueError(f"{where}: no run of the cell {cell} in the grid's record")
    return sorted(out, key=lambda m: m["seed"])


@dataclass(frozen=True)
class EnvFigures:
    """One environment's numbers for the table (success rates in [0, 1])."""

    env: str
    oracle: float                # oracle success, every split
    n_oracle: int
    warmup_test: float           # warm-up student, greedy, test split (training settings)
    n_test: int
    warmup_heldout: float        # the same model on the held-out setting's test tasks (the track's
    n_heldout: int               # own internalize report: the same model as warmup_test)
    runs: tuple[InternalizeRun, ...]   # one per internalization seed, same start and pool
    pool_size: int               # mined principles the teacher was given
    runs_from: str = ""          # where the runs come from (the table says it)
    steps_per_s: float | None = None

    def __post_init__(self) -> None:
        if not self.runs:
            raise ValueError(f"{self.env}: no internalize run")

    @property
    def start(self) -> InternalizeRun:
        return self.runs[0]

    @property
    def drop(self) -> float:
        """Success lost moving the warm-up student from the training settings to the held-out one."""
        return self.warmup_test - self.warmup_heldout

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.runs]

    @property
    def sampling_seeds(self) -> list[int]:
        return sorted(self.start.sampled)


def environment_figures(env: str, oracle_episodes: pl.DataFrame, play_episodes: pl.DataFrame,
                        track_report: Mapping[str, Any], reports: Sequence[Mapping[str, Any]], pool_size: int,
                        runs_from: str = "", steps_per_s: float | None = None) -> EnvFigures:
    """One environment's figures from its track's files (module docstring): `track_report` is
    the track's own internalize report (its warm-up model on the held-out setting: the drop),
    `reports` the internalize reports behind the seeded rows, one per internalization seed
    (usually the track's own again and its other seeds; or a grid's record of the recipe).
    ValueError naming what is missing."""
    if oracle_episodes.is_empty():
        raise ValueError(f"{env}: no oracle episodes: run the track's collect@oracle first")
    test = play_episodes.filter(pl.col("split") == "test")
    if test.is_empty():
        raise ValueError(f"{env}: the warm-up student's play has no test-split episodes")
    own = internalize_run(track_report, f"{env} track's internalize report")
    runs = tuple(internalize_run(r, f"{env} internalize report {i}") for i, r in enumerate(reports))
    if len({r.seed for r in runs}) != len(runs):
        raise ValueError(f"{env}: two internalize reports with the same seed ({[r.seed for r in runs]})")
    if len({(r.start, r.teacher) for r in runs}) > 1:
        raise ValueError(f"{env}: the internalize runs do not start from the same model and pool "
                         f"(greedy start/teacher differ: {[(r.start, r.teacher) for r in runs]})")
    return EnvFigures(env=env, oracle=float(oracle_episodes["success"].mean()), n_oracle=oracle_episodes.height,
                      warmup_test=float(test["success"].mean()), n_test=test.height, warmup_heldout=own.start,
                      n_heldout=own.n_test, runs=runs, pool_size=pool_size,
                      runs_from=runs_from, steps_per_s=steps_per_s)


def _side_by_side(figs: Sequence[EnvFigures], value: Callable[[EnvFigures], str]) -> str:
    return " · ".join(f"{f.env}: {value(f)}" for f in figs)


def _seeds(xs: Sequence[int]) -> str:
    return ",".join(str(s) for s in xs)


def _teacher_diffs(f: EnvFigures) -> list[float]:
    return [w - p for p, w in (f.start.sampled[s] for s in f.sampling_seeds)]


def _internalized_diffs(f: EnvFigures) -> list[float]:
    return [r.final - r.start for r in f.runs]


def _all_hold(verdicts: Sequence[bool | None]) -> bool | None:
    if any(v is False for v in verdicts):
        return False
    return None if any(v is None for v in verdicts) else True


def environment_claims(figs: Sequence[EnvFigures], command: str) -> list[Claim]:
    """One row per measure, every environment's value in it (`env: value · env: value`), each
    row saying which seeds are behind it (module docstring). `holds` is stated only where
    there is a rule: every kept task won by the oracle; the teacher above plain and the
    internalized student above its start by the paired rule on every environment; the other
    settings' drop within the internalize claims' bound; the rest are measurements."""
    if not figs:
        raise ValueError("environment_claims: no environment to report")
    envs = ", ".join(f.env for f in figs)
    one = "one run per environment (the oracle is deterministic; the warm-up one training run, greedy)"
    teacher_v = [verdict(_teacher_diffs(f)) for f in figs]
    internal_v = [verdict(_internalized_diffs(f)) for f in figs]
    forget = [mean_std([r.forgetting for r in f.runs])[0] for f in figs]
    rows = [
        Claim(SOURCE, "the oracle (reference solution / gold path) wins every kept task", "1.0 by construction",
              _side_by_side(figs, lambda f: f"{f.oracle:.3f} (n={f.n_oracle})"),
              holds=all(f.oracle == 1.0 for f in figs),
              detail=f"every split of the kept tasks ({envs})", seeds=one, command=command),
        Claim(SOURCE, "warm-up student on the training settings' test tasks (greedy)", "-",
              _side_by_side(figs, lambda f: f"{f.warmup_test:.3f} (n={f.n_test})"), holds=None,
              detail="trained on the oracle's train-split trajectories", seeds=one, command=command),
        Claim(SOURCE, "drop moving to the held-out setting (warm-up, greedy)", "-",
              _side_by_side(figs, lambda f: f"{f.drop:+.3f} ({f.warmup_test:.3f} -> {f.warmup_heldout:.3f}, "
                                            f"n={f.n_heldout})"),
              holds=None, detail="STAGE: the held-out user; TextWorldExpress: the held-out game setting",
              seeds=one, command=command),
        Claim(SOURCE, "the same model with the mined pool injected does better on the held-out setting (teacher)",
              "teacher > plain", _side_by_side(
                  figs, lambda f: f"{fmt([w for _, w in f.start.sampled.values()])} vs "
                                  f"{fmt([p for p, _ in f.start.sampled.values()])} ({f.pool_size} principles)"),
              holds=_all_hold([v for v, _ in teacher_v]),
              detail="sampled at the rollouts' temperature, mean ± std over sampling seeds, with the pool vs plain; "
                     + "; ".join(f"{f.env}: {how}, greedy {f.start.teacher:.3f} vs {f.start.start:.3f}"
                                 for f, (_, how) in zip(figs, teacher_v, strict=True))
                     + f"; holds when it holds on every environment ({envs})",
              spread="± std over sampling seeds",
              seeds=_side_by_side(figs, lambda f: f"sampling {_seeds(f.sampling_seeds)}"), command=command),
        Claim(SOURCE, "internalized: the student alone after the iterations beats its start on the held-out setting",
              "after > before", _side_by_side(
                  figs, lambda f: f"{fmt([r.final for r in f.runs])} vs {f.start.start:.3f} "
                                  f"({f.start.iterations} it.)"),
              holds=_all_hold([v for v, _ in internal_v]),
              detail="greedy, held-out test tasks, no experience in the prompt, mean ± std over internalization "
                     "seeds from the same warm-up model and pool; "
                     + "; ".join(f"{f.env}: {how}" + (f" ({f.runs_from})" if f.runs_from else "")
                                 for f, (_, how) in zip(figs, internal_v, strict=True))
                     + f"; holds when it holds on every environment ({envs})",
              spread="± std over internalization seeds",
              seeds=_side_by_side(figs, lambda f: f"internalization {_seeds(f.seeds)}"), command=command),
        Claim(SOURCE, "internalizing costs the other settings at most 5 points (with their principles)",
              "drop <= 0.05", _side_by_side(
                  figs, lambda f: f"{fmt([r.forgetting for r in f.runs])} "
                                  f"({f.start.others_before:.3f} -> {fmt([r.others_after for r in f.runs])})"),
              holds=all(d <= FORGET_BOUND + 1e-9 for d in forget),
              detail="the other settings' (training users' / training game settings') test tasks, greedy, their "
                     "principles in the prompt, before minus after internalization; the mean drop within the bound "
                     "on every environment", spread="± std over internalization seeds",
              seeds=_side_by_side(figs, lambda f: f"internalization {_seeds(f.seeds)}"), command=command),
    ]
    timed = [f for f in figs if f.steps_per_s is not None]
    if timed:
        base = timed[0]
        rows.append(Claim(
            SOURCE, "environment steps per second (oracle replay: reset + reference steps + verify, one process)",
            "-", _side_by_side(timed, lambda f: f"{f.steps_per_s:,.0f}" + (
                "" if f is base else f" ({f.steps_per_s / base.steps_per_s:.2f}x {base.env})")),
            holds=None, detail="measured in the same run, one after the other, on the machine that ran the table; "
                               "a speed, not a finding (bench/env_throughput.py pins one core)",
            seeds="one run", command=command))
    return rows


@dataclass
class EnvTableConfig:
    """`env_table` stage: which tracks to put side by side (lists with one entry per environment)."""

    envs: list[str] = _f(["stage", "textworldexpress"], "the environments' names, as the table shows them")
    tracks: list[str] = _f(["", "twx"], "each environment's track ('' = the agent track): stages/track.py")
    play: list[str] = _f(["warmup", "twx_warmup"], "each track's warm-up policy whose play@ episodes hold "
                         "its test-split success")
    runs: list[list[str]] = _f(
        [["experiments/internalize_grid.json"],
         ["reports/twx/details/internalize.json", "reports/twx/details/internalize-seed1.json",
          "reports/twx/details/internalize-seed2.json"]],
        "each environment's internalize reports, one per internalization seed; a grid record "
        "(experiments/internalize_grid.json) stands for its runs of `grid_cell`")
    grid_cell: str = _f("principle/stepwise/off_policy", "the cell read from a grid record: the track's recipe")
    throughput_seconds: float = _f(3.0, "seconds of oracle replay per environment for the steps/s row (0: no row)")
    throughput_tasks: int = _f(40, "at most this many of each track's test tasks replayed")

    def __post_init__(self) -> None:
        if not (len(self.envs) == len(self.tracks) == len(self.play) == len(self.runs)) or not self.envs:
            raise ValueError(f"env_table: envs, tracks, play and runs need one entry per environment, in the same "
                             f"order (got {len(self.envs)}, {len(self.tracks)}, {len(self.play)}, {len(self.runs)})")
        if any(not r for r in self.runs):
            raise ValueError("env_table: every environment needs at least one internalize report in runs")
