"""A micro PGHS world: a few merchants and weeks, small models. Everything here is fast."""

from __future__ import annotations

from typing import Any

import polars as pl
import pytest

from distillery.config import PghsConfig, PghsDataConfig, from_dict
from distillery.pghs.data import GroupDescription, World, generate

MICRO_DATA: dict[str, Any] = {"n_merchants": 14, "n_periods": 8, "strategies_per_merchant": 3,
                              "n_strategy_templates": 6, "traffic": 20000.0}
MICRO_PGHS: dict[str, Any] = {
    "seeds": [0, 1], "folds": 1, "targets": ["order_rate", "ctr"], "n_candidates": 4,
    "policies": {"max_bins": 3, "min_support": 5, "n_bootstrap": 5, "min_merchants": 2},
    "fit": {"n_estimators": 20, "num_leaves": 7, "min_child_samples": 5, "cross_fit_folds": 2,
            "threads": 1},
}


def micro_data_config(**over: Any) -> PghsDataConfig:
    return PghsDataConfig(**{**MICRO_DATA, **over})


def micro_config(**over: Any) -> PghsConfig:
    return from_dict(PghsConfig, {**MICRO_PGHS, **over})


@pytest.fixture(scope="session")
def micro() -> tuple[pl.DataFrame, list[GroupDescription], World]:
    return generate(micro_data_config())


@pytest.fixture
def pghs_config() -> PghsConfig:
    return micro_config()


@pytest.fixture(name="micro_data_config")
def _micro_data_config():
    """The factory itself: a micro PghsDataConfig with overrides."""
    return micro_data_config


@pytest.fixture(name="micro_config")
def _micro_config():
    """The factory itself: a micro PghsConfig with overrides."""
    return micro_config
