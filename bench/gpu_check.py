"""The agent track's training and RL on one device, timed: the check to run where a GPU is lent.

It runs the library code the `warmup` and `rl` stages run, with the recipes of `params.yaml`
(`warmup`, `rl`), on `--device` (on CUDA the loop's bf16 autocast, `train.mixed_precision:
auto`), from the inputs those stages read: the task table and the oracle's trajectories. It
prints and writes (`--out`/gpu_check.json) the device, the warm-up's tokens/s, wall time and
eval loss, and the RL iterations' wall time, greedy test success and samples. Run it on the
CPU with the same options for the figures beside it.

It needs neither DVC, DVCLive nor Great Expectations (none is on a lent GPU machine, and
nothing can be installed there from the network): no gate, no DVCLive log, no checkpoints.
`make gpu-kit` gathers what travels: the inputs (`gpu_kit/inputs/`, from `dvc repro
collect@oracle`) and the wheels of the packages such a machine lacks (`gpu_kit/wheels/`,
for its Python 3.12); `docs/performance.md` ("The GPU path") gives the one command to run
there.

    python bench/gpu_check.py [--data gpu_kit/inputs] [--device auto|cpu|cuda] [--warmup-steps N]
        [--induction-steps N] [--rl-iterations N] [--rl-tasks-per-family N] [--params params.yaml] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from distillery.agents.hf import resolve_device  # noqa: E402
from distillery.config import load_section, read_params  # noqa: E402
from distillery.io import read_parquet, write_json  # noqa: E402
from distillery.lm.model import save_model_dir  # noqa: E402
from distillery.train.card import build_card  # noqa: E402
from distillery.train.rl import RLConfig, run_rl  # noqa: E402
from distillery.train.warmup import WarmupConfig, warmup  # noqa: E402
from distillery.types import tasks_from_frame  # noqa: E402
from machine import cpu_line, non_negative_int, positive_int  # noqa: E402

INPUTS = ("tasks.parquet", "episodes.parquet", "steps.parquet")


def device_line(device: str) -> dict[str, object]:
    """What the run ran on: the accelerator's name and bf16 support, or the CPU's."""
    info: dict[str, object] = {"device": device, "torch": torch.__version__, "python": platform.python_version()}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info |= {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                 "capability": f"{props.major}.{props.minor}", "bf16": torch.cuda.is_bf16_supported()}
    else:
        info |= {"name": cpu_line(), "threads": torch.get_num_threads()}
    return info


def resolve(device: str) -> str:
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: --device cuda, but torch sees no CUDA device "
                         f"(torch {torch.__version__}, built for CUDA {torch.version.cuda})")
    return resolve_device(device).type


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python bench/gpu_check.py", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--data", default="gpu_kit/inputs",
                    help=f"folder of {', '.join(INPUTS)} (the tasks stage's table, the oracle's trajectories)")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                    help="where to train (the RL rollouts' policy picks CUDA wherever there is one, as in the stages: "
                         "take the CPU's figures on a machine without a GPU)")
    ap.add_argument("--warmup-steps", type=positive_int, default=None,
                    help="the warm-up's optimizer steps (default: params.yaml's warmup.train.max_steps)")
    ap.add_argument("--induction-steps", type=non_negative_int, default=None,
                    help="steps of the copy curriculum first (default: params.yaml's warmup.induction_steps)")
    ap.add_argument("--rl-iterations", type=non_negative_int, default=1, help="RL iterations (0: the warm-up alone)")
    ap.add_argument("--rl-tasks-per-family", type=positive_int, default=None,
                    help="learning tasks per family per RL iteration (default: params.yaml's rl.tasks_per_family)")
    ap.add_argument("--params", default="params.yaml", help="the recipes' file (its warmup and rl sections)")
    ap.add_argument("--out", default="gpu_check_out", help="folder for the models and gpu_check.json")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    device = resolve(args.device)
    data, out = Path(args.data), Path(args.out)
    missing = [name for name in INPUTS if not (data / name).is_file()]
    if missing:
        raise SystemExit(f"gpu_check: {data} lacks {', '.join(missing)}: `make gpu-kit` copies them there "
                         "(after `dvc repro collect@oracle`), or give --data")
    shutil.rmtree(out / "checkpoints", ignore_errors=True)      # a fresh run, never a resumed one
    tasks = tasks_from_frame(read_parquet(data / "tasks.parquet"))
    episodes, steps = read_parquet(data / "episodes.parquet"), read_parquet(data / "steps.parquet")
    report: dict[str, object] = {"machine": device_line(device)}
    print(f"gpu_check: {report['machine']}", file=sys.stderr)

    params = read_params(args.params)
    cfg = load_section(WarmupConfig, "warmup", params)
    cfg.train.device, cfg.train.dvclive, cfg.train.save_every, cfg.train.resume = device, False, 0, False
    if args.warmup_steps is not None:
        cfg.train.max_steps = args.warmup_steps
    if args.induction_steps is not None:
        cfg.induction_steps = args.induction_steps
    t0 = time.perf_counter()
    tok, model, result, stats = warmup(cfg, tasks, episodes, steps, out / "checkpoints" / "warmup")
    wall = time.perf_counter() - t0
    report["warmup"] = {"steps": result.steps, "tokens_per_s": round(result.tokens_per_s, 1), "wall_s": round(wall, 1),
                        "eval_loss": result.metrics.get("eval_loss"), "n_params": stats.n_params,
                        "mixed_precision": cfg.train.mixed_precision}
    print(f"gpu_check: warm-up {result.steps} steps, {result.tokens_per_s:,.0f} tokens/s, {wall:.1f} s, "
          f"eval loss {result.metrics.get('eval_loss', float('nan')):.4f}", file=sys.stderr)
    model_dir = out / "models" / "warmup"
    save_model_dir(model_dir, model.float().cpu(), tok, build_card(prompt=cfg.prompt, seed=cfg.train.seed,
                                                                   model_cfg=cfg.model, train_cfg=cfg.train, model=model))

    if args.rl_iterations:
        rl = load_section(RLConfig, "rl", params)
        rl.model_dir, rl.iterations, rl.train.device, rl.train.dvclive = str(model_dir), args.rl_iterations, device, False
        if args.rl_tasks_per_family is not None:
            rl.tasks_per_family = args.rl_tasks_per_family
        t0 = time.perf_counter()
        _, _, _, before, results = run_rl(rl, tasks, [], out / "checkpoints" / "rl")
        wall = time.perf_counter() - t0
        report["rl"] = {"method": rl.method, "iterations": len(results), "wall_s": round(wall, 1),
                        "test_success": [before, *(r.test_success for r in results)],
                        "samples": sum(r.n_samples for r in results)}
        print(f"gpu_check: RL ({rl.method}) {len(results)} iteration(s), {wall:.1f} s, "
              f"{report['rl']['samples']} samples, greedy test success "
              f"{' -> '.join(f'{s:.3f}' for s in report['rl']['test_success'])}", file=sys.stderr)
    write_json(report, out / "gpu_check.json")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
