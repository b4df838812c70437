"""Stage `vision_eval`: POPE and CHAIR for every decoding method, every checkpoint.

Reads `data/vision/` (scenes, images, POPE questions), `models/vision/` and
`params.yaml:vision_eval` (and `vision_train.seeds`, `vision_data` for the geometry); writes
`reports/details/vision_eval.json` (every table, paired comparison and tuned
hyper-parameter), its headline `metrics/vision_eval.json`, `reports/claims/vision.json`
(`types.Claim` rows for `reports/claims.md`),
`reports/vision.md` with example images under `reports/vision/`, and
`data/vision_eval/runs.json` (every run's numbers and captions).
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from distillery.config import exit_on_config_error, load_section
from distillery.io import require, write_json, write_text
from distillery.vision.config import SceneConfig, VisionEvalConfig, VisionTrainConfig
from distillery.vision.report import render_report
from distillery.vision.run import eval_headline, run_eval
from stages.usage import take_no_options

SCENES = "data/vision/scenes.parquet"
POPE = "data/vision/pope.parquet"
IMAGES = "data/vision/images"
MODELS = "models/vision"
METRICS = "metrics/vision_eval.json"
DETAILS = "reports/details/vision_eval.json"
CLAIMS = "reports/claims/vision.json"
REPORT = "reports/vision.md"
REPORT_IMAGES = "reports/vision"
RUNS = "data/vision_eval/runs.json"


def main(argv: list[str] | None = None) -> int:
    take_no_options("vision_eval", __doc__, argv)
    cfg = load_section(VisionEvalConfig, "vision_eval")
    seeds = load_section(VisionTrainConfig, "vision_train").seeds
    scene = load_section(SceneConfig, "vision_data")
    for path, made_by in ((SCENES, "vision_data"), (POPE, "vision_data"), (IMAGES, "vision_data"), (MODELS, "vision_train")):
        require(path, made_by)              # a missing input named with its stage, before any work
    t0 = time.perf_counter()
    out = run_eval(cfg, scenes_file=SCENES, pope_file=POPE, model_root=MODELS, seeds=seeds,
                   image_size=scene.image_size)
    shutil.rmtree(REPORT_IMAGES, ignore_errors=True)
    write_text(render_report(out, out["claims"], REPORT_IMAGES, Path(REPORT_IMAGES).name, cfg), REPORT)
    write_json(out["metrics"], DETAILS)
    write_json(eval_headline(out["metrics"]), METRICS)
    write_json([c.to_dict() for c in out["claims"]], CLAIMS)
    write_json({"runs": out["runs"], "captions": out["captions"]}, RUNS)
    t = out["metrics"]["table"]["trained"]
    print(f"vision_eval: adversarial POPE (trained) greedy {t['greedy']['adversarial']['accuracy']['mean']:.3f}, "
          f"VCD {t['vcd']['adversarial']['accuracy']['mean']:.3f}, PND {t['pnd']['adversarial']['accuracy']['mean']:.3f}; "
          f"{len(out['claims'])} claims in {time.perf_counter() - t0:.1f} s -> {METRICS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_config_error("python -m stages.vision_eval", main, sys.argv[1:]))
