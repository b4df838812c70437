"""The table track's headline numbers, claims rows and report (`reports/tables.md`).

Findings are judged on runs paired by seed (same warm-up, same rollout seeds): a finding
holds when the mean paired margin is positive and larger than the standard deviation of the
paired differences (the project's paired rule); with fewer than 2 pairs it is not judged.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from distillery.evaluate.headline import number
from distillery.types import Claim

PAPER = "V-tableR1 / PGPO (arXiv 2604.20755; PGPO as we read it, ours)"
COMMAND = "make repro TRACK=tables"
SPLIT_NAMES = {"test": "in distribution", "test_large": "larger tables", "test_long": "longer programs"}
METRICS = ("accuracy", "valid_chain_rate", "right_answer_wrong_process", "hallucination_rate", "response_tokens")


def runs_by(results: Sequence[Mapping[str, Any]]) -> dict[str, dict[int, Mapping[str, Any]]]:
    out: dict[str, dict[int, Mapping[str, Any]]] = {}
    for r in results:
        if r.get("kind") == "rl":
            out.setdefault(r["variant"], {})[int(r["seed"])] = r
    return out


def metric(run: Mapping[str, Any], name: str, split: str = "test") -> float:
    return float(run["eval"][split][name])


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def paired(runs: Mapping[str, Mapping[int, Mapping[str, Any]]], a: str, b: str,
           value: Callable[[Mapping[str, Any]], float]) -> list[float]:
    """value(a) - value(b) for every seed both variants ran."""
    seeds = sorted(set(runs.get(a, {})) & set(runs.get(b, {})))
    return [value(runs[a][s]) - value(runs[b][s]) for s in seeds]


def judge(diffs: Sequence[float], *, not_worse: bool = False) -> tuple[bool | None, str]:
    if len(diffs) < 2:
        return None, f"not judged: {len(diffs)} paired run(s), the rule needs at least 2"
    m, s = statistics.fmean(diffs), statistics.stdev(diffs)
    if not_worse:
        return bool(m >= -s), f"rule: paired margin {m:+.3f} not below minus its std ({s:.3f}) over {len(diffs)} seeds"
    return bool(m > 0 and m > s), f"rule: paired margin {m:+.3f} > 0 and > its std ({s:.3f}) over {len(diffs)} seeds"


def claims_rows(results: Sequence[Mapping[str, Any]]) -> list[Claim]:
    runs = runs_by(results)
    rows: list[Claim] = []

    def fmt(variant: str, name: str) -> str:
        m, s = mean_std([metric(r, name) for r in runs.get(variant, {}).values()])
        return f"{m:.3f} ± {s:.3f}"

    def row(finding: str, paper_value: str, better: str, worse: str, name: str, lower_is_better: bool = False,
            not_worse: bool = False) -> None:
        if better not in runs or worse not in runs:
            return
        sign = -1.0 if lower_is_better else 1.0
        diffs = paired(runs, better, worse, lambda r: sign * metric(r, name))
        holds, rule = judge(diffs, not_worse=not_worse)
        seeds = sorted(set(runs[better]) & set(runs[worse]))
        # The paired rule sees seed-to-seed spread only; the test items are a sample too.
        n_items = next(iter(runs[better].values()))["eval"]["test"].get("n_items")
        pooled = mean_std([metric(r, name) for v in (better, worse) for r in runs[v].values()])[0]
        noise = (f"; {n_items} test items per run: the binomial standard error of a rate near {pooled:.3f} is "
                 f"{math.sqrt(max(pooled * (1 - pooled), 1e-12) / n_items):.3f}") if n_items else ""
        rows.append(Claim(paper=PAPER, finding=finding, paper_value=paper_value,
                          measured=f"{better} {fmt(better, name)} vs {worse} {fmt(worse, name)} ({name}, test)",
                          holds=holds, detail=f"{rule}{noise}; tiny LLaVA from scratch, SFT warm-up on oracle "
                                              "chains, rule critic; our reading of PGPO",
                          spread="± std over seeds", seeds=",".join(map(str, seeds)), command=COMMAND))

    moves = "moves the model from pattern matching to verifiable derivation (abstract)"
    row("PGPO gives more fully valid chains than GRPO", moves, "pgpo", "grpo", "valid_chain_rate")
    row("PGPO gives more fully valid chains than DAPO", moves, "pgpo", "dapo", "valid_chain_rate")
    row("PGPO gives fewer right answers with a wrong process than GRPO", moves, "pgpo", "grpo",
        "right_answer_wrong_process", lower_is_better=True)
    row("PGPO gives fewer right answers with a wrong process than DAPO", moves, "pgpo", "dapo",
        "right_answer_wrong_process", lower_is_better=True)
    row("PGPO's accuracy is not below GRPO's", "GRPO 81.3/46.4 -> PGPO 86.1/51.0 (2B, TFV/TQA)", "pgpo", "grpo",
        "accuracy", not_worse=True)
    row("PGPO's accuracy is not below DAPO's", "DAPO 82.5/49.0 -> PGPO 86.1/51.0 (2B, TFV/TQA)", "pgpo", "dapo",
        "accuracy", not_worse=True)
    row("The process gate gives more valid chains (PGPO vs PGPO without the gate)",
        "PGPO w/o process 83.1/49.3 -> PGPO 86.1/51.0", "pgpo", "pgpo_no_gate", "valid_chain_rate")
    row("The decoupled clip helps accuracy (PGPO vs PGPO with a symmetric clip)", "(DAPO's clip-higher)", "pgpo",
        "pgpo_no_decoupled", "accuracy")
    return rows


def headline(results: Sequence[Mapping[str, Any]], sft: Mapping[str, Any], seconds: float) -> dict[str, Any]:
    """`metrics/table_rl.json` (12 values): the warm-up's test accuracy; GRPO's, DAPO's and
    PGPO's test accuracy, valid-chain and right-answer-wrong-process rates (means over seeds);
    seconds per RL step; the share of groups PGPO's dynamic sampling kept. The stage's
    seconds are in the details and the report."""
    runs = runs_by(results)
    out: dict[str, Any] = {"sft_accuracy": number(sft["test"]["accuracy"], "sft accuracy")}
    for v in ("grpo", "dapo", "pgpo"):
        if v in runs:
            out[v] = {n: number(mean_std([metric(r, n) for r in runs[v].values()])[0], f"{v} {n}")
                      for n in ("accuracy", "valid_chain_rate", "right_answer_wrong_process")}
    rl = [r for vs in runs.values() for r in vs.values()]
    out["seconds_per_rl_step"] = number(mean_std([r["seconds_per_step"] for r in rl])[0], "seconds per step") \
        if rl else None
    if "pgpo" in runs:
        out["pgpo_kept_fraction"] = number(mean_std([r["kept_fraction"] for r in runs["pgpo"].values()])[0], "kept")
    return out


def _cell(m: float, s: float) -> str:
    return f"{m:.3f} ± {s:.3f}"


def results_table(results: Sequence[Mapping[str, Any]], sft: Mapping[str, Any]) -> list[str]:
    runs = runs_by(results)
    lines = []
    for split, label in SPLIT_NAMES.items():
        lines += [f"**{label}** (`{split}`)", "",
                  "| objective | seeds | " + " | ".join(METRICS) + " |", "|---|---|" + "---|" * len(METRICS)]
        lines.append("| SFT warm-up (start) | - | " + " | ".join(f"{sft[split][m]:.3f}" for m in METRICS) + " |")
        for v, by_seed in runs.items():
            cells = [_cell(*mean_std([metric(r, m, split) for r in by_seed.values()])) for m in METRICS]
            lines.append(f"| {v} | {len(by_seed)} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["**Shortcut-prone items** (argmax items whose asked column peaks in the key column's row), in distribution",
              "", "| objective | accuracy | valid_chain_rate | right_answer_wrong_process |", "|---|---|---|---|"]
    if "shortcut_items" in sft["test"]:
        s = sft["test"]["shortcut_items"]
        lines.append(f"| SFT warm-up | {s['accuracy']:.3f} | {s['valid_chain_rate']:.3f} | "
                     f"{s['right_answer_wrong_process']:.3f} |")
    for v, by_seed in runs.items():
        sc = [r["eval"]["test"].get("shortcut_items") for r in by_seed.values()]
        sc = [x for x in sc if x]
        if sc:
            cells = [_cell(*mean_std([x[m] for x in sc])) for m in METRICS[:3]]
            lines.append(f"| {v} | " + " | ".join(cells) + " |")
    lines += ["", "**Training**", "", "| objective | groups kept by dynamic sampling | response tokens (rollouts) | "
              "seconds per RL step | rollout accuracy, last iteration |", "|---|---|---|---|---|"]
    for v, by_seed in runs.items():
        kept = mean_std([r["kept_fraction"] for r in by_seed.values()])
        toks = mean_std([statistics.fmean([x["response_tokens"] for x in r["log"]]) for r in by_seed.values()])
        sec = mean_std([r["seconds_per_step"] for r in by_seed.values()])
        acc = mean_std([r["log"][-1]["rollout_accuracy"] for r in by_seed.values() if r["log"]])
        lines.append(f"| {v} | {_cell(*kept)} | {toks[0]:.1f} | {sec[0]:.2f} | {_cell(*acc)} |")
    return lines


def verdict_lines(rule: Any, learned: Sequence[float] | None) -> list[str]:
    out = []
    for i, s in enumerate(rule.steps):
        lc = f" · learned critic p(ok) {learned[i]:.2f}" if learned is not None and i < len(learned) else ""
        out.append(f"  {i + 1}. `{s.text}` — {'ok' if s.valid else 'invalid: ' + s.reason}{lc}")
    tail = "right" if rule.correct else "wrong"
    out.append(f"  → answer {tail}; chain {'valid' if rule.valid else 'not valid'}"
               + ("" if rule.coverage >= 1 else f" (read {rule.coverage:.0%} of the needed cells)"))
    return out


def render_report(data_stats: Mapping[str, Any], train_details: Mapping[str, Any],
                  results: Sequence[Mapping[str, Any]], sft: Mapping[str, Any], claims: Sequence[Claim],
                  examples: Sequence[Mapping[str, Any]], seconds: float, cfg: Mapping[str, Any],
                  on_policy: Mapping[str, float] | None = None) -> str:
    from distillery.evaluate.claims import claims_table

    critic = next((m for m in train_details.get("models", []) if m["kind"] == "critic"), {})
    agree = critic.get("agreement", {})
    lines = ["# Tables: V-tableR1's process critic and PGPO against GRPO and DAPO", "",
             "Generated by the `table_rl` stage (docs/tables.md). PGPO here is **our reading** of an abstract "
             "(no code or equations are public): the outcome reward gated by the critic's step scores, DAPO's "
             "decoupled clip and token mean, dynamic sampling with batches balanced over program lengths.", "",
             "## Data", "",
             f"Items per split: {data_stats.get('items')}; rejected by the rule critic: {data_stats.get('rejected')}; "
             f"random chains the rule critic passes: {data_stats.get('random_chain_valid')}; share of training "
             f"argmax items that are shortcut-aligned: {data_stats.get('train_argmax_shortcut_rate')}.", "",
             "## Critics", "",
             f"Learned critic (the small VLM reading image, question and a chain prefix, answering ok/bad) against "
             f"the rule critic on {agree.get('n_chains', 0)} held-out gold and perturbed chains: per-step agreement "
             f"{agree.get('step_agreement', float('nan')):.3f}, per-chain agreement "
             f"{agree.get('chain_agreement', float('nan')):.3f}, invalid chains it flags "
             f"{agree.get('invalid_chains_caught', float('nan')):.3f}."
             + (f" On the warm-up's own greedy chains ({on_policy['n_chains']:.0f}, test): per-step agreement "
                f"{on_policy['step_agreement']:.3f}, per-chain {on_policy['chain_agreement']:.3f}, invalid chains "
                f"flagged {on_policy['invalid_chains_caught']:.3f}." if on_policy else "")
             + f" The grid's PGPO uses the {cfg.get('critic', 'rule')} critic.", "",
             "## Results (greedy chains; mean ± std over seeds)", "", *results_table(results, sft), "",
             "## Claims", "", *claims_table(claims), "", "## Examples", ""]
    for ex in examples:
        lines += [f"### {ex['item_id']}: {ex['question']}", "", f"![{ex['item_id']}]({ex['image']})", "",
                  f"Gold ({ex['kind']}, answer {ex['answer']}): `{ex['gold']}`", ""]
        for who, (rule, learned) in ex["chains"].items():
            lines += [f"- **{who}**", *verdict_lines(rule, learned)]
        lines.append("")
    lines += ["## Cost", "", f"The stage took {seconds:.0f} s ({len(results)} RL runs on {cfg.get('workers')} "
              "processes of one thread each; a loaded 2-core machine).", ""]
    return "\n".join(lines)
