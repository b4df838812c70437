"""Environment steps/s of the batched rollout engine against a naive one-episode loop.

Both sides drive the same model on the same STAGE tasks (a seeded sample of the test
split), greedy, with the same prompts (`agents.prompts.render_prompt_ids`), the same
`max_new_tokens` and the same stop tokens (`<|end|>` and eos), in one run:

- **batched**: `rollout.run_batch` + `HFPolicy`: every active episode advances together,
  one `policy.act` per step = one KV-cached `lm.generate.generate` call for the batch.
- **naive**: one episode at a time, one HF `model.generate` call per episode per step
  (batch of one), the way a first script would do it.

The naive side runs whole episodes, in the same task order, until its time budget is
spent; its steps/s is measured on the steps it ran and the time for all tasks is
extrapolated from it (printed as such). The two sides alternate for up to `--rounds`
rounds while the time budget allows, and each side's best round is reported (every
round's rate is printed): the machines this runs on are often shared, and a load spike
during one side's run should not decide the ratio. Also printed: the agreement between the two
sides' actions on the steps both ran (greedy decoding should give identical actions;
differences come from float rounding of batched, left-padded matmuls flipping a near-tie
argmax), and each side's model FLOP rate, 2 * N * tokens/s (N = parameters of the
transformer blocks, tokens = prompt + generated, plus the LM head on generated tokens;
attention scores and padding are not counted, so it is the useful work, a lower bound on
the arithmetic done) against the machine's fp32 matmul peak, measured in the same run by
timing a 2048^3 matmul before the rounds and after each, the best counting. A breakdown
shows where each side's time goes: prefill forward passes, one-token decode forward
passes, the environment's calls, and the rest (prompt rendering, the sampling loop and the
cache's bookkeeping). A decode pass's
time is fitted as a fixed cost plus a cost per row. A critical-path line sets the longest
episode's generated tokens (a serial chain) against the decode passes the batched side ran
(with `act` calls in lockstep, each as long as its longest action; with
`--continuous-batching`, a call's last few unfinished actions go on in the next call): the
decode passes that could still go at most, and, at the fitted
fixed cost each, the time and the ratio that would give at best (the rows those passes carry
still have to be computed elsewhere). A history-window line counts the prompt tokens K/V
reuse cannot save: a prompt that does not start with its episode's previous one (the window
dropped a turn) is prefilled again from where they part.

    python bench/rollout_throughput.py [--model-dir models/warmup] [--n-tasks 120]
        [--batch-size 128] [--naive-budget 45] [--rounds 3] [--threads N] [--device cpu|cuda|auto]
        [--continuous-batching]

The defaults run the whole test split in one batch, as the `play` stage does. Smaller
batches amortise less: 40 tasks in batches of 64 measured 4.0x where 120 in one batch
measured 5.3x (same model and machine, 2026-11-25).

Without a model directory (default `models/warmup`, if it exists) an untrained model of
the default `ModelConfig` is built, with a tokenizer trained on the tasks' oracle
trajectories; the output says so. An untrained model rarely emits `<|end|>`, so every
action runs to `max_new_tokens` and every episode to its step limit: the worst case for
both sides, and not the action lengths a trained model produces.
"""

from __future__ import annotations

import argparse
import functools
import os
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import polars as pl  # noqa: E402
import torch  # noqa: E402

from distillery.agents.prompts import MARKERS, PromptConfig, render_prompt_ids  # noqa: E402
from distillery.envs.base import PROTOCOL_METHODS, make_env, tool_specs  # noqa: E402
from distillery.types import Context, Task, Turn  # noqa: E402
from machine import (  # noqa: E402
    best_peak,
    check_default_model_dir,
    cpu_line,
    matmul_peak,
    model_dir,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    synchronize,
)

DEFAULT_MODEL_DIR = "models/warmup"
DEFAULT_TASKS = "data/tasks/tasks.parquet"


# ---------------------------------------------------------------------------------------
# Inputs: tasks, model (shared with bench/serve_parity.py)
# ---------------------------------------------------------------------------------------


