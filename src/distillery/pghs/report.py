"""reports/pghs.md: the experiment's tables, the claims against the paper, and one
predicted-against-actual plot per user group (PNG files beside the report)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from distillery.io import atomic_path
from distillery.pghs.evaluate import COMPARED, DESCRIPTIONS, METHODS
from distillery.pghs.policies import PolicySet
from distillery.types import Claim

PLOTTED = ("reasoning_only", "fitting_only", "pghs")
COLOURS = {"reasoning_only": "#d95f02", "fitting_only": "#7570b3", "pghs": "#1b9e77"}


def plot_groups(predictions: pl.DataFrame, target: str, out_dir: str | Path) -> list[Path]:
    """One PNG per group: predicted against actual rate on held-out merchants (log axes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for group in sorted(set(predictions["user_group"].to_list())):
        sub = predictions.filter(pl.col("user_group") == group)
        y = sub[target].to_numpy()
        fig, ax = plt.subplots(figsize=(4.6, 4.4), dpi=110)
        lo, hi = np.inf, 0.0
        for m in PLOTTED:
            p = sub[m].to_numpy()
            err = np.mean(np.abs(p - y) / y)
            ax.scatter(y, p, s=14, alpha=0.75, color=COLOURS[m], label=f"{m} ({100 * err:.1f}%)")
            lo, hi = min(lo, y.min(), p.min()), max(hi, y.max(), p.max())
        ax.plot([lo, hi], [lo, hi], color="black", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"actual {target}")
        ax.set_ylabel(f"predicted {target}")
        ax.set_title(f"{group}: held-out merchants")
        ax.legend(fontsize=7, loc="upper left")
        fig.tight_layout()
        path = out_dir / f"pred_vs_actual_{group}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)
        paths.append(path)
    return paths


def _ms(s: dict[str, Any], scale: float = 100.0, digits: int = 2) -> str:
    return f"{scale * s['mean']:.{digits}f} ± {scale * s['std']:.{digits}f}"


def render(summary: dict[str, Any], claims: list[Claim], plots: list[Path],
           report_path: str | Path, policies: PolicySet | None = None) -> str:
    head = summary["headline_target"]
    seeds = summary["seeds"]
    slices = summary["slices"]
    lines = [
        "# PGHS: policy-guided hybrid simulation",
        "",
        f"Headline rate: `{head}`. Seeds {seeds}; every number is mean ± sample std over seeds. "
        f"Reasoning backend: `{summary['reasoning_backend']}`; fusion: `{summary['fuse_method']}`, "
        "fitted on validation merchants only.",
        "",
        "**Group simulation error** = mean over cells (merchant, strategy, user group) of "
        "|predicted − observed| / observed, where the observed rate sums the counts over every "
        "period the merchant ran that strategy. Definition, world and protocol: "
        "[docs/pghs.md](../docs/pghs.md).",
        "",
        "## Error (%) by method and slice",
        "",
        "| method | " + " | ".join(slices) + " |",
        "|---|" + "---|" * len(slices),
    ]
    for m in METHODS:
        cells = [_ms(summary["errors"][m][s][head]) for s in slices]
        lines.append(f"| {m} — {DESCRIPTIONS[m]} | " + " | ".join(cells) + " |")
    lines += ["", "Slices: " + "; ".join(f"`{k}`: {v}" for k, v in slices.items()) + ".", ""]
    others = [t for t in summary["targets"] if t != head]
    if others:
        lines += ["Secondary rates on held-out merchants (error %): " + "; ".join(
            f"`{t}`: " + ", ".join(f"{m} {_ms(summary['errors'][m]['test_merchants'][t])}"
                                   for m in ("reasoning_only", "fitting_only", "pghs"))
            for t in others) + ".", ""]
    lines += [
        "## Done criterion: fused below each single branch and each policy-free ablation",
        "",
        "On held-out merchants. **Paired** (the criterion): per seed, the other method's error "
        "minus PGHS's on the same split; holds when the mean of that difference exceeds its std "
        "over seeds. **Unpaired** (also shown): margin of the means against the larger of the "
        "two methods' stds, which is mostly split-to-split variation both methods share.",
        "",
        "| compared with | its error % | PGHS error % | paired margin (pts) | paired std (pts) | holds (paired) "
        "| unpaired spread (pts) | holds (unpaired) | relative |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in summary["criterion"]:
        lines.append(f"| {c['compared_with']} | {100 * c['other']:.2f} | {100 * c['pghs']:.2f} | "
                     f"{100 * c['paired_margin']:.2f} | {100 * c['paired_spread']:.2f} | "
                     f"{'yes' if c['holds'] else 'no'} | {100 * c['spread']:.2f} | "
                     f"{'yes' if c['holds_unpaired'] else 'no'} | "
                     f"{100 * (c['relative_improvement'] or 0):.1f}% |")
    lines += ["", f"Criterion met (paired): **{'yes' if summary['done'] else 'no'}**; unpaired: "
              f"**{'yes' if summary.get('done_unpaired') else 'no'}** (compared: {', '.join(COMPARED)}).", ""]
    lines += ["## Claims against the paper", "",
              "| finding | paper | measured | holds | detail |", "|---|---|---|---|---|"]
    for r in claims:
        lines.append(f"| {r.finding} | {r.paper_value} | {r.measured} | "
                     f"{'yes' if r.holds else 'no'} | {r.detail} |")
    if summary["ranking"]:
        lines += ["", "## Counterfactual test: ranking candidate strategies for held-out merchants",
                  "", "Each held-out merchant gets candidate strategies from the market catalog; "
                  "each is valued by the group-mix-weighted rate, predicted vs the generator's "
                  "true counterfactual (ordinary week). Spearman per merchant, then averaged; "
                  "top-1: the predicted best is the true best; regret: true loss from picking the "
                  "predicted best.", "",
                  "| method | Spearman | top-1 agreement | regret % |", "|---|---|---|---|"]
        for m in METHODS:
            r = summary["ranking"][m]
            lines.append(f"| {m} | {_ms(r['spearman'], 1, 3)} | {_ms(r['top1'], 1, 3)} | "
                         f"{_ms(r['regret'])} |")
    lines += ["", "## Error (%) per group on held-out merchants", "",
              "| group | " + " | ".join(METHODS) + " |", "|---|" + "---|" * len(METHODS)]
    for g in summary["group_errors"]["pghs"]:
        lines.append(f"| {g} | " + " | ".join(_ms(summary["group_errors"][m][g], digits=1)
                                               for m in METHODS) + " |")
    base = Path(report_path).parent
    lines += ["", f"## Predicted against actual `{head}` (seed {seeds[0]}, held-out merchants)", ""]
    for p in plots:
        lines.append(f"![{p.stem}]({p.relative_to(base).as_posix()})")
    if summary.get("fusion_seed0"):
        lines += ["", "## Fusion weights (seed 0): weight of the reasoning branch per group", "",
                  "| target | " + " | ".join(sorted(next(iter(summary['fusion_seed0']['coefs'].values())))) + " |"]
        groups = sorted(next(iter(summary["fusion_seed0"]["coefs"].values())))
        lines.append("|---|" + "---|" * len(groups))
        for t, table in summary["fusion_seed0"]["coefs"].items():
            lines.append(f"| {t} | " + " | ".join(f"{table[g]['a']:.2f}/{table[g]['b']:.2f}"
                                                  if g in table else "-" for g in groups) + " |")
        lines.append("")
        lines.append("Each entry is reasoning/fitting weight.")
    if policies is not None:
        strongest = sorted(policies.select(target=head, kind="response"), key=lambda p: -abs(p.effect))[:12]
        lines += ["", f"## Strongest mined response policies (seed {seeds[0]}, `{head}`)", "",
                  "All policies: `models/pghs/policies.txt`.", "", "```"]
        lines += [p.text() for p in strongest]
        lines += ["```"]
    c = summary["counts"]
    lines += ["", "## Data", "",
              f"Seed {seeds[0]}: {c.get('folds', 1)} merchant fold(s), each merchant held out once; "
              f"first fold: {c['train_merchants']} training, {c['val_merchants']} validation and "
              f"{c['test_merchants']} test merchants, {c['train_trajectories']} training "
              f"trajectories, {c['policies']} policies mined; {c['held_out_strategies']} strategies "
              f"held out of training. Pooled held-out cells: {c.get('test_merchants_cells')}. "
              f"Seconds per seed: {summary['seconds_per_seed']}.", ""]
    return "\n".join(lines)
