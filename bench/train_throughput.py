"""Training tokens/s of our loop (`distillery.train.loop.train`) against TRL's `SFTTrainer`.

Same machine, same run, same model (a Llama from scratch, `lm.model.ModelConfig` defaults:
about 3M parameters, identical initial weights), same data (synthetic STAGE-like
episodes rendered by `agents.prompts.episode_example_ids`, loss on action tokens only),
same batch size, sequence cap, optimizer steps, learning-rate schedule, the same precision
(``--precision``: fp32, or bf16 autocast over fp32 weights; on a GPU bf16 for both), no
evaluation, no checkpoints, no logging backends.

TRL gets its documented pre-tokenized path (``input_ids`` + ``completion_mask`` with
``completion_only_loss=True``, its default fused AdamW, activation checkpointing off as in
our loop) and runs twice: with its default random sampler and with
``train_sampling_strategy="group_by_length"`` (the analogue of our length bucketing);
the ratio is taken against the faster TRL configuration. Rounds alternate the sides (A B C
A B C ...) and each side reports its best and median round: other work on a shared
machine slows whichever run it overlaps, and the best round is the least disturbed.

tokens/s = real (non-padding) tokens trained on / wall-clock seconds of the training call
(``train(...)`` / ``trainer.train()``; model and dataset preparation excluded). The model
FLOP rate is 6 * N * tokens/s with N the parameter count (the LM head counted once, the
embedding lookup free), the usual estimate of useful training work; it is set against the
machine's matmul peak in the run's precision, measured here on a 2048^3 matmul before the
rounds and after each (the best counts). (On a CPU with AMX, bf16 matmuls run several times
faster than fp32 ones, so the two precisions have very different peaks.)

``--last-layer-at-targets`` adds a third side: our loop with the decoder's last layer run only
at the positions that predict a target (`lm.target_forward`; off in the pipeline's stages,
whose recorded results were made with the whole forward). Its FLOP rate is counted as the
others', so its share of the peak says how fast it trains, not how much it computes.

    python bench/train_throughput.py [--steps 30] [--rounds 2] [--batch-size 16] [--threads N]
                                     [--precision auto|fp32|bf16] [--model-size bench|warmup]
                                     [--last-layer-at-targets]
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time

import torch

from distillery.agents.prompts import PromptConfig, episode_example_ids
from distillery.lm.model import ModelConfig, build_model, n_params
from distillery.lm.tokenizer import TokenizerConfig, train_tokenizer
from distillery.train.config import TrainConfig
from distillery.train.data import Example, examples_from_masks
from distillery.train.loop import cpu_runs_natively, train
from distillery.types import Turn
from machine import best_peak, cpu_line, matmul_peak, non_negative_int, positive_float, positive_int

STEMS = ["invoice", "report", "budget", "notes", "minutes", "contract", "receipt", "draft", "plan", "slides"]
TAGS = ["acme", "2024", "q3", "final", "globex", "team"]
EXTS = ["pdf", "txt", "docx", "xlsx"]
FOLDERS = ["downloads", "documents", "finance", "archive", "legal", "travel", "taxes", "projects"]
PEOPLE = ["ann.lee@acme.com", "bob.wu@globex.org", "chen.smith@acme.com", "dana.okafor@acme.com"]


def episodes(n: int, seed: int) -> list[tuple[str, list[Turn]]]:
    """File-and-mail chores of 2-5 steps: listings in, tool calls that copy names out."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        files = [f"{rng.choice(STEMS)}_{rng.choice(TAGS)}.{rng.choice(EXTS)}" for _ in range(rng.randint(3, 12))]
        src, dst, who = rng.choice(FOLDERS), rng.choice(FOLDERS), rng.choice(PEOPLE)
        f = rng.choice(files)
        turns = [Turn(f"{src}/\n  " + "\n  ".join(files), f'read_file(path="{src}/{f}")')]
        turns.append(Turn(f"{f}: total due 1,240.00 EUR by 2024-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}",
                          f'move_file(src="{src}/{f}", dst="{dst}/")'))
        for _ in range(rng.randint(0, 2)):
            turns.append(Turn("ok: moved", f'send_mail(to="{who}", subject="{f}", body="Filed under {dst}.")'))
        turns.append(Turn("ok: sent", "finish()"))
        out.append((f"File {f} from {src} under {dst} and tell {who}.", turns))
    return out


