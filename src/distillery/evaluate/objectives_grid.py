"""The objectives grid: RL methods and distillation methods x starts x seeds.

Pure pieces the grid flow (`flows/grid.py --grid objectives`) and the `objectives_grid`
stage are built from, mirroring `evaluate.grid` (the internalization grid): the cells and
their `dvc exp run -S` overrides, experiment names, and the summary of finished runs.

- RL cells (`rl` stage): GRPO, GiGPO, SIRI on the held-out user; a run is one
  `reports/details/rl.json` (greedy test success before and after each iteration).
- Distillation cells (`distill` stage): OPD, AOPD, SCOPE and GKD from the strong and the
  weak start; a run is one `reports/details/distill.json` (the student's curve and the teacher's
  success).
- The SelSkill cell (`selskill` stage): one run is one `reports/details/selskill.json`, which holds
  all three arms (never-invoke and always-invoke measured on the skill-enabled
  starting policy, and SelSkill's curve over its DPO rounds), with execution precision.

The papers' findings are judged on runs paired by seed (same tasks, same rollout seeds):
a finding holds when the mean paired margin is positive and larger than the standard
deviation of the paired differences (`evaluate.grid.verdict`, the rule PGHS uses too).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from distillery.evaluate.grid import fmt, markdown_page, mean_std, verdict
from distillery.io import atomic_path
from distillery.types import Claim

RL_METHODS = ("grpo", "gigpo", "siri")
DISTILL_METHODS = ("opd", "aopd", "scope", "gkd")
STARTS = ("strong", "weak")
COMMAND = "make objectives-grid; dvc repro objectives_grid"
PAPERS = {"gigpo": "GiGPO (arXiv 2505.10978)", "siri": "SIRI (arXiv 2606.02355)",
          "aopd": "AOPD (arXiv 2605.06387)", "scope": "SCOPE (arXiv 2604.10688)",
          "grpo": "GRPO (arXiv 2402.03300)", "opd": "On-policy distillation (Thinking Machines)",
          "gkd": "GKD (arXiv 2306.13649)"}


@dataclass(frozen=True)
class Cell:
    stage: str           # rl | distill | selskill
    method: str
    start: str = ""      # distill only: strong | weak

    @property
    def label(self) -> str:
        return f"{self.stage}/{self.method}" + (f"/{self.start}" if self.start else "")

    def overrides(self, seed: int) -> list[str]:
        """`dvc exp run -S` values for this cell at `seed`."""
        if self.stage == "selskill":         # one method: only the seed varies
            return [f"selskill.seed={seed}"]
        out = [f"{self.stage}.method={self.method}", f"{self.stage}.seed={seed}"]
        return out + ([f"distill.start={self.start}"] if self.start else [])

    @property
    def target(self) -> str:
        """The stage `dvc exp run` reproduces."""
        return self.stage

    @property
    def metrics_file(self) -> str:
        return f"reports/details/{self.stage}.json"


def cells(distill_methods: Sequence[str] = DISTILL_METHODS) -> list[Cell]:
    """3 RL cells, every distillation method from each start, then SelSkill."""
    return ([Cell("rl", m) for m in RL_METHODS]
            + [Cell("distill", m, s) for s in STARTS for m in distill_methods]
            + [Cell("selskill", "selskill")])


_SHORT = {"rl": "rl", "distill": "ds", "selskill": "ss"}


def exp_name(cell: Cell, seed: int, tag: str) -> str:
    """A DVC experiment name (letters, digits, '-') that says what ran."""
    return f"og-{tag}-{_SHORT[cell.stage]}-{cell.method}" + (f"-{cell.start}" if cell.start else "") + f"-s{seed}"


def parse_exp_name(name: str, tag: str) -> tuple[Cell, int] | None:
    """Inverse of `exp_name` for this tag; None for other experiments."""
    prefix = f"og-{tag}-"
    if not name.startswith(prefix):
        return None
    parts = name[len(prefix):].split("-")
    long = {v: k for k, v in _SHORT.items()}
    if len(parts) not in (3, 4) or parts[0] not in long or not parts[-1].startswith("s"):
        return None
    try:
        seed = int(parts[-1][1:])
    except ValueError:
        return None
    stage = long[parts[0]]
    if stage in ("rl", "selskill") and len(parts) == 3:
        return Cell(stage, parts[1]), seed
    if stage == "distill" and len(parts) == 4 and parts[2] in STARTS:
        return Cell("distill", parts[1], parts[2]), seed
    return None


# ---------------------------------------------------------------------------------------
# One run's numbers
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunNumbers:
    """What the grid compares, from one `reports/details/rl.json` or `reports/details/distill.json`."""

    curve: tuple[float, ...]     # greedy test success: before, then after each iteration
    teacher: float               # distill: the teacher's greedy test success; rl: NaN
    seconds: float
    # selskill: the other arms' success (always, never, warmup_never), and the final policy's
    # precision (NaN when it attempted no call) and calls per episode
    arms: dict[str, float] = field(default_factory=dict)
    # distill: what the student learned on, so cells run under different settings say so
    setup: str = ""

    @property
    def final(self) -> float:
        return self.curve[-1]

    @property
    def gain(self) -> float:
        return self.curve[-1] - self.curve[0]

    @property
    def gap_closed(self) -> float:
        """(final - start) / (teacher - start); NaN without a teacher or a gap."""
        if math.isnan(self.teacher) or self.teacher <= self.curve[0]:
            return math.nan
        return (self.curve[-1] - self.curve[0]) / (self.teacher - self.curve[0])


def run_numbers(m: Mapping[str, Any]) -> RunNumbers:
    """Read one run's metrics; a clear error names what is missing."""
    try:
        curve = tuple(float(x) for x in m["curve"])
        teacher = float(m["before"]["teacher"]) if "teacher" in m["before"] else math.nan
        arms = {}
        if "selskill" in m.get("final", {}):
            f = m["final"]
            arms = {arm: float(f[arm]["success"]) for arm in ("always", "never", "warmup_never") if arm in f}
            p = f["selskill"]["precision"]
            arms |= {"precision": math.nan if p is None else float(p),
                     "calls_per_episode": float(f["selskill"]["calls_per_episode"])}
        return RunNumbers(curve, teacher, float(m.get("seconds", math.nan)), arms, distill_setup(m.get("config", {})))
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"not an rl/distill/selskill metrics record (missing {e}); was it written by "
                         "stages/rl.py, stages/distill.py or stages/selskill.py?") from e