def load_tasks(n: int, seed: int, tasks_path: str = DEFAULT_TASKS, split: str = "test") -> tuple[list[Task], str]:
    """A seeded sample of `n` tasks of `split`: from the tasks stage's output when it exists,
    else freshly generated with the default `TasksConfig`. Returns (tasks, where from)."""
    if Path(tasks_path).is_file():
        from distillery.io import read_parquet
        from distillery.types import tasks_from_frame

        tasks = [t for t in tasks_from_frame(read_parquet(tasks_path)) if t.split == split]
        where = tasks_path
    else:
        from distillery.config import TasksConfig
        from distillery.tasks.generate import generate_tasks

        cfg = TasksConfig(n_train_per_family=0) if split == "test" else TasksConfig(n_test_per_family=0)
        tasks = [t for t in generate_tasks(cfg, progress=False).tasks if t.split == split]
        where = "generated (default TasksConfig)"
    tasks = sorted(tasks, key=lambda t: t.task_id)
    random.Random(seed).shuffle(tasks)
    return tasks[:n], f"{min(n, len(tasks))} of {len(tasks)} {split} tasks, {where}"


def task_texts(tasks: Sequence[Task]) -> list[str]:
    """Instructions, observations and actions of the tasks' oracle episodes: the text a
    tokenizer for these tasks should have whole tokens for."""
    from distillery.agents.base import PolicySpec, make_policy
    from distillery.rollout import RolloutConfig, make_jobs, run_batch

    cfg = RolloutConfig(batch_size=64)
    traj = run_batch(make_policy(PolicySpec("oracle")), make_jobs(tasks, "oracle", cfg), cfg)
    return ([t.instruction for t in tasks] + traj.steps["observation"].to_list()
            + traj.steps["action_text"].to_list() + traj.steps["feedback"].to_list())


def untrained_model(tasks: Sequence[Task], seed: int = 0) -> tuple[Any, Any]:
    """The default `ModelConfig` from scratch, with a tokenizer trained on `tasks`' text."""
    from distillery.lm.model import ModelConfig, build_model
    from distillery.lm.tokenizer import train_tokenizer

    tok = train_tokenizer(task_texts(tasks))
    model = build_model(ModelConfig(init_seed=seed), tok).eval()
    return model, tok


def body_params(model: torch.nn.Module) -> tuple[int, int]:
    """(parameters of the transformer blocks and final norm, parameters of the LM head).

    A token's forward pass multiplies by the block parameters (2 FLOPs each); the head only
    runs where logits are taken (every generated token; one prompt position per prefill,
    both here and in HF `generate`); the input embedding is a lookup, no arithmetic."""
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    total = sum(p.numel() for p in model.parameters())   # tied weights are one parameter
    body = total - emb.numel() - (0 if head is emb else head.numel())
    return body, head.numel()


