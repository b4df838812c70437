"""Fusion of the two branches, per user group and target, fitted on validation merchants.

* `weights`: y = alpha * y_reason + (1 - alpha) * y_fit, alpha on a grid in [0, 1] chosen to
  minimise the group simulation error (mean relative error) on the validation cells.
* `stacking`: y = a * y_reason + b * y_fit (a, b >= 0), least squares on relative errors
  (each cell weighted by 1 / y^2, so the fit minimises squared relative error), lightly
  ridged towards an even split.

The caller passes validation cells only; nothing here ever sees test merchants.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import polars as pl

GRID = np.linspace(0.0, 1.0, 51)


def relative_error(pred: np.ndarray, actual: np.ndarray) -> float:
    """Mean of |pred - actual| / actual: the group simulation error of a set of cells."""
    return float(np.mean(np.abs(pred - actual) / actual))


@dataclass
class Fusion:
    """Per (group, target): {"a": weight of the reasoning branch, "b": of the fitting branch}."""

    method: str
    coefs: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # target -> group -> a, b

    def apply(self, frame: pl.DataFrame, reason: pl.DataFrame, fit: pl.DataFrame,
              targets: Sequence[str]) -> pl.DataFrame:
        """`frame` plus pred_<t>, from `reason` and `fit` (same rows, each with pred_<t>)."""
        groups = frame["user_group"].to_numpy()
        out = []
        for t in targets:
            r, f = reason[f"pred_{t}"].to_numpy(), fit[f"pred_{t}"].to_numpy()
            table = self.coefs.get(t, {})
            a = np.array([table.get(g, {"a": 0.5})["a"] for g in groups])
            b = np.array([table.get(g, {"b": 0.5})["b"] for g in groups])
            out.append(pl.Series(f"pred_{t}", a * r + b * f))
        return frame.with_columns(out)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Fusion:
        return cls(**d)


def fit_fusion(val: pl.DataFrame, reason: pl.DataFrame, fit: pl.DataFrame,
               targets: Sequence[str], method: str = "weights") -> Fusion:
    """Fit the fusion on validation cells `val` (with the observed rates) given each branch's
    predictions for the same rows. A group absent from validation gets an even split."""
    if method not in ("weights", "stacking"):
        raise ValueError(f"fusion method must be 'weights' or 'stacking', not {method!r}")
    groups = val["user_group"].to_numpy()
    coefs: dict[str, dict[str, dict[str, float]]] = {}
    for t in targets:
        y = val[t].to_numpy().astype(float)
        r, f = reason[f"pred_{t}"].to_numpy(), fit[f"pred_{t}"].to_numpy()
        coefs[t] = {}
        for g in sorted(set(groups.tolist())):
            sel = (groups == g) & (y > 0)
            if not sel.any():
                continue
            if method == "weights":
                errors = [relative_error(a * r[sel] + (1 - a) * f[sel], y[sel]) for a in GRID]
                a = float(GRID[int(np.argmin(errors))])
                coefs[t][g] = {"a": a, "b": 1 - a}
            else:
                coefs[t][g] = _stack(r[sel], f[sel], y[sel])
    return Fusion(method=method, coefs=coefs)


def _stack(r: np.ndarray, f: np.ndarray, y: np.ndarray, ridge: float = 1.0) -> dict[str, float]:
    x = np.column_stack([r / y, f / y])          # relative errors: (a r + b f) / y - 1
    target = np.ones(len(y))
    prior = np.array([0.5, 0.5])
    coef = np.linalg.solve(x.T @ x + ridge * np.eye(2), x.T @ target + ridge * prior)
    coef = np.clip(coef, 0.0, None)
    return {"a": float(coef[0]), "b": float(coef[1])}
