"""The internalization grid: granularity x injection x regime x seeds, as DVC experiments.

Pure pieces the grid flow (`flows/grid.py`) and the `internalize_grid` stage are built
from: the cells and their `-S` overrides, experiment names, and the summary of finished runs: per-cell mean ± std over
seeds, the three paper findings as claim rows, a Markdown table of every run, and the
per-iteration plot. Each run is one `reports/details/internalize.json` of the `internalize` stage.

The findings are judged on paired runs (same other two axes, same seed), the rule the PGHS
claims use: a finding holds when the mean paired margin is positive and larger than the
standard deviation of the paired differences.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from distillery.io import atomic_path
from distillery.types import Claim

AXES: dict[str, tuple[str, ...]] = {
    "granularity": ("principle", "instance"),
    "injection": ("stepwise", "global"),
    "regime": ("off_policy", "on_policy"),
}
PAPER = "Continual experience internalization (arXiv 2606.04703)"
COMMAND = "make grid; dvc repro internalize_grid"


@dataclass(frozen=True)
class Cell:
    granularity: str
    injection: str
    regime: str

    @property
    def label(self) -> str:
        return f"{self.granularity}/{self.injection}/{self.regime}"

    def overrides(self, seed: int) -> list[str]:
        """`dvc exp run -S` values for this cell at `seed`."""
        return [f"internalize.granularity={self.granularity}", f"internalize.injection={self.injection}",
                f"internalize.regime={self.regime}", f"internalize.seed={seed}"]


def cells() -> list[Cell]:
    """All 8 cells, the paper's recipe (principle, step-wise, off-policy) first."""
    return [Cell(*c) for c in itertools.product(*AXES.values())]


def exp_name(cell: Cell, seed: int, tag: str) -> str:
    """A DVC experiment name (letters, digits, '-' only) that says what ran."""
    short = {"principle": "pr", "instance": "in", "stepwise": "sw", "global": "gl",
             "off_policy": "off", "on_policy": "on"}
    return f"ig-{tag}-{short[cell.granularity]}-{short[cell.injection]}-{short[cell.regime]}-s{seed}"


def parse_exp_name(name: str, tag: str) -> tuple[Cell, int] | None:
    """Inverse of `exp_name` for this tag; None for other experiments."""
    long = {"pr": "principle", "in": "instance", "sw": "stepwise", "gl": "global",
            "off": "off_policy", "on": "on_policy"}
    prefix = f"ig-{tag}-"
    if not name.startswith(prefix):
        return None
    parts = name[len(prefix):].split("-")
    if len(parts) != 4 or not parts[3].startswith("s") or any(p not in long for p in parts[:3]):
        return None
    try:
        seed = int(parts[3][1:])
    except ValueError:
        return None
    return Cell(long[parts[0]], long[parts[1]], long[parts[2]]), seed


# ---------------------------------------------------------------------------------------
# One run's numbers
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunNumbers:
    """What the grid compares, from one run's `reports/details/internalize.json`."""

    plain_curve: tuple[float, ...]         # greedy, no experience: before, after each iteration
    taught_curve: tuple[float, ...]        # greedy, the run's pool injected: before, after each
    teacher_sampled: float                 # mean over sampling seeds, pool injected, before training
    plain_sampled: float                   # ... and without it
    others_before: float                   # training users' test tasks, their principles shown
    others_after: float
    seconds: float

    @property
    def gain(self) -> float:
        """Plain success after the last iteration minus before any."""
        return self.plain_curve[-1] - self.plain_curve[0]

    @property
    def worst_drop(self) -> float:
        """How far plain success fell below its start at the worst iteration (>= 0)."""
        return max(0.0, self.plain_curve[0] - min(self.plain_curve[1:]))

    @property
    def forgetting(self) -> float:
        return self.others_before - self.others_after


def run_numbers(m: Mapping[str, Any]) -> RunNumbers:
    """Read one run's metrics; a clear error names what is missing."""
    try:
        before, its, final = m["before"], m["iterations"], m["final"]
        sampled = before["sampled"]
        plain = (before["heldout_plain"], *(r["success_plain"] for r in its))
        taught = (before["heldout_with_experience"], *(r["success_with_experience"] for r in its))
        return RunNumbers(
            plain_curve=tuple(float(x) for x in plain), taught_curve=tuple(float(x) for x in taught),
            teacher_sampled=statistics.fmean(v["with_experience"] for v in sampled.values()),
            plain_sampled=statistics.fmean(v["plain"] for v in sampled.values()),
            others_before=float(before["others_with_principles"]),
            others_after=float(final["others_with_principles"]), seconds=float(m.get("seconds", math.nan)))
    except (KeyError, TypeError, statistics.StatisticsError) as e:
        raise ValueError(f"not an internalize metrics record (missing {e}); was it written by stages/internalize.py?") from e


