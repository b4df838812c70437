"""A trained model through `distillery serve` + the `openai` backend, beside the `hf` backend.

Starts the real CLI (`distillery serve MODEL_DIR`) as a subprocess on a free port of
127.0.0.1, runs a seeded sample of test tasks with `rollout.run_batch` twice — the
`openai` policy (official client, text mode, temperature 0) against the server, and the
`hf` policy (greedy, in-process, all episodes batched) on the same model directory — and
prints each side's success rate, mean score and wall time, and how many actions and
episodes are identical. Greedy decoding of one model should give the same trajectories
both ways (tests/agents/test_serve_parity.py asserts it on a tiny model); a difference is
printed with the first step where the two sides part. Also printed: how many replies the
openai policy had to repair (`extract_action` digging a call out of surrounding text,
which the hf backend never does: a source of difference by design, so it is counted).

    python bench/serve_parity.py --model-dir models/warmup --n-tasks 30
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import non_negative_int, positive_int  # noqa: E402
from rollout_throughput import DEFAULT_TASKS, load_note, load_tasks  # noqa: E402

NAME = "served"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model_dir: str, port: int, threads: int, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, "-m", "distillery.cli", "serve", model_dir, "--port", str(port),
           "--model-name", NAME, "--device", "cpu", "--log-level", "warning"]
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)


def wait_ready(proc: subprocess.Popen[bytes], base: str, log: Path, timeout: float = 180) -> float:
    import httpx

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"distillery serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(base + "/health", timeout=2).status_code == 200:
                return time.perf_counter() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"distillery serve did not answer /health within {timeout:g} s:\n{log.read_text()[-3000:]}")


def run(policy: Any, tasks: list[Any], seed: int, batch_size: int) -> tuple[Any, float]:
    from distillery.rollout import RolloutConfig, make_jobs, run_batch

    cfg = RolloutConfig(seed=seed, batch_size=batch_size)
    t0 = time.perf_counter()
    traj = run_batch(policy, make_jobs(tasks, policy.name, cfg), cfg)
    return traj, time.perf_counter() - t0


def by_task(traj: Any) -> tuple[dict[str, dict[str, Any]], dict[str, list[str]]]:
    eps = {r["task_id"]: r for r in traj.episodes.iter_rows(named=True)}
    task_of = {e["episode_id"]: t for t, e in eps.items()}
    acts: dict[str, list[str]] = {t: [] for t in eps}
    for r in traj.steps.sort(["episode_id", "t"]).iter_rows(named=True):
        acts[task_of[r["episode_id"]]].append(r["action_text"])
    return eps, acts


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-dir", default="models/warmup", help="the model directory to serve")
    ap.add_argument("--n-tasks", type=positive_int, default=30, help="test tasks (a seeded sample)")
    ap.add_argument("--tasks", default=DEFAULT_TASKS, help="tasks parquet (generated if missing)")
    ap.add_argument("--max-new-tokens", type=positive_int, default=96, help="per action, both sides")
    ap.add_argument("--concurrency", type=positive_int, default=32,
                    help="openai policy: requests in flight (32 = the server's default max batch)")
    ap.add_argument("--batch-size", type=positive_int, default=64, help="episodes advanced together (both sides)")
    ap.add_argument("--threads", type=non_negative_int, default=0,
                    help="torch threads, here and in the server (0 = default)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the task sample and the rollouts")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not Path(args.model_dir, "config.json").is_file():
        print(f"{args.model_dir}: not a model directory (run the warmup stage first, or pass --model-dir)",
              file=sys.stderr)
        return 2

    import httpx
    import torch

    from distillery.agents.hf import HFPolicy
    from distillery.agents.openai import OpenAIPolicy

    if args.threads:
        torch.set_num_threads(args.threads)
    tasks, where = load_tasks(args.n_tasks, args.seed, args.tasks)
    print(f"model: {args.model_dir}; tasks: {where}; greedy, max_new_tokens {args.max_new_tokens}, "
          f"openai concurrency {args.concurrency}")
    print(f"machine: {os.cpu_count()} cpus, torch threads {torch.get_num_threads()}, {load_note()}")

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"distillery-serve-{port}.log"
    proc = start_server(args.model_dir, port, args.threads, log)
    try:
        ready = wait_ready(proc, base, log)
        print(f"server: `distillery serve {args.model_dir} --port {port}` (pid {proc.pid}) ready in {ready:.1f} s")
        api = OpenAIPolicy(base + "/v1", NAME, mode="text", temperature=0.0,
                           max_tokens=args.max_new_tokens, concurrency=args.concurrency,
                           max_retries=2, timeout=300)
        hf = HFPolicy(args.model_dir, temperature=0.0, max_new_tokens=args.max_new_tokens, device="cpu")
        # One short warm-up episode each, outside the timings.
        run(api, tasks[:1], args.seed, args.batch_size)
        run(hf, tasks[:1], args.seed, args.batch_size)
        before = httpx.get(base + "/health").json()
        api_traj, api_s = run(api, tasks, args.seed, args.batch_size)
        after = httpx.get(base + "/health").json()
        hf_traj, hf_s = run(hf, tasks, args.seed, args.batch_size)
        api.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()

    print()
    print(f"{'backend':22} {'success':>8} {'score':>7} {'steps':>6} {'invalid':>8} {'wall s':>7} {'steps/s':>8}")
    for name, traj, secs in (("openai -> serve", api_traj, api_s), ("hf (in-process)", hf_traj, hf_s)):
        e = traj.episodes
        print(f"{name:22} {e['success'].mean():>8.3f} {e['score'].mean():>7.3f} {traj.steps.height:>6} "
              f"{int(e['invalid_actions'].sum()):>8} {secs:>7.1f} {traj.steps.height / secs:>8.2f}")
    reqs = after["requests"] - before["requests"]
    batches = after["batches"] - before["batches"]
    print(f"server: {reqs} requests in {batches} generate calls (mean batch {reqs / max(batches, 1):.1f}); "
          f"openai policy repairs: {dict(api.notes) or 'none'}")

    hf_eps, hf_acts = by_task(hf_traj)
    api_eps, api_acts = by_task(api_traj)
    same = total = eps_same = 0
    first = ""
    for task_id in sorted(hf_eps):
        a, b = hf_acts[task_id], api_acts.get(task_id, [])
        same += sum(x == y for x, y in zip(a, b, strict=False))
        total += max(len(a), len(b))
        ea, eb = hf_eps[task_id], api_eps.get(task_id, {})
        ident = a == b and (ea["success"], ea["score"]) == (eb.get("success"), eb.get("score"))
        eps_same += ident
        if not ident and not first:
            t = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
            first = (f"{task_id} step {t}:\n    hf     {(a[t] if t < len(a) else '<ended>')[:120]!r}\n"
                     f"    openai {(b[t] if t < len(b) else '<ended>')[:120]!r}")
    print(f"identical actions: {same}/{total} ({same / max(total, 1):.1%}); identical episodes "
          f"(actions, success, score): {eps_same}/{len(hf_eps)}")
    if first:
        print(f"first difference: {first}")
    print(f"at the end: {load_note()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
