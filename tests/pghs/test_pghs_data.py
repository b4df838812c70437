"""The synthetic world: shape, funnel, determinism, and a counterfactual truth with the
properties the experiment relies on (habits and inertia the textbook cannot see)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from distillery.config import PghsDataConfig
from distillery.pghs.data import (
    STRATEGY_FEATURES,
    TRAJECTORY_SCHEMA,
    generate,
    to_cells,
    true_rates,
)


def test_default_world_has_the_papers_size():
    frame, groups, world = generate(PghsDataConfig())
    assert frame["merchant_id"].n_unique() == 101
    assert frame.height >= 26_000
    assert len(groups) >= 3 and frame["user_group"].n_unique() == len(groups)
    assert frame.schema == pl.Schema(TRAJECTORY_SCHEMA)


def test_funnel_never_grows_and_ids_are_unique(micro):
    frame, _, _ = micro
    assert (frame["exposures"] >= frame["clicks"]).all()
    assert (frame["clicks"] >= frame["orders"]).all()
    assert (frame["orders"] >= 0).all()
    assert frame["trajectory_id"].n_unique() == frame.height
    # a strategy id always names the same strategy
    assert frame.group_by("strategy_id").agg(pl.struct(*STRATEGY_FEATURES).n_unique())[:, 1].max() == 1


def test_same_seed_same_world_other_seed_other_world(micro_data_config):
    a, _, _ = generate(micro_data_config(seed=3))
    b, _, _ = generate(micro_data_config(seed=3))
    c, _, _ = generate(micro_data_config(seed=4))
    assert a.equals(b)
    assert not a.equals(c)


def test_unknown_group_is_refused(micro_data_config):
    with pytest.raises(ValueError, match="no built-in profile"):
        generate(micro_data_config(groups=["students", "astronauts"]))


def test_cells_sum_counts_over_periods(micro):
    frame, _, _ = micro
    cells = to_cells(frame)
    assert cells["exposures"].sum() == frame["exposures"].sum()
    one = cells.row(0, named=True)
    assert one["order_rate"] == pytest.approx(one["orders"] / one["exposures"])


def _response(world, merchant, group, discount):
    base = {"merchant_id": merchant, "user_group": group, "delivery_fee": 3.0,
            "coupon_type": "none", "ad_spend": 0.0, "menu_breadth": 40}
    q = pl.DataFrame([{**base, "discount_depth": 0.0}, {**base, "discount_depth": discount}])
    rates = true_rates(world, q)["order_rate"].to_numpy()
    return rates[1] / rates[0]


def test_truth_has_inertia_the_textbook_ignores(micro):
    """Seniors are *described* as price-conscious, but most of their orders are habitual:
    the same discount moves them far less than students."""
    _, groups, world = micro
    m = world.merchants["merchant_id"][0]
    students = _response(world, m, "students", 0.3)
    seniors = _response(world, m, "seniors", 0.3)
    assert students > 1.5 and 1.0 < seniors < 1.25
    stated = {g.name: g.stated_price_sensitivity for g in groups}
    assert stated["seniors"] == stated["students"] == "high"


def test_truth_matches_observed_rates_on_average(micro):
    frame, _, world = micro
    cells = to_cells(frame)
    truth = true_rates(world, cells.select("merchant_id", "user_group", *STRATEGY_FEATURES))
    ratio = cells["order_rate"].to_numpy() / truth["order_rate"].to_numpy()
    # observed = truth x hidden weekly context and binomial noise: centred near 1
    assert 0.85 < float(np.median(ratio)) < 1.15