def runs_from_record(record: Mapping[str, Any]) -> dict[tuple[Cell, int], RunNumbers]:
    """The runs of a grid record (`experiments/internalize_grid.json`, written by the grid
    flow): {"runs": [{granularity, injection, regime, seed, metrics}, ...]}."""
    runs = {}
    for i, r in enumerate(record.get("runs", [])):
        try:
            key = (Cell(r["granularity"], r["injection"], r["regime"]), int(r["seed"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"grid record, run {i}: needs granularity, injection, regime and seed ({e})") from e
        runs[key] = run_numbers(r["metrics"])
    return runs


# ---------------------------------------------------------------------------------------
# Summary over runs
# ---------------------------------------------------------------------------------------


def mean_std(xs: Sequence[float]) -> tuple[float, float]:
    xs = [x for x in xs if not math.isnan(x)]
    if not xs:
        return math.nan, math.nan
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def fmt(xs: Sequence[float], digits: int = 3) -> str:
    m, s = mean_std(xs)
    return "n/a" if math.isnan(m) else f"{m:.{digits}f} ± {s:.{digits}f}"


def paired(runs: Mapping[tuple[Cell, int], RunNumbers], axis: str, better: str, worse: str,
           metric: str) -> list[float]:
    """Differences `metric(better) - metric(worse)` over runs equal on every other axis and seed
    (`metric`: a RunNumbers attribute, or "stability" = minus the worst drop)."""
    out = []
    for (cell, seed), r in sorted(runs.items(), key=lambda kv: (kv[0][0].label, kv[0][1])):
        if getattr(cell, axis) != better:
            continue
        twin = runs.get((Cell(**{**cell.__dict__, axis: worse}), seed))
        if twin is not None:
            out.append(_metric(r, metric) - _metric(twin, metric))
    return out


def verdict(diffs: Sequence[float]) -> tuple[bool | None, str]:
    """(holds, how) by the paired rule: mean margin > 0 and larger than the diffs' std
    (None: too few pairs to say)."""
    if len(diffs) < 2:
        return None, f"not measured: {len(diffs)} paired run(s); the rule needs at least 2"
    m, s = mean_std(diffs)
    return bool(m > 0 and m > s), f"paired margin {m:+.3f} vs std of the paired difference {s:.3f} over {len(diffs)} pairs"


FINDINGS = (
    ("principles are more durable than instances over iterations", "granularity", "principle", "instance",
     "gain", "instance-level experience collapses progressively over iterations",
     "plain success after the last iteration minus before (greedy, held-out user's test tasks)"),
    ("step-wise beats global injection", "injection", "stepwise", "global", "teacher_sampled",
     "step-wise injection beats whole-pool injection; 63.8% of global-injection failures are premature answers",
     "success of the warm-up model with the experience injected, mean over sampling seeds"),
    ("off-policy distillation is more stable than on-policy", "regime", "off_policy", "on_policy", "stability",
     "on-policy context distillation collapses over iterations; off-policy stays stable",
     "minus the worst drop of plain success below its start over the iterations (higher = more stable)"),
)


def _metric(r: RunNumbers, name: str) -> float:
    return -r.worst_drop if name == "stability" else getattr(r, name)


def claim_rows(runs: Mapping[tuple[Cell, int], RunNumbers]) -> list[Claim]:
    """One row per paper finding, then one per cell (the whole grid, mean ± std over seeds)."""
    rows = []
    all_seeds = ", ".join(str(s) for s in sorted({seed for _, seed in runs}))
    for finding, axis, better, worse, metric, paper, what in FINDINGS:
        diffs = paired(runs, axis, better, worse, metric)
        holds, how = verdict(diffs)
        b = [_metric(r, metric) for (c, _), r in runs.items() if getattr(c, axis) == better]
        w = [_metric(r, metric) for (c, _), r in runs.items() if getattr(c, axis) == worse]
        rows.append(Claim(paper=PAPER, finding=finding, paper_value=paper,
                          measured=f"{better} {fmt(b)} vs {worse} {fmt(w)}", holds=holds,
                          detail=f"{what}; {how}; runs: {len(b)} vs {len(w)}", spread="± std over runs",
                          seeds=all_seeds, command=COMMAND))
    by_cell: dict[Cell, list[tuple[int, RunNumbers]]] = {}
    for (cell, seed), r in runs.items():
        by_cell.setdefault(cell, []).append((seed, r))
    for cell in cells():
        got = sorted(by_cell.get(cell, []), key=lambda x: x[0])
        if not got:
            rows.append(Claim(paper=PAPER, finding=f"cell {cell.label}", paper_value="-", measured="no finished run",
                              holds=None, detail="the run failed or was not queued", command=COMMAND))
            continue
        rs = [r for _, r in got]
        curve = " -> ".join(fmt([r.plain_curve[i] for r in rs]) for i in range(min(len(r.plain_curve) for r in rs)))
        rows.append(Claim(paper=PAPER, finding=f"cell {cell.label}", paper_value="-", measured=f"plain {curve}",
                          holds=None,
                          detail=(f"seeds {[s for s, _ in got]}; teacher (sampled) {fmt([r.teacher_sampled for r in rs])} "
                                  f"vs plain {fmt([r.plain_sampled for r in rs])}; with experience after "
                                  f"{fmt([r.taught_curve[-1] for r in rs])}; others with principles drop "
                                  f"{fmt([r.forgetting for r in rs])}"),
                          spread="± std over seeds", seeds=", ".join(str(s) for s, _ in got), command=COMMAND))
    return rows


def table(runs: Mapping[tuple[Cell, int], RunNumbers]) -> list[dict[str, Any]]:
    """Every run as a row (the Prefect table artifact and the Markdown report)."""
    out = []
    for (cell, seed), r in sorted(runs.items(), key=lambda kv: ([c.label for c in cells()].index(kv[0][0].label),
                                                                   kv[0][1])):
        out.append({"cell": cell.label, "seed": seed,
                    "teacher_sampled": round(r.teacher_sampled, 4), "plain_sampled": round(r.plain_sampled, 4),
                    "plain_curve": " ".join(f"{x:.3f}" for x in r.plain_curve),
                    "with_experience_curve": " ".join(f"{x:.3f}" for x in r.taught_curve),
                    "gain": round(r.gain, 4), "worst_drop": round(r.worst_drop, 4),
                    "others_drop": round(r.forgetting, 4), "seconds": r.seconds})
    return out


def markdown(runs: Mapping[tuple[Cell, int], RunNumbers], header: str, figure: str | None) -> str:
    return markdown_page(table(runs), header, figure)


def markdown_page(rows: Sequence[Mapping[str, Any]], header: str, figure: str | None) -> str:
    """A grid's report: the header, the figure if any, then one table row per run."""
    cols = list(rows[0]) if rows else []
    lines = [header, ""]
    if figure:
        lines += [f"![success per iteration]({figure})", ""]
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def html_page(rows: Sequence[Mapping[str, Any]], title: str, figure: str | None) -> str:
    """The same comparison as a standalone HTML page: the figure if any, one row per run."""
    from html import escape

    cols = list(rows[0]) if rows else []
    head = "".join(f"<th>{escape(str(c))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(r[c]))}</td>" for c in cols) + "</tr>" for r in rows)
    img = f'<p><img src="{escape(figure)}" alt="success per iteration"></p>' if figure else ""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title><style>"
            "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}</style></head>"
            f"<body><h1>{escape(title)}</h1>{img}<table><tr>{head}</tr>{body}</table>"
            f"<p>{len(rows)} runs</p></body></html>\n")


