"""`distillery serve` under load: N concurrent clients, plain and streaming, beside the same
requests sent by a single client, one after another.

Starts the real CLI (`distillery serve MODEL_DIR`) on a free port of 127.0.0.1 and sends
`--clients` x `--requests` chat completions (greedy, `--max-tokens` each; half the clients
stream, with usage). Each phase prints requests sent, answered, failed, wall time,
requests/s, completion tokens/s and p50/p99 latency (to the last byte; streams also time to
first event), then the concurrent phase's throughput as a multiple of the single client's,
how many completions came out identical in both phases, and the server's batching counters.
A request fails if its status is not 200, its body or stream is malformed (a stream must end
with [DONE]) or it is not answered by `--time-limit`; the script exits 1 if any failed or
went missing.

    python bench/serve_load.py                                   # a tiny model built on the spot
    python bench/serve_load.py --model-dir models/warmup --clients 16 --requests 8

Bounded: at most 256 clients and 1,000 requests per client, and `--time-limit` seconds for
the whole run (default 600); every request carries the time left as its timeout.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from machine import (  # bench/, beside this file
    model_dir,
    non_negative_int,
    positive_float,
    positive_int,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

NAME = "served"
MAX_CLIENTS, MAX_REQUESTS = 256, 1000


# ---------------------------------------------------------------------------------------
# A model to serve
# ---------------------------------------------------------------------------------------


def build_tiny_model(path: Path) -> Path:
    """A 2-block Llama with a tokenizer trained on tool calls: the server's work per token is
    real, the model's answers are not the point."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from distillery.agents.prompts import MARKERS
    from distillery.envs.actions import format_call
    from distillery.envs.base import tool_specs
    from distillery.lm.model import save_model_dir
    from distillery.types import ToolCall

    calls = [format_call(ToolCall(s.name, {p.name: f"{p.name} one" for p in s.params})) for s in tool_specs("stage")]
    texts = ["Task: file the invoice under finance and tell Ann.", "downloads/\n  invoice_2024.pdf", *calls] * 5
    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    specials = ["<pad>", "<unk>", "<eos>", *MARKERS.values()]
    tk.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=500, special_tokens=specials,
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>",
                                  additional_special_tokens=list(MARKERS.values()))
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None)
    # No eos and no end marker is likely from an untrained model: every request runs to max_tokens.
    card = {"prompt": {"style": "compact", "max_prompt_tokens": 512, "max_observation_tokens": 64,
                       "max_experience_tokens": 64, "max_history_turns": 4}}
    return save_model_dir(path, LlamaForCausalLM(cfg).eval(), tok, card)


def conversations(n: int) -> list[list[dict[str, Any]]]:
    """`n` distinct chat requests as the openai policy would send them (compact episodes of
    0-3 past turns)."""
    from distillery.agents.prompts import render_messages
    from distillery.envs.actions import format_call
    from distillery.envs.base import tool_specs
    from distillery.types import Context, Task, ToolCall, Turn

    specs = tool_specs("stage")
    out = []
    for i in range(n):
        task = Task(task_id=f"t{i}", family="f", split="test", profile="default", hint="",
                    instruction=f"File invoice {i} under finance/invoices and tell Ann.", initial_state={},
                    reference_solution=[], checks=[])
        turns = i % 4
        history = [Turn(f"observation {i}.{j}", format_call(ToolCall(s.name, {p.name: f"v{i}{j}" for p in s.params})))
                   for j, s in enumerate(specs[:turns])]
        ctx = Context(episode_id=f"e{i}", task=task, t=turns, observation=f"downloads/\n  invoice_{i}.pdf",
                      history=history)
        out.append(render_messages(ctx, specs))
    return out


# ---------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model_dir: Path, port: int, max_batch: int, threads: int, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, "-m", "distillery.cli", "serve", str(model_dir), "--port", str(port),
           "--model-name", NAME, "--device", "cpu", "--log-level", "warning", "--max-batch", str(max_batch)]
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)


def wait_ready(proc: subprocess.Popen[bytes], base: str, log: Path, timeout: float = 180) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"distillery serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"distillery serve was not ready in {timeout:.0f} s:\n{log.read_text()[-3000:]}")


