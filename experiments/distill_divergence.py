"""The distributional student-teacher gap of every distillation run in the objectives grid.

The grid measures the gap in test success, where the strong start is 6 tasks of 120 from the
teacher and the weak start does not move. This measures what the losses act on: the mean
per-token KL between the student's and the teacher's next-token distributions (both
directions) and the NLL of the sampled or demonstrated tokens (`train.distill.teacher_divergence`),
in two sets of states:

- `demos`: teacher-forced on the oracle's successful test-split demonstrations (the same
  tokens for every model);
- `on_policy`: on the model's own samples, 2 per test task at temperature 1 (the states
  OPD, AOPD and SCOPE train on; each model sees its own).

for the start models and for each recorded run's final student, read from the DVC cache at
its `dvc exp` ref (`dvc.api.DVCFileSystem`).

    python -m experiments.distill_divergence     # from the repository root (it imports flows.grid), after the grid

Writes experiments/distill_divergence.json. Not a DVC stage: a post-hoc measurement of the
recorded runs, kept with the command that made it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from tempfile import TemporaryDirectory

from dvc.api import DVCFileSystem
from flows.grid import exp_refs

from distillery.config import load_section
from distillery.io import read_parquet, write_json
from distillery.lm.model import load_model_dir
from distillery.train.distill import (
    DistillConfig,
    dataset_samples,
    student_samples,
    teacher_divergence,
)
from distillery.train.internalize import model_prompt, run_policy
from distillery.types import tasks_from_frame

GRID_RECORD = Path("experiments/objectives_grid.json")


def model_at(commit: str, out: Path) -> Path:
    """`models/distilled` as recorded at `commit` (an experiment's ref), from the DVC cache."""
    DVCFileSystem(".", rev=commit).get("models/distilled", str(out), recursive=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="experiments/distill_divergence.json")
    a = ap.parse_args()
    cfg = load_section(DistillConfig, "distill")
    tasks = tasks_from_frame(read_parquet("data/tasks/tasks.parquet", "tasks"))
    test = {t.task_id: t for t in tasks if t.split == cfg.test_split}
    eps = read_parquet("data/trajectories/oracle/episodes.parquet", "collect@oracle")
    steps = read_parquet("data/trajectories/oracle/steps.parquet", "collect@oracle")
    teacher = load_model_dir(cfg.teacher_dir)
    tok, prompt = teacher.tokenizer, model_prompt(cfg.student_dirs["strong"])
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    examples = dataset_samples(test, eps, steps, tok, prompt, 10**9, 0)
    teacher.model.eval()

    def measure(model_dir: Path) -> dict[str, dict[str, float]]:
        student = load_model_dir(model_dir)
        student.model.eval()
        traj = run_policy(student.model, tok, list(test.values()), injector=None, k=2, temperature=1.0, seed=0,
                          iteration=0, batch_size=cfg.batch_size, label="divergence", prompt=prompt,
                          max_new_tokens=cfg.max_new_tokens)
        own = student_samples(test, traj, tok, prompt)
        return {"demos": teacher_divergence(student.model, teacher.model, examples, pad_id=pad).as_dict(),
                "on_policy": {**teacher_divergence(student.model, teacher.model, own, pad_id=pad).as_dict(),
                              "sample_success": float(traj.episodes["success"].mean())}}

    starts = {name: measure(Path(d)) for name, d in cfg.student_dirs.items()}
    print(json.dumps({"starts": starts}), flush=True)
    refs = exp_refs(Path("."))
    runs = []
    record = json.loads(GRID_RECORD.read_text())
    with TemporaryDirectory() as tmp:
        for r in record["runs"]:
            if r.get("stage") != "distill":
                continue
            d = measure(model_at(refs[r["experiment"]], Path(tmp) / r["experiment"]))
            row = {"experiment": r["experiment"], "method": r["method"], "start": r["start"], "seed": r["seed"],
                   "after": d, **{f"reverse_kl_closed_{k}": 1 - d[k]["reverse_kl"] / starts[r["start"]][k]["reverse_kl"]
                                  for k in ("demos", "on_policy")},
                   "test_success": r["metrics"]["final"]["test_success"]}
            print(json.dumps(row), flush=True)
            runs.append(row)
    write_json({"what": "KL between each distilled student and the teacher, on the oracle's test-split "
                        "demonstrations (teacher-forced) and on the model's own samples (2 per test task, "
                        "temperature 1); action tokens only",
                "tag": record.get("tag"), "demo_examples": len(examples),
                "starts": starts, "runs": runs}, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