class ForwardTimer:
    """Wall time inside the model's forward passes, split into prefill (more than one new
    token per row) and decode (one), via forward hooks on the model (HF `generate`) and on
    its lean Llama forward (lm/llama_forward.py, which our engine calls instead). On CUDA
    each pass is synchronised at both ends, so its time is the kernels' and not their launch."""

    def __init__(self, model: torch.nn.Module) -> None:
        from distillery.lm.llama_forward import fast_forward

        self.device = next(model.parameters()).device
        self.prefill = self.decode = 0.0
        self.calls = 0
        self.prefill_real = self.prefill_computed = 0   # prompt tokens, and with left padding
        self.decode_passes: list[tuple[int, float]] = []   # (rows, seconds) of each decode pass
        self._t0 = 0.0
        modules = [model] + [m for m in [fast_forward(model)] if m is not None]
        self._handles = [h for m in modules for h in (m.register_forward_pre_hook(self._pre, with_kwargs=True),
                                                      m.register_forward_hook(self._post, with_kwargs=True))]

    def _pre(self, module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        synchronize(self.device)
        self._t0 = time.perf_counter()

    def _post(self, module: Any, args: Any, kwargs: dict[str, Any], out: Any) -> None:
        synchronize(self.device)
        dt = time.perf_counter() - self._t0
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None and ids.shape[-1] > 1:
            self.prefill += dt
            mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
            self.prefill_computed += ids.numel()
            # the mask also covers a reused cached prefix: count only the new positions
            self.prefill_real += int(mask[:, -ids.shape[-1]:].sum()) if mask is not None else ids.numel()
        else:
            self.decode += dt
            self.decode_passes.append((ids.shape[0] if ids is not None else 1, dt))
        self.calls += 1

    def reset(self) -> tuple[float, float, int, float, list[tuple[int, float]]]:
        """(prefill s, decode s, forward passes, padded share of prefill positions, decode
        passes as (rows, s)); zeroes."""
        pad = 1 - self.prefill_real / self.prefill_computed if self.prefill_computed else 0.0
        out = (self.prefill, self.decode, self.calls, pad, self.decode_passes)
        self.prefill = self.decode = 0.0
        self.calls = self.prefill_real = self.prefill_computed = 0
        self.decode_passes = []
        return out

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


class EnvTimer:
    """Wall time inside the environment's calls (the Environment protocol's `reset`, `step`,
    `verify`, `state_hash`, `close`) on either side, by wrapping those methods of its class
    while the benchmark runs (an environment has no hooks). A call made from inside another
    (a step that hashes the state) is counted once, in the outer call."""

    def __init__(self, env_class: type) -> None:
        self.seconds = 0.0
        self.calls = 0
        self._depth = 0
        self._class = env_class
        self._own = {m: env_class.__dict__[m] for m in PROTOCOL_METHODS if m in env_class.__dict__}
        for name in PROTOCOL_METHODS:
            if hasattr(env_class, name):
                setattr(env_class, name, self._timed(getattr(env_class, name)))

    def _timed(self, method: Any) -> Any:
        @functools.wraps(method)
        def call(*args: Any, **kwargs: Any) -> Any:
            self._depth += 1
            t0 = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self.seconds += time.perf_counter() - t0
                    self.calls += 1
        return call

    def reset(self) -> float:
        """Seconds inside the environment since the last reset; zeroes."""
        out, self.seconds, self.calls = self.seconds, 0.0, 0
        return out

    def remove(self) -> None:
        for name in PROTOCOL_METHODS:
            if name in self._own:
                setattr(self._class, name, self._own[name])
            elif name in self._class.__dict__:
                delattr(self._class, name)     # inherited: the base class's method shows again


# ---------------------------------------------------------------------------------------
# The two sides
# ---------------------------------------------------------------------------------------


@dataclass
class Side:
    seconds: float = 0.0
    steps: int = 0
    episodes: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    successes: int = 0
    partial: str = ""                 # the task whose episode the time budget cut short
    prefill_s: float = 0.0            # of `seconds`, inside prefill forward passes
    decode_s: float = 0.0             # ... and inside one-token decode forward passes
    env_s: float = 0.0                # ... and inside the environment's calls
    forwards: int = 0
    prefill_padding: float = 0.0      # share of prefill positions that were left padding
    actions: dict[str, list[str]] = field(default_factory=dict)   # task_id -> actions
    observations: dict[str, list[str]] = field(default_factory=dict)   # task_id -> each step's observation
    decode_passes: list[tuple[int, float]] = field(default_factory=list)   # (rows, s) per decode pass
    lockstep_tokens: int = 0          # batched: sum over steps t of the longest action at t
    longest_chain: int = 0            # batched: the most tokens one episode generated

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.seconds if self.seconds else 0.0

    def flops_per_s(self, body: int, head: int) -> float:
        flops = 2 * body * (self.tokens_in + self.tokens_out) + 2 * head * self.tokens_out
        return flops / self.seconds if self.seconds else 0.0


def run_batched(policy: Any, tasks: Sequence[Task], batch_size: int, seed: int, continuous: bool = False) -> Side:
    from distillery.rollout import RolloutConfig, make_jobs, run_batch

    cfg = RolloutConfig(seed=seed, batch_size=batch_size, continuous_batching=continuous)
    t0 = time.perf_counter()
    traj = run_batch(policy, make_jobs(tasks, "hf", cfg), cfg)
    side = Side(seconds=time.perf_counter() - t0)
    eps, steps = traj.episodes, traj.steps
    side.steps, side.episodes = steps.height, eps.height
    side.tokens_in, side.tokens_out = int(eps["tokens_in"].sum()), int(eps["tokens_out"].sum())
    side.successes = int(eps["success"].sum())
    task_of = dict(zip(eps["episode_id"].to_list(), eps["task_id"].to_list(), strict=True))
    for row in steps.sort(["episode_id", "t"]).iter_rows(named=True):
        side.actions.setdefault(task_of[row["episode_id"]], []).append(row["action_text"])
        side.observations.setdefault(task_of[row["episode_id"]], []).append(row["observation"])
    # With every episode in one batch, lockstep act calls (step t of all live episodes in one
    # call, decoding until its longest action is done) would decode the longest action at each t;
    # one episode's tokens are a serial chain, the floor.
    if len(tasks) <= batch_size:
        side.lockstep_tokens = int(steps.group_by("t").agg(pl.col("tokens_out").max())["tokens_out"].sum())
        side.longest_chain = int(steps.group_by("episode_id").agg(pl.col("tokens_out").sum())["tokens_out"].max())
    return side


def naive_generate(model: Any, prompt: list[int], stop_ids: list[int], pad_id: int,
                   max_new_tokens: int) -> list[int]:
    """One HF `model.generate` call for one prompt: greedy, stopping on any stop id."""
    ids = torch.tensor([prompt], dtype=torch.long, device=model.device)
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             max_new_tokens=max_new_tokens, eos_token_id=stop_ids,
                             pad_token_id=pad_id)
    return out[0, ids.shape[1]:].tolist()


