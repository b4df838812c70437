"""Decision policies mined from trajectories: condition -> direction and size of a group's
response, with support and confidence. Stored as data (JSON), rendered as text.

Per user group and outcome rate (target) there are three kinds:

* `baseline`: the group's habitual level at a typical merchant under the reference
  strategy (no discount, lowest fee, no coupon, no ads, narrowest menu).
* `context`: "seniors at merchants with merchant_category == grocery: level +38% vs the
  group's typical merchant". Merchant attributes that move the habitual level. Estimated
  between merchants, on each merchant's level once its strategies' effects are taken out.
* `response`: "students: if 0.225 < discount_depth <= 0.325 -> order rate +31% vs
  discount_depth <= 0.075". Estimated *within* merchants (merchant fixed effects): across
  merchants, strategy choice is confounded with merchant quality (weaker merchants discount
  more), and a pooled fit would learn that confounding as a response. Within-merchant
  contrasts are what transfers to a merchant the data has never seen.

Cut points come from shallow regression trees (one per feature); sizes from one ridge
regression per group and target, so that composed (summed in log space) the policies explain
the data together. Confidence is the share of merchant-bootstrap refits that agree on the
direction; support counts the training trajectories a condition covers. Only supported and
confident policies are kept. `apply_policies` composes them into a prediction for any merchant
and strategy; `refit_policies` re-estimates the sizes of a fixed set of conditions on other
rows (out-of-fold features for the fitting branch).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import polars as pl
from sklearn.tree import DecisionTreeRegressor

from distillery.config import PghsPoliciesConfig
from distillery.pghs.data import NUMERIC_STRATEGY, RATES

TARGET_WORDS = {"order_rate": "orders per exposure", "ctr": "click-through rate",
                "cvr": "orders per click"}
CONTEXT_NUMERIC = ("merchant_rating", "merchant_price_level")
EFFECT_FEATURES = (*NUMERIC_STRATEGY, "coupon_type")


def log_rate(frame: pl.DataFrame, target: str) -> tuple[np.ndarray, np.ndarray]:
    """Smoothed log rate of each row and its weight.

    The weight is the inverse variance of the log rate: binomial noise (about 1/successes)
    plus a floor for week-to-week context (rain, holidays) that no count removes.
    """
    num, den = RATES[target]
    k = frame[num].to_numpy().astype(float)
    n = frame[den].to_numpy().astype(float)
    return np.log((k + 0.5) / (n + 1.0)), 1.0 / (1.0 / (k + 1.0) + 0.01)


# ---------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Clause:
    """One condition: `feature op value`, op in <=, >, ==."""

    feature: str
    op: str
    value: float | str

    def expr(self) -> pl.Expr:
        col = pl.col(self.feature)
        return {"<=": col <= self.value, ">": col > self.value, "==": col == self.value}[self.op]

    def mask(self, frame: pl.DataFrame | dict[str, np.ndarray]) -> np.ndarray:
        x = frame[self.feature] if isinstance(frame, dict) else frame[self.feature].to_numpy()
        if self.op == "==":
            return x == self.value
        x = x.astype(float)
        return x <= self.value if self.op == "<=" else x > self.value

    def text(self) -> str:
        value = f"{self.value:g}" if isinstance(self.value, float) else self.value
        return f"{self.feature} {self.op} {value}"


def _conditions_text(clauses: Sequence[Clause]) -> str:
    return " and ".join(c.text() for c in clauses) or "always"


@dataclass(frozen=True)
class Policy:
    """One mined policy. `effect` is a log rate (baseline) or a log ratio (context, response)."""

    policy_id: str
    kind: str                       # "baseline" | "context" | "response"
    group: str
    target: str
    feature: str                    # the feature the condition is about ("" for baseline)
    conditions: tuple[Clause, ...]
    effect: float
    support: int                    # training trajectories the condition covers
    confidence: float
    reference: str = ""             # what a context/response effect is relative to
    n_merchants: int = 0
    center: float | None = None     # numeric response: typical value where the condition holds
    reference_center: float | None = None   # ... and where the reference holds

    @property
    def direction(self) -> str:
        if self.kind == "baseline":
            return "level"
        return "up" if self.effect > 0.01 else "down" if self.effect < -0.01 else "flat"

    @property
    def size(self) -> float:
        """The rate itself (baseline) or the relative change (context, response)."""
        return math.exp(self.effect) if self.kind == "baseline" else math.exp(self.effect) - 1

    def text(self) -> str:
        head = f"[{self.group} · {self.target}]"
        stats = f"(support {self.support}, {self.n_merchants} merchants, confidence {self.confidence:.2f})"
        what = TARGET_WORDS[self.target]
        if self.kind == "baseline":
            return (f"{head} habitual level: {100 * self.size:.2f}% {what} at a typical merchant "
                    f"under the reference strategy {stats}")
        change = {"up": f"up {100 * self.size:.0f}%", "down": f"down {100 * -self.size:.0f}%",
                  "flat": "about unchanged"}[self.direction]
        lead = "at merchants with" if self.kind == "context" else "if"
        return (f"{head} {lead} {_conditions_text(self.conditions)} -> {what} {change} vs "
                f"{self.reference} {stats}")

    def fires(self, frame: pl.DataFrame | dict[str, np.ndarray]) -> np.ndarray:
        """Rows (of a frame, or of its columns as arrays) where this policy applies."""
        groups = frame["user_group"] if isinstance(frame, dict) else frame["user_group"].to_numpy()
        m = groups == self.group
        for c in self.conditions:
            m &= c.mask(frame)
        return m

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(direction=self.direction, size=self.size, text=self.text())
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Policy:
        d = {k: v for k, v in d.items() if k not in ("direction", "size", "text")}
        d["conditions"] = tuple(Clause(**c) for c in d["conditions"])
        return cls(**d)


@dataclass
class PolicySet:
    """All policies mined from one training set, and the structure (cut points) behind them."""

    policies: list[Policy]
    targets: list[str]
    groups: list[str]
    meta: dict[str, Any] = field(default_factory=dict)

    def select(self, group: str | None = None, target: str | None = None,
               kind: str | None = None) -> list[Policy]:
        return [p for p in self.policies if (group is None or p.group == group)
                and (target is None or p.target == target) and (kind is None or p.kind == kind)]

    def to_json(self) -> dict[str, Any]:
        return {"targets": self.targets, "groups": self.groups, "meta": self.meta,
                "policies": [p.to_json() for p in self.policies]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PolicySet:
        return cls(policies=[Policy.from_json(p) for p in d["policies"]], targets=d["targets"],
                   groups=d["groups"], meta=d.get("meta", {}))

    def render(self, group: str | None = None, target: str | None = None) -> str:
        """The policies as text, one per line: baseline, context, then responses by size."""
        order = {"baseline": 0, "context": 1, "response": 2}
        chosen = sorted(self.select(group, target),
                        key=lambda p: (p.group, p.target, order[p.kind], p.feature, -abs(p.effect)))
        return "\n".join(p.text() for p in chosen)


# ---------------------------------------------------------------------------------------
# Mining
# ---------------------------------------------------------------------------------------


@dataclass
class _Column:
    """One candidate condition: its clauses, which feature, and what it is relative to."""

    name: str
    feature: str
    clauses: tuple[Clause, ...]
    reference: str


def _cut_points(x: np.ndarray, y: np.ndarray, w: np.ndarray, max_bins: int,
                min_leaf: int) -> list[float]:
    """Where the response to one feature changes: the splits of a shallow regression tree."""
    if np.unique(x).size < 2:
        return []
    tree = DecisionTreeRegressor(max_leaf_nodes=max(max_bins, 2), min_samples_leaf=max(min_leaf, 1),
                                 random_state=0)
    tree.fit(x.reshape(-1, 1), y, sample_weight=w)
    t = tree.tree_
    return sorted(round(float(v), 4) for v, f in zip(t.threshold, t.feature, strict=True) if f >= 0)


def _range_columns(feature: str, cuts: list[float], with_reference: bool) -> list[_Column]:
    """One column per range between cut points. With a reference, the lowest range is it
    (and gets no column); otherwise every range gets one, relative to the typical merchant."""
    cols = []
    edges = [None, *cuts, None]
    reference = f"{feature} <= {cuts[0]:g}" if cuts else ""
    for i in range(len(edges) - 1):
        lo, hi = edges[i], edges[i + 1]
        if with_reference and lo is None:
            continue
        clauses = tuple([Clause(feature, ">", lo)] if lo is not None else []) + \
            tuple([Clause(feature, "<=", hi)] if hi is not None else [])
        if not clauses:
            continue
        cols.append(_Column(f"{feature}#{i}", feature, clauses,
                            reference if with_reference else "the group's typical merchant"))
    return cols


def _matrix(frame: pl.DataFrame, columns: list[_Column]) -> np.ndarray:
    if not columns:
        return np.zeros((frame.height, 0))
    out = np.ones((frame.height, len(columns)))
    for j, col in enumerate(columns):
        for c in col.clauses:
            out[:, j] *= c.mask(frame)
    return out


def _demean(values: np.ndarray, weights: np.ndarray, codes: np.ndarray, n: int) -> np.ndarray:
    """Subtract each merchant's weighted mean (`codes`: merchant index of each row)."""
    wsum = np.maximum(np.bincount(codes, weights, minlength=n), 1e-12)
    if values.ndim == 1:
        return values - (np.bincount(codes, weights * values, minlength=n) / wsum)[codes]
    out = np.empty_like(values)
    for j in range(values.shape[1]):
        out[:, j] = values[:, j] - (np.bincount(codes, weights * values[:, j], minlength=n) / wsum)[codes]
    return out


