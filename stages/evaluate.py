"""Stage `evaluate`: the benchmark of every policy's trajectories on the test split.

Writes `reports/details/benchmark.json` (policy -> family -> every number), its headline
`metrics/benchmark.json` (success and validity per policy, for `dvc metrics`),
`plots/benchmark/success.json` (for `dvc plots`) and `reports/benchmark.html`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl

from distillery.config import EvaluateConfig, exit_on_config_error, load_section
from distillery.evaluate.benchmark import benchmark_metrics, benchmark_table, success_plot_rows
from distillery.evaluate.headline import benchmark_headline
from distillery.evaluate.report import render_html
from distillery.io import read_parquet, write_json, write_text
from stages.usage import take_no_options

TRAJ = Path("data/trajectories")


def main(argv: list[str] | None = None) -> int:
    take_no_options("evaluate", __doc__, argv)
    cfg = load_section(EvaluateConfig, "evaluate")
    eps, steps = [], []
    for name in cfg.policies:
        eps.append(read_parquet(TRAJ / name / "episodes.parquet", f"collect@{name}"))
        steps.append(read_parquet(TRAJ / name / "steps.parquet", f"collect@{name}"))
    episodes, all_steps = pl.concat(eps), pl.concat(steps)
    table = benchmark_table(episodes, all_steps, split=cfg.split)
    n_tasks = episodes.filter(pl.col("split") == cfg.split)["task_id"].n_unique()
    details = benchmark_metrics(table)
    write_json(details, "reports/details/benchmark.json")
    write_json(benchmark_headline(details), "metrics/benchmark.json")
    write_json(success_plot_rows(table), "plots/benchmark/success.json")
    write_text(render_html(table, cfg.split, n_tasks), "reports/benchmark.html")
    for r in table.filter(pl.col("family") == "all").iter_rows(named=True):
        print(f"evaluate: {r['policy']:>10} success {r['success_rate']:.3f} "
              f"score {r['mean_score']:.3f} validity {r['validity_rate']:.3f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_config_error("python -m stages.evaluate", main, sys.argv[1:]))
