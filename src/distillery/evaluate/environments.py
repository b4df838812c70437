"""The agent loop on several environments side by side: one table of claims rows.

Each environment's track (the agent track on STAGE, `--track twx` on TextWorldExpress:
stages/track.py) leaves the same files: the oracle's trajectories, the warm-up student's
greedy play on the test split (the training settings), and the internalize stage's report
(`train.internalize_report.internalize_metrics`: the warm-up model on the held-out setting
plain and with the mined pool injected, then after each iteration of internalization).
`environment_figures` reads one environment's numbers out of them; `environment_claims`
puts the environments side by side, one row per measure.

Steps per second are not in the table: a collect's episodes run interleaved in batches, so
their wall times overlap and say nothing about the environment's own speed.
`bench/env_throughput.py` measures every environment's side by side in one run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from distillery.config import _f
from distillery.types import Claim

SOURCE = "Distillery: the agent loop across environments"


@dataclass(frozen=True)
class EnvFigures:
    """One environment's numbers for the table (success rates in [0, 1])."""

    env: str
    oracle: float                # oracle success, every split
    n_oracle: int
    warmup_test: float           # warm-up student, greedy, test split (training settings)
    n_test: int
    warmup_heldout: float        # the same model on the held-out setting's test tasks
    teacher_heldout: float       # ... with the mined pool injected (the teacher)
    internalized_heldout: float  # after the internalize stage's iterations, plain
    iterations: int
    n_heldout: int
    pool_size: int               # mined principles the teacher was given

    @property
    def drop(self) -> float:
        """Success lost moving the warm-up student from the training settings to the held-out one."""
        return self.warmup_test - self.warmup_heldout


def environment_figures(env: str, oracle_episodes: pl.DataFrame, play_episodes: pl.DataFrame,
                        internalize: Mapping[str, Any], pool_size: int) -> EnvFigures:
    """One environment's figures from its track's files (module docstring); ValueError naming
    what is missing when a frame is empty or the report lacks a key."""
    if oracle_episodes.is_empty():
        raise ValueError(f"{env}: no oracle episodes: run the track's collect@oracle first")
    test = play_episodes.filter(pl.col("split") == "test")
    if test.is_empty():
        raise ValueError(f"{env}: the warm-up student's play has no test-split episodes")
    try:
        before, final = internalize["before"], internalize["final"]
        iterations = len(internalize["iterations"])
        n_heldout = int(internalize["n_test"])
        warmup_heldout, teacher = float(before["heldout_plain"]), float(before["heldout_with_experience"])
        internalized = float(final["heldout_plain"])
    except (KeyError, TypeError) as e:
        raise ValueError(f"{env}: the internalize report lacks {e} (expected internalize_metrics' keys)") from e
    return EnvFigures(
        env=env, oracle=float(oracle_episodes["success"].mean()), n_oracle=oracle_episodes.height,
        warmup_test=float(test["success"].mean()), n_test=test.height,
        warmup_heldout=warmup_heldout, teacher_heldout=teacher, internalized_heldout=internalized,
        iterations=iterations, n_heldout=n_heldout, pool_size=pool_size)


def _side_by_side(figs: Sequence[EnvFigures], value: Any) -> str:
    return " · ".join(f"{f.env}: {value(f)}" for f in figs)


def environment_claims(figs: Sequence[EnvFigures], seeds: str, command: str) -> list[Claim]:
    """One row per measure, every environment's value in it (`env: value · env: value`).
    `holds` is stated only where there is a rule: every kept task won by the oracle; the
    mined pool helping (teacher above plain) and internalization helping (after above
    before) on every environment; a drop is a measurement, not a verdict."""
    if not figs:
        raise ValueError("environment_claims: no environment to report")
    envs = ", ".join(f.env for f in figs)
    return [
        Claim(SOURCE, "the oracle (reference solution / gold path) wins every kept task", "1.0 by construction",
              _side_by_side(figs, lambda f: f"{f.oracle:.3f} (n={f.n_oracle})"),
              holds=all(f.oracle == 1.0 for f in figs),
              detail=f"every split of the kept tasks ({envs})", seeds=seeds, command=command),
        Claim(SOURCE, "warm-up student on the training settings' test tasks (greedy)", "-",
              _side_by_side(figs, lambda f: f"{f.warmup_test:.3f} (n={f.n_test})"), holds=None,
              detail="trained on the oracle's train-split trajectories", seeds=seeds, command=command),
        Claim(SOURCE, "drop moving to the held-out setting (warm-up, greedy)", "-",
              _side_by_side(figs, lambda f: f"{f.drop:+.3f} ({f.warmup_test:.3f} -> {f.warmup_heldout:.3f})"),
              holds=None, detail="STAGE: the held-out user; TextWorldExpress: the held-out game setting",
              seeds=seeds, command=command),
        Claim(SOURCE, "the same model with the mined pool injected does better on the held-out setting (teacher)",
              "teacher > plain", _side_by_side(
                  figs, lambda f: f"{f.teacher_heldout:.3f} vs {f.warmup_heldout:.3f} ({f.pool_size} principles)"),
              holds=all(f.teacher_heldout > f.warmup_heldout for f in figs),
              detail=f"greedy, held-out test tasks; holds when above on every environment ({envs})",
              seeds=seeds, command=command),
        Claim(SOURCE, "internalized: the student alone after the iterations beats its start on the held-out setting",
              "after > before", _side_by_side(
                  figs, lambda f: f"{f.internalized_heldout:.3f} vs {f.warmup_heldout:.3f} ({f.iterations} it.)"),
              holds=all(f.internalized_heldout > f.warmup_heldout for f in figs),
              detail=f"greedy, held-out test tasks, no experience in the prompt; holds when above on every "
                     f"environment ({envs})", seeds=seeds, command=command),
    ]


@dataclass
class EnvTableConfig:
    """`env_table` stage: which tracks to put side by side (three lists, one entry per environment)."""

    envs: list[str] = _f(["stage", "textworldexpress"], "the environments' names, as the table shows them")
    tracks: list[str] = _f(["", "twx"], "each environment's track ('' = the agent track): stages/track.py")
    play: list[str] = _f(["warmup", "twx_warmup"], "each track's warm-up policy whose play@ episodes hold "
                         "its test-split success")
    seeds: str = _f("1 (seed 0)", "what the seeds column says: the runs behind the figures")

    def __post_init__(self) -> None:
        if not (len(self.envs) == len(self.tracks) == len(self.play)) or not self.envs:
            raise ValueError(f"env_table: envs, tracks and play need one entry per environment, in the same order "
                             f"(got {len(self.envs)}, {len(self.tracks)}, {len(self.play)})")
