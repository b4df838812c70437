"""Stage `vision_train`: the small VLM over training seeds (its weak checkpoint on the way)
and the ITM saliency model, each through the project's training loop.

Reads `data/vision/scenes.parquet` and `data/vision/images/` and `params.yaml:vision_train`
(and `vision_data` for the image geometry); writes `models/vision/vlm-s<seed>/`,
`models/vision/vlm-weak-s<seed>/` and `models/vision/itm/` (weights, tokenizer, config,
card.json), `reports/details/vision_train.json` (every model's training numbers), its
headline `metrics/vision_train.json` and DVCLive curves under `dvclive/vision_train/`.
Checkpoints go to `checkpoints/vision_train/` (persisted: a killed run resumes). The models
train side by side on `workers` processes of one thread each.
"""

from __future__ import annotations

import sys
import time

from distillery.config import exit_on_config_error, load_section, to_dict
from distillery.io import require, write_json
from distillery.vision.config import SceneConfig, VisionTrainConfig, check_patches
from distillery.vision.train import TrainJob, run_train_jobs, train_headline
from stages.usage import take_no_options

SCENES = "data/vision/scenes.parquet"
IMAGES = "data/vision/images"
MODELS = "models/vision"
CHECKPOINTS = "checkpoints/vision_train"
LIVE = "dvclive/vision_train"
METRICS = "metrics/vision_train.json"
DETAILS = "reports/details/vision_train.json"


def main(argv: list[str] | None = None) -> int:
    take_no_options("vision_train", __doc__, argv)
    cfg = load_section(VisionTrainConfig, "vision_train")
    scene = load_section(SceneConfig, "vision_data")
    check_patches(cfg.vlm, "vision_train", scene.image_size, "vision_data")
    # The jobs read the scenes in worker processes: a missing file is named here, with its stage.
    for path in (SCENES, IMAGES):
        require(path, "vision_data")
    t0 = time.perf_counter()
    common = dict(cfg=cfg, image_size=scene.image_size, grid=scene.grid, scenes_file=SCENES, model_root=MODELS,
                  checkpoint_root=CHECKPOINTS, live_root=LIVE, params=to_dict(cfg))
    jobs = [TrainJob("vlm", s, **common) for s in cfg.seeds] + [TrainJob("itm", cfg.itm_train.seed, **common)]
    results = run_train_jobs(jobs, cfg.workers)
    details = {"models": results, "seconds": round(time.perf_counter() - t0, 1)}
    write_json(details, DETAILS)
    write_json(train_headline(details), METRICS)
    for r in results:
        print(f"vision_train: {r['name']}: {int(r['steps'])} steps, loss {r.get('train_loss', float('nan')):.4f}, "
              f"{r['seconds']} s", file=sys.stderr)
    print(f"vision_train: {len(results)} models in {time.perf_counter() - t0:.1f} s -> {MODELS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_config_error("python -m stages.vision_train", main, sys.argv[1:]))
