"""`reports/benchmark.html`: the benchmark as a self-contained page (tables and one chart)."""

from __future__ import annotations

import base64
import html
import io
from datetime import UTC, datetime
from typing import Any

import polars as pl

from distillery.evaluate.benchmark import ALL
from distillery.types import FAILURE_MODES

_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:1rem 0;font-size:.9rem}
th,td{border:1px solid #ccc;padding:.3rem .6rem;text-align:right}
th{background:#f3f3f3} td:first-child,th:first-child{text-align:left}
caption{caption-side:top;text-align:left;font-weight:600;padding:.4rem 0}
.muted{color:#777;font-size:.85rem}
"""


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 1000 else f"{v:,.0f}"
    return html.escape(str(v))


def _table(rows: list[dict[str, Any]], cols: list[str], caption: str) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(c))}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<table><caption>{html.escape(caption)}</caption><tr>{head}</tr>{body}</table>"


def success_chart_png(table: pl.DataFrame) -> bytes:
    """Grouped bars: success rate per family, one bar per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fams = sorted(f for f in table["family"].unique().to_list() if f != ALL) + [ALL]
    pols = sorted(table["policy"].unique().to_list())
    width = 0.8 / max(1, len(pols))
    fig, ax = plt.subplots(figsize=(max(6, len(fams) * 0.9), 3.6), dpi=110)
    for i, pol in enumerate(pols):
        sub = {r["family"]: r["success_rate"] for r in table.filter(pl.col("policy") == pol).iter_rows(named=True)}
        xs = [j + i * width for j in range(len(fams))]
        ax.bar(xs, [sub.get(f) or 0.0 for f in fams], width=width, label=pol)
    ax.set_xticks([j + width * (len(pols) - 1) / 2 for j in range(len(fams))])
    ax.set_xticklabels(fams, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success rate")
    ax.legend(fontsize=8, ncols=min(4, len(pols)))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def render_html(table: pl.DataFrame, split: str, n_tasks: int) -> str:
    overall = table.filter(pl.col("family") == ALL).to_dicts()
    cols = ["policy", "episodes", "success_rate", "mean_score", "mean_steps", "validity_rate",
            "mean_tokens_in", "mean_tokens_out", "cost_usd", "mean_wall_s"]
    fams = table.filter(pl.col("family") != ALL)
    pivot_rows = []
    for fam in sorted(fams["family"].unique().to_list()):
        row: dict[str, Any] = {"family": fam}
        for r in fams.filter(pl.col("family") == fam).iter_rows(named=True):
            row[r["policy"]] = r["success_rate"]
        pivot_rows.append(row)
    pols = sorted(table["policy"].unique().to_list())
    fail_cols = [f"fail_{m}" for m in FAILURE_MODES if m != "none"]
    fail_rows = [{"policy": r["policy"], **{c.removeprefix("fail_"): r[c] for c in fail_cols}} for r in overall]
    png = base64.b64encode(success_chart_png(table)).decode()
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Distillery benchmark</title>
<style>{_CSS}</style></head><body>
<h1>Distillery benchmark</h1>
<p class="muted">Split <b>{html.escape(split)}</b>, {n_tasks} tasks. Generated {stamp}.
Success = every check of the task passed on the final state; score = fraction of checks passed.</p>
{_table(overall, cols, "Overall, per policy")}
<img alt="success rate per family and policy" src="data:image/png;base64,{png}">
{_table(pivot_rows, ["family", *pols], "Success rate per family")}
{_table(fail_rows, ["policy"] + [c.removeprefix("fail_") for c in fail_cols], "Share of episodes per failure pattern")}
<p class="muted">Failure patterns are defined in <code>src/distillery/evaluate/failures.py</code>.</p>
</body></html>
"""
