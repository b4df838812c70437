"""Policy mining: directions that match the world, supported and confident policies, JSON
round trips, text, composition, and refits that keep the conditions."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from distillery.config import PghsDataConfig, PghsPoliciesConfig
from distillery.pghs.data import generate
from distillery.pghs.policies import (
    PolicySet,
    apply_policies,
    mine_policies,
    policy_columns,
    refit_policies,
)

CFG = PghsPoliciesConfig(max_bins=4, min_support=20, n_bootstrap=10, min_merchants=3)


@pytest.fixture(scope="module")
def mined():
    # Bigger than the micro world: directions need enough merchants to be stable.
    frame, _, _ = generate(PghsDataConfig(n_merchants=30, n_periods=16, strategies_per_merchant=4))
    return frame, mine_policies(frame, ["order_rate", "ctr"], CFG, seed=0)


def test_discounts_raise_students_orders_and_fees_lower_them(mined):
    _, policies = mined
    disc = policies.select("students", "order_rate", "response")
    deepest = max((p for p in disc if p.feature == "discount_depth"),
                  key=lambda p: p.conditions[0].value)
    assert deepest.direction == "up" and deepest.size > 0.5
    fees = [p for p in disc if p.feature == "delivery_fee"]
    highest = max(fees, key=lambda p: p.conditions[0].value)
    assert highest.direction == "down"


def test_every_policy_is_supported_and_confident(mined):
    _, policies = mined
    for p in policies.select(kind="response"):
        assert p.support >= CFG.min_support and p.confidence >= CFG.min_confidence
    for p in policies.select(kind="context"):
        assert p.n_merchants >= CFG.min_merchants and p.confidence >= CFG.min_confidence
    assert {p.group for p in policies.select(kind="baseline")} == set(policies.groups)


def test_json_round_trip_and_text(mined):
    _, policies = mined
    back = PolicySet.from_json(json.loads(json.dumps(policies.to_json())))
    assert back.policies == policies.policies
    text = policies.render(group="seniors", target="order_rate")
    assert "[seniors · order_rate] habitual level" in text.splitlines()[0]
    assert "support" in text and "confidence" in text
    assert all(p["text"] and p["direction"] for p in policies.to_json()["policies"])


def test_composition_predicts_the_training_data_reasonably(mined):
    frame, policies = mined
    out = apply_policies(policies, frame)
    assert set(policy_columns("ctr")) <= set(out.columns)
    pred = np.exp(out["pol_order_rate_pred"].to_numpy())
    rate = frame["orders"].to_numpy() / frame["exposures"].to_numpy()
    # in-sample median relative error well below the group-to-group spread of rates
    assert np.median(np.abs(pred - rate) / rate) < 0.25
    # a response fires only where its condition holds
    p = policies.select("students", "order_rate", "response")[0]
    fired = out.filter(pl.col("user_group") == "students")
    assert (fired[f"pol_order_rate_eff_{p.feature}"] != 0).any()


def test_uncovered_group_gets_nulls(mined):
    frame, policies = mined
    alien = frame.head(3).with_columns(pl.lit("astronauts").alias("user_group"))
    out = apply_policies(policies, alien)
    assert out["pol_order_rate_pred"].null_count() == 3


def test_refit_keeps_conditions_and_moves_sizes(mined):
    frame, policies = mined
    half = frame.filter(pl.col("merchant_id").is_in(sorted(frame["merchant_id"].unique())[:15]))
    refit = refit_policies(policies, half)
    a = {p.policy_id: p for p in policies.policies}
    b = {p.policy_id: p for p in refit.policies}
    assert set(a) == set(b)
    assert all(a[k].conditions == b[k].conditions for k in a)
    assert any(abs(a[k].effect - b[k].effect) > 1e-6 for k in a)


def _hand_made() -> PolicySet:
    from distillery.pghs.policies import Clause, Policy

    def response(lo, hi, effect, center):
        return Policy(policy_id=f"g/order_rate/d{lo}", kind="response", group="g",
                      target="order_rate", feature="discount_depth",
                      conditions=(Clause("discount_depth", ">", lo), Clause("discount_depth", "<=", hi)),
                      effect=effect, support=100, confidence=1.0,
                      reference="discount_depth <= 0.05", center=center, reference_center=0.02)

    base = Policy(policy_id="g/order_rate/baseline", kind="baseline", group="g", target="order_rate",
                  feature="", conditions=(), effect=float(np.log(0.01)), support=100, confidence=1.0)
    return PolicySet([base, response(0.05, 0.25, 0.2, 0.15), response(0.25, 1.0, 0.6, 0.35)],
                     targets=["order_rate"], groups=["g"])


def test_interpolation_reads_between_policies_and_steps_without_it():
    policies = _hand_made()
    frame = pl.DataFrame({"user_group": ["g"] * 4 + ["other"], "discount_depth": [0.0, 0.25, 0.5, 0.085, 0.25],
                          "delivery_fee": 3.0, "ad_spend": 0.0, "menu_breadth": 40,
                          "coupon_type": "none", "merchant_rating": 4.0,
                          "merchant_price_level": 20.0, "merchant_category": "pizza"})
    smooth = apply_policies(policies, frame)["pol_order_rate_eff_discount_depth"].to_list()
    # by hand: flat 0 below the reference's centre 0.02; 0.2 + (0.25-0.15)/(0.35-0.15)*0.4 = 0.4
    # at 0.25; flat 0.6 beyond 0.35; 0.2 * (0.085-0.02)/(0.15-0.02) = 0.1 at 0.085
    assert smooth[:4] == pytest.approx([0.0, 0.4, 0.6, 0.1])
    assert smooth[4] is None                      # a group without policies
    steps = apply_policies(policies, frame, interpolate=False)["pol_order_rate_eff_discount_depth"]
    assert steps.to_list()[:4] == pytest.approx([0.0, 0.2, 0.6, 0.2])
    pred = apply_policies(policies, frame)["pol_order_rate_pred"].to_list()
    assert pred[1] == pytest.approx(np.log(0.01) + 0.4)
