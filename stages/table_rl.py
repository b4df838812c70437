"""Stage `table_rl`: GRPO, DAPO, PGPO and PGPO's two ablations, each over seeds, from the same
SFT warm-up; evaluated greedily on the in-distribution, larger-table and longer-program test
splits; the claims rows and the report.

Reads `models/tables/sft/`, `models/tables/critic/`, `data/tables/`, `params.yaml:table_rl`
(and `table_data`); writes `reports/details/table_rl.json` (every run's numbers and
iteration log), the headline `metrics/table_rl.json`, `reports/tables.md` with example images
under `reports/tables/`, and `reports/claims/tables.json`. The runs go side by side on
`workers` processes of one thread each.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import torch

from distillery.config import exit_on_config_error, load_section, to_dict
from distillery.envs.table.chains import verify_chain
from distillery.io import require, write_json, write_text
from distillery.vision.table_report import claims_rows, headline, render_report
from distillery.vision.table_rl import (
    TableJob,
    TableRLConfig,
    agreement,
    evaluate_policy,
    generate_chains,
    learned_step_scores,
    load_split,
    run_jobs,
    table_tokenizer,
)
from distillery.vision.tables import TableDataConfig
from distillery.vision.vlm import load_vlm_dir
from stages.usage import take_no_options

ITEMS = "data/tables/items.parquet"
IMAGES = "data/tables/images"
STATS = "data/tables/stats.json"
SFT = "models/tables/sft"
CRITIC = "models/tables/critic"
TRAIN_DETAILS = "reports/details/table_train.json"
DETAILS = "reports/details/table_rl.json"
METRICS = "metrics/table_rl.json"
REPORT = "reports/tables.md"
FIGURES = Path("reports/tables")
CLAIMS = "reports/claims/tables.json"


def main(argv: list[str] | None = None) -> int:
    take_no_options("table_rl", __doc__, argv)
    cfg = load_section(TableRLConfig, "table_rl")
    data = load_section(TableDataConfig, "table_data")
    torch.set_num_threads(1)
    for path, made_by in ((ITEMS, "table_data"), (IMAGES, "table_data"), (SFT, "table_train"), (CRITIC, "table_train")):
        require(path, made_by)         # a missing input named with its stage, before any work
    t0 = time.perf_counter()
    tok = table_tokenizer()
    splits = {s: load_split(ITEMS, s, data.image_size, cfg.eval_items) for s in ("test", "test_large", "test_long")}
    sft_model = load_vlm_dir(SFT).model
    sft = evaluate_policy(sft_model, tok, splits, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size)
    jobs = [TableJob("rl", ITEMS, data.image_size, data.grid, f"checkpoints/table_rl/{v}-s{s}", rl_cfg=cfg,
                     variant=v, seed=s, sft_dir=SFT, critic_dir=CRITIC)
            for s in cfg.seeds for v in cfg.variants]
    results = run_jobs(jobs, cfg.workers)
    seconds = time.perf_counter() - t0
    claims = claims_rows(results)
    # Examples: the first test items, the gold chain and each objective's seed-0 greedy chain,
    # with the rule critic's verdict per step and the learned critic's p(ok).
    critic = load_vlm_dir(CRITIC).model
    items, pixels = splits["test"]
    # The learned critic on the warm-up's own greedy chains (not the synthetic perturbations
    # it was trained and first measured on)
    own = [text for _, text, _ in generate_chains(sft_model, tok, items, pixels, k=1, temperature=0.0,
                                                  max_new_tokens=cfg.max_new_tokens, seed=0)]
    own_agreement = agreement(critic, tok, items, pixels, own)
    shutil.rmtree(FIGURES, ignore_errors=True)
    FIGURES.mkdir(parents=True)
    examples = []
    first_seed = cfg.seeds[0]
    for i, it in enumerate(items[: cfg.n_examples]):
        shutil.copy(f"{IMAGES}/{it.item_id}.png", FIGURES / f"{it.item_id}.png")
        who = {"SFT warm-up": sft["test"]["chains"][i]}
        for r in results:
            if r["seed"] == first_seed and i < len(r["eval"]["test"]["chains"]):
                who[r["variant"]] = r["eval"]["test"]["chains"][i]
        learned = learned_step_scores(critic, tok, [it] * len(who), pixels[[i] * len(who)], list(who.values()))
        examples.append({"item_id": it.item_id, "question": it.item.question, "image": f"tables/{it.item_id}.png",
                         "kind": it.item.kind, "answer": it.item.answer, "gold": it.item.chain,
                         "chains": {w: (verify_chain(it.table, it.item, c), lp)
                                    for (w, c), lp in zip(who.items(), learned, strict=True)}})
    stats = json.loads(Path(STATS).read_text())
    train_details = json.loads(Path(TRAIN_DETAILS).read_text())
    write_json({"sft": sft, "critic_on_policy_chains": own_agreement, "runs": results, "seconds": round(seconds, 1),
                "params": to_dict(cfg)}, DETAILS)
    write_json(headline(results, sft, seconds), METRICS)
    write_json([c.to_dict() for c in claims], CLAIMS)
    write_text(render_report(stats, train_details, results, sft, claims, examples, seconds, to_dict(cfg), own_agreement),
               REPORT)
    print(f"table_rl: {len(results)} runs in {seconds:.0f} s; "
          + "; ".join(f"{c.finding}: {c.holds}" for c in claims), file=sys.stderr)
    shutil.rmtree("checkpoints/table_rl", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_config_error("python -m stages.table_rl", main, sys.argv[1:]))
