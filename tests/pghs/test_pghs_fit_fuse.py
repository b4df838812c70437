"""The fitting branch (LightGBM, with and without policy features) and the fusion."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from distillery.config import PghsFitConfig, PghsPoliciesConfig
from distillery.pghs.data import to_cells
from distillery.pghs.fit import FitBranch, cross_fit_policy_features, train_fit_branch
from distillery.pghs.fuse import fit_fusion, relative_error
from distillery.pghs.policies import apply_policies, mine_policies

FIT = PghsFitConfig(n_estimators=40, learning_rate=0.2, num_leaves=7, min_child_samples=5, cross_fit_folds=2, threads=1)


@pytest.fixture(scope="module")
def trained(micro):
    frame, _, _ = micro
    policies = mine_policies(frame, ["order_rate", "ctr"],
                             PghsPoliciesConfig(max_bins=3, min_support=5, n_bootstrap=5, min_merchants=2))
    return frame, policies, {g: train_fit_branch(frame, ["order_rate", "ctr"], FIT,
                                                 policies if g else None) for g in (True, False)}


def test_fit_branch_learns_rates(trained):
    frame, _, fits = trained
    cells = to_cells(frame)
    for fit in fits.values():
        out = fit.predict(cells)
        pred, y = out["pred_order_rate"].to_numpy(), cells["order_rate"].to_numpy()
        assert (pred > 0).all()
        # better than predicting the market rate everywhere
        flat = np.full_like(y, frame["orders"].sum() / frame["exposures"].sum())
        assert relative_error(pred, y) < 0.5 * relative_error(flat, y)


def test_guided_branch_uses_policy_features_and_the_anchor(trained):
    _, _, fits = trained
    guided, plain = fits[True], fits[False]
    assert guided.guided and guided.anchor and not plain.guided
    names = guided.boosters["order_rate"].feature_name()
    assert "pol_order_rate_pred" in names and "pol_order_rate_pred" not in plain.boosters["order_rate"].feature_name()


def test_out_of_fold_policy_features_differ_from_in_sample(trained):
    frame, policies, _ = trained
    oof = cross_fit_policy_features(frame, policies, 2, seed=0)
    ins = apply_policies(policies, frame)
    assert oof["trajectory_id"].to_list() == frame["trajectory_id"].to_list()
    assert not np.allclose(oof["pol_order_rate_pred"].to_numpy(), ins["pol_order_rate_pred"].to_numpy())


def test_save_and_load_give_the_same_predictions(trained, tmp_path):
    frame, policies, fits = trained
    spec = fits[True].save(tmp_path)
    back = FitBranch.load(tmp_path, spec, policies)
    cells = to_cells(frame).head(20)
    assert np.allclose(back.predict(cells)["pred_ctr"].to_numpy(),
                       fits[True].predict(cells)["pred_ctr"].to_numpy())


def _branches(alpha: float) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    rng = np.random.default_rng(0)
    r = rng.uniform(0.01, 0.05, 200)
    f = r * rng.uniform(0.5, 1.5, 200)
    y = alpha * r + (1 - alpha) * f
    val = pl.DataFrame({"user_group": ["a"] * 100 + ["b"] * 100, "order_rate": y})
    return val, pl.DataFrame({"pred_order_rate": r}), pl.DataFrame({"pred_order_rate": f})


def test_weights_recover_the_mixing_weight():
    val, r, f = _branches(0.3)
    fusion = fit_fusion(val, r, f, ["order_rate"], "weights")
    assert fusion.coefs["order_rate"]["a"]["a"] == pytest.approx(0.3, abs=0.021)
    fused = fusion.apply(val, r, f, ["order_rate"])["pred_order_rate"].to_numpy()
    assert relative_error(fused, val["order_rate"].to_numpy()) < 0.01


def test_stacking_recovers_the_mixing_weight_and_unknown_groups_split_evenly():
    val, r, f = _branches(0.7)
    fusion = fit_fusion(val, r, f, ["order_rate"], "stacking")
    assert fusion.coefs["order_rate"]["b"]["a"] == pytest.approx(0.7, abs=0.05)
    other = val.with_columns(pl.lit("c").alias("user_group"))
    fused = fusion.apply(other, r, f, ["order_rate"])["pred_order_rate"].to_numpy()
    assert np.allclose(fused, 0.5 * r["pred_order_rate"].to_numpy() + 0.5 * f["pred_order_rate"].to_numpy())
    with pytest.raises(ValueError, match="weights"):
        fit_fusion(val, r, f, ["order_rate"], "median")
