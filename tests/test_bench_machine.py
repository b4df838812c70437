"""bench/machine.py: the CPU line every benchmark prints beside its figures."""

from __future__ import annotations

import importlib.util

from tests.conftest import REPO

_spec = importlib.util.spec_from_file_location("bench_machine", REPO / "bench" / "machine.py")
machine = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(machine)

XEON = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_tile\n"
EPYC = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512f avx512_bf16\n\nprocessor\t: 1\nmodel name\t: other\n"


def test_the_line_names_the_cpu_and_the_instruction_sets_that_pick_the_kernels():
    assert machine.cpu_line(XEON).startswith("Intel(R) Xeon(R) Platinum 8480+, ")
    assert machine.cpu_line(XEON).endswith("cpus, AVX2, AVX-512, AVX-512 BF16, AMX")
    # the first processor's fields count; no AMX is said, since the ratios move with it
    assert machine.cpu_line(EPYC).startswith("AMD EPYC, ")
    assert machine.cpu_line(EPYC).endswith("cpus, AVX2, AVX-512, AVX-512 BF16, no AMX")


def test_without_cpuinfo_the_line_still_names_something():
    line = machine.cpu_line("")
    assert line and "AMX" not in line and "cpus" in line


def test_the_matmul_peak_is_a_finite_rate_on_this_device():
    import torch

    peak = machine.matmul_peak(torch.device("cpu"), n=128, reps=2)
    assert 2 * 128**3 / 10 < peak < float("inf")   # a 128^3 product takes well under 10 s


def test_the_best_peak_counts_and_its_line_gives_the_range():
    peak, line = machine.best_peak([23.0e9, 34.7e9, 30.1e9], "fp32")
    assert peak == 34.7e9
    assert line.startswith("fp32 matmul peak, best of 3 measurements")
    assert "34.7 GFLOP/s (they ranged 23.0-34.7)" in line