# ---------------------------------------------------------------------------------------
# Clients
# ---------------------------------------------------------------------------------------


@dataclass
class Outcome:
    ok: bool
    latency: float = 0.0
    first_event: float | None = None     # streams: time to the first data event
    tokens: int = 0
    text: str = ""
    error: str = ""


@dataclass
class Phase:
    name: str
    outcomes: dict[int, Outcome] = field(default_factory=dict)
    wall: float = 0.0
    sent: int = 0


def one_request(client: Any, body: dict[str, Any], timeout: float) -> Outcome:
    import httpx

    t0 = time.perf_counter()
    try:
        if not body.get("stream"):
            r = client.post("/v1/chat/completions", json=body, timeout=timeout)
            if r.status_code != 200:
                return Outcome(False, error=f"HTTP {r.status_code}: {r.text[:200]}")
            data = r.json()
            return Outcome(True, time.perf_counter() - t0, None, data["usage"]["completion_tokens"],
                           data["choices"][0]["message"]["content"] or "")
        first, text, tokens, finished, done = None, [], 0, False, False
        with client.stream("POST", "/v1/chat/completions", json=body, timeout=timeout) as r:
            if r.status_code != 200:
                return Outcome(False, error=f"HTTP {r.status_code}: {r.read()[:200]!r}")
            for line in r.iter_lines():
                if not line.startswith("data: "):
                    continue
                first = first if first is not None else time.perf_counter() - t0
                if line == "data: [DONE]":
                    done = True
                    break
                chunk = json.loads(line[6:])
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
                for choice in chunk["choices"]:
                    text.append(choice["delta"].get("content") or "")
                    finished = finished or choice["finish_reason"] is not None
        if not (done and finished):
            return Outcome(False, error=f"stream ended without {'[DONE]' if not done else 'a finish reason'}")
        return Outcome(True, time.perf_counter() - t0, first, tokens, "".join(text))
    except (httpx.HTTPError, ValueError, KeyError) as e:
        return Outcome(False, error=f"{type(e).__name__}: {e}")