def plot(runs: Mapping[tuple[Cell, int], RunNumbers], path: str) -> None:
    """Success per iteration, mean ± std over seeds, one line per cell: plain (left) and with
    the run's experience injected (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for cell in cells():
        rs = [r for (c, _), r in runs.items() if c == cell]
        if not rs:
            continue
        n = min(len(r.plain_curve) for r in rs)
        style = "-" if cell.regime == "off_policy" else "--"
        marker = "o" if cell.granularity == "principle" else "s"
        for ax, attr in zip(axes, ("plain_curve", "taught_curve"), strict=True):
            stats = [mean_std([getattr(r, attr)[i] for r in rs]) for i in range(n)]
            m = [s[0] for s in stats]
            s = [s[1] for s in stats]
            line, = ax.plot(range(n), m, style, marker=marker, label=cell.label)
            ax.fill_between(range(n), [a - b for a, b in zip(m, s, strict=True)],
                            [a + b for a, b in zip(m, s, strict=True)], alpha=0.12, color=line.get_color())
    n_max = max((len(r.plain_curve) for r in runs.values()), default=1)
    for ax, title in zip(axes, ("without experience", "with the run's experience injected"), strict=True):
        ax.set_xticks(range(n_max))
        ax.set_title(f"held-out user's test tasks, {title}")
        ax.set_xlabel("iteration (0 = the warm-up model)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("success (greedy), mean ± std over seeds")
    axes[1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