def run_naive(policy: Any, tasks: Sequence[Task], budget_s: float) -> Side:
    """Episodes one at a time, one `model.generate` per step, until `budget_s` is spent (the
    episode running then is cut short: its steps so far count, and are compared)."""
    model, tok = policy.lm, policy.tok
    stop_ids, pad_id = list(policy.stop_ids), policy.pad_id
    max_new = policy.sampling.max_new_tokens
    env = make_env("stage")
    side = Side()
    t0 = time.perf_counter()
    try:
        for task in tasks:
            if time.perf_counter() - t0 >= budget_s:
                break
            obs, history, acts = env.reset(task), [], []
            side.actions[task.task_id] = acts
            done = False
            while not done and len(acts) < task.max_steps:
                if time.perf_counter() - t0 >= budget_s:
                    side.partial = task.task_id
                    break
                ctx = Context(episode_id=task.task_id, task=task, t=len(acts), observation=obs,
                              history=list(history))
                prompt = render_prompt_ids(ctx, tok, tool_specs(ctx.task.env), policy.prompt)
                new = naive_generate(model, prompt, stop_ids, pad_id, max_new)
                text_ids = new[:-1] if new and new[-1] in stop_ids else new
                text = tok.decode(text_ids, skip_special_tokens=False).strip()
                res = env.step(text)
                side.tokens_in += len(prompt)
                side.tokens_out += len(new)
                history.append(Turn(observation=obs, action=text))
                acts.append(text)
                side.steps += 1
                obs, done = res.observation, res.done
            if side.partial:
                break
            side.successes += int(env.verify().success)
            side.episodes += 1
    finally:
        env.close()
    side.seconds = time.perf_counter() - t0
    return side


def agreement(a: Side, b: Side) -> tuple[int, int, int, int]:
    """(identical actions, compared actions, episodes identical throughout, complete episodes)
    over the episodes `b` ran; a cut-short episode of `b` is compared on its steps only."""
    same = total = eps_same = eps = 0
    for task_id, acts_b in b.actions.items():
        acts_a = a.actions.get(task_id, [])
        n = min(len(acts_a), len(acts_b))
        same += sum(x == y for x, y in zip(acts_a[:n], acts_b[:n], strict=True))
        if task_id == b.partial:
            total += len(acts_b)
            continue
        total += max(len(acts_a), len(acts_b))
        eps_same += acts_a == acts_b
        eps += 1
    return same, total, eps_same, eps


def first_difference(a: Side, b: Side) -> str:
    for task_id, acts_b in b.actions.items():
        acts_a = a.actions.get(task_id, [])
        for t, (x, y) in enumerate(zip(acts_a, acts_b, strict=False)):
            if x != y:
                return f"{task_id} step {t}:\n      batched {x[:100]!r}\n      naive   {y[:100]!r}"
        if len(acts_a) != len(acts_b) and task_id != b.partial:
            return f"{task_id}: {len(acts_a)} batched steps vs {len(acts_b)} naive"
    return ""