def build_data(n: int, seed: int) -> tuple[object, list[Example]]:
    eps = episodes(n, seed)
    texts = [t for instr, turns in eps for t in (instr, *[x.observation for x in turns], *[x.action for x in turns])]
    tok = train_tokenizer(texts, TokenizerConfig(vocab_size=4096))
    cfg = PromptConfig(max_prompt_tokens=640, max_observation_tokens=200)
    pairs = [episode_example_ids(i, t, tok, cfg) for i, t in eps]
    return tok, examples_from_masks(pairs)


# The agent track's warm-up student (params.yaml: warmup.model), profiled the same way.
MODEL_SIZES = {"bench": {}, "warmup": dict(hidden_size=128, n_layers=2, n_heads=4, n_kv_heads=4,
                                           intermediate_size=384)}


OURS = "distillery train()"
OURS_LAST_LAYER = "distillery train(), last layer at targets"


def model_config(args) -> ModelConfig:
    return ModelConfig(init_seed=args.seed, **MODEL_SIZES[args.model_size])


def run_ours(tok, data: list[Example], args, last_layer_at_targets: bool = False) -> tuple[float, float, int]:
    model = build_model(model_config(args), tok)
    cfg = TrainConfig(lr=args.lr, warmup_steps=args.warmup, max_steps=args.steps, batch_size=args.batch_size,
                      grad_accum=1, max_seq_len=args.max_len, seed=args.seed, log_every=args.steps,
                      save_every=0, dvclive=False, progress=False,
                      mixed_precision="bf16" if args.precision == "bf16" else "no")
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        result = train(model, data, [], cfg, out, last_layer_at_targets=last_layer_at_targets)
        wall = time.perf_counter() - t0
    tokens = int(result.metrics["tokens"])
    return tokens / wall, wall, tokens


