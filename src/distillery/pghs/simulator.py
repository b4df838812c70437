"""The fitted PGHS simulator: policies, both branches and the fusion, saved as one directory.

    sim = Simulator.load("models/pghs")
    outcomes = sim.simulate(merchant, strategies)    # one row per strategy x group
    ranking = sim.rank(outcomes)                      # strategies by mix-weighted outcome

Directory layout (written by the `pghs` stage): `simulator.json` (targets, groups, market
prior, fusion, reasoner backend, provenance), `policies.json` and `policies.txt`, one LightGBM
text model per target (`fit_<target>.txt`), and `merchants.parquet` (known merchants'
attributes, so a merchant can be named by id).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from distillery.config import PghsLLMConfig
from distillery.io import json_error, require, write_json, write_parquet, write_text
from distillery.pghs.data import (
    COUPON_TYPES,
    MERCHANT_FEATURES,
    STRATEGY_FEATURES,
    GroupDescription,
    groups_from_json,
    groups_to_json,
)
from distillery.pghs.fit import FitBranch
from distillery.pghs.fuse import Fusion
from distillery.pghs.policies import PolicySet
from distillery.pghs.reason import MarketPrior, make_reasoner

STRATEGY_DEFAULTS = {"discount_depth": 0.0, "delivery_fee": 3.0, "coupon_type": "none",
                     "ad_spend": 0.0, "menu_breadth": 40}


@dataclass
class Simulator:
    targets: list[str]
    groups: list[GroupDescription]
    prior: MarketPrior
    policies: PolicySet
    fit: FitBranch
    fusion: Fusion
    backend: str = "rules"
    llm: PghsLLMConfig = field(default_factory=PghsLLMConfig)
    merchants: pl.DataFrame | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def headline(self) -> str:
        return self.targets[0]

    def reasoner(self, client: Any = None):
        return make_reasoner(self.backend, self.groups, self.prior, self.targets, self.policies,
                             self.llm, client, progress=False)

    def queries(self, merchant: dict[str, Any], strategies: pl.DataFrame) -> pl.DataFrame:
        """One row per strategy and group, with the merchant's attributes."""
        missing = [c for c in ("merchant_id", *MERCHANT_FEATURES) if merchant.get(c) is None]
        if missing:
            raise ValueError(f"merchant is missing {missing}")
        if "strategy_id" not in strategies.columns:
            strategies = strategies.with_row_index("_i").with_columns(
                pl.format("cand{}", pl.col("_i")).alias("strategy_id")).drop("_i")
        absent = [c for c in STRATEGY_FEATURES if c not in strategies.columns]
        if absent:
            raise ValueError(f"strategies are missing {absent}")
        strategies = strategies.select("strategy_id", *STRATEGY_FEATURES).with_columns(
            pl.col("discount_depth", "delivery_fee", "ad_spend").cast(pl.Float64),
            pl.col("menu_breadth").cast(pl.Int64), pl.col("coupon_type").cast(pl.String))
        groups = pl.DataFrame({"user_group": [g.name for g in self.groups]})
        m = pl.DataFrame([{c: merchant[c] for c in ("merchant_id", *MERCHANT_FEATURES)}]).with_columns(
            pl.col("merchant_rating", "merchant_price_level").cast(pl.Float64))
        return strategies.join(groups, how="cross").join(m, how="cross")

    def simulate(self, merchant: dict[str, Any], strategies: pl.DataFrame,
                 client: Any = None) -> pl.DataFrame:
        """Predicted rates per strategy and group: reasoning, fitting and fused (pred_<t>)."""
        q = self.queries(merchant, strategies)
        return self.predict(q, client)

    def predict(self, q: pl.DataFrame, client: Any = None) -> pl.DataFrame:
        r = self.reasoner(client).predict(q)
        f = self.fit.predict(q)
        fused = self.fusion.apply(q, r, f, self.targets)
        return fused.with_columns(
            *[r[f"pred_{t}"].alias(f"reason_{t}") for t in self.targets],
            *[f[f"pred_{t}"].alias(f"fit_{t}") for t in self.targets])

    def rank(self, outcomes: pl.DataFrame) -> pl.DataFrame:
        """Strategies by the headline rate averaged over groups with the market's group mix."""
        mix = self.prior.group_mix
        t = self.headline
        return (outcomes.with_columns(
            (pl.col(f"pred_{t}") * pl.col("user_group").replace_strict(mix, default=0.0))
            .alias("_v"))
            .group_by("strategy_id", maintain_order=True)
            .agg(pl.col("_v").sum().alias(f"mix_{t}"), *[pl.col(c).first() for c in STRATEGY_FEATURES])
            .sort(f"mix_{t}", descending=True)
            .with_row_index("rank", offset=1))

    def merchant(self, merchant_id: str) -> dict[str, Any]:
        if self.merchants is None or merchant_id not in set(self.merchants["merchant_id"].to_list()):
            known = [] if self.merchants is None else self.merchants["merchant_id"].head(5).to_list()
            raise KeyError(f"merchant {merchant_id!r} is not in the simulator's merchant table "
                           f"(e.g. {known}); give its category, rating and price level instead")
        return self.merchants.filter(pl.col("merchant_id") == merchant_id).row(0, named=True)

    # -- persistence ----------------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        fit_spec = self.fit.save(directory)
        write_json(self.policies.to_json(), directory / "policies.json")
        write_text(self.policies.render() + "\n", directory / "policies.txt")
        if self.merchants is not None:
            write_parquet(self.merchants, directory / "merchants.parquet")
        write_json({
            "targets": self.targets, "groups": groups_to_json(self.groups),
            "prior": self.prior.to_json(), "fusion": self.fusion.to_json(), "fit": fit_spec,
            "backend": self.backend, "llm": asdict(self.llm), "meta": self.meta,
        }, directory / "simulator.json")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> Simulator:
        directory = Path(directory)
        spec = json.loads(require(directory / "simulator.json", "pghs").read_text())
        policies = PolicySet.from_json(json.loads((directory / "policies.json").read_text()))
        merchants_path = directory / "merchants.parquet"
        return cls(
            targets=spec["targets"], groups=groups_from_json(spec["groups"]),
            prior=MarketPrior(**spec["prior"]), policies=policies,
            fit=FitBranch.load(directory, spec["fit"], policies),
            fusion=Fusion.from_json(spec["fusion"]), backend=spec["backend"],
            llm=PghsLLMConfig(**spec["llm"]),
            merchants=pl.read_parquet(merchants_path) if merchants_path.exists() else None,
            meta=spec.get("meta", {}),
        )


