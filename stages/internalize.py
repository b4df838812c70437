"""Stage `internalize`: distil the mined experience into the student's weights (issue 4).

Reads `data/tasks/tasks.parquet`, the starting pool (`data/experience/principles.jsonl` or
`instances.jsonl`), the warm-up teacher's trajectories (replayed with their principles so
the student keeps following principle text) and `params.yaml:internalize`; writes
`models/internalized/`, the final pool `data/experience/internalized_pool.jsonl`,
`metrics/internalize.json` and DVCLive curves under `dvclive/internalize/` (success with and
without experience per iteration). Iterations are checkpointed under
`checkpoints/internalize/` (persisted: a killed run resumes after its last finished one).

Besides the loop's per-iteration numbers, the metrics hold the two reference points the
issue asks for, measured greedy on the held-out user's test tasks: the warm-up model
without experience and with the mined pool injected (the teacher), and on the training
users' test tasks with their principles given in the prompt, before and after (forgetting).
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict
from pathlib import Path

from distillery.config import load_section
from distillery.io import read_parquet, write_json
from distillery.mining.store import read_pool, write_pool
from distillery.train.card import resumable_run_dir
from distillery.train.internalize import (
    InternalizeConfig,
    evaluate_with,
    make_injector,
    model_prompt,
    principles_injector,
    run_internalize,
    run_policy,
    success_rate,
)
from distillery.types import tasks_from_frame

TASKS = "data/tasks/tasks.parquet"
POOLS = {"principle": "data/experience/principles.jsonl", "instance": "data/experience/instances.jsonl"}
REPLAY = Path("data/trajectories/oracle")
OUT = "models/internalized"
POOL_OUT = "data/experience/internalized_pool.jsonl"
METRICS = "metrics/internalize.json"
CLAIMS = "metrics/internalize_claims.json"
PAPER = "Continual experience internalization (arXiv 2606.04703)"
CKPT = Path("checkpoints/internalize")
LIVE = "dvclive/internalize"


def main() -> int:
    from dvclive import Live

    from distillery.lm.model import load_model_dir, save_model_dir

    cfg = load_section(InternalizeConfig, "internalize")
    t0 = time.perf_counter()
    tasks = tasks_from_frame(read_parquet(TASKS, "tasks"))
    pool = read_pool(POOLS[cfg.granularity])
    if not pool:
        print(f"internalize: the {cfg.granularity} pool {POOLS[cfg.granularity]} is empty; the teacher has "
              "no experience and distillation will only replay", file=sys.stderr)
    replay = (read_parquet(REPLAY / "episodes.parquet", "collect@oracle"),
              read_parquet(REPLAY / "steps.parquet", "collect@oracle"))
    run_dir = resumable_run_dir(CKPT, cfg, [Path(__file__), POOLS[cfg.granularity],
                                            Path(cfg.model_dir) / "model.safetensors", TASKS,
                                            REPLAY / "episodes.parquet", REPLAY / "steps.parquet"])
    prompt = model_prompt(cfg.model_dir)
    heldout_test = [t for t in tasks if t.split == cfg.test_split]
    others = [t for t in tasks if t.split == "test"]
    base = load_model_dir(cfg.model_dir)
    injector = make_injector(pool, cfg.injection, cfg.top_k, cfg.selector, cfg.scope_family)
    before = {
        "heldout_plain": evaluate_with(base.model, base.tokenizer, heldout_test, None, prompt=prompt, max_new_tokens=cfg.max_new_tokens),
        "heldout_with_experience": evaluate_with(base.model, base.tokenizer, heldout_test, injector, prompt=prompt, max_new_tokens=cfg.max_new_tokens),
        "heldout_with_true_principles": evaluate_with(base.model, base.tokenizer, heldout_test, principles_injector,
                                                      prompt=prompt, max_new_tokens=cfg.max_new_tokens),
        "others_with_principles": evaluate_with(base.model, base.tokenizer, others, principles_injector,
                                                prompt=prompt, max_new_tokens=cfg.max_new_tokens),
    }
    # The teacher criterion over seeds: sampled episodes (the rollouts' temperature), plain
    # against the mined pool injected, one seed per sampling stream.
    sampled = {}
    for seed in cfg.eval_seeds:
        sampled[str(seed)] = {
            arm: success_rate(run_policy(base.model, base.tokenizer, heldout_test, injector=inj, k=1,
                                         temperature=cfg.temperature, seed=seed, iteration=0,
                                         batch_size=cfg.batch_size, label=f"eval-{arm}", prompt=prompt, max_new_tokens=cfg.max_new_tokens))
            for arm, inj in (("plain", None), ("with_experience", injector))}
    before["sampled"] = sampled
    print(f"internalize: warm-up model on {cfg.test_split}: plain {before['heldout_plain']:.3f}, with the mined "
          f"pool {before['heldout_with_experience']:.3f}, with the true principles "
          f"{before['heldout_with_true_principles']:.3f}", file=sys.stderr)
    with Live(LIVE, dvcyaml=None, save_dvc_exp=False, report=None) as live:
        def log(row: dict[str, float], it: int) -> None:
            for k, v in row.items():
                live.log_metric(k, v)
            live.step = it + 1
            live.next_step()

        live.log_metric("success_plain", before["heldout_plain"])
        live.log_metric("success_with_experience", before["heldout_with_experience"])
        live.next_step()
        model, tok, final_pool, results = run_internalize(cfg, tasks, pool, replay, run_dir, log=log)
    after_others = evaluate_with(model, tok, others, principles_injector, prompt=prompt, max_new_tokens=cfg.max_new_tokens)
    metrics = {
        "before": before,
        "iterations": [asdict(r) for r in results],
        "final": {"heldout_plain": results[-1].success_plain,
                  "heldout_with_experience": results[-1].success_with_experience,
                  "others_with_principles": after_others},
        "config": {"granularity": cfg.granularity, "injection": cfg.injection, "regime": cfg.regime,
                   "iterations": cfg.iterations, "seed": cfg.seed},
        "seconds": round(time.perf_counter() - t0, 1),
        "temperature": cfg.temperature, "n_test": len(heldout_test),
    }
    save_model_dir(OUT, model, tok, {"prompt": asdict(prompt), "metrics": metrics["final"],
                                     "config": asdict(cfg), "started_from": cfg.model_dir})
    write_pool(POOL_OUT, final_pool)
    write_json(metrics, METRICS)
    write_json(claims(metrics), CLAIMS)
    print(f"internalize: {cfg.granularity}/{cfg.injection}/{cfg.regime}, {cfg.iterations} iterations: "
          f"{cfg.test_split} plain {before['heldout_plain']:.3f} -> {results[-1].success_plain:.3f}; "
          f"others with principles {before['others_with_principles']:.3f} -> {after_others:.3f} "
          f"({metrics['seconds']} s) -> {OUT}", file=sys.stderr)
    return 0


def _mean_std(xs: list[float]) -> tuple[float, float]:
    import statistics

    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def claims(m: dict) -> list[dict]:
    """The paper's findings beside this run (one cell of the grid, one training seed). The
    comparisons across cells (granularity, injection, regime) are the grid's: `flows/grid.py`."""
    cell = m["config"]
    sampled = m["before"]["sampled"]
    plain = [v["plain"] for v in sampled.values()]
    taught = [v["with_experience"] for v in sampled.values()]
    (pm, ps), (tm, ts) = _mean_std(plain), _mean_std(taught)
    curve = [m["before"]["heldout_plain"]] + [r["success_plain"] for r in m["iterations"]]
    drop = m["before"]["others_with_principles"] - m["final"]["others_with_principles"]
    here = f"{cell['granularity']}/{cell['injection']}/{cell['regime']}"
    return [
        {"paper": PAPER, "finding": "injected experience makes the same model succeed more (the teacher)",
         "paper_value": "step-wise injection: WebWalkerQA 23.2 -> 31.2",
         "measured": f"held-out user, warm-up model, {here.split('/')[0]}s {cell['injection']}: "
                     f"{tm:.3f} ± {ts:.3f} vs plain {pm:.3f} ± {ps:.3f}",
         "holds": bool(tm - pm > 2 * max(ps, ts)),
         "detail": f"{len(plain)} sampling seeds (temperature {m['temperature']}), "
                   f"{m['n_test']} test tasks; holds means apart by more than two seed stds; greedy: "
                   f"{m['before']['heldout_with_experience']:.3f} vs {m['before']['heldout_plain']:.3f}"},
        {"paper": PAPER, "finding": "principle + step-wise + off-policy CD improves the student without experience",
         "paper_value": "the robust recipe: no collapse over iterations",
         "measured": " -> ".join(f"{c:.3f}" for c in curve),
         "holds": bool(curve[-1] > curve[0]),
         "detail": f"{here}, greedy success on the held-out user's test tasks before and after each of "
                   f"{len(curve) - 1} iterations; one training seed ({cell['seed']}): no spread measured here"},
        {"paper": PAPER, "finding": "internalizing does not erase principle following (issue: drop <= 5 points)",
         "paper_value": "-", "measured": f"{m['before']['others_with_principles']:.3f} -> "
                                         f"{m['final']['others_with_principles']:.3f}",
         # 1e-9: six tasks of 120 is a 5-point drop, whatever the float subtraction rounds to
         "holds": bool(drop <= 0.05 + 1e-9),
         "detail": f"training users' test tasks with their principles in the prompt: a drop of {100 * drop:.1f} points"},
    ]



if __name__ == "__main__":
    sys.exit(main())
