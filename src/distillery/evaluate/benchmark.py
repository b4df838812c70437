"""Benchmark tables from trajectories: per policy and family, in the spirit of STAGE-Claw.

Pure functions over polars frames. For every policy (and every family, and overall):
success rate, mean score, steps, tokens, cost, tool-call validity rate, and the share of
episodes in each failure pattern (evaluate/failures.py defines them).
"""

from __future__ import annotations

import math
from typing import Any

import polars as pl

from distillery.types import FAILURE_MODES

ALL = "all"


def _stats(eps: pl.DataFrame, steps: pl.DataFrame) -> pl.DataFrame:
    """Aggregate episodes (already joined with per-episode step counts) by policy/family."""
    per_ep = steps.group_by("episode_id").agg(
        pl.len().alias("_steps"), pl.col("valid").sum().alias("_valid")
    )
    e = eps.join(per_ep, on="episode_id", how="left").with_columns(
        pl.col("_steps").fill_null(0), pl.col("_valid").fill_null(0)
    )
    aggs = [
        pl.len().alias("episodes"),
        pl.col("success").cast(pl.Float64).mean().alias("success_rate"),
        pl.col("success").cast(pl.Float64).std(ddof=1).alias("success_std"),
        pl.col("score").mean().alias("mean_score"),
        pl.col("n_steps").cast(pl.Float64).mean().alias("mean_steps"),
        pl.col("tokens_in").cast(pl.Float64).mean().alias("mean_tokens_in"),
        pl.col("tokens_out").cast(pl.Float64).mean().alias("mean_tokens_out"),
        pl.col("cost_usd").sum().alias("cost_usd"),
        (pl.col("_valid").sum() / pl.col("_steps").sum().clip(lower_bound=1)).alias("validity_rate"),
        pl.col("wall_s").mean().alias("mean_wall_s"),
    ] + [
        (pl.col("failure_mode") == m).cast(pl.Float64).mean().alias(f"fail_{m}")
        for m in FAILURE_MODES if m != "none"
    ]
    by_family = e.group_by("policy", "family").agg(aggs)
    overall = e.group_by("policy").agg(aggs).with_columns(pl.lit(ALL).alias("family"))
    return pl.concat([by_family, overall.select(by_family.columns)]).sort("policy", "family")


def benchmark_table(episodes: pl.DataFrame, steps: pl.DataFrame, split: str | None = "test") -> pl.DataFrame:
    """One row per (policy, family) plus a (policy, "all") row per policy."""
    if split is not None:
        episodes = episodes.filter(pl.col("split") == split)
    if episodes.is_empty():
        raise ValueError(f"no episodes on split {split!r} to benchmark")
    steps = steps.join(episodes.select("episode_id"), on="episode_id", how="semi")
    return _stats(episodes, steps)


def _clean(v: Any) -> Any:
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    if isinstance(v, float):
        return round(v, 6)
    return v


def benchmark_metrics(table: pl.DataFrame) -> dict[str, Any]:
    """Nested dict for `reports/details/benchmark.json`: policy -> family -> metric."""
    out: dict[str, Any] = {}
    for row in table.iter_rows(named=True):
        pol, fam = row.pop("policy"), row.pop("family")
        failures = {k.removeprefix("fail_"): _clean(row.pop(k)) for k in list(row) if k.startswith("fail_")}
        entry = {k: _clean(v) for k, v in row.items()}
        entry["failure_modes"] = failures
        out.setdefault(pol, {})[fam] = entry
    return out


def success_plot_rows(table: pl.DataFrame) -> list[dict[str, Any]]:
    """Rows for `dvc plots`: one per (policy, family) with its success rate."""
    return [
        {"policy": r["policy"], "family": r["family"], "success_rate": _clean(r["success_rate"]),
         "mean_score": _clean(r["mean_score"])}
        for r in table.filter(pl.col("family") != ALL).iter_rows(named=True)
    ]