# The range of each numeric strategy feature the simulator accepts (the data's own ranges).
STRATEGY_RANGES: dict[str, tuple[float, float]] = {
    "discount_depth": (0.0, 0.95), "delivery_fee": (0.0, float("inf")),
    "ad_spend": (0.0, float("inf")), "menu_breadth": (1, float("inf")),
}


def strategy_value_problem(key: str, value: Any) -> str | None:
    """Why `value` cannot be the numeric strategy feature `key`, or None when it can."""
    lo, hi = STRATEGY_RANGES[key]
    try:
        x = float(value)
    except (TypeError, ValueError):
        return f"{key} must be a number, got {value!r}"
    # inf passes `lo <= x <= inf`, and a breadth past int64 cannot be cast to the integer column
    if not math.isfinite(x) or not lo <= x <= hi or (key == "menu_breadth" and (x != int(x) or x >= 2 ** 63)):
        want = "a whole number >= 1 (below 2^63)" if key == "menu_breadth" else (
            f"in [{lo:g}, {hi:g}]" if hi != float("inf") else f"a finite number >= {lo:g}")
        return f"{key} must be {want}, got {value!r}"
    return None


def check_candidates(strategies: pl.DataFrame) -> pl.DataFrame:
    """Candidate strategies as `Simulator.simulate` takes them, refused with a ValueError that
    names the strategy and the field when a value is missing, not a number, out of range or an
    unknown coupon type, or when two candidates share a strategy_id (their rankings would be
    summed into one row)."""
    frame = strategies
    if "strategy_id" not in frame.columns:
        frame = frame.with_columns(pl.lit(None, dtype=pl.String).alias("strategy_id"))
    frame = frame.with_row_index("_i").with_columns(
        pl.col("strategy_id").cast(pl.String).fill_null(pl.format("cand{}", pl.col("_i")))).drop("_i")
    for row in frame.iter_rows(named=True):
        sid = row["strategy_id"]
        for key in STRATEGY_RANGES:
            why = strategy_value_problem(key, row.get(key))
            if why:
                raise ValueError(f"strategy {sid!r}: {why}")
        if row.get("coupon_type") not in COUPON_TYPES:
            raise ValueError(f"strategy {sid!r}: coupon_type must be one of {list(COUPON_TYPES)}, "
                             f"got {row.get('coupon_type')!r}")
    dup = frame["strategy_id"].filter(frame["strategy_id"].is_duplicated()).unique(maintain_order=True)
    if dup.len():
        raise ValueError(f"strategy_id {dup.to_list()} given to more than one candidate: each "
                         "candidate needs its own id")
    return frame.with_columns(pl.col("discount_depth", "delivery_fee", "ad_spend").cast(pl.Float64),
                              pl.col("menu_breadth").cast(pl.Float64).cast(pl.Int64))


