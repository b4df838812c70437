"""Training as a program: SIGKILL a run after its first checkpoint, rerun it, and end with
weights bitwise identical to a run that was never interrupted (CPU); two data-parallel
processes train as one process accumulating two micro-batches."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).with_name("micro_train.py")


def _micro():
    spec = importlib.util.spec_from_file_location("micro_train", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run(out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), str(out), *extra], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "TQDM_DISABLE": "1"})


def test_sigkill_then_rerun_ends_with_identical_weights(tmp_path):
    # Killed run: slowed through its loss function so the kill lands mid-run.
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(SCRIPT), str(killed), "--sleep", "0.15"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = killed / "checkpoints" / "step-4" / "trainer_state.json"
    deadline = time.monotonic() + 120
    while not first.exists():
        assert proc.poll() is None, f"run ended before its first checkpoint:\n{proc.communicate()[1][-3000:]}"
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.01)
    time.sleep(0.3)             # into the next span of steps, possibly mid-checkpoint
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "final.safetensors").exists()
    steps = sorted(int(p.name[5:]) for p in (killed / "checkpoints").glob("step-*"))
    assert steps and steps[-1] < 16, f"the kill came too late to test anything: {steps}"

    resumed = run(killed)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed_from={steps[-1]}" in resumed.stdout

    # The uninterrupted run, in this process (same code, same thread count, no imports to pay).
    straight = _micro().run_micro(str(tmp_path / "straight"))
    assert straight.resumed_from is None and straight.steps == 16

    a = load_file(killed / "final.safetensors")
    b = load_file(tmp_path / "straight" / "final.safetensors")
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"weights differ after resume: {different}"
    # No half-written checkpoint is left behind or taken for a complete one.
    assert not list((killed / "checkpoints").glob(".tmp-*"))


def test_two_processes_data_parallel_train_as_one_process_accumulating_two(tmp_path):
    # torchrun is what `accelerate launch` runs for several processes; on the CPU the two
    # processes all-reduce over gloo. Each takes every second micro-batch, so one optimizer
    # step sees the same two micro-batches as one process accumulating two: the same update,
    # up to the rounding of averaging the gradients in another order.
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(SCRIPT), str(tmp_path / "ddp"), "--grad-accum", "1"],
        capture_output=True, text=True, timeout=300,
        # TMPDIR: torchrun writes its log folder there; under tmp_path it goes with the test.
        env={**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)})
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert ddp.stdout.count("done steps=16 resumed_from=None") == 2, ddp.stdout
    # Each process wrote its own RNG streams into the checkpoint; the weights once.
    last = tmp_path / "ddp" / "checkpoints" / "step-16"
    assert {p.name for p in last.glob("rng-*")} == {"rng-0.pt", "rng-0.json", "rng-1.pt", "rng-1.json"}

    micro = _micro()
    one = micro.run_micro(str(tmp_path / "one"), grad_accum=2)
    assert one.steps == 16
    a = load_file(tmp_path / "ddp" / "final.safetensors")
    b = load_file(tmp_path / "one" / "final.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-4, rtol=1e-3, msg=f"{k} differs")
    start = dict(micro.build_model(micro.MODEL).named_parameters())
    assert any(not torch.equal(b[k], v) for k, v in start.items()), "nothing trained"
