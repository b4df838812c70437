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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import polars as pl

from distillery.config import PghsLLMConfig
from distillery.io import error_line, json_error, require, write_json, write_parquet, write_text
from distillery.pghs.data import (
    COUPON_TYPES,
    MERCHANT_FEATURES,
    RATES,
    STRATEGY_FEATURES,
    GroupDescription,
    groups_from_json,
    groups_to_json,
)
from distillery.pghs.fit import CATEGORICAL, FitBranch, feature_names
from distillery.pghs.fuse import Fusion
from distillery.pghs.policies import PolicySet
from distillery.pghs.reason import MarketPrior, make_reasoner

STRATEGY_DEFAULTS = {"discount_depth": 0.0, "delivery_fee": 3.0, "coupon_type": "none",
                     "ad_spend": 0.0, "menu_breadth": 40}

# What a damaged simulator directory's message ends with: the stage that writes it.
REBUILD = "written by `dvc repro pghs`; run it again"


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
    source: Path | None = field(default=None, compare=False, repr=False)   # the directory it was loaded from

    @property
    def headline(self) -> str:
        return self.targets[0]

    @property
    def categories(self) -> list[str]:
        """The merchant categories the simulator knows: those it was fitted on, and those of
        its merchant table."""
        known = set(self.fit.levels.get("merchant_category", []))
        if self.merchants is not None:
            known |= set(self.merchants["merchant_category"].drop_nulls().to_list())
        return sorted(known)

    def reasoner(self, client: Any = None):
        return make_reasoner(self.backend, self.groups, self.prior, self.targets, self.policies,
                             self.llm, client, progress=False)

    def queries(self, merchant: dict[str, Any], strategies: pl.DataFrame) -> pl.DataFrame:
        """One row per strategy and group, with the merchant's attributes. A category or
        coupon type the simulator does not know is refused (the fitting branch would quietly
        read it as none at all)."""
        missing = [c for c in ("merchant_id", *MERCHANT_FEATURES) if merchant.get(c) is None]
        if missing:
            raise ValueError(f"merchant is missing {missing}")
        if merchant["merchant_category"] not in self.categories:
            raise ValueError(f"merchant {merchant['merchant_id']!r}: merchant_category must be one of "
                             f"{self.categories}, got {merchant['merchant_category']!r}")
        if strategies.is_empty():
            raise ValueError("no strategies to simulate")
        if "strategy_id" not in strategies.columns:
            strategies = strategies.with_row_index("_i").with_columns(
                pl.format("cand{}", pl.col("_i")).alias("strategy_id")).drop("_i")
        absent = [c for c in STRATEGY_FEATURES if c not in strategies.columns]
        if absent:
            raise ValueError(f"strategies are missing {absent}")
        strategies = strategies.select("strategy_id", *STRATEGY_FEATURES).with_columns(
            pl.col("discount_depth", "delivery_fee", "ad_spend").cast(pl.Float64),
            pl.col("menu_breadth").cast(pl.Int64), pl.col("coupon_type").cast(pl.String))
        bad = strategies.filter(~pl.col("coupon_type").is_in(COUPON_TYPES).fill_null(False))
        if bad.height:
            sid, coupon = bad["strategy_id"][0], bad["coupon_type"][0]
            raise ValueError(f"strategy {sid!r}: coupon_type must be one of {list(COUPON_TYPES)}, "
                             f"got {coupon!r}")
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
        if self.merchants is None and self.source is not None:
            # save() leaves the table out only for a simulator built without one: the pghs
            # stage always writes it, so a loaded simulator without it lost the file.
            raise FileNotFoundError(
                f"{self.source / 'merchants.parquet'}: not found, so merchant {merchant_id!r} cannot "
                f"be looked up ({REBUILD}); or give its category, rating and price level instead")
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
        """The simulator `save` wrote to `directory`. A missing file raises FileNotFoundError
        and a damaged one ValueError, each in one line that names the file and the stage that
        writes it (merchants.parquet may be absent: then no merchant can be named by id)."""
        directory = Path(directory)
        spec_path, policies_path = directory / "simulator.json", directory / "policies.json"
        spec = _read_json(spec_path)
        why = _spec_problem(spec)
        if why:
            raise _damaged(spec_path, why)
        policies_json = _read_json(policies_path)
        with _reading(policies_path):
            if not isinstance(policies_json, dict):
                raise ValueError(f"expected a JSON object, got {_json_type(policies_json)}")
            policies = PolicySet.from_json(policies_json)
        with _reading(spec_path):
            groups = groups_from_json(spec["groups"])
            prior = MarketPrior(**spec["prior"])
            fusion = Fusion.from_json(spec["fusion"])
            llm = PghsLLMConfig(**spec["llm"])
        fit = FitBranch.load(directory, spec["fit"], policies,
                             read_booster=lambda path, target: _booster(path, policies, target))
        return cls(
            targets=spec["targets"], groups=groups, prior=prior, policies=policies, fit=fit,
            fusion=fusion, backend=spec["backend"], llm=llm,
            merchants=_merchants(directory / "merchants.parquet"), meta=spec.get("meta", {}),
            source=directory,
        )


