"""Stage `table_train`: the SFT warm-up on oracle chains (the policy every RL run starts
from) and the learned process critic, side by side, each through the project's training loop.

Reads `data/tables/items.parquet`, `data/tables/images/`, `params.yaml:table_train` (and
`table_data` for the image geometry); writes `models/tables/sft/` and `models/tables/critic/`
(weights, tokenizer, config, card.json), `reports/details/table_train.json` and the headline
`metrics/table_train.json` (the learned critic's agreement with the rule critic on held-out
chains, and the stage's seconds).
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from distillery.config import exit_on_config_error, load_section, to_dict
from distillery.evaluate.headline import number
from distillery.io import require, write_json
from distillery.vision.config import check_patches
from distillery.vision.table_rl import TableJob, TableTrainConfig, run_jobs
from distillery.vision.tables import TableDataConfig
from stages.usage import take_no_options

ITEMS = "data/tables/items.parquet"
IMAGES = "data/tables/images"
MODELS = Path("models/tables")
DETAILS = "reports/details/table_train.json"
METRICS = "metrics/table_train.json"


def main(argv: list[str] | None = None) -> int:
    take_no_options("table_train", __doc__, argv)
    cfg = load_section(TableTrainConfig, "table_train")
    data = load_section(TableDataConfig, "table_data")
    check_patches(cfg.vlm, "table_train", data.image_size, "table_data")
    # The jobs read the items in worker processes: a missing file is named here, with its stage.
    for path in (ITEMS, IMAGES):
        require(path, "table_data")
    t0 = time.perf_counter()
    jobs = [TableJob(kind, ITEMS, data.image_size, data.grid, f"checkpoints/table_train/{kind}", train_cfg=cfg,
                     params=to_dict(cfg)) for kind in ("sft", "critic")]
    results = run_jobs(jobs, cfg.workers)
    MODELS.mkdir(parents=True, exist_ok=True)
    for job in jobs:
        dest = MODELS / job.kind
        shutil.rmtree(dest, ignore_errors=True)
        shutil.move(f"{job.out_dir}/model", dest)
        shutil.rmtree(job.out_dir, ignore_errors=True)
    seconds = round(time.perf_counter() - t0, 1)
    write_json({"models": results, "seconds": seconds}, DETAILS)
    agree = next(r for r in results if r["kind"] == "critic")["agreement"]
    write_json({"critic_step_agreement": number(agree["step_agreement"], "critic step agreement"),
                "critic_chain_agreement": number(agree["chain_agreement"], "critic chain agreement"),
                "seconds": number(seconds, "table_train seconds")}, METRICS)
    for r in results:
        loss = "n/a" if r.get("train_loss") is None else f"{r['train_loss']:.4f}"
        print(f"table_train: {r['kind']}: {r['steps']} steps, loss {loss}, {r['seconds']} s", file=sys.stderr)
    print(f"table_train: critic agreement per step {agree['step_agreement']:.3f}, per chain "
          f"{agree['chain_agreement']:.3f}, invalid chains caught {agree['invalid_chains_caught']:.3f} "
          f"({agree['n_chains']} chains); {seconds} s -> {MODELS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_config_error("python -m stages.table_train", main, sys.argv[1:]))
