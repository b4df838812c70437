"""Stage `internalize`: distil the mined experience into the student's weights.

Reads the tasks, the starting pool (principles or instances), the oracle's trajectories
(replayed with their principles) and `params.yaml:internalize`; writes `models/internalized/`,
`data/experience/internalized_pool.jsonl`, `reports/details/internalize.json` (see
`train.internalize_report`), its headline `metrics/internalize.json`, `reports/claims/internalize.json` and `dvclive/internalize/`; resumes from `checkpoints/internalize/`.
`--track twx` reads `params.yaml:twx_internalize` and keeps every file under the track's
folders (stages/track.py).

`--seed N` runs the same recipe again with `internalize.seed` set to N (the seed of the
teacher's rollouts, the student's samples and the training), from the same start and pool:
the spread the cross-environment table reports. Its start is the base run's: the measurements
before training (`before`) do not depend on the seed, so they are read from the base run's
`reports/details/internalize.json` (refused if that run's recipe differs) rather than taken
again. Such a run writes only its report, `reports/details/internalize-seed<N>.json`, and
resumes from `checkpoints/internalize-seed<N>/`; the model, pool, headline metrics and claims
rows stay the base run's.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

from distillery.config import exit_on_config_error
from distillery.evaluate.headline import INTERNALIZE, pick
from distillery.io import read_parquet, write_json
from distillery.lm.model import save_model_dir
from distillery.mining.store import read_pool, write_pool
from distillery.train import internalize_report as report
from distillery.train.card import iteration_log, resumable_run_dir
from distillery.train.internalize import InternalizeConfig, model_prompt, run_internalize
from distillery.types import tasks_from_frame
from stages.track import Track, track_parser

TASKS = "data/tasks/tasks.parquet"
POOLS = {"principle": "data/experience/principles.jsonl", "instance": "data/experience/instances.jsonl"}
REPLAY = Path("data/trajectories/oracle")


def base_before(track: Track, cfg: InternalizeConfig) -> dict:
    """The base run's reference points, for another seed of the same recipe (module docstring)."""
    path = track.path("reports/details/internalize.json")
    if not path.is_file():
        raise SystemExit(f"internalize --seed: {path} is missing: run the base internalize stage first")
    base = json.loads(path.read_text())
    ours = {"granularity": cfg.granularity, "injection": cfg.injection, "regime": cfg.regime,
            "iterations": cfg.iterations}
    theirs = {k: base.get("config", {}).get(k) for k in ours}
    if ours != theirs or base.get("temperature") != cfg.temperature:
        raise SystemExit(f"internalize --seed: {path} is another recipe ({theirs}, temperature "
                         f"{base.get('temperature')}) than this one ({ours}, temperature {cfg.temperature})")
    return base["before"]


def main(argv: list[str] | None = None) -> int:
    ap = track_parser("internalize", __doc__)
    ap.add_argument("--seed", type=int, default=None, help="another seed of the same run: writes only "
                    "reports/details/internalize-seed<N>.json (module docstring)")
    args = ap.parse_args([] if argv is None else argv)   # main() alone: the agent track
    track = Track(args.track)
    cfg = track.load(InternalizeConfig, "internalize")
    name = "internalize"
    if args.seed is not None:
        cfg, name = replace(cfg, seed=args.seed), f"internalize-seed{args.seed}"
    t0 = time.perf_counter()
    tasks_file, pool_file, replay_dir = track.path(TASKS), track.path(POOLS[cfg.granularity]), track.path(REPLAY)
    tasks = tasks_from_frame(read_parquet(tasks_file, track.section("tasks")))
    pool = read_pool(pool_file)
    if not pool:
        print(f"internalize: {pool_file} is empty; distillation will only replay", file=sys.stderr)
    replay_files = [replay_dir / "episodes.parquet", replay_dir / "steps.parquet"]
    replay = tuple(read_parquet(f, track.section("collect@oracle")) for f in replay_files)
    run_dir = resumable_run_dir(track.path(f"checkpoints/{name}"), cfg, [Path(__file__), pool_file,
                                Path(cfg.model_dir) / "model.safetensors", tasks_file, *replay_files])
    before = report.reference_points(cfg, tasks, pool) if args.seed is None else base_before(track, cfg)
    if args.seed is None:
        with iteration_log(track.path("dvclive/internalize")) as log:
            log({"success_plain": before["heldout_plain"],
                 "success_with_experience": before["heldout_with_experience"]}, -1)
            model, tok, final_pool, results = run_internalize(cfg, tasks, pool, replay, run_dir, log=log)
    else:
        model, tok, final_pool, results = run_internalize(cfg, tasks, pool, replay, run_dir)
    after = report.others_with_principles(model, tok, tasks, cfg)
    metrics = report.internalize_metrics(cfg, tasks, before, results, after, round(time.perf_counter() - t0, 1))
    if args.seed is not None:
        write_json(metrics, track.path(f"reports/details/{name}.json"))
        print(f"internalize (seed {cfg.seed}): {cfg.test_split} plain {before['heldout_plain']:.3f} -> "
              f"{results[-1].success_plain:.3f} ({metrics['seconds']} s)", file=sys.stderr)
        return 0
    save_model_dir(track.path("models/internalized"), model, tok, {"prompt": asdict(model_prompt(cfg.model_dir)),
                                                        "metrics": metrics["final"], "config": asdict(cfg),
                                                        "started_from": cfg.model_dir})
    write_pool(track.path("data/experience/internalized_pool.jsonl"), final_pool)
    write_json(metrics, track.path("reports/details/internalize.json"))
    write_json(pick(metrics, INTERNALIZE), track.path("metrics/internalize.json"))
    claims = report.internalize_claims(metrics, command=f"dvc repro {track.stage('internalize')}")
    write_json([c.to_dict() for c in claims], track.path("reports/claims/internalize.json"))
    print(f"internalize: {cfg.test_split} plain {before['heldout_plain']:.3f} -> {results[-1].success_plain:.3f} "
          f"({metrics['seconds']} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_config_error("python -m stages.internalize", main, sys.argv[1:]))