def pass_cost(passes: Sequence[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares fit of a decode pass's time as `fixed + per_row * rows`: (fixed s, per-row s).
    The fixed part is what a pass costs whatever it carries (kernel launches, Python, the
    sampling step): the part that fewer, fuller passes would save."""
    n = len(passes)
    if n < 2:
        return (passes[0][1] if passes else 0.0), 0.0
    mx = sum(r for r, _ in passes) / n
    my = sum(t for _, t in passes) / n
    var = sum((r - mx) ** 2 for r, _ in passes)
    slope = sum((r - mx) * (t - my) for r, t in passes) / var if var else 0.0
    return my - slope * mx, slope


@dataclass
class Reprefill:
    later: int = 0          # prompts after an episode's first step
    cut: int = 0            # ... that do not start with the step before's prompt
    prefilled: int = 0      # prompt tokens prefilled in all (cached prefixes not counted)
    cut_prefilled: int = 0  # ... of them in the cut prompts


def reprefill(policy: Any, tasks: Sequence[Task], side: Side) -> Reprefill:
    """Re-render the batched side's prompts and count what the K/V reuse cannot save: a step
    whose prompt does not start with the previous step's (a turn fell out of the history
    window, or the budget cut an observation) is prefilled again from where they part. The
    previous step's generated tokens are taken as its action re-encoded (`action_ids`), so
    the counts are of the prompts the engine saw, up to that round trip."""
    from distillery.agents.prompts import action_ids
    from distillery.lm.generate import _common_prefix  # the engine's own reuse rule

    out = Reprefill()
    by_id = {t.task_id: t for t in tasks}
    for task_id, actions in side.actions.items():
        task = by_id[task_id]
        specs = tool_specs(task.env)
        history: list[Turn] = []
        prev: list[int] = []
        for t, (obs, act) in enumerate(zip(side.observations[task_id], actions, strict=True)):
            ids = render_prompt_ids(Context(task_id, task, t, obs, history=list(history)), policy.tok, specs,
                                    policy.prompt)
            if t == 0:
                out.prefilled += len(ids)
            else:
                # as `generate` does: reuse at most all but the prompt's last token
                common = min(_common_prefix(prev + action_ids(policy.tok, actions[t - 1])[:-1], ids), len(ids) - 1)
                out.later += 1
                out.prefilled += len(ids) - common
                if ids[:len(prev)] != prev:
                    out.cut += 1
                    out.cut_prefilled += len(ids) - common
            prev = ids
            history.append(Turn(observation=obs, action=act))
    return out


# ---------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-dir", type=model_dir, default=None,
                    help=f"model directory (default {DEFAULT_MODEL_DIR} if it exists, else an untrained model)")
    ap.add_argument("--n-tasks", type=positive_int, default=120,
                    help="test tasks to run (a seeded sample; 120 = the whole default test split)")
    ap.add_argument("--tasks", default=DEFAULT_TASKS, help="tasks parquet (generated if missing)")
    ap.add_argument("--batch-size", type=positive_int, default=128,
                    help="episodes advanced together (batched side; 128 as the play stage runs the test split)")
    ap.add_argument("--continuous-batching", action="store_true",
                    help="the batched side carries each act call's last few unfinished actions into the next call "
                         "(RolloutConfig.continuous_batching) instead of decoding them alone")
    ap.add_argument("--max-new-tokens", type=positive_int, default=96, help="per action, both sides")
    ap.add_argument("--naive-budget", type=positive_float, default=45.0,
                    help="seconds the naive side may run (whole episodes; the rest is extrapolated)")
    ap.add_argument("--rounds", type=positive_int, default=3,
                    help="most rounds of (batched, naive); each side's best round is reported")
    ap.add_argument("--max-seconds", type=non_negative_float, default=150.0,
                    help="no new round once another like the last would end past this (the first always runs)")
    ap.add_argument("--threads", type=non_negative_int, default=0,
                    help="torch intra-op threads, both sides (0 = torch's default)")
    ap.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu",
                    help="cpu, cuda or auto (CUDA when present); both sides run there, in fp32")
    ap.add_argument("--seed", type=int, default=0,
                    help="seed of the task sample, the untrained model's weights and the rollouts")
    return ap


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The arguments, checked before any work: a bad value costs no task generation."""
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error(f"--device {args.device}: no CUDA device here (torch.cuda.is_available() is False)")
    if args.model_dir is None:
        check_default_model_dir(ap, "--model-dir", DEFAULT_MODEL_DIR)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from distillery.agents.hf import HFPolicy, policy_from_model
    from distillery.lm.model import n_params

    torch.manual_seed(args.seed)
    tasks, where = load_tasks(args.n_tasks, args.seed, args.tasks)
    model_dir = args.model_dir or (DEFAULT_MODEL_DIR if Path(DEFAULT_MODEL_DIR).is_dir() else None)
    if model_dir:
        policy = HFPolicy(model_dir, temperature=0.0, max_new_tokens=args.max_new_tokens, device=args.device)
        what = model_dir
    else:
        model, tok = untrained_model(tasks, args.seed)
        policy = policy_from_model(model, tok, "untrained", prompt=PromptConfig(), max_new_tokens=args.max_new_tokens,
                                   device=args.device)
        what = ("UNTRAINED default ModelConfig (no --model-dir and no models/warmup), tokenizer "
                "trained on these tasks' oracle text")
    lm = policy.lm
    n_all, (n_body, n_head) = n_params(lm), body_params(lm)
    print(f"model: {what}")
    print(f"  {n_all / 1e6:.2f}M parameters ({n_body / 1e6:.2f}M in the blocks, {n_head / 1e6:.2f}M LM head), "
          f"vocab {len(policy.tok)}, "
          f"prompt style {policy.prompt.style}, stop ids {policy.stop_ids} "
          f"({MARKERS['end']} + eos), max_new_tokens {args.max_new_tokens}, greedy")
    print(f"batched side: act calls {'continuously batched across calls' if args.continuous_batching else 'in lockstep'}"
          f", batches of {args.batch_size}")
    print(f"tasks: {where}")
    print(f"machine: {cpu_line()}, torch threads {torch.get_num_threads()}, {load_note()}")
    device = next(lm.parameters()).device
    if device.type == "cuda":
        print(f"device: {torch.cuda.get_device_name(device)} (the model and both sides' forward passes)")

    peaks = [matmul_peak(device)]   # and again after every round: machine.best_peak
    print(f"fp32 matmul peak on {device.type} (2048^3, best of 5): {peaks[0] / 1e9:.1f} GFLOP/s")

    # Warm both code paths up once (allocator, kernels), outside the timings.
    warm = render_prompt_ids(Context("warm", tasks[0], 0, "warm up"), policy.tok, tool_specs(tasks[0].env), policy.prompt)
    naive_generate(lm, warm, list(policy.stop_ids), policy.pad_id, 4)
    policy.act([Context("warm", tasks[0], 0, "warm up")])

    # Rounds alternate the two sides and each side's best round counts: on a machine shared
    # with other jobs, a load spike during one side's run must not decide the ratio. A new
    # round starts only if another like the last still fits the time budget.
    timer = ForwardTimer(lm)
    timer.reset()
    probe = make_env("stage")
    env_timer = EnvTimer(type(probe))
    probe.close()
    rounds: list[tuple[Side, Side]] = []
    t_start = time.perf_counter()
    while len(rounds) < args.rounds:
        t0 = time.perf_counter()
        b = run_batched(policy, tasks, args.batch_size, args.seed, args.continuous_batching)
        b.prefill_s, b.decode_s, b.forwards, b.prefill_padding, b.decode_passes = timer.reset()
        b.env_s = env_timer.reset()
        n = run_naive(policy, tasks, args.naive_budget)
        n.prefill_s, n.decode_s, n.forwards, n.prefill_padding, n.decode_passes = timer.reset()
        n.env_s = env_timer.reset()
        rounds.append((b, n))
        last = time.perf_counter() - t0
        peaks.append(matmul_peak(device))
        if time.perf_counter() - t_start + last > args.max_seconds:
            break
    timer.remove()
    env_timer.remove()
    peak, line = best_peak(peaks, "fp32")
    print(line)
    batched = max((r[0] for r in rounds), key=lambda s: s.steps_per_s)
    naive = max((r[1] for r in rounds), key=lambda s: s.steps_per_s)
    if len(rounds) > 1:
        print(f"{len(rounds)} rounds, steps/s batched "
              f"{', '.join(f'{r[0].steps_per_s:.2f}' for r in rounds)}; naive "
              f"{', '.join(f'{r[1].steps_per_s:.2f}' for r in rounds)}; the best of each below")

    print()
    print(f"{'':8} {'episodes':>8} {'steps':>6} {'seconds':>8} {'steps/s':>8} {'tok/step':>9} "
          f"{'success':>8} {'GFLOP/s':>8} {'of peak':>8}")
    for name, s in (("batched", batched), ("naive", naive)):
        tps = (s.tokens_in + s.tokens_out) / max(s.steps, 1)
        fl = s.flops_per_s(n_body, n_head)
        print(f"{name:8} {s.episodes:>8} {s.steps:>6} {s.seconds:>8.1f} {s.steps_per_s:>8.2f} {tps:>9.0f} "
              f"{s.successes / max(s.episodes, 1):>8.2f} {fl / 1e9:>8.2f} {fl / peak:>8.1%}")
    ratio = batched.steps_per_s / naive.steps_per_s if naive.steps_per_s else float("inf")
    print()
    print("where the time went (s per environment step):")
    for name, s in (("batched", batched), ("naive", naive)):
        n = max(s.steps, 1)
        rest = s.seconds - s.prefill_s - s.decode_s - s.env_s
        print(f"  {name:8} prefill {s.prefill_s / n * 1e3:7.1f} ms   decode {s.decode_s / n * 1e3:7.1f} ms   "
              f"environment {s.env_s / n * 1e3:6.1f} ms   rest (prompts, sampling loop) {rest / n * 1e3:6.1f} ms   "
              f"({s.forwards} forward passes; {s.prefill_padding:.0%} of prefill positions padding)")
    fixed, per_row = pass_cost(batched.decode_passes)
    rows = [r for r, _ in batched.decode_passes]
    print(f"decode pass cost (least squares over the batched side's {len(rows)} passes, "
          f"{min(rows, default=0)}-{max(rows, default=0)} rows): {fixed * 1e3:.2f} ms + {per_row * 1e3:.3f} ms a row; "
          f"the fixed part is {fixed * len(rows) / max(batched.decode_s, 1e-9):.0%} of decode time")
    if batched.lockstep_tokens:
        passes = len(batched.decode_passes)
        saved = max(passes - batched.longest_chain, 0)
        best = batched.steps / max(batched.seconds - saved * fixed, 1e-9)
        print(f"critical path: the longest episode generates {batched.longest_chain} tokens, one decode pass each; "
              f"the batched side ran {passes} decode passes (act calls in lockstep, each decoding until its "
              f"longest action is done, run {batched.lockstep_tokens}; with --continuous-batching a call's last "
              f"few unfinished actions go on in the next call). At most the other "
              f"{saved} passes could go, and the rows they carry still have to be computed: at most "
              f"{saved} x {fixed * 1e3:.2f} ms = {saved * fixed:.2f} s of {batched.seconds:.2f} s, "
              f"i.e. at best {best:.0f} steps/s, "
              f"{best / naive.steps_per_s if naive.steps_per_s else float('inf'):.1f}x (an upper bound: it "
              f"ignores the extra prefill passes of rows rejoining one by one)")
    rp = reprefill(policy, tasks, batched)
    print(f"history window: {rp.cut} of {rp.later} prompts after an episode's first step do not start with the "
          f"step before's (a turn fell out of the window), so K/V reuse stops there: they prefill "
          f"{rp.cut_prefilled} of the {rp.prefilled} prompt tokens prefilled ({rp.cut_prefilled / max(rp.prefilled, 1):.0%})")
    if naive.episodes < batched.episodes:
        cut = f" + {len(naive.actions[naive.partial])} steps of one cut short" if naive.partial else ""
        print(f"naive side: measured {naive.steps} steps ({naive.episodes} whole episodes{cut}) of "
              f"{batched.episodes} in {naive.seconds:.1f} s (budget {args.naive_budget:g} s); all "
              f"{batched.steps} steps would take ~{batched.steps / naive.steps_per_s:.0f} s at that rate "
              f"(extrapolated) vs {batched.seconds:.1f} s batched")
    print(f"batched / naive steps/s: {ratio:.1f}x  (target >= 10x)")
    same, total, eps_same, eps = agreement(batched, naive)
    print(f"greedy action agreement on the {eps} episodes both ran: {same}/{total} actions identical "
          f"({same / max(total, 1):.1%}), {eps_same}/{eps} episodes identical throughout")
    diff = first_difference(batched, naive)
    if diff:
        print(f"  first difference: {diff}")
    print(f"at the end: {load_note()}")
    return 0


def load_note() -> str:
    """The 1-minute load average: timings on a machine busy with other work are not the
    machine's (torch's thread pool stalls badly when its threads are descheduled)."""
    if not hasattr(os, "getloadavg"):
        return "load average unknown"
    load = os.getloadavg()[0]
    busy = load > (os.cpu_count() or 1) * 0.75
    return f"load average {load:.1f}" + (" (BUSY with other work: timings are inflated; "
                                          "--threads 1 suffers least)" if busy else "")


if __name__ == "__main__":
    sys.exit(main())