# -- reading a saved simulator: every problem named by its file ----------------------------


def _damaged(path: Path, problem: str) -> ValueError:
    return ValueError(f"{path}: {problem} ({REBUILD})")


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "true/false", type(None): "null"}
    return names.get(type(value), "a number")


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Whatever a constructor raises on the content of `path`, as a damaged `path`."""
    try:
        yield
    except KeyError as e:
        raise _damaged(path, f"no {e.args[0]!r} entry") from e
    except (TypeError, ValueError, AttributeError) as e:
        raise _damaged(path, error_line(e)) from e


def _read_json(path: Path) -> Any:
    require(path, "pghs")
    try:
        return json.loads(path.read_text())
    except UnicodeDecodeError as e:
        raise _damaged(path, "not UTF-8 text") from e
    except json.JSONDecodeError as e:
        raise _damaged(path, f"not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from e
    except ValueError as e:     # a number too long to convert
        raise _damaged(path, f"not valid JSON ({json_error(e)})") from e
    except RecursionError as e:
        raise _damaged(path, "not valid JSON (nested too deeply)") from e
    except OSError as e:
        raise _damaged(path, f"cannot be read ({e.strerror or e})") from e


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


# What each part of simulator.json must hold for `load` and a prediction to work.
_SPEC: dict[str, type] = {"targets": list, "groups": list, "prior": dict, "fusion": dict, "fit": dict,
                          "backend": str, "llm": dict}
_FIT_SPEC: dict[str, type] = {"targets": list, "levels": dict, "files": dict, "anchor": bool}
_PRIOR: dict[str, tuple[str, ...]] = {
    "rates": ("ctr", "cvr", "order_rate"),
    "strategy_means": ("discount_depth", "delivery_fee", "log_ad", "log_menu", "coupon_share"),
    "group_mix": (),
}


def _spec_problem(spec: Any) -> str | None:
    """What is wrong with the content of simulator.json, or None."""
    if not isinstance(spec, dict):
        return f"expected a JSON object, got {_json_type(spec)}"
    for where, part, kinds in (("", spec, _SPEC), ("fit.", spec.get("fit"), _FIT_SPEC)):
        for key, kind in kinds.items():
            if key not in part:
                return f"no {where + key!r} entry"
            if not isinstance(part[key], kind):
                return f"{where + key!r} must be {_json_type(kind())}, got {_json_type(part[key])}"
    targets, fit = spec["targets"], spec["fit"]
    if not targets or any(t not in RATES for t in targets):
        return f"'targets' must be a non-empty list of {list(RATES)}, got {targets!r}"
    if spec["backend"] not in ("rules", "llm"):
        return f"'backend' must be 'rules' or 'llm', got {spec['backend']!r}"
    if not isinstance(spec.get("meta", {}), dict):
        return f"'meta' must be an object, got {_json_type(spec['meta'])}"
    for t in targets:
        if t not in fit["targets"]:
            return f"no fitted model for target {t!r} in 'fit.targets'"
    for t in fit["targets"]:
        if t not in fit["files"]:
            return f"no model file for target {t!r} in 'fit.files'"
    if not all(isinstance(f, str) for f in fit["files"].values()):
        return "'fit.files' must map each target to a file name"
    for c in CATEGORICAL:
        levels = fit["levels"].get(c)
        if not isinstance(levels, list) or not all(isinstance(v, str) for v in levels):
            return f"'fit.levels.{c}' must be a list of strings"
    for key, names in _PRIOR.items():
        table = spec["prior"].get(key)
        if (not isinstance(table, dict) or any(n not in table for n in names)
                or not all(_is_number(v) for v in table.values())):
            need = f" with {list(names)}" if names else ""
            return f"'prior.{key}' must be an object of numbers{need}"
    coefs = spec["fusion"].get("coefs", {})
    if not isinstance(coefs, dict) or not all(
            isinstance(per, dict) and all(isinstance(ab, dict) and _is_number(ab.get("a")) and _is_number(ab.get("b"))
                                          for ab in per.values()) for per in coefs.values()):
        return "'fusion.coefs' must map target -> group -> {a, b} numbers"
    return None


def _booster(path: Path, policies: PolicySet, target: str) -> lgb.Booster:
    require(path, "pghs")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise _damaged(path, f"cannot be read ({getattr(e, 'strerror', None) or error_line(e)})") from e
    # LightGBM prints its own line besides raising: a file that is plainly no (whole) model
    # is refused before it gets there.
    if not text.startswith("tree\n") or "\nend of trees\n" not in text:
        raise _damaged(path, "not a LightGBM text model, or cut short")
    try:
        booster = lgb.Booster(model_file=str(path))
    except lgb.basic.LightGBMError as e:
        raise _damaged(path, f"not a LightGBM model ({error_line(e)})") from e
    if booster.feature_name() != feature_names(policies, target):
        raise _damaged(path, f"not a model of the simulator's {target} features (another target's or "
                             "fit's model?)")
    return booster


def _merchants(path: Path) -> pl.DataFrame | None:
    if not path.exists():
        return None
    try:
        frame = pl.read_parquet(path)
    except (OSError, pl.exceptions.PolarsError) as e:
        raise _damaged(path, f"not a parquet file ({error_line(e)})") from e
    missing = [c for c in ("merchant_id", *MERCHANT_FEATURES) if c not in frame.columns]
    if missing:
        raise _damaged(path, f"no column {missing}")
    return frame


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


STRATEGY_FILES = "a CSV, JSON (a list of objects), JSON Lines (an object a line) or parquet file of strategies"


def read_strategies(path: str | Path) -> pl.DataFrame:
    """Candidate strategies from a CSV, JSON (a list of objects), JSON Lines (`.jsonl`,
    `.ndjson`: one object a line) or parquet file, by the suffix in any case (anything else is
    read as CSV); a strategy field that is missing, null or an empty cell takes its
    `STRATEGY_DEFAULTS` value. A file with no strategy in it is refused."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found")
    if not path.is_file():
        raise ValueError(f"{path}: not a file ({STRATEGY_FILES})")
    suffix = path.suffix.lower()
    unreadable = f"{path}: cannot be read as strategies"
    empty = ValueError(f"{path}: no strategies in it")
    if suffix != ".parquet" and not path.read_bytes().strip():
        raise empty
    rows: list[dict[str, Any]] | None = None
    if suffix == ".json":
        rows = _json_value(path.read_bytes(), unreadable)
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ValueError(f"{path}: expected a JSON list of strategy objects")
    elif suffix in (".jsonl", ".ndjson"):
        rows = []
        for n, line in enumerate(path.read_bytes().splitlines(), start=1):
            if line.strip():
                row = _json_value(line, unreadable, n)
                if not isinstance(row, dict):
                    raise ValueError(f"{path}: line {n}: expected a JSON object (one strategy a line)")
                rows.append(row)
    try:
        if suffix == ".parquet":
            frame = pl.read_parquet(path)
        elif rows is not None:
            # every row's keys (not only the first 100 rows'); rows of `{}` are strategies too
            frame = pl.DataFrame(rows, infer_schema_length=None)
            if not frame.width:
                frame = pl.DataFrame({"strategy_id": [None] * len(rows)}, schema={"strategy_id": pl.String})
        else:
            frame = pl.read_csv(path)
    except (OverflowError, pl.exceptions.PolarsError) as e:   # OverflowError: an int no polars column holds
        raise ValueError(f"{unreadable}: {str(e).splitlines()[0]}") from e
    unknown = sorted(set(frame.columns) - {"strategy_id", *STRATEGY_FEATURES})
    if unknown:
        raise ValueError(f"{path}: unknown columns {unknown}; strategy columns are "
                         f"{['strategy_id', *STRATEGY_FEATURES]}")
    if frame.is_empty():
        raise empty
    defaults = []
    for k, v in STRATEGY_DEFAULTS.items():
        if k not in frame.columns or frame[k].null_count() == frame.height:
            defaults.append(pl.lit(v).alias(k))
        elif frame[k].null_count():
            defaults.append(pl.col(k).fill_null(pl.lit(v)))
    return frame.with_columns(defaults)


def _json_value(text: bytes, unreadable: str, line: int | None = None) -> Any:
    """`text` parsed as JSON; `line`: the line of a JSON Lines file it is."""
    if line is not None:
        unreadable = f"{unreadable}: line {line}"
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{unreadable}: {e}" if line is None else f"{unreadable}: {e.msg} (column {e.colno})") from e
    except ValueError as e:     # text that is not UTF-8, or a number too long to convert
        raise ValueError(f"{unreadable}: {json_error(e)}") from e
    except RecursionError as e:
        raise ValueError(f"{unreadable}: nested too deeply") from e