def run_phase(name: str, base: str, bodies: list[dict[str, Any]], clients: int, deadline: float) -> Phase:
    """Client c sends bodies c, c + clients, c + 2*clients, ... one after another."""
    import httpx

    phase = Phase(name)
    lock = threading.Lock()

    def client_loop(c: int) -> None:
        with httpx.Client(base_url=base) as client:
            for i in range(c, len(bodies), clients):
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                with lock:
                    phase.sent += 1
                outcome = one_request(client, bodies[i], left)
                with lock:
                    phase.outcomes[i] = outcome

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as ex:
        list(ex.map(client_loop, range(clients)))
    phase.wall = time.perf_counter() - t0
    return phase


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def report(phase: Phase, total: int) -> dict[str, Any]:
    ok = [o for o in phase.outcomes.values() if o.ok]
    lat = [o.latency for o in ok]
    firsts = [o.first_event for o in ok if o.first_event is not None]
    return {"phase": phase.name, "requests": total, "sent": phase.sent, "answered": len(ok),
            "failed": len(phase.outcomes) - len(ok), "lost": total - len(phase.outcomes),
            "wall_s": phase.wall, "req_per_s": len(ok) / phase.wall if phase.wall else 0.0,
            "tok_per_s": sum(o.tokens for o in ok) / phase.wall if phase.wall else 0.0,
            "p50_ms": 1000 * pct(lat, 50), "p99_ms": 1000 * pct(lat, 99),
            "first_event_p50_ms": 1000 * pct(firsts, 50) if firsts else float("nan")}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", type=model_dir, default="", help="a model directory to serve (default: build a tiny one)")
    ap.add_argument("--clients", type=int, default=8, help=f"concurrent clients (at most {MAX_CLIENTS})")
    ap.add_argument("--requests", type=int, default=8, help=f"requests per client (at most {MAX_REQUESTS})")
    ap.add_argument("--max-tokens", type=positive_int, default=32,
                    help="max_tokens of every request (greedy; a completion may stop sooner)")
    ap.add_argument("--max-batch", type=positive_int, default=32, help="the server's --max-batch")
    ap.add_argument("--threads", type=non_negative_int, default=1,
                    help="the server's torch threads (0: torch's default)")
    ap.add_argument("--time-limit", type=positive_float, default=600, help="seconds for the whole run")
    return ap


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The arguments, checked before the server starts."""
    ap = build_parser()
    args = ap.parse_args(argv)
    if not 1 <= args.clients <= MAX_CLIENTS or not 1 <= args.requests <= MAX_REQUESTS:
        ap.error(f"--clients must be 1..{MAX_CLIENTS} and --requests 1..{MAX_REQUESTS}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import httpx

    deadline = time.monotonic() + args.time_limit
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        model_dir = Path(args.model_dir) if args.model_dir else build_tiny_model(Path(tmp) / "tiny")
        port, log = free_port(), Path(tmp) / "server.log"
        proc = start_server(model_dir, port, args.max_batch, args.threads, log)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_ready(proc, base, log)
            total = args.clients * args.requests
            convs = conversations(total)
            # Odd clients stream (client c sends bodies c, c + clients, ...): half the load streams.
            bodies = [{"model": NAME, "messages": m, "max_tokens": args.max_tokens, "temperature": 0,
                       "stream": (i % args.clients) % 2 == 1, "stream_options": {"include_usage": True}}
                      for i, m in enumerate(convs)]
            for b in bodies:
                if not b["stream"]:
                    del b["stream_options"]
            run_phase("warm-up", base, bodies[:2], 1, deadline)
            stats0 = httpx.get(f"{base}/health").json()
            single = run_phase("1 client", base, bodies, 1, deadline)
            stats1 = httpx.get(f"{base}/health").json()
            many = run_phase(f"{args.clients} clients", base, bodies, args.clients, deadline)
            stats2 = httpx.get(f"{base}/health").json()
            healthy = httpx.get(f"{base}/health").status_code == 200 and proc.poll() is None
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()

    rows = [report(single, total), report(many, total)]
    print(f"distillery serve {'(tiny model built here)' if not args.model_dir else args.model_dir}: "
          f"{args.clients} clients x {args.requests} requests, half streaming, max_tokens {args.max_tokens}, "
          f"server max batch {args.max_batch}, {args.threads or 'default'} torch thread(s)")
    print(f"{'phase':<12} {'requests':>8} {'answered':>8} {'failed':>6} {'lost':>4} {'wall s':>7} "
          f"{'req/s':>7} {'tok/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'1st-event p50 ms':>16}")
    for r in rows:
        print(f"{r['phase']:<12} {r['requests']:>8} {r['answered']:>8} {r['failed']:>6} {r['lost']:>4} "
              f"{r['wall_s']:>7.2f} {r['req_per_s']:>7.2f} {r['tok_per_s']:>8.1f} {r['p50_ms']:>8.1f} "
              f"{r['p99_ms']:>8.1f} {r['first_event_p50_ms']:>16.1f}")
    same = sum(1 for i, o in many.outcomes.items()
               if o.ok and single.outcomes.get(i) is not None and single.outcomes[i].ok and o.text == single.outcomes[i].text)
    ratio = rows[1]["req_per_s"] / rows[0]["req_per_s"] if rows[0]["req_per_s"] else float("nan")
    print(f"throughput, {args.clients} clients / 1 client: {ratio:.2f}x; p99 latency "
          f"{rows[1]['p99_ms'] / rows[0]['p99_ms']:.2f}x; completions identical in both phases: {same} of {total}")
    for name, a, b in (("1 client", stats0, stats1), (f"{args.clients} clients", stats1, stats2)):
        n_req, n_batch = b["requests"] - a["requests"], b["batches"] - a["batches"]
        print(f"server, {name}: {n_req} requests in {n_batch} generate batches "
              f"(mean {n_req / max(n_batch, 1):.2f}, largest so far {b['largest']})")
    problems = [f"{p.name} #{i}: {o.error}" for p in (single, many) for i, o in sorted(p.outcomes.items()) if not o.ok]
    lost = sum(r["lost"] for r in rows)
    print(f"server healthy after the load: {healthy}; failed {len(problems)}, lost {lost}")
    for line in problems[:10]:
        print("  " + line)
    return 0 if not problems and not lost and healthy else 1


if __name__ == "__main__":
    sys.exit(main())
