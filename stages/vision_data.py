"""Stage `vision_data`: the vision track's scenes, their images and POPE's questions, gated.

Reads `params.yaml:vision_data`; writes `data/vision/` (`scenes.parquet`: one row per scene
with its object list, caption and PNG path; `images/<image_id>.png`; `pope.parquet`: the
validation and test splits' POPE questions, random / popular / adversarial; `stats.json`:
the training split's shape frequencies and co-occurrences, and the partner rates of every
split), `reports/quality/vision_data/` and `data/quarantine/vision_data/`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from distillery.config import exit_on_config_error, load_section, to_dict
from distillery.io import write_folder, write_json, write_parquet
from distillery.quality import GateError, gate
from distillery.quality.vision_suites import VISION_POPE, VISION_SCENES
from distillery.vision.config import SceneConfig
from distillery.vision.scenes import (
    generate_scenes,
    palette_frame,
    png_bytes,
    pope_frame,
    pope_questions,
    prior_stats,
    render,
    scenes_frame,
)
from stages.usage import take_no_options

OUT = Path("data/vision")
IMAGES = "data/vision/images"
SCENES = "data/vision/scenes.parquet"
POPE = "data/vision/pope.parquet"
STATS = "data/vision/stats.json"
REPORTS = "reports/quality/vision_data"
QUARANTINE = "data/quarantine/vision_data"


def main(argv: list[str] | None = None) -> int:
    take_no_options("vision_data", __doc__, argv)
    cfg = load_section(SceneConfig, "vision_data")
    t0 = time.perf_counter()
    scenes = generate_scenes(cfg)
    sha = write_folder(((sc.image_id, png_bytes(render(sc, cfg.image_size, cfg.grid))) for sc in scenes), IMAGES, ".png")
    frame = scenes_frame(scenes, IMAGES, sha)
    train = [s for s in scenes if s.split == "train"]
    stats = prior_stats(train)
    questions = pope_questions([s for s in scenes if s.split != "train"], stats, cfg.pope_per_image, cfg.seed)
    pope = pope_frame(questions)
    Path(QUARANTINE).mkdir(parents=True, exist_ok=True)
    try:
        gate(frame, VISION_SCENES, source=SCENES, refs={"palette": palette_frame(cfg.image_size, cfg.grid)},
             report_dir=REPORTS, quarantine_dir=QUARANTINE)
        gate(pope, VISION_POPE, source=POPE, refs={"scenes": frame}, report_dir=REPORTS, quarantine_dir=QUARANTINE)
    except GateError as e:
        print(e, file=sys.stderr)
        return 1
    write_parquet(frame, SCENES)
    write_parquet(pope, POPE)
    rates = {split: {f"{a}->{b}": prior_stats([s for s in scenes if s.split == split]).partner_rate(a, b)
                     for a, b in cfg.pairs} for split in ("train", "val", "test")}
    write_json({"params": to_dict(cfg), "frequency": stats.frequency, "popular": stats.popular(),
                "cooccurrence": stats.cooccurrence, "partner_rate": rates,
                "n_scenes": {sp: sum(s.split == sp for s in scenes) for sp in ("train", "val", "test")},
                "n_pope": len(questions), "seconds": round(time.perf_counter() - t0, 2)}, STATS)
    shown = {split: ", ".join(f"{pair} {rate:.2f}" for pair, rate in rates[split].items()) for split in ("train", "test")}
    print(f"vision_data: {len(scenes)} scenes, {len(questions)} POPE questions; partner rates, train: "
          f"{shown['train']}; test: {shown['test']}; {time.perf_counter() - t0:.1f} s -> {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_config_error("python -m stages.vision_data", main, sys.argv[1:]))