def _per_unit(x: np.ndarray, y: np.ndarray, w: np.ndarray, codes: np.ndarray, n: int
              ) -> tuple[np.ndarray, np.ndarray]:
    """X'WX and X'Wy contributed by each unit (merchant), for cheap bootstrap refits."""
    k = x.shape[1]
    xtx, xty = np.zeros((n, k, k)), np.zeros((n, k))
    xw = x * w[:, None]
    np.add.at(xtx, codes, xw[:, :, None] * x[:, None, :])
    np.add.at(xty, codes, xw * y[:, None])
    return xtx, xty


def _ridge(xtx: np.ndarray, xty: np.ndarray, counts: np.ndarray, penalty: np.ndarray) -> np.ndarray:
    return np.linalg.solve(np.tensordot(counts, xtx, axes=1) + np.diag(penalty), counts @ xty)


@dataclass
class _Fit:
    columns: list[_Column]
    beta: np.ndarray
    confidence: np.ndarray
    support: np.ndarray
    merchants: np.ndarray


def _fit_columns(x: np.ndarray, raw: np.ndarray, y: np.ndarray, w: np.ndarray,
                 codes: np.ndarray, n: int, columns: list[_Column], cfg: PghsPoliciesConfig,
                 draws: np.ndarray, intercept: bool, select: bool) -> tuple[_Fit, float]:
    """Ridge fit of `y` on `x` (the indicators `raw`, or them demeaned; plus an unpenalised
    intercept), with bootstrap confidence; with `select`, drop unsupported or unstable
    columns and refit."""
    support = raw.sum(axis=0)
    n_merch = np.array([np.unique(codes[raw[:, j] > 0]).size for j in range(raw.shape[1])])
    keep = np.arange(x.shape[1])
    if select:
        keep = keep[(support >= cfg.min_support) & (n_merch >= cfg.min_merchants)]

    def solve(keep: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        if not keep.size and not intercept:
            return np.zeros(0), np.zeros(0), 0.0
        xk = np.column_stack([x[:, keep], np.ones(len(y))]) if intercept else x[:, keep]
        penalty = np.r_[np.full(keep.size, cfg.ridge), [1e-9] if intercept else []]
        xtx, xty = _per_unit(xk, y, w, codes, n)
        full = _ridge(xtx, xty, np.ones(n), penalty)
        boots = np.array([_ridge(xtx, xty, d, penalty) for d in draws]) if len(draws) else full[None]
        beta = full[: keep.size]
        agree = (np.sign(boots[:, : keep.size]) == np.sign(beta)).mean(axis=0)
        return beta, agree, float(full[-1]) if intercept else 0.0

    beta, agree, b0 = solve(keep)
    # State only what is stable across merchants, and refit so that the kept effects are
    # the ones that, composed, explain the data on their own. A refit can unsettle a kept
    # effect in turn, so repeat until every stated policy meets the bar.
    while select and keep.size and (agree < cfg.min_confidence).any():
        keep = keep[agree >= cfg.min_confidence]
        beta, agree, b0 = solve(keep)
    return _Fit([columns[j] for j in keep], beta, agree, support[keep], n_merch[keep]), b0


def _group_policies(rows: pl.DataFrame, group: str, target: str, cfg: PghsPoliciesConfig,
                    rng: np.random.Generator, structure: dict[str, Any] | None
                    ) -> tuple[list[Policy], dict[str, Any]]:
    y, w = log_rate(rows, target)
    merchants, codes = np.unique(rows["merchant_id"].to_numpy(), return_inverse=True)
    n = len(merchants)
    draws = rng.multinomial(n, np.full(n, 1 / n), size=cfg.n_bootstrap).astype(float) \
        if structure is None else np.zeros((0, n))
    y_within = _demean(y, w, codes, n)

    # Responses to the strategy, within merchants.
    if structure is None:
        resp_cols = []
        for f in NUMERIC_STRATEGY:
            cuts = _cut_points(rows[f].to_numpy().astype(float), y_within, w, cfg.max_bins,
                               cfg.min_support)
            resp_cols += _range_columns(f, cuts, with_reference=True)
        resp_cols += [_Column(f"coupon_type#{v}", "coupon_type", (Clause("coupon_type", "==", v),),
                              "coupon_type == none")
                      for v in sorted(set(rows["coupon_type"].to_list()) - {"none"})]
    else:
        resp_cols = [_Column(**c) for c in structure["response"]]
        for c in resp_cols:
            c.clauses = tuple(Clause(**k) if isinstance(k, dict) else k for k in c.clauses)
    x_resp = _matrix(rows, resp_cols)
    resp, _ = _fit_columns(_demean(x_resp, w, codes, n), x_resp, y_within, w, codes, n,
                           resp_cols, cfg, draws, intercept=False, select=structure is None)

    # Habitual level per merchant once its strategies are taken out, explained by its
    # attributes (between merchants, one row per merchant).
    adjusted = y - _matrix(rows, resp.columns) @ resp.beta if resp.columns else y
    per = (rows.select("merchant_id", "merchant_category", *CONTEXT_NUMERIC)
           .with_columns(pl.Series("_a", adjusted), pl.Series("_w", w))
           .group_by("merchant_id", maintain_order=True)
           .agg(pl.col("merchant_category").first(), *[pl.col(c).first() for c in CONTEXT_NUMERIC],
                ((pl.col("_a") * pl.col("_w")).sum() / pl.col("_w").sum()).alias("level"),
                pl.len().alias("rows"), pl.col("_w").sum().alias("weight"))
           .sort("merchant_id"))
    level, mw = per["level"].to_numpy(), per["weight"].to_numpy()
    # Merchant weights are in row units; normalise so the ridge penalty means the same
    # thing at merchant level as at row level.
    mw = mw / mw.mean()
    if structure is None:
        ctx_cols = [_Column(f"merchant_category#{c}", "merchant_category",
                            (Clause("merchant_category", "==", c),), "the group's typical merchant")
                    for c in sorted(per["merchant_category"].unique().to_list())]
        for f in CONTEXT_NUMERIC:
            cuts = _cut_points(per[f].to_numpy().astype(float), level, mw, cfg.max_bins,
                               cfg.min_merchants)
            ctx_cols += _range_columns(f, cuts, with_reference=False)
    else:
        ctx_cols = [_Column(**c) for c in structure["context"]]
        for c in ctx_cols:
            c.clauses = tuple(Clause(**k) if isinstance(k, dict) else k for k in c.clauses)
    x_ctx = _matrix(per, ctx_cols)
    unit = np.arange(per.height)
    ctx_cfg = PghsPoliciesConfig(**{**asdict(cfg), "min_support": 0})
    ctx, b0 = _fit_columns(x_ctx, x_ctx, level, mw, unit, per.height, ctx_cols, ctx_cfg,
                           draws, intercept=True, select=structure is None)
    rows_per = per["rows"].to_numpy()

    out = [Policy(policy_id=f"{group}/{target}/baseline", kind="baseline", group=group,
                  target=target, feature="", conditions=(), effect=b0, support=rows.height,
                  confidence=1.0, n_merchants=n)]
    for j, col in enumerate(ctx.columns):
        covered = _matrix(per, [col])[:, 0] > 0
        center = float(per[col.feature].to_numpy()[covered].mean()) \
            if col.feature in CONTEXT_NUMERIC and covered.any() else None
        out.append(Policy(policy_id=f"{group}/{target}/{col.name}", kind="context", group=group,
                          target=target, feature=col.feature, conditions=col.clauses,
                          effect=float(ctx.beta[j]), support=int(rows_per[covered].sum()),
                          confidence=float(ctx.confidence[j]), reference=col.reference,
                          n_merchants=int(covered.sum()), center=center))
    for j, col in enumerate(resp.columns):
        center = ref_center = None
        if col.feature in NUMERIC_STRATEGY:
            x = rows[col.feature].to_numpy().astype(float)
            covered = _matrix(rows, [col])[:, 0] > 0
            lowest = min(c.value for k in resp_cols if k.feature == col.feature
                         for c in k.clauses if c.op == ">")
            center = float(x[covered].mean()) if covered.any() else None
            ref_center = float(x[x <= lowest].mean()) if (x <= lowest).any() else float(lowest)
        out.append(Policy(policy_id=f"{group}/{target}/{col.name}", kind="response", group=group,
                          target=target, feature=col.feature, conditions=col.clauses,
                          effect=float(resp.beta[j]), support=int(resp.support[j]),
                          confidence=float(resp.confidence[j]), reference=col.reference,
                          n_merchants=int(resp.merchants[j]), center=center,
                          reference_center=ref_center))
    kept = {"response": [asdict(c) for c in resp.columns], "context": [asdict(c) for c in ctx.columns]}
    return out, kept


def mine_policies(rows: pl.DataFrame, targets: Sequence[str], cfg: PghsPoliciesConfig,
                  seed: int = 0) -> PolicySet:
    """Mine baseline, context and response policies per group and target."""
    if rows.is_empty():
        raise ValueError("mine_policies: no training trajectories")
    rng = np.random.default_rng(seed)
    groups = sorted(rows["user_group"].unique().to_list())
    policies: list[Policy] = []
    structure: dict[str, Any] = {}
    for group in groups:
        sub = rows.filter(pl.col("user_group") == group)
        for target in targets:
            found, kept = _group_policies(sub, group, target, cfg, rng, None)
            policies += found
            structure[f"{group}/{target}"] = kept
    return PolicySet(policies=policies, targets=list(targets), groups=groups,
                     meta={"seed": seed, "n_rows": rows.height, "config": asdict(cfg),
                           "n_merchants": rows["merchant_id"].n_unique(), "structure": structure})


def refit_policies(policies: PolicySet, rows: pl.DataFrame) -> PolicySet:
    """The same conditions, their sizes re-estimated on `rows` (support and confidence are
    kept from the original mining). Used for out-of-fold policy features: features whose
    meaning does not change from fold to fold."""
    cfg = PghsPoliciesConfig(**policies.meta.get("config", {}))
    rng = np.random.default_rng(0)
    refit: list[Policy] = []
    original = {p.policy_id: p for p in policies.policies}
    for key, kept in policies.meta["structure"].items():
        group, target = key.split("/")
        sub = rows.filter(pl.col("user_group") == group)
        if sub.is_empty():
            continue
        found, _ = _group_policies(sub, group, target, cfg, rng, kept)
        for p in found:
            o = original.get(p.policy_id)
            refit.append(p if o is None else Policy(**{**asdict(o), "effect": p.effect,
                                                        "conditions": o.conditions}))
    return PolicySet(policies=refit, targets=policies.targets, groups=policies.groups,
                     meta={**policies.meta, "refit_rows": rows.height})


# ---------------------------------------------------------------------------------------
# Applying
# ---------------------------------------------------------------------------------------

POLICY_FEATURES = ("base", "response", "pred", "n_fired", *[f"eff_{f}" for f in EFFECT_FEATURES])


def policy_columns(target: str) -> list[str]:
    return [f"pol_{target}_{name}" for name in POLICY_FEATURES]


def apply_policies(policies: PolicySet, frame: pl.DataFrame, interpolate: bool = True
                   ) -> pl.DataFrame:
    """`frame` (rows with user_group, merchant and strategy features) plus, per target:
    pol_<t>_base (log habitual level: baseline + context), _response (sum of the strategy
    responses), _pred (their sum: the policies' log-rate prediction), _n_fired (response
    policies whose condition holds) and one _eff_<feature> per strategy feature. Numeric
    conditions are read between the policies (`interpolated_effects`) unless `interpolate`
    is off (then each policy is a step). Groups without policies get nulls."""
    groups = frame["user_group"].to_numpy()
    # Columns as arrays once: hundreds of policies read the same few columns.
    needed = {c.feature for p in policies.policies for c in p.conditions}
    cols = {c: frame[c].to_numpy() for c in needed} | {"user_group": groups}
    new = []
    for t in policies.targets:
        covered = np.isin(groups, [p.group for p in policies.select(target=t, kind="baseline")])
        base = np.zeros(frame.height)
        context = {f: np.zeros(frame.height) for f in CONTEXT_NUMERIC}
        eff = {f: np.zeros(frame.height) for f in EFFECT_FEATURES}
        fired = np.zeros(frame.height)
        for p in policies.select(target=t):
            m = p.fires(cols)
            if p.kind == "response":
                eff[p.feature][m] += p.effect
                fired += m
            elif p.feature in context:
                context[p.feature][m] += p.effect
            else:
                base[m] += p.effect
        if interpolate:
            for f, (_, rows, smooth) in interpolated_effects(policies, frame, t).items():
                target_map = eff if f in eff else context
                target_map[f] = np.where(rows, smooth, target_map[f])
        base = base + sum(context.values())
        response = sum(eff.values())
        values = {"base": base, "response": response, "pred": base + response, "n_fired": fired,
                  **{f"eff_{f}": eff[f] for f in EFFECT_FEATURES}}
        new += [pl.Series(f"pol_{t}_{k}", np.where(covered, v, np.nan)).fill_nan(None)
                for k, v in values.items()]
    return frame.with_columns(new)


def interpolated_effects(policies: PolicySet, frame: pl.DataFrame, target: str
                         ) -> dict[str, tuple[str, np.ndarray, np.ndarray]]:
    """Per numeric feature, the effect read *between* the stated policies: each policy's
    effect placed at the typical value of its range and interpolated linearly, flat beyond
    the outermost ones. That is how a reader of "20-30% off: +80%" and "30-40% off: +150%"
    judges 32% off. Response policies are anchored at their reference range (effect 0);
    context policies (merchant rating, price level) need at least two stated ranges.
    Returns feature -> (kind, rows it applies to, effect per row)."""
    groups = frame["user_group"].to_numpy()
    out: dict[str, tuple[str, np.ndarray, np.ndarray]] = {}
    for kind, features in (("response", NUMERIC_STRATEGY), ("context", CONTEXT_NUMERIC)):
        for f in features:
            eff = np.zeros(frame.height)
            applies = np.zeros(frame.height, dtype=bool)
            x_all = frame[f].to_numpy().astype(float)
            for group in policies.groups:
                rows = groups == group
                found = [p for p in policies.select(group, target, kind)
                         if p.feature == f and p.center is not None]
                points = {(p.center, p.effect) for p in found}
                if kind == "response" and found:
                    points.add((found[0].reference_center, 0.0))
                if not rows.any() or len(points) < 2:
                    continue
                xs, ys = zip(*sorted(points), strict=True)
                eff[rows] = np.interp(x_all[rows], xs, ys)
                applies |= rows
            if applies.any():
                out[f] = (kind, applies, eff)
    return out