def merchants_table(trajectories: pl.DataFrame) -> pl.DataFrame:
    return (trajectories.group_by("merchant_id", maintain_order=True)
            .agg(*[pl.col(c).first() for c in MERCHANT_FEATURES]).sort("merchant_id"))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties); nan when either side is constant."""
    from scipy.stats import spearmanr

    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def parse_strategy(text: str) -> dict[str, Any]:
    """"discount_depth=0.2,coupon_type=percent" -> a strategy; unnamed fields take defaults."""
    out = dict(STRATEGY_DEFAULTS)
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in (*STRATEGY_FEATURES, "strategy_id"):
            raise ValueError(f"strategy {text!r}: expected key=value pairs with keys among "
                             f"{['strategy_id', *STRATEGY_FEATURES]}, got {part!r}")
        value = value.strip()
        if key in ("coupon_type", "strategy_id"):
            out[key] = value
        else:
            try:
                out[key] = int(value) if key == "menu_breadth" else float(value)
            except ValueError as e:
                kind = "a whole number" if key == "menu_breadth" else "a number"
                raise ValueError(f"strategy {text!r}: {key} must be {kind}, got {value!r}") from e
    return out


def read_strategies(path: str | Path) -> pl.DataFrame:
    """Candidate strategies from a CSV, JSON (a list of objects) or parquet file; missing
    strategy fields take `STRATEGY_DEFAULTS`."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found")
    if not path.is_file():
        raise ValueError(f"{path}: not a file (a CSV, JSON or parquet file of strategies)")
    unreadable = f"{path}: cannot be read as strategies"
    rows: list[dict[str, Any]] = []
    if path.suffix == ".json":
        try:
            rows = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{unreadable}: {e}") from e
        except ValueError as e:     # text that is not UTF-8, or a number too long to convert
            raise ValueError(f"{unreadable}: {json_error(e)}") from e
        except RecursionError as e:
            raise ValueError(f"{unreadable}: nested too deeply") from e
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ValueError(f"{path}: expected a JSON list of strategy objects")
    try:
        if path.suffix == ".parquet":
            frame = pl.read_parquet(path)
        elif path.suffix == ".json":
            frame = pl.DataFrame(rows)
        else:
            frame = pl.read_csv(path)
    except (OverflowError, pl.exceptions.PolarsError) as e:   # OverflowError: an int no polars column holds
        raise ValueError(f"{unreadable}: {str(e).splitlines()[0]}") from e
    unknown = sorted(set(frame.columns) - {"strategy_id", *STRATEGY_FEATURES})
    if unknown:
        raise ValueError(f"{path}: unknown columns {unknown}; strategy columns are "
                         f"{['strategy_id', *STRATEGY_FEATURES]}")
    return frame.with_columns([pl.lit(v).alias(k) for k, v in STRATEGY_DEFAULTS.items()
                               if k not in frame.columns])