def distill_setup(cfg: Mapping[str, Any]) -> str:
    """A distill run's learning set-up from its recorded config ('' for other stages)."""
    if "teacher_dir" not in cfg:
        return ""
    lr = cfg.get("lr")
    return (f"student samples on {cfg.get('learn_split', '?')} tasks, {cfg.get('tasks_per_family', '?')} per family "
            f"an iteration, lr {'not recorded' if lr is None else f'{lr:g}'}")


def runs_from_record(record: Mapping[str, Any]) -> dict[tuple[Cell, int], RunNumbers]:
    """The runs of `experiments/objectives_grid.json`: {"runs": [{stage, method, start, seed, metrics}]}."""
    runs = {}
    for i, r in enumerate(record.get("runs", [])):
        try:
            key = (Cell(r["stage"], r["method"], r.get("start", "")), int(r["seed"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"grid record, run {i}: needs stage, method and seed ({e})") from e
        runs[key] = run_numbers(r["metrics"])
    return runs


# ---------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------


def paired(runs: Mapping[tuple[Cell, int], RunNumbers], better: Cell, worse: Cell, metric: str) -> list[float]:
    """metric(better) - metric(worse) over the seeds both ran."""
    out = []
    for (cell, seed), r in sorted(runs.items(), key=lambda kv: kv[0][1]):
        if cell == better and (worse, seed) in runs:
            out.append(getattr(r, metric) - getattr(runs[(worse, seed)], metric))
    return out


# (better method, worse method, paper's number) per comparison; distillation ones per start.
RL_FINDINGS = (("gigpo", "grpo", "ALFWorld: more than +12 points over GRPO (Qwen2.5-1.5B/7B)"),
               ("siri", "gigpo", "ALFWorld 0.908 -> 0.930; WebShop success 0.728 -> 0.813"))
DISTILL_FINDINGS = (("aopd", "opd", {"strong": "+4.09 points avg@k over OPD", "weak": "+8.34 points avg@k over OPD"}),
                    ("scope", "opd", {"strong": "+11.42% relative Avg@32 over OPD", "weak": "+11.42% relative Avg@32 over OPD"}))


def claim_rows(runs: Mapping[tuple[Cell, int], RunNumbers]) -> list[Claim]:
    """The papers' findings (paired by seed), our bars (every RL method above the
    warm-up model, every distillation method closing part of the gap), then one row per cell."""
    rows = []
    for better, worse, paper in RL_FINDINGS:
        b, w = Cell("rl", better), Cell("rl", worse)
        diffs = paired(runs, b, w, "final")
        holds, how = verdict(diffs)
        rows.append(Claim(paper=PAPERS[better], finding=f"{better} over {worse} (held-out user)", paper_value=paper,
                          measured=f"{better} {fmt(_vals(runs, b, 'final'))} vs {worse} {fmt(_vals(runs, w, 'final'))}",
                          holds=holds, detail=f"greedy test success after the last iteration; {how}",
                          spread="± std over seeds", seeds=_seeds(runs, b), command=COMMAND))
    for better, worse, paper in DISTILL_FINDINGS:
        for start in STARTS:
            b, w = Cell("distill", better, start), Cell("distill", worse, start)
            diffs = paired(runs, b, w, "final")
            holds, how = verdict(diffs)
            rows.append(Claim(paper=PAPERS[better], finding=f"{better} over {worse} ({start} start)",
                              paper_value=paper[start],
                              measured=f"{better} {fmt(_vals(runs, b, 'final'))} vs {worse} {fmt(_vals(runs, w, 'final'))}",
                              holds=holds, detail=f"student's greedy test success after the last iteration; {how}",
                              spread="± std over seeds", seeds=_seeds(runs, b), command=COMMAND))
    rows += selskill_rows(runs)
    for cell in sorted({c for c, _ in runs if c.stage != "selskill"}, key=_order):
        rs = [r for (c, _), r in sorted(runs.items(), key=lambda kv: kv[0][1]) if c == cell]
        seeds = sorted(s for c, s in runs if c == cell)
        n = min(len(r.curve) for r in rs)
        curve = " -> ".join(fmt([r.curve[i] for r in rs]) for i in range(n))
        if cell.stage == "rl":
            gains = [r.gain for r in rs]
            m, s = mean_std(gains)
            holds = bool(m > 0 and m > s) if len(rs) > 1 else bool(m > 0)
            rows.append(Claim(paper=PAPERS[cell.method], finding=f"{cell.method} raises the held-out user's test "
                              "success above the warm-up model's", paper_value="-", measured=curve,
                              holds=holds, detail=f"seeds {seeds}; gain {fmt(gains)} (holds: mean gain > 0 and > its std)",
                              spread="± std over seeds", seeds=_seeds(runs, cell), command=COMMAND))
        else:
            closed = [r.gap_closed for r in rs]
            m, s = mean_std(closed)
            rows.append(Claim(paper=PAPERS[cell.method], finding=f"{cell.method} ({cell.start} start) closes part of "
                              "the student-teacher gap", paper_value="-",
                              measured=f"{curve} (teacher {fmt([r.teacher for r in rs])})",
                              holds=bool(m > 0 and (len(rs) < 2 or m > s)) if not math.isnan(m) else None,
                              detail=(f"seeds {seeds}; share of the gap closed {fmt(closed, 2)} (holds: mean > 0 and > its "
                                      "std" + ("" if not math.isnan(m) else "; not measured: no gap to close") + ")"
                                      + "".join(f"; {x}" for x in sorted({r.setup for r in rs if r.setup}))),
                              spread="± std over seeds", seeds=_seeds(runs, cell), command=COMMAND))
    return rows


SELSKILL = Cell("selskill", "selskill")


def selskill_rows(runs: Mapping[tuple[Cell, int], RunNumbers]) -> list[Claim]:
    """SelSkill against always-invoke (success, paired by seed within each run) and its
    execution precision; always-invoke's calls are the harness's, valid by construction."""
    rs = [(s, r) for (c, s), r in sorted(runs.items(), key=lambda kv: kv[0][1]) if c == SELSKILL]
    if not rs:
        return []
    seeds = [s for s, _ in rs]
    finals = [r.final for _, r in rs]
    always = [r.arms.get("always", math.nan) for _, r in rs]
    never = [r.arms.get("never", math.nan) for _, r in rs]
    holds, how = verdict([f - a for f, a in zip(finals, always, strict=True)])
    precision = [r.arms.get("precision", math.nan) for _, r in rs]
    calls = [r.arms.get("calls_per_episode", math.nan) for _, r in rs]
    defined = [p for p in precision if not math.isnan(p)]
    curve = " -> ".join(fmt([r.curve[i] for _, r in rs]) for i in range(min(len(r.curve) for _, r in rs)))
    return [
        Claim(paper="SelSkill (arXiv 2606.00510)", finding="selskill's success over always-invoke",
              paper_value="ALFWorld Qwen3-8B 75.8% -> 86.7%",
              measured=f"selskill {fmt(finals)} vs always {fmt(always)} (never {fmt(never)}); selskill per round {curve}",
              holds=holds, detail=f"seeds {seeds}; greedy held-out test success; always and never are the "
                                  f"skill-enabled starting policy; {how}",
              spread="± std over seeds", seeds=", ".join(map(str, seeds)), command=COMMAND),
        Claim(paper="SelSkill (arXiv 2606.00510)", finding="selskill's execution precision over always-invoke",
              paper_value="70.9% -> 100%",
              measured=f"selskill precision {fmt(defined) if defined else 'n/a'} over {len(defined)} of {len(rs)} seeds "
                       f"with a call; calls per episode {fmt(calls, 2)}; always-invoke 1.000 by construction",
              holds=bool(min(defined) >= 1.0) if defined else None,
              detail="precision = valid, complete use_skill calls / attempted, over the calls the policy wrote; "
                     "always-invoke's calls are written by the harness, so only SelSkill's own calls are tested "
                     "(holds: every call valid" + ("" if defined else "; not measured: no call made") + ")",
              spread="± std over seeds", seeds=", ".join(map(str, seeds)), command=COMMAND),
    ]


def control_rows(runs: Mapping[tuple[Cell, int], RunNumbers], control: Mapping[str, Any] | None
                 ) -> list[Claim]:
    """GKD from the strong start against its no-teacher control (`experiments/gkd_sft_control.py`:
    plain likelihood on exactly GKD's demonstration half), paired by seed: whether GKD's gain is
    the teacher's. No row without the control's record or GKD's runs."""
    if not control:
        return []
    base = {int(r["seed"]): float(r["final"]) for r in control.get("runs", [])}
    gkd = Cell("distill", "gkd", "strong")
    seeds = sorted(s for c, s in runs if c == gkd and s in base)
    if not seeds:
        return []
    finals = [runs[(gkd, s)].final for s in seeds]
    ctrl = [base[s] for s in seeds]
    holds, how = verdict([f - c for f, c in zip(finals, ctrl, strict=True)])
    return [Claim(paper=PAPERS["gkd"], finding="gkd's gain (strong start) is the teacher's: gkd over plain likelihood "
                  "on its own demonstration half", paper_value="-",
                  measured=f"gkd {fmt(finals)} vs no-teacher control {fmt(ctrl)}", holds=holds,
                  detail=f"seeds {seeds}; the control trains the strong start on the oracle demonstrations GKD drew, "
                         f"without the teacher (experiments/gkd_sft_control.json); {how}",
                  spread="± std over seeds", seeds=", ".join(map(str, seeds)),
                  command="python -m experiments.gkd_sft_control; dvc repro objectives_grid")]


def _seeds(runs: Mapping[tuple[Cell, int], RunNumbers], cell: Cell) -> str:
    return ", ".join(str(s) for s in sorted(s for c, s in runs if c == cell))


def _vals(runs: Mapping[tuple[Cell, int], RunNumbers], cell: Cell, metric: str) -> list[float]:
    return [getattr(r, metric) for (c, _), r in runs.items() if c == cell]


def _order(cell: Cell) -> tuple[int, str]:
    labels = [c.label for c in cells()]
    return (labels.index(cell.label) if cell.label in labels else len(labels), cell.label)


def table(runs: Mapping[tuple[Cell, int], RunNumbers]) -> list[dict[str, Any]]:
    """Every run as a row (the Prefect table artifact and the Markdown report)."""
    return [{"cell": c.label, "seed": s, "curve": " ".join(f"{x:.3f}" for x in r.curve),
             "final": round(r.final, 4), "gain": round(r.gain, 4),
             "teacher": "" if math.isnan(r.teacher) else round(r.teacher, 4),
             "gap_closed": "" if math.isnan(r.gap_closed) else round(r.gap_closed, 3),
             "other_arms": ", ".join(f"{k} {v:.3f}" for k, v in r.arms.items() if not math.isnan(v)),
             "seconds": r.seconds}
            for (c, s), r in sorted(runs.items(), key=lambda kv: (_order(kv[0][0]), kv[0][1]))]


def markdown(runs: Mapping[tuple[Cell, int], RunNumbers], header: str, figure: str | None) -> str:
    return markdown_page(table(runs), header, figure)


def plot(runs: Mapping[tuple[Cell, int], RunNumbers], path: str) -> None:
    """Greedy test success per iteration, mean ± std over seeds: RL cells (left), distillation
    from the strong (middle) and weak (right) start, the teacher dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (("rl", ""), ("distill", "strong"), ("distill", "weak"), ("selskill", ""))
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.5))
    for ax, (stage, start) in zip(axes, panels, strict=True):
        here = sorted({c for c, _ in runs if c.stage == stage and c.start == start}, key=_order)
        teachers = []
        for cell in here:
            rs = [r for (c, _), r in runs.items() if c == cell]
            n = min(len(r.curve) for r in rs)
            stats = [mean_std([r.curve[i] for r in rs]) for i in range(n)]
            m, s = [x[0] for x in stats], [x[1] for x in stats]
            line, = ax.plot(range(n), m, marker="o", label=cell.method)
            ax.fill_between(range(n), [a - b for a, b in zip(m, s, strict=True)],
                            [a + b for a, b in zip(m, s, strict=True)], alpha=0.12, color=line.get_color())
            teachers += [r.teacher for r in rs if not math.isnan(r.teacher)]
            for arm, style in (("always", "--"), ("never", "-.")):
                vals = [r.arms[arm] for r in rs if arm in r.arms]
                if vals:
                    ax.axhline(sum(vals) / len(vals), ls=style, color="gray", label=f"{arm}-invoke")
        if teachers:
            ax.axhline(sum(teachers) / len(teachers), ls=":", color="k", label="teacher")
        ax.set_title({"rl": "RL, held-out user's test tasks", "selskill": "SelSkill, held-out user's test tasks"}
                     .get(stage, f"distillation, {start} start, test split"))
        ax.set_xlabel("round (0 = the skill-enabled start)" if stage == "selskill" else "iteration (0 = the start)")
        ax.grid(alpha=0.3)
        if here:
            ax.legend(fontsize=8)
    axes[0].set_ylabel("success (greedy), mean ± std over seeds")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
