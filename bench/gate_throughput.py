"""Rows per second through a data-quality gate, beside Great Expectations alone on the same work.

The gate (`distillery.quality.gate`) validates a frame with GX and then does what GX does
not: cross-table checks through derived columns, failing rows quarantined with their
reasons, a JSON + HTML report. The peer, measured in the same run on the same rows, is GX
alone: the same derived frame (as pandas) and the same expectation suite, validated with a
COMPLETE result format, and nothing written. The ratio is the gate's overhead.

    python bench/gate_throughput.py [--episodes 2000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # tests.quality.conftest's fixtures

from tests.quality.conftest import make_trajectories  # noqa: E402

from distillery.quality import SUITES, gate  # noqa: E402
from machine import positive_int  # noqa: E402  (bench/, the script's own folder)


def gx_alone(frame, suite, refs) -> None:  # noqa: ANN001 - polars frame, Suite, refs
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch_def = context.data_sources.add_pandas("peer").add_dataframe_asset("frame") \
        .add_batch_definition_whole_dataframe("whole")
    derived = suite.derive(frame, refs) if suite.derive else frame
    batch = batch_def.get_batch(batch_parameters={"dataframe": derived.to_pandas()})
    result = batch.validate(gx.ExpectationSuite(name=suite.name, expectations=suite.expectations(refs)),
                            result_format={"result_format": "COMPLETE",
                                           "unexpected_index_column_names": list(suite.id_columns)})
    assert result.success


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--episodes", type=positive_int, default=2000,
                    help="synthetic episodes of 3 steps each; both tables are validated (default 2000)")
    ap.add_argument("--repeats", type=positive_int, default=3,
                    help="timed runs per side, alternating; each side's best counts (default 3)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    episodes, steps = make_trajectories(n_episodes=args.episodes, steps_per_episode=3)
    rows = episodes.height + steps.height
    with tempfile.TemporaryDirectory() as d:
        dirs = {"report_dir": Path(d) / "reports", "quarantine_dir": Path(d) / "quarantine"}
        gate(episodes.head(5), SUITES["episodes"], source="warm-up", **dirs)   # GX's import, once
        best = {"gate": float("inf"), "gx": float("inf")}
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            gate(episodes, SUITES["episodes"], source="mem", refs={"steps": steps}, **dirs)
            gate(steps, SUITES["steps"], source="mem", refs={"episodes": episodes}, **dirs)
            best["gate"] = min(best["gate"], time.perf_counter() - t0)
            t0 = time.perf_counter()
            gx_alone(episodes, SUITES["episodes"], {"steps": steps})
            gx_alone(steps, SUITES["steps"], {"episodes": episodes})
            best["gx"] = min(best["gx"], time.perf_counter() - t0)
    print(f"{rows:,} rows (episodes + steps), best of {args.repeats}:")
    print(f"  gate      {best['gate']:.2f} s  {rows / best['gate']:,.0f} rows/s")
    print(f"  GX alone  {best['gx']:.2f} s  {rows / best['gx']:,.0f} rows/s")
    print(f"  the gate takes {best['gate'] / best['gx']:.2f}x GX alone's time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
