"""The SQL grid: TRUST-SQL's comparisons as DVC experiments, cells x seeds.

Pure pieces the grid flow (`flows/grid.py --grid sql`) and the `sql_grid` stage are built
from, mirroring `evaluate.grid`: the cells and their `dvc exp run -S` overrides, experiment
names, and the summary of finished runs. A run is one `reports/details/sql_evaluate.json` of the
`sql_evaluate` stage (which reproduces collect -> warm-up -> RL -> evaluation as needed);
the seed is `sql_rl.seed`, so the cells that change only the RL share one warm-up.

Cells:
- `dual` (the recipe) and `grpo` (one summed reward): Dual-Track against standard GRPO;
- `no_propose`: the environment without the Propose phase (and an oracle that does not
  propose), warm-up and Dual-Track RL as in `dual`;
- `full_schema`, `gold_schema`: every table (cut to fit) or the gold tables in the first
  observation instead of tools, warm-up and RL on the same setting; all three settings are
  evaluated on the schema-size sets (about 20, 50, 200 tables);
- `no_warmup`: RL from a student warmed up on the random policy's episodes (the call syntax
  without the oracle's strategy; a model from scratch writes nothing valid to reinforce).

Findings are judged on runs paired by seed: one holds when the mean paired margin is
positive and larger than the standard deviation of the paired differences
(`evaluate.grid.verdict`); RL against its warm-up uses the track's own rule (the mean gain above
two standard deviations of the RL accuracies over seeds).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from distillery.evaluate.grid import fmt, markdown_page, mean_std, verdict
from distillery.types import Claim

PAPER = "TRUST-SQL (arXiv 2603.16448)"
COMMAND = "make sql-grid; dvc repro sql_grid"

CELLS: dict[str, tuple[str, ...]] = {
    "dual": ("sql_rl.method=dual",),
    "grpo": ("sql_rl.method=grpo",),
    "no_propose": ("sql_rl.method=dual", "sql_track.propose_phase=false"),
    "full_schema": ("sql_rl.method=dual", "sql_track.schema_prompt=full"),
    "gold_schema": ("sql_rl.method=dual", "sql_track.schema_prompt=gold"),
    "no_warmup": ("sql_rl.method=dual", "sql_collect.policies=[oracle,random]", "sql_warmup.teacher=random",
                  "sql_warmup.only_success=false"),
}


@dataclass(frozen=True)
class Cell:
    name: str

    @property
    def label(self) -> str:
        return self.name

    def overrides(self, seed: int) -> list[str]:
        """`dvc exp run -S` values for this cell at `seed`."""
        return [*CELLS[self.name], f"sql_rl.seed={seed}"]

    @property
    def target(self) -> str:
        return "sql_evaluate"

    @property
    def metrics_file(self) -> str:
        return "reports/details/sql_evaluate.json"


def cells() -> list[Cell]:
    return [Cell(n) for n in CELLS]


def exp_name(cell: Cell, seed: int, tag: str) -> str:
    """A DVC experiment name (letters, digits, '-')."""
    return f"sg-{tag}-{cell.name.replace('_', '')}-s{seed}"


def parse_exp_name(name: str, tag: str) -> tuple[Cell, int] | None:
    prefix = f"sg-{tag}-"
    if not name.startswith(prefix):
        return None
    parts = name[len(prefix):].split("-")
    short = {n.replace("_", ""): n for n in CELLS}
    if len(parts) != 2 or parts[0] not in short or not parts[1].startswith("s"):
        return None
    try:
        return Cell(short[parts[0]]), int(parts[1][1:])
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------
# One run's numbers
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunNumbers:
    """What the grid compares, from one `reports/details/sql_evaluate.json`."""

    warmup: dict[str, float]               # the warm-up student on the held-out databases
    student: dict[str, float]              # the RL student on the held-out databases
    scale: dict[str, dict[str, float]]     # size -> the RL student's summary
    curve: tuple[float, ...]               # validation accuracy over the RL iterations
    seconds: float
    test: dict[str, float] = field(default_factory=dict)    # the RL student on the test split

    @property
    def accuracy(self) -> float:
        return self.student.get("accuracy", math.nan)

    @property
    def test_accuracy(self) -> float:
        return self.test.get("accuracy", math.nan)

    @property
    def gain(self) -> float:
        return self.accuracy - self.warmup.get("accuracy", math.nan)


def run_numbers(m: Mapping[str, Any]) -> RunNumbers:
    try:
        held = m["heldout"]
        models = [k for k in held if k not in ("oracle", "random")]
        final = "sql_rl" if "sql_rl" in held else models[-1]
        scale = m.get("scale", {}).get(final, {})
        return RunNumbers(dict(held.get("sql_warmup", {})), dict(held[final]), {k: dict(v) for k, v in scale.items()},
                          tuple(float(x) for x in m.get("rl", {}).get("curve", [])), float(m.get("seconds", math.nan)),
                          dict(m.get("test", {}).get(final, {})))
    except (KeyError, TypeError, IndexError) as e:
        raise ValueError(f"not a reports/details/sql_evaluate.json record (missing {e}); was it written by stages/sql_evaluate.py?") from e


def runs_from_record(record: Mapping[str, Any]) -> dict[tuple[Cell, int], RunNumbers]:
    """The runs of `experiments/sql_grid.json`: {"runs": [{name, seed, metrics}, ...]}."""
    runs = {}
    for i, r in enumerate(record.get("runs", [])):
        try:
            key = (Cell(r["name"]), int(r["seed"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"sql grid record, run {i}: needs name and seed ({e})") from e
        runs[key] = run_numbers(r["metrics"])
    return runs


# ---------------------------------------------------------------------------------------
# Findings
# ---------------------------------------------------------------------------------------


def _by_seed(runs: Mapping[tuple[Cell, int], RunNumbers], name: str) -> dict[int, RunNumbers]:
    return {s: r for (c, s), r in runs.items() if c.name == name}


def _paired(runs: Mapping[tuple[Cell, int], RunNumbers], a: str, b: str,
            metric: Any) -> tuple[list[float], list[float], list[float]]:
    ra, rb = _by_seed(runs, a), _by_seed(runs, b)
    seeds = sorted(set(ra) & set(rb))
    xa, xb = [metric(ra[s]) for s in seeds], [metric(rb[s]) for s in seeds]
    return xa, xb, [x - y for x, y in zip(xa, xb, strict=True)]


def _seeds(runs: Mapping[tuple[Cell, int], RunNumbers], *names: str) -> str:
    return ", ".join(str(s) for s in sorted({s for (c, s) in runs if c.name in names}))


def claim_rows(runs: Mapping[tuple[Cell, int], RunNumbers]) -> list[Claim]:
    rows: list[Claim] = []

    # Dual-Track against standard GRPO
    acc = lambda r: r.accuracy  # noqa: E731
    d, g, diffs = _paired(runs, "dual", "grpo", acc)
    holds, how = verdict(diffs)
    md, mg = mean_std(d)[0], mean_std(g)[0]
    rel = (md - mg) / mg if mg and not math.isnan(mg) and mg > 0 else math.nan
    rows.append(Claim(
        paper=PAPER, finding="Dual-Track GRPO beats standard GRPO (summed reward) in execution accuracy",
        paper_value="+9.9% relative (BIRD dev; secondary summary)",
        measured=f"dual {fmt(d)} vs grpo {fmt(g)}; relative {'n/a' if math.isnan(rel) else f'{100 * rel:+.1f}%'}",
        holds=holds, detail=(f"test-suite execution accuracy on held-out databases of the training domains, greedy; "
                             f"{how}; on the test split (unseen domains and styles) dual "
                             f"{fmt(_paired(runs, 'dual', 'grpo', lambda r: r.test_accuracy)[0])} vs grpo "
                             f"{fmt(_paired(runs, 'dual', 'grpo', lambda r: r.test_accuracy)[1])}"),
        spread="± std over seeds", seeds=_seeds(runs, "dual", "grpo"), command=COMMAND))

    # RL beats its warm-up by more than two seed stds
    dual = _by_seed(runs, "dual")
    if dual:
        accs = [r.accuracy for r in dual.values()]
        warm = [r.warmup.get("accuracy", math.nan) for r in dual.values()]
        m_rl, s_rl = mean_std(accs)
        m_w = mean_std(warm)[0]
        ok = None if len(accs) < 2 else bool(m_rl - m_w > 2 * s_rl)
        rows.append(Claim(
            paper=PAPER, finding="Dual-Track RL beats its warm-up student on held-out databases",
            paper_value="RL after SFT improves execution accuracy",
            measured=f"warm-up {m_w:.3f} -> RL {fmt(accs)}",
            holds=ok, detail=f"rule: mean gain {m_rl - m_w:+.3f} above 2 x the RL seeds' std ({2 * s_rl:.3f})",
            spread="± std over seeds", seeds=_seeds(runs, "dual"), command=COMMAND))

    # without the Propose phase
    hall = lambda r: r.student.get("hallucination_rate", math.nan)  # noqa: E731
    hp, hn, hd = _paired(runs, "no_propose", "dual", hall)
    ap, an, ad = _paired(runs, "dual", "no_propose", acc)
    holds_h, how_h = verdict(hd)
    rows.append(Claim(
        paper=PAPER, finding="without the Propose phase, more answers use hallucinated identifiers",
        paper_value="26.4% without Propose -> 2.8% with it (secondary summary)",
        measured=f"without {fmt([100 * x for x in hp], 1)}% -> with {fmt([100 * x for x in hn], 1)}%",
        holds=holds_h, detail=f"share of episodes with an unknown or unshown identifier; {how_h}",
        spread="± std over seeds", seeds=_seeds(runs, "dual", "no_propose"), command=COMMAND))
    holds_a, how_a = verdict(ad)
    rows.append(Claim(
        paper=PAPER, finding="the Propose phase raises execution accuracy",
        paper_value="the ablation without Propose loses accuracy",
        measured=f"with {fmt(ap)} vs without {fmt(an)}", holds=holds_a, detail=how_a,
        spread="± std over seeds", seeds=_seeds(runs, "dual", "no_propose"), command=COMMAND))

    # tools against the schema in the prompt, by size
    sizes = sorted({k for r in runs.values() for k in r.scale}, key=lambda s: int(s) if s.isdigit() else 0)
    for size in sizes:
        sacc = lambda r, size=size: r.scale.get(size, {}).get("accuracy", math.nan)  # noqa: E731
        for other in ("full_schema", "gold_schema"):
            t, o, diffs = _paired(runs, "dual", other, sacc)
            if not diffs:
                continue
            m, s = mean_std(diffs)
            holds_s = None if len(diffs) < 2 else bool(m >= -s)
            rows.append(Claim(
                paper=PAPER, finding=f"at {size} tables, tools match or beat the {other.replace('_', ' ')} in the prompt",
                paper_value="tools-only matches or beats schema-prefilled baselines",
                measured=f"tools {fmt(t)} vs {other.replace('_schema', '')} {fmt(o)}",
                holds=holds_s, detail=f"rule: paired margin {m:+.3f} not below minus its std ({s:.3f}), "
                                      f"{len(diffs)} pairs; each setting warmed up and trained on its own prompts",
                spread="± std over seeds", seeds=_seeds(runs, "dual", other), command=COMMAND))

    # RL without the warm-up
    nw = _by_seed(runs, "no_warmup")
    if nw:
        calls = [r.student.get("explore_calls", math.nan) for r in nw.values()]
        share = [r.student.get("described_share", math.nan) for r in nw.values()]
        dcalls = [r.student.get("explore_calls", math.nan) for r in dual.values()] if dual else []
        dshare = [r.student.get("described_share", math.nan) for r in dual.values()] if dual else []
        more = None
        if len(calls) >= 2 and len(dcalls) >= 2:
            more = bool(mean_std(share)[0] > mean_std(dshare)[0] + mean_std(dshare)[1])
        rows.append(Claim(
            paper=PAPER, finding="RL without the warm-up learns to enumerate the schema",
            paper_value="without SFT, RL reward-hacks by listing the whole schema in the first turn",
            measured=(f"exploration calls per episode {fmt(calls, 2)} (with warm-up {fmt(dcalls, 2)}); share of "
                      f"tables described {fmt(share, 4)} (with warm-up {fmt(dshare, 4)}); accuracy "
                      f"{fmt([r.accuracy for r in nw.values()])}"),
            holds=more, detail="rule: the share of tables described is above the warm-up cell's mean + std; "
                               "the no-warm-up start imitates the random policy (the call syntax, no strategy)",
            spread="± std over seeds", seeds=_seeds(runs, "no_warmup"), command=COMMAND))

    # one row per cell
    for cell in cells():
        got = _by_seed(runs, cell.name)
        if not got:
            rows.append(Claim(paper=PAPER, finding=f"cell {cell.name}", paper_value="-", measured="no finished run",
                              holds=None, detail="not run (see docs/sql.md)", command=COMMAND))
            continue
        rs = list(got.values())
        rows.append(Claim(
            paper=PAPER, finding=f"cell {cell.name}", paper_value="-",
            measured=f"accuracy {fmt([r.accuracy for r in rs])} (warm-up {fmt([r.warmup.get('accuracy', math.nan) for r in rs])})",
            holds=None,
            detail=(f"overrides {', '.join(CELLS[cell.name])}; hallucination "
                    f"{fmt([r.student.get('hallucination_rate', math.nan) for r in rs])}; schema F1 "
                    f"{fmt([r.student.get('schema_f1', math.nan) for r in rs])}; exploration calls "
                    f"{fmt([r.student.get('explore_calls', math.nan) for r in rs], 2)}"),
            spread="± std over seeds", seeds=", ".join(str(s) for s in sorted(got)), command=COMMAND))
    return rows


def table(runs: Mapping[tuple[Cell, int], RunNumbers]) -> list[dict[str, Any]]:
    order = [c.name for c in cells()]
    out = []
    for (cell, seed), r in sorted(runs.items(), key=lambda kv: (order.index(kv[0][0].name), kv[0][1])):
        row: dict[str, Any] = {
            "cell": cell.name, "seed": seed, "warmup_accuracy": round(r.warmup.get("accuracy", math.nan), 4),
            "accuracy": round(r.accuracy, 4), "test_accuracy": round(r.test_accuracy, 4),
            "schema_f1": round(r.student.get("schema_f1", math.nan), 4),
            "hallucination_rate": round(r.student.get("hallucination_rate", math.nan), 4),
            "explore_calls": round(r.student.get("explore_calls", math.nan), 2),
            "described_share": round(r.student.get("described_share", math.nan), 4),
            "validation_curve": " ".join(f"{x:.3f}" for x in r.curve)}
        for size, s in sorted(r.scale.items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else 0):
            row[f"acc@{size}"] = round(s.get("accuracy", math.nan), 4)
        row["seconds"] = r.seconds
        out.append(row)
    return out


def markdown(runs: Mapping[tuple[Cell, int], RunNumbers], header: str) -> str:
    rows = table(runs)
    cols = list(dict.fromkeys(c for r in rows for c in r))     # every run's columns, first seen first
    return markdown_page([{c: r.get(c, "-") for c in cols} for r in rows], header, None)
