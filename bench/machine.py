"""One line naming the CPU a benchmark ran on, and the matmul peak its FLOP rates are set against.

Ratios against a peer move with the CPU, not only with its load: on an Intel Xeon with AMX
the fp32 matmul peak measured 325-390 GFLOP/s, on an AMD EPYC without it 148, and the share
of a step spent in matrix products (what both sides of a training benchmark spend alike)
moves with it. Every benchmark prints this line so a figure can be traced to its machine.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any

# The instruction sets that decide which kernels torch's CPU matmuls and attention run.
_ISA_FLAGS = (("avx2", "AVX2"), ("avx512f", "AVX-512"), ("avx512_bf16", "AVX-512 BF16"), ("amx_tile", "AMX"))


def cpu_line(cpuinfo: str | None = None) -> str:
    """`<model name>, <n> cpus, <instruction sets>`, from /proc/cpuinfo where there is one."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text() if path.is_file() else ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    name = fields.get("model name") or platform.processor() or platform.machine() or "unknown CPU"
    flags = set(fields.get("flags", "").split())
    isa = [label for flag, label in _ISA_FLAGS if flag in flags]
    no_amx = "" if "amx_tile" in flags or not flags else ", no AMX"
    return f"{name}, {os.cpu_count()} cpus" + (f", {', '.join(isa)}{no_amx}" if isa else "")


def synchronize(device: Any) -> None:
    """Wait for the device's queued work: a CUDA call returns before its kernels finish."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: Any, dtype: Any = None, n: int = 2048, reps: int = 5) -> float:
    """Best-of-`reps` FLOP/s of an n^3 matmul in `dtype` (default fp32) on `device`."""
    import torch

    dtype = dtype or torch.float32
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    synchronize(device)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def best_peak(peaks: list[float], what: str) -> tuple[float, str]:
    """The best of peaks measured before a benchmark's rounds and after each, and a line saying so.

    On a host whose load comes and goes, one measurement taken in a busy moment would put a
    side's share of peak too high (above 100% on one run); the best is the least disturbed.
    """
    peak = max(peaks)
    return peak, (f"{what} matmul peak, best of {len(peaks)} measurements (before the rounds and after "
                  f"each): {peak / 1e9:.1f} GFLOP/s (they ranged {min(peaks) / 1e9:.1f}-{peak / 1e9:.1f})")


# argparse `type=`s for the benchmarks' counts and durations: a bad value is refused when the
# arguments are parsed (exit 2, one line), not after minutes of measuring.


def _bounded(convert: Any, text: str, low: float, strict: bool, what: str) -> Any:
    import argparse
    import math

    try:
        value = convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if not math.isfinite(value) or value < low or (strict and value == low):
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
    return value


def positive_int(text: str) -> int:
    """A count of at least 1: rounds, repeats, rows, tasks, a batch size."""
    return _bounded(int, text, 0, True, "a positive integer")


def non_negative_int(text: str) -> int:
    """A count that may be 0: warm-up steps, threads where 0 means the library's default."""
    return _bounded(int, text, 0, False, "an integer >= 0")


def positive_float(text: str) -> float:
    """A finite number above 0: a time budget in seconds, a learning rate."""
    return _bounded(float, text, 0.0, True, "a positive number")


def non_negative_float(text: str) -> float:
    """A finite number of at least 0."""
    return _bounded(float, text, 0.0, False, "a number >= 0")


# The weights transformers' from_pretrained reads: one file, or the index of its shards.
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def model_dir(text: str) -> str:
    """A model directory (its config.json and its weights), or "" for none given."""
    from pathlib import Path

    if not text:
        return text
    missing = [] if Path(text, "config.json").is_file() else ["config.json"]
    if not any(Path(text, name).is_file() for name in _WEIGHTS):
        missing.append("weights: model.safetensors or pytorch_model.bin")
    if missing:
        import argparse

        raise argparse.ArgumentTypeError(f"{text} is not a model directory (no {', no '.join(missing)})")
    return text


def check_default_model_dir(ap: Any, option: str, default: str) -> None:
    """A default model directory is taken when its folder exists: half-built (a training run
    killed while saving, a partial `dvc pull`), it is refused (`ap.error`) as a given one is."""
    import argparse

    if Path(default).is_dir():
        try:
            model_dir(default)
        except argparse.ArgumentTypeError as e:
            ap.error(f"argument {option}: the default {e}")
