"""Stage `table_data`: the table track's items (a table image, a question, its gold chain),
split by table size and program length, gated.

Reads `params.yaml:table_data`; writes `data/tables/items.parquet` (one row per item: split,
table, question, gold chain, the cells its program reads, answer, shortcut flag, PNG path and
hash), `data/tables/images/<item_id>.png`, `data/tables/stats.json`, the headline
`metrics/table_data.json`, `reports/quality/table_data/` and, for every item the rule
critic or the image check rejects, `data/quarantine/table_data/` with the reason.
"""

from __future__ import annotations

import random
import sys
import time
from collections import Counter
from pathlib import Path

import polars as pl

from distillery.config import exit_on_config_error, load_section, to_dict
from distillery.envs.table.chains import random_chain, verify_chain
from distillery.io import write_folder, write_json, write_parquet
from distillery.quality import GateError, gate
from distillery.quality.table_suites import TABLE_ITEMS
from distillery.vision.scenes import png_bytes
from distillery.vision.tables import TableDataConfig, generate_items, items_frame, render_table
from stages.usage import take_no_options

OUT = Path("data/tables")
IMAGES = "data/tables/images"
ITEMS = "data/tables/items.parquet"
STATS = "data/tables/stats.json"
METRICS = "metrics/table_data.json"
REPORTS = "reports/quality/table_data"
QUARANTINE = "data/quarantine/table_data"


def main(argv: list[str] | None = None) -> int:
    take_no_options("table_data", __doc__, argv)
    cfg = load_section(TableDataConfig, "table_data")
    t0 = time.perf_counter()
    items = generate_items(cfg)
    sha = write_folder(((it.item_id, png_bytes(render_table(it.table, cfg.image_size, cfg.grid))) for it in items),
                       IMAGES, ".png")
    frame = items_frame(items, IMAGES, sha)
    Path(QUARANTINE).mkdir(parents=True, exist_ok=True)
    # Items the rule critic rejects (an oracle chain that does not pass) are quarantined with
    # the reason before the gate, which then holds every kept row to the contract.
    rejected = frame.filter(~pl.col("oracle_valid"))
    write_parquet(rejected, f"{QUARANTINE}/rejected.parquet")
    kept = frame.filter(pl.col("oracle_valid"))
    try:
        gate(kept, TABLE_ITEMS, source=ITEMS, report_dir=REPORTS, quarantine_dir=QUARANTINE)
    except GateError as e:
        print(e, file=sys.stderr)
        return 1
    write_parquet(kept, ITEMS)
    by_split = {s: int(n) for s, n in Counter(kept["split"].to_list()).items()}
    train = kept.filter(pl.col("split") == "train")
    argmax = train.filter(pl.col("kind") == "argmax")
    stats = {"params": to_dict(cfg), "items": by_split, "rejected": rejected.height,
             "rejected_reasons": Counter(rejected["oracle_reason"].to_list()).most_common(5),
             "kinds": {s: dict(Counter(kept.filter(pl.col("split") == s)["kind"].to_list())) for s in by_split},
             "steps": {s: dict(sorted(Counter(kept.filter(pl.col("split") == s)["n_steps"].to_list()).items()))
                       for s in by_split},
             "train_argmax_shortcut_rate": float(argmax["shortcut"].mean()) if argmax.height else None,
             "seconds": round(time.perf_counter() - t0, 2)}
    # A floor for the rule critic: random well-formed chains over each item's table.
    rng = random.Random(cfg.seed + 1)
    sample = items[: min(len(items), 2000)]
    stats["random_chain_valid"] = sum(verify_chain(it.table, it.item, random_chain(it.table, rng)).valid
                                      for it in sample) / len(sample)
    write_json(stats, STATS)
    write_json({"items": kept.height, "rejected": rejected.height,
                "random_chain_valid": stats["random_chain_valid"]}, METRICS)
    print(f"table_data: {kept.height} items {by_split}, {rejected.height} rejected, "
          f"{time.perf_counter() - t0:.1f} s -> {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_config_error("python -m stages.table_data", main, sys.argv[1:]))
