"""Test-wide settings: offline, quiet, isolated. Fixtures shared across test packages."""

from __future__ import annotations

import os
from pathlib import Path

# Before anything imports transformers, GX, DVC or Prefect: nothing may try the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_LOGGING_TO_API_ENABLED", "false")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# `make test` runs two pytest-xdist workers on two cores: one torch thread each, or the two
# workers' intra-op threads oversubscribe the CPUs and stall each other.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
E2E = REPO / "tests" / "e2e"


# The end-to-end test that starts the shared micro-pipeline run (tests/e2e/conftest.py) goes
# first, the other e2e tests last: under `make test` (pytest-xdist, 2 workers, chunks of 2)
# one worker runs the pipeline and then that test, while the other takes the unit tests and
# then the rest of the e2e tests, which wait for the pipeline and work on copies of it.
E2E_FIRST = "test_grid_flow.py"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def rank(it: pytest.Item) -> int:
        path = Path(str(it.path))
        if E2E not in path.parents:
            return 1
        return 0 if path.name == E2E_FIRST else 2

    items.sort(key=rank)        # stable: the unit tests keep their order


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect server and database for the whole session (slow to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def parity_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama of tests/agents/test_serve_parity.py, trained once per test process on
    `parity_tasks()`'s training tasks (one torch thread, seeded, so every process trains the
    same weights): the serve-parity tests and the `distillery eval` parity test both play it
    and only read it."""
    import torch
    from tests.agents.test_serve_parity import build_model_dir, parity_tasks

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return build_model_dir(tmp_path_factory.mktemp("parity") / "model", parity_tasks()[0])
    finally:
        torch.set_num_threads(before)
