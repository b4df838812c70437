"""The fitting branch: LightGBM at group level.

One booster per target rate, trained on trajectories (one row per merchant, period and
group) to predict the log rate from the group, the merchant's attributes and the strategy.
With a `PolicySet` it also sees the policy features (the baseline segment's level, each
fired policy's effect, their composed prediction) and, with `anchor`, boosts from the
policies' prediction (`init_score`) so the trees learn only what the policies miss. Without
policies it is the fitting-only baseline.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import polars as pl

from distillery.config import PghsFitConfig
from distillery.pghs.data import NUMERIC_STRATEGY
from distillery.pghs.policies import (
    PolicySet,
    apply_policies,
    log_rate,
    policy_columns,
    refit_policies,
)

CATEGORICAL = ("user_group", "merchant_category", "coupon_type")
NUMERIC = ("merchant_rating", "merchant_price_level", *NUMERIC_STRATEGY)


@dataclass
class FitBranch:
    """Trained boosters plus what is needed to build their features for new rows."""

    targets: list[str]
    boosters: dict[str, lgb.Booster]
    levels: dict[str, list[str]]            # categorical column -> known values (code = index)
    policies: PolicySet | None = None
    anchor: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def guided(self) -> bool:
        return self.policies is not None

    def features(self, frame: pl.DataFrame, target: str) -> tuple[np.ndarray, np.ndarray]:
        """(feature matrix, init score) for `target`; init is 0 unless anchored."""
        return _features(frame, self.levels, self.policies, target, self.anchor)

    def predict(self, frame: pl.DataFrame) -> pl.DataFrame:
        """`frame` plus pred_<target> (a rate) for every target."""
        if self.policies is not None:
            frame = apply_policies(self.policies, frame)
        preds = []
        for t in self.targets:
            x, init = self.features(frame, t)
            preds.append(pl.Series(f"pred_{t}", np.exp(self.boosters[t].predict(x) + init)))
        return frame.with_columns(preds)

    def save(self, directory: str | Path, prefix: str = "fit") -> dict[str, Any]:
        """Write one LightGBM text model per target; return the JSON-able description."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        files = {}
        for t, b in self.boosters.items():
            path = directory / f"{prefix}_{t}.txt"
            b.save_model(str(path))
            files[t] = path.name
        return {"targets": self.targets, "levels": self.levels, "anchor": self.anchor,
                "files": files, "meta": self.meta}

    @classmethod
    def load(cls, directory: str | Path, spec: dict[str, Any], policies: PolicySet | None,
             read_booster: Callable[[Path, str], lgb.Booster] | None = None) -> FitBranch:
        """The branch `save` wrote; `read_booster(path, target)` reads each model file (default:
        LightGBM's own reader; `Simulator.load` passes one that names a damaged file)."""
        directory = Path(directory)
        read = read_booster or (lambda path, _target: lgb.Booster(model_file=str(path)))
        boosters = {t: read(directory / f, t) for t, f in spec["files"].items()}
        return cls(targets=spec["targets"], boosters=boosters, levels=spec["levels"],
                   policies=policies, anchor=spec["anchor"], meta=spec.get("meta", {}))


def feature_names(policies: PolicySet | None, target: str) -> list[str]:
    return [*CATEGORICAL, *NUMERIC, *(policy_columns(target) if policies is not None else [])]


def _features(frame: pl.DataFrame, levels: dict[str, list[str]], policies: PolicySet | None,
              target: str, anchor: bool) -> tuple[np.ndarray, np.ndarray]:
    # Unknown categories become -1, which LightGBM treats as missing: a new coupon type or
    # cuisine falls back to the rest of the features instead of borrowing another's code.
    cats = [frame[c].replace_strict(levels[c], list(range(len(levels[c]))), default=-1)
            .cast(pl.Float64).to_numpy() for c in CATEGORICAL]
    nums = [frame[c].cast(pl.Float64).to_numpy() for c in NUMERIC]
    cols = cats + nums
    init = np.zeros(frame.height)
    if policies is not None:
        pol = frame.select(policy_columns(target)).to_numpy().astype(float)
        cols += list(pol.T)
        if anchor:
            pred = frame[f"pol_{target}_pred"].to_numpy().astype(float)
            init = np.where(np.isfinite(pred), pred, 0.0)
    return np.column_stack(cols), init


def cross_fit_policy_features(rows: pl.DataFrame, policies: PolicySet, folds: int,
                              seed: int = 0) -> pl.DataFrame:
    """`rows` with policy features, each merchant's computed from policies fitted without it.

    Policies fitted on the very rows they describe fit those rows better than they will fit
    a new merchant; trained on such in-sample features, the booster learns to trust them too
    much (the usual stacking leak). Out-of-fold features (by merchant) are honest. The folds
    keep the mined conditions and re-estimate only their sizes, so a feature means the same
    in every fold and at prediction time (when the policies from all training merchants are
    used).
    """
    if folds < 2:
        return apply_policies(policies, rows)
    merchants = np.array(sorted(rows["merchant_id"].unique().to_list()))
    rng = np.random.default_rng(seed)
    fold_of = {m: int(k) for m, k in zip(merchants, rng.permutation(len(merchants)) % folds, strict=True)}
    fold = rows["merchant_id"].replace_strict(fold_of, return_dtype=pl.Int64)
    rows = rows.with_row_index("_row")
    parts = []
    for k in range(folds):
        inside = rows.filter(fold == k)
        if inside.is_empty():
            continue
        parts.append(apply_policies(refit_policies(policies, rows.filter(fold != k)), inside))
    # Back to the input's row order (rows were split by fold).
    return pl.concat(parts, how="vertical").sort("_row").drop("_row")


def train_fit_branch(rows: pl.DataFrame, targets: Sequence[str], cfg: PghsFitConfig,
                     policies: PolicySet | None = None, seed: int = 0) -> FitBranch:
    """Train one booster per target on trajectories `rows`."""
    if rows.is_empty():
        raise ValueError("train_fit_branch: no training trajectories")
    levels = {c: sorted(rows[c].unique().to_list()) for c in CATEGORICAL}
    if policies is not None:
        rows = cross_fit_policy_features(rows, policies, cfg.cross_fit_folds, seed)
    anchor = cfg.anchor and policies is not None
    boosters = {}
    for t in targets:
        x, init = _features(rows, levels, policies, t, anchor)
        y, w = log_rate(rows, t)
        names = feature_names(policies, t)
        data = lgb.Dataset(x, label=y, weight=w, init_score=init if anchor else None,
                           feature_name=names, categorical_feature=list(CATEGORICAL),
                           free_raw_data=True)
        params = {
            "objective": "regression", "learning_rate": cfg.learning_rate,
            "num_leaves": cfg.num_leaves, "min_child_samples": cfg.min_child_samples,
            "feature_fraction": cfg.feature_fraction, "lambda_l2": cfg.lambda_l2,
            "num_threads": cfg.threads, "seed": seed, "deterministic": True,
            "force_row_wise": True, "verbose": -1,
        }
        boosters[t] = lgb.train(params, data, num_boost_round=cfg.n_estimators)
    return FitBranch(targets=list(targets), boosters=boosters, levels=levels, policies=policies,
                     anchor=anchor, meta={"n_rows": rows.height, "seed": seed,
                                          "n_estimators": cfg.n_estimators})