def run_trl(tok, data: list[Example], args, strategy: str) -> tuple[float, float, int]:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    model = build_model(model_config(args), tok)
    ds = Dataset.from_dict({"input_ids": [e.input_ids for e in data],
                            "completion_mask": [[int(t != -100) for t in e.labels] for e in data]})
    use_gpu = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as out:
        cfg = SFTConfig(
            output_dir=out, max_steps=args.steps, per_device_train_batch_size=args.batch_size,
            gradient_accumulation_steps=1, learning_rate=args.lr, lr_scheduler_type="cosine",
            warmup_steps=args.warmup, weight_decay=0.1, max_grad_norm=1.0, adam_beta2=0.95,
            max_length=args.max_len, completion_only_loss=True, train_sampling_strategy=strategy,
            save_strategy="no", eval_strategy="no", logging_steps=args.steps, report_to="none",
            disable_tqdm=True, use_cpu=not use_gpu, bf16=args.precision == "bf16",
            dataloader_num_workers=0, seed=args.seed,
            # SFTConfig turns activation checkpointing on by default (memory for compute);
            # our loop does not checkpoint, so neither does TRL here: its fastest setting.
            gradient_checkpointing=False,
        )
        trainer = SFTTrainer(model=model, args=cfg, train_dataset=ds, processing_class=tok)
        t0 = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - t0
        tokens = int(trainer._total_train_tokens)   # TRL's own count of attention-mask tokens
    return tokens / wall, wall, tokens


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=positive_int, default=30, help="optimizer steps per run")
    ap.add_argument("--rounds", type=positive_int, default=2, help="runs per side, alternating")
    ap.add_argument("--batch-size", type=positive_int, default=16, help="examples (one an episode) per optimizer step, both sides")
    ap.add_argument("--max-len", type=positive_int, default=1024,
                    help="sequence cap in tokens, both sides")
    ap.add_argument("--episodes", type=positive_int, default=800,
                    help="synthetic episodes to train on (the tokenizer is trained on them too)")
    ap.add_argument("--lr", type=positive_float, default=1e-3, help="peak learning rate (cosine schedule), both sides")
    ap.add_argument("--warmup", type=non_negative_int, default=5, help="learning-rate warm-up steps, both sides")
    ap.add_argument("--seed", type=int, default=0, help="seed of the data, the initial weights and the sampler")
    ap.add_argument("--threads", type=non_negative_int, default=0,
                    help="torch CPU threads for everything measured (0 = torch's default); on a machine "
                         "other processes keep busy, 1 gives steadier numbers")
    ap.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                    help="both sides: fp32, or bf16 autocast over fp32 weights; auto = bf16 on a GPU "
                         "that has it, fp32 on the CPU (what the training loop's default does)")
    ap.add_argument("--model-size", choices=sorted(MODEL_SIZES), default="bench",
                    help="bench: ModelConfig's defaults (about 3M parameters); warmup: the agent "
                         "track's warm-up student")
    ap.add_argument("--skip-group-by-length", action="store_true", help="run TRL with its default sampler only")
    ap.add_argument("--last-layer-at-targets", action="store_true",
                    help="also run our loop with train(last_layer_at_targets=True): the decoder's last layer "
                         "only at the positions that predict a target (off in the pipeline's stages)")
    return ap


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.precision == "auto":
        args.precision = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    if args.precision == "bf16" and not torch.cuda.is_available() and not cpu_runs_natively("bf16"):
        ap.error("--precision bf16: this CPU has no native bf16 matmuls (torch's oneDNN check), so both "
                 "sides would measure its slow fallback kernels (the 2048^3 peak alone takes minutes); "
                 "run fp32 here")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.threads:
        torch.set_num_threads(args.threads)
    tok, data = build_data(args.episodes, args.seed)
    lengths = sorted(len(e) for e in data)
    n = n_params(build_model(model_config(args), tok))
    device = (torch.cuda.get_device_name() if torch.cuda.is_available()
              else f"CPU ({cpu_line()}), {torch.get_num_threads()} threads")
    print(f"device: {device}; torch {torch.__version__}; load average {os.getloadavg()[0]:.2f}")
    print(f"model: Llama from scratch ({args.model_size}), {n / 1e6:.2f}M parameters, vocab {len(tok)}; "
          f"precision {args.precision}")
    print(f"data: {len(data)} episodes, {lengths[0]}-{lengths[-1]} tokens (median {lengths[len(lengths) // 2]}), "
          f"{sum(e.n_labels for e in data) / sum(lengths):.0%} of tokens are targets; "
          f"batch {args.batch_size}, {args.steps} steps per side")

    peak_device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    peak_dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    peaks = [matmul_peak(peak_device, peak_dtype)]   # and again after every round: machine.best_peak
    print(f"{args.precision} matmul peak (2048^3): {peaks[0] / 1e9:.1f} GFLOP/s")

    # Rounds alternate the sides, so a burst of load from elsewhere on the machine hits
    # both; each side reports its best round (the least disturbed) and its median.
    sides = {OURS: lambda: run_ours(tok, data, args)}
    if args.last_layer_at_targets:
        sides[OURS_LAST_LAYER] = lambda: run_ours(tok, data, args, last_layer_at_targets=True)
    sides["TRL SFTTrainer (random sampler)"] = lambda: run_trl(tok, data, args, "random")
    if not args.skip_group_by_length:
        sides["TRL SFTTrainer (group_by_length)"] = lambda: run_trl(tok, data, args, "group_by_length")
    runs: dict[str, list[tuple[float, float, int]]] = {k: [] for k in sides}
    for r in range(args.rounds):
        for name, fn in sides.items():
            runs[name].append(fn())
            tps, wall, tokens = runs[name][-1]
            print(f"round {r + 1}: {name}: {tps:.0f} tokens/s ({tokens} tokens in {wall:.1f} s)", flush=True)
        peaks.append(matmul_peak(peak_device, peak_dtype))
    peak, line = best_peak(peaks, args.precision)
    print(line)

    print(f"\n{'run':42s} {'best tok/s':>10s} {'median':>8s} {'model GFLOP/s':>14s} {'of peak':>8s}")
    best = {}
    for name, rs in runs.items():
        tps = sorted(r[0] for r in rs)
        best[name] = tps[-1]
        flops = 6 * n * tps[-1]
        print(f"{name:42s} {tps[-1]:10.0f} {tps[len(tps) // 2]:8.0f} {flops / 1e9:14.2f} {flops / peak:8.1%}")
    ours = best.pop(OURS)
    ours_last_layer = best.pop(OURS_LAST_LAYER, None)
    for name, tps in best.items():
        print(f"ours / {name}: {ours / tps:.2f}x")
    print(f"ours / best TRL: {ours / max(best.values()):.2f}x  (load average now {os.getloadavg()[0]:.2f})")
    if ours_last_layer is not None:
        print(f"ours, last layer at targets / best TRL: {ours_last_layer / max(best.values()):.2f}x; "
              f"/ ours: {ours_last_layer / ours:.2f}x")

if __name__ == "__main__":
    main()
