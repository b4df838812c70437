"""A micro training run as a program, for the kill-and-resume test.

    python tests/train/micro_train.py OUT_DIR [--sleep SECONDS] [--grad-accum N]
    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/train/micro_train.py OUT_DIR --grad-accum 1

Trains a tiny Llama on a copy task with checkpoints every 4 steps and writes the final
trainable weights to OUT_DIR/final.safetensors (the main process only). `--sleep` slows
each micro-batch (through the loss function, so the arithmetic is untouched) to leave time
to kill it mid-run. Under torchrun (as `accelerate launch` starts it) the processes train
data-parallel on the CPU over gloo.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import time

from distillery.lm.model import ModelConfig, build_model
from distillery.train.config import TrainConfig
from distillery.train.data import Example, example_from_mask
from distillery.train.loop import TrainResult, sft_loss_fn, train

MODEL = ModelConfig(vocab_size=40, hidden_size=32, n_layers=2, n_heads=4, n_kv_heads=2,
                    intermediate_size=64, max_position_embeddings=64, init_seed=7)
# Two epochs with a partial last micro-batch, grad accumulation and LoRA-free dropout-free
# AdamW: the data position, the optimizer moments and the schedule all have to resume.
CONFIG = TrainConfig(lr=3e-3, warmup_steps=3, max_steps=16, batch_size=8, grad_accum=2, save_every=4,
                     keep_checkpoints=2, log_every=2, eval_every=5, seed=11, progress=False,
                     num_threads=1)


def copy_examples(n: int, seed: int) -> list[Example]:
    """`x1 .. xk SEP x1 .. xk EOS`, loss on the copy and the EOS."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        xs = [rng.randint(3, 39) for _ in range(rng.randint(2, 7))]
        out.append(example_from_mask([*xs, 2, *xs, 1], [False] * (len(xs) + 1) + [True] * (len(xs) + 1)))
    return out


def run_micro(out_dir: str, sleep: float = 0.0, grad_accum: int = CONFIG.grad_accum) -> TrainResult:
    """Train the micro model into `out_dir`; write its final weights; return the result."""
    from safetensors.torch import save_file

    def slow_loss(model, batch):
        time.sleep(sleep)
        return sft_loss_fn(model, batch)

    model = build_model(MODEL)
    result = train(model, copy_examples(60, 0), copy_examples(12, 1),
                   dataclasses.replace(CONFIG, grad_accum=grad_accum), out_dir, loss_fn=slow_loss, pad_id=0)
    if int(os.environ.get("RANK", "0")) == 0:
        # named_parameters lists tied weights once (safetensors refuses shared tensors)
        save_file({k: v.detach().contiguous() for k, v in model.named_parameters()},
                  f"{out_dir}/final.safetensors")
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    ap.add_argument("--sleep", type=float, default=0.0)
    ap.add_argument("--grad-accum", type=int, default=CONFIG.grad_accum)
    args = ap.parse_args()
    result = run_micro(args.out_dir, args.sleep, args.grad_accum)
    print(f"done steps={result.steps} resumed_from={result.resumed_from}", flush=True)

if __name__ == "__main__":
    main()
