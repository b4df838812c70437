"""Merchant-user behaviour trajectories: the schema, its gate, and a synthetic world.

A *trajectory* is one row: one merchant, one period (a week), one user group, the strategy the
merchant ran that week, and the group's funnel counts exposure -> click -> order.

| column | dtype | meaning |
|---|---|---|
| trajectory_id | str | unique row id |
| merchant_id | str | the merchant |
| merchant_category | str | cuisine / shop type (free text, e.g. `pizza`) |
| merchant_rating | f64 | public rating in [0, 5] |
| merchant_price_level | f64 | typical basket before discounts, > 0 |
| period | i64 | week index, >= 0 |
| strategy_id | str | the strategy run that week; rows sharing an id share the strategy features |
| discount_depth | f64 | share off the menu price, in [0, 0.95] |
| delivery_fee | f64 | fee charged per order, >= 0 |
| coupon_type | str | one of `COUPON_TYPES` |
| ad_spend | f64 | promotion spend that week, >= 0 |
| menu_breadth | i64 | items on the menu, >= 1 |
| user_group | str | one of the declared groups |
| exposures | i64 | times the group saw the merchant, >= clicks |
| clicks | i64 | store visits, >= orders |
| orders | i64 | orders placed, >= 0 |

Users bring their own data through this schema (and a groups JSON that describes each group
in words); `generate` builds the default: a synthetic market whose hidden factors the
simulator never sees (weather and holidays, merchant quality, per-group habits and inertia),
and which can say what every group would have done under any strategy (`true_rates`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import polars as pl

from distillery.config import PghsDataConfig
from distillery.quality.suites import (
    Refs,
    Suite,
    a_at_least_b,
    at_least,
    between,
    holds,
    not_null,
    one_of,
    unique,
)

TRAJECTORY_SCHEMA: dict[str, pl.DataType] = {
    "trajectory_id": pl.String(),
    "merchant_id": pl.String(),
    "merchant_category": pl.String(),
    "merchant_rating": pl.Float64(),
    "merchant_price_level": pl.Float64(),
    "period": pl.Int64(),
    "strategy_id": pl.String(),
    "discount_depth": pl.Float64(),
    "delivery_fee": pl.Float64(),
    "coupon_type": pl.String(),
    "ad_spend": pl.Float64(),
    "menu_breadth": pl.Int64(),
    "user_group": pl.String(),
    "exposures": pl.Int64(),
    "clicks": pl.Int64(),
    "orders": pl.Int64(),
}

COUPON_TYPES: tuple[str, ...] = ("none", "fixed", "percent", "free_delivery", "new_user")
NUMERIC_STRATEGY = ("discount_depth", "delivery_fee", "ad_spend", "menu_breadth")
STRATEGY_FEATURES = (*NUMERIC_STRATEGY, "coupon_type")
MERCHANT_FEATURES = ("merchant_category", "merchant_rating", "merchant_price_level")
COUNTS = ("exposures", "clicks", "orders")
CELL_KEYS = ("merchant_id", "strategy_id", "user_group")

# target -> (numerator, denominator) of the rate
RATES: dict[str, tuple[str, str]] = {
    "order_rate": ("orders", "exposures"),
    "ctr": ("clicks", "exposures"),
    "cvr": ("orders", "clicks"),
}

CATEGORIES: dict[str, float] = {   # category -> median basket price
    "fast_food": 15.0, "pizza": 22.0, "asian": 25.0, "dessert": 12.0, "healthy": 28.0,
    "grocery": 40.0,
}


# ---------------------------------------------------------------------------------------
# Groups: what anyone may read about a group, and what only the generator knows
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupDescription:
    """The public picture of a group: what a marketer (or an LLM) would be told.

    `stated_*` are the stereotype in structured form ("low" | "medium" | "high"); a reasoner
    without mined policies has nothing better to go on.
    """

    name: str
    description: str
    stated_price_sensitivity: str = "medium"
    stated_propensity: str = "medium"

    def __post_init__(self) -> None:
        for key in ("stated_price_sensitivity", "stated_propensity"):
            if getattr(self, key) not in ("low", "medium", "high"):
                raise ValueError(f"group {self.name!r}: {key} must be low, medium or high, "
                                 f"not {getattr(self, key)!r}")


@dataclass(frozen=True)
class GroupTruth:
    """How a group really behaves in the synthetic world. Never shown to the simulator.

    CTR: logit = ctr0 + discount_ctr*d + 0.15*[coupon] + ad_ctr*log1p(ad/100) + rating + quality
    CVR: exp(cvr0 + habit[category] + rating + quality + affinity + context)
         * (inertia + (1 - inertia) * exp(response)), where the response to the strategy is
         -elasticity*log(pay ratio) - deep-discount distrust + coupon lift + menu preference.
    `inertia` is the share of the group's orders that are habitual and ignore the strategy.
    """

    share: float
    ctr0: float
    cvr0: float
    habit: dict[str, float]
    inertia: float
    elasticity: float
    deep_penalty: float
    coupon: dict[str, float]
    ad_ctr: float
    menu_pref: float
    weather: float
    holiday: float
    discount_ctr: float


def _logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


BUILTIN_GROUPS: dict[str, tuple[GroupDescription, GroupTruth]] = {
    "students": (
        GroupDescription("students", "University students on tight budgets who order cheap "
                         "comfort food late in the week and hunt for discounts and coupons.",
                         "high", "high"),
        GroupTruth(share=0.24, ctr0=_logit(0.06), cvr0=np.log(0.14),
                   habit={"fast_food": 0.2, "pizza": 0.25, "asian": 0.05, "dessert": 0.1,
                          "healthy": -0.35, "grocery": -0.3},
                   inertia=0.1, elasticity=2.4, deep_penalty=0.0,
                   coupon={"fixed": 0.1, "percent": 0.15, "free_delivery": 0.2, "new_user": 0.35},
                   ad_ctr=0.15, menu_pref=0.1, weather=0.05, holiday=-0.25, discount_ctr=1.5),
    ),
    "office_workers": (
        GroupDescription("office_workers", "Employees ordering weekday lunches to the office "
                         "during short breaks; they sometimes expense a meal.", "medium", "high"),
        GroupTruth(share=0.26, ctr0=_logit(0.05), cvr0=np.log(0.22),
                   habit={"fast_food": 0.1, "asian": 0.2, "healthy": 0.25, "pizza": -0.1,
                          "dessert": -0.3, "grocery": -0.2},
                   inertia=0.6, elasticity=1.0, deep_penalty=0.0,
                   coupon={"fixed": 0.05, "percent": 0.05, "free_delivery": 0.25, "new_user": 0.0},
                   ad_ctr=0.08, menu_pref=-0.05, weather=0.12, holiday=-0.4, discount_ctr=0.6),
    ),
    "families": (
        GroupDescription("families", "Parents ordering for the whole household at weekends, "
                         "with large baskets; keen on a good deal.", "high", "medium"),
        GroupTruth(share=0.22, ctr0=_logit(0.045), cvr0=np.log(0.17),
                   habit={"pizza": 0.3, "grocery": 0.35, "fast_food": 0.0, "asian": 0.05,
                          "dessert": 0.05, "healthy": -0.1},
                   inertia=0.3, elasticity=1.6, deep_penalty=0.3,
                   coupon={"fixed": 0.3, "percent": 0.1, "free_delivery": 0.1, "new_user": 0.0},
                   ad_ctr=0.1, menu_pref=0.35, weather=0.06, holiday=0.35, discount_ctr=1.0),
    ),
    "night_owls": (
        GroupDescription("night_owls", "Late-night snackers who browse the app after 10pm and "
                         "buy on impulse.", "low", "medium"),
        GroupTruth(share=0.16, ctr0=_logit(0.07), cvr0=np.log(0.2),
                   habit={"fast_food": 0.3, "dessert": 0.35, "pizza": 0.2, "asian": 0.0,
                          "healthy": -0.4, "grocery": -0.25},
                   inertia=0.2, elasticity=0.6, deep_penalty=0.0,
                   coupon={"fixed": 0.05, "percent": 0.05, "free_delivery": 0.1, "new_user": 0.05},
                   ad_ctr=0.35, menu_pref=0.15, weather=0.15, holiday=0.1, discount_ctr=0.4),
    ),
    "seniors": (
        GroupDescription("seniors", "Retired customers who are price-conscious, careful with "
                         "money, and order now and then.", "high", "low"),
        GroupTruth(share=0.12, ctr0=_logit(0.035), cvr0=np.log(0.3),
                   habit={"grocery": 0.4, "healthy": 0.35, "asian": 0.05, "fast_food": -0.35,
                          "dessert": -0.1, "pizza": -0.2},
                   inertia=0.8, elasticity=1.5, deep_penalty=0.15,
                   coupon={"fixed": 0.05, "percent": 0.0, "free_delivery": 0.1, "new_user": 0.0},
                   ad_ctr=0.03, menu_pref=-0.1, weather=0.02, holiday=0.2, discount_ctr=0.3),
    ),
}


def groups_to_json(groups: Sequence[GroupDescription]) -> list[dict[str, Any]]:
    return [asdict(g) for g in groups]


def groups_from_json(rows: list[dict[str, Any]], where: str = "groups") -> list[GroupDescription]:
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"{where}: expected a non-empty JSON list of group descriptions")
    out = []
    for i, row in enumerate(rows):
        try:
            out.append(GroupDescription(**row))
        except TypeError as e:
            raise ValueError(f"{where}[{i}]: {e}; keys are name, description, "
                             f"stated_price_sensitivity, stated_propensity") from e
    return out


# ---------------------------------------------------------------------------------------
# The gate
# ---------------------------------------------------------------------------------------


def _derive(frame: pl.DataFrame, refs: Refs) -> pl.DataFrame:
    # A strategy id naming two different feature sets would silently merge cells.
    variants = (frame.group_by("strategy_id")
                .agg(pl.struct(*STRATEGY_FEATURES).n_unique().alias("_n_variants")))
    frame = frame.join(variants, on="strategy_id", how="left", maintain_order="left",
                       nulls_equal=False)
    return frame.with_columns(
        # Kleene logic: a null count is the not-null checks' business, here "not applicable".
        ((pl.col("orders") == 0) | (pl.col("clicks") > 0)).alias("_orders_have_clicks"),
        pl.when(pl.col("strategy_id").is_null()).then(None)
        .otherwise(pl.col("_n_variants") == 1).alias("_strategy_consistent"),
    ).drop("_n_variants")


def trajectory_suite(groups: Sequence[str]) -> Suite:
    """The contract of a trajectories file whose user groups are `groups`."""
    known = tuple(groups)

    def expectations(refs: Refs) -> list:
        return [
            *not_null(*TRAJECTORY_SCHEMA),
            *unique("trajectory_id"),
            *unique("merchant_id", "period", "user_group"),
            *one_of("user_group", known),
            *one_of("coupon_type", COUPON_TYPES),
            *at_least(0, "period", "delivery_fee", "ad_spend", *COUNTS),
            *at_least(1, "menu_breadth"),
            *between("discount_depth", 0, 0.95),
            *between("merchant_rating", 0, 5),
            *at_least(0.01, "merchant_price_level"),
            *a_at_least_b("exposures", "clicks"),
            *a_at_least_b("clicks", "orders"),
            *holds("_orders_have_clicks", "an order needs a click: orders > 0 implies clicks > 0",
                   show=("clicks", "orders")),
            *holds("_strategy_consistent", "rows sharing a strategy_id share its strategy "
                   "features", show=("strategy_id", *STRATEGY_FEATURES)),
        ]

    return Suite(
        name="pghs_trajectories",
        id_columns=("trajectory_id",),
        schema=TRAJECTORY_SCHEMA,
        expectations=expectations,
        derive=_derive,
        description="Merchant-user trajectories: known groups, complete strategies, a funnel "
                    "that never grows (exposures >= clicks >= orders >= 0).",
    )


# ---------------------------------------------------------------------------------------
# Cells: the unit the simulator predicts and the error is measured on
# ---------------------------------------------------------------------------------------


def rate_expr(target: str) -> pl.Expr:
    num, den = RATES[target]
    return (pl.col(num) / pl.col(den)).alias(target)


def to_cells(frame: pl.DataFrame) -> pl.DataFrame:
    """One row per (merchant, strategy, group): counts summed over the periods it ran, the
    rates those sums give, and the merchant and strategy features (constant within a cell)."""
    firsts = [pl.col(c).first() for c in (*MERCHANT_FEATURES, *STRATEGY_FEATURES)]
    return (frame.group_by(*CELL_KEYS, maintain_order=True)
            .agg(*firsts, *[pl.col(c).sum() for c in COUNTS], pl.len().alias("n_periods"))
            .with_columns(*[rate_expr(t) for t in RATES])
            .sort(*CELL_KEYS))


# ---------------------------------------------------------------------------------------
# The synthetic world
# ---------------------------------------------------------------------------------------


@dataclass
class World:
    """Everything the generator drew, hidden factors included. Evaluation reads it to know
    the true counterfactual; the simulator never does."""

    groups: list[str]
    merchants: dict[str, list]          # column -> values (merchant_id, category, rating, ...)
    affinity: list[list[float]]         # [merchant][group] hidden merchant x group affinity
    templates: dict[str, list]          # candidate catalog (ranking test): strategy_id + features
    weather: list[list[float]]          # [city][period]
    holidays: list[int]                 # periods that are holidays
    truths: dict[str, dict[str, Any]] = field(default_factory=dict)
    strategies: dict[str, list] = field(default_factory=dict)   # what merchants ran

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> World:
        return cls(**d)

    def truth(self, group: str) -> GroupTruth:
        return GroupTruth(**self.truths[group])

    def merchant_frame(self) -> pl.DataFrame:
        return pl.DataFrame(self.merchants)

    def template_frame(self) -> pl.DataFrame:
        return pl.DataFrame(self.templates).with_columns(pl.col("menu_breadth").cast(pl.Int64))


def _draw_strategies(rng: np.random.Generator, n: int, lean: np.ndarray | float = 0.0,
                     menu_base: np.ndarray | float = 40.0) -> dict[str, list]:
    """`n` strategies as merchants set them: continuous, so no two merchants share one.
    `lean` > 0 pushes towards deeper discounts and more advertising."""
    lean = np.broadcast_to(np.asarray(lean, dtype=float), (n,))
    d = np.clip(rng.beta(1.4, 4.0, n) * 0.6 + 0.06 * lean, 0.0, 0.6)
    ads = np.exp(rng.normal(4.6 + 0.4 * lean, 1.0)) * (rng.random(n) > 0.2)
    menu = np.clip(np.asarray(menu_base) * np.exp(rng.normal(0, 0.25, n)), 8, 150)
    return {
        "discount_depth": np.round(d, 2).tolist(),
        "delivery_fee": np.round(np.clip(rng.normal(3.0, 1.6, n), 0.0, 7.0), 1).tolist(),
        "coupon_type": rng.choice(COUPON_TYPES, n, p=[.35, .15, .2, .15, .15]).tolist(),
        "ad_spend": np.round(ads, 0).tolist(),
        "menu_breadth": np.round(menu).astype(int).tolist(),
    }


def generate(cfg: PghsDataConfig) -> tuple[pl.DataFrame, list[GroupDescription], World]:
    """The default data: trajectories, the public group descriptions, and the hidden world."""
    unknown = [g for g in cfg.groups if g not in BUILTIN_GROUPS]
    if unknown:
        raise ValueError(f"pghs_data.groups: no built-in profile for {unknown}; built-in: "
                         f"{sorted(BUILTIN_GROUPS)} (bring other groups with your own data)")
    rng = np.random.default_rng(cfg.seed)
    n_m, n_t = cfg.n_merchants, cfg.n_periods

    # Merchants: observed attributes, and a hidden quality the public rating only hints at.
    quality = rng.normal(0, cfg.merchant_effect_sd, n_m)
    z = quality / max(cfg.merchant_effect_sd, 1e-9)
    cats = list(CATEGORIES)
    category = rng.choice(cats, n_m)
    price = np.array([CATEGORIES[c] for c in category]) * np.exp(rng.normal(0, 0.25, n_m))
    rating = np.clip(4.3 + 0.25 * (0.7 * z + 0.7 * rng.normal(0, 1, n_m)), 3.0, 5.0)
    merchants = {
        "merchant_id": [f"m{i:03d}" for i in range(n_m)],
        "merchant_category": category.tolist(),
        "merchant_rating": np.round(rating, 1).tolist(),
        "merchant_price_level": np.round(price, 2).tolist(),
        "city": rng.integers(0, cfg.n_cities, n_m).tolist(),
        "traffic": (cfg.traffic * np.exp(rng.normal(0, 0.5, n_m))).round().tolist(),
        "quality": quality.tolist(),
    }
    affinity = rng.normal(0, cfg.affinity_sd, (n_m, len(cfg.groups)))

    # Context nobody records: rainy spells per city (AR(1)) and a fixed holiday calendar.
    weather = np.zeros((cfg.n_cities, n_t))
    for t in range(n_t):
        prev = weather[:, t - 1] if t else 0.0
        weather[:, t] = 0.6 * prev + 0.8 * rng.normal(0, 1, cfg.n_cities)
    holidays = sorted({p % n_t for p in (0, 1, 13, 26, 34, 47, 50, 51)})

    # Which strategies a merchant runs is not random: weaker merchants (low hidden quality)
    # lean on deep discounts and ads. A fit across merchants confounds the two.
    k_m = cfg.strategies_per_merchant
    menu_base = np.exp(rng.normal(np.log(40), 0.4, n_m))
    own = _draw_strategies(rng, n_m * k_m, np.repeat(-cfg.confounding * z, k_m),
                           np.repeat(menu_base, k_m))
    own["strategy_id"] = [f"m{m:03d}-s{k}" for m in range(n_m) for k in range(k_m)]
    catalog = _draw_strategies(rng, cfg.n_strategy_templates)
    catalog["strategy_id"] = [f"c{i:02d}" for i in range(cfg.n_strategy_templates)]
    world = World(
        groups=list(cfg.groups), merchants=merchants, affinity=affinity.tolist(),
        templates=catalog, strategies=own, weather=weather.tolist(), holidays=holidays,
        truths={g: asdict(BUILTIN_GROUPS[g][1]) for g in cfg.groups},
    )
    schedule = np.zeros((n_m, n_t), dtype=int)
    for m in range(n_m):
        order = rng.permutation(k_m) + m * k_m
        t, k = 0, 0
        while t < n_t:                           # campaigns of 4-10 weeks, in turn
            run = int(rng.integers(4, 11))
            schedule[m, t:t + run] = order[k % k_m]
            t, k = t + run, k + 1

    m_idx = np.repeat(np.arange(n_m), n_t * len(cfg.groups))
    t_idx = np.tile(np.repeat(np.arange(n_t), len(cfg.groups)), n_m)
    g_idx = np.tile(np.arange(len(cfg.groups)), n_m * n_t)
    s_idx = schedule[m_idx, t_idx]
    strategies = {k: np.asarray(v)[s_idx] for k, v in own.items()}

    city = np.asarray(merchants["city"])[m_idx]
    wx = weather[city, t_idx]
    hol = np.isin(t_idx, holidays).astype(float)
    w_sens = np.array([world.truth(g).weather for g in cfg.groups])[g_idx]
    h_eff = np.array([world.truth(g).holiday for g in cfg.groups])[g_idx]
    n = len(m_idx)
    ctx_ctr = 0.3 * w_sens * wx + rng.normal(0, 0.03, n)
    ctx_cvr = w_sens * wx + h_eff * hol + rng.normal(0, 0.03, n)
    ctr, cvr = _rates(world, m_idx, g_idx, strategies, ctx_ctr, ctx_cvr)

    share = np.array([world.truth(g).share for g in cfg.groups])[g_idx]
    traffic = np.asarray(merchants["traffic"])[m_idx] * share * np.exp(0.1 * wx)
    exposures = rng.poisson(traffic)
    clicks = rng.binomial(exposures, ctr)
    orders = rng.binomial(clicks, cvr)

    frame = pl.DataFrame({
        "trajectory_id": [f"m{m:03d}-t{t:03d}-{cfg.groups[g]}" for m, t, g in zip(m_idx, t_idx, g_idx, strict=True)],
        "merchant_id": np.asarray(merchants["merchant_id"])[m_idx],
        "merchant_category": np.asarray(merchants["merchant_category"])[m_idx],
        "merchant_rating": np.asarray(merchants["merchant_rating"])[m_idx],
        "merchant_price_level": np.asarray(merchants["merchant_price_level"])[m_idx],
        "period": t_idx.astype(np.int64),
        "strategy_id": strategies["strategy_id"],
        "discount_depth": strategies["discount_depth"].astype(float),
        "delivery_fee": strategies["delivery_fee"].astype(float),
        "coupon_type": strategies["coupon_type"],
        "ad_spend": strategies["ad_spend"].astype(float),
        "menu_breadth": strategies["menu_breadth"].astype(np.int64),
        "user_group": np.asarray(cfg.groups)[g_idx],
        "exposures": exposures.astype(np.int64),
        "clicks": clicks.astype(np.int64),
        "orders": orders.astype(np.int64),
    }, schema=TRAJECTORY_SCHEMA)
    groups = [BUILTIN_GROUPS[g][0] for g in cfg.groups]
    return frame, groups, world


def _rates(world: World, m_idx: np.ndarray, g_idx: np.ndarray, s: dict[str, np.ndarray],
           ctx_ctr: np.ndarray | float = 0.0, ctx_cvr: np.ndarray | float = 0.0,
           ) -> tuple[np.ndarray, np.ndarray]:
    """True CTR and CVR (see `GroupTruth`) for merchant/group indices and strategy columns."""
    truths = [world.truth(g) for g in world.groups]

    def per_group(attr: str) -> np.ndarray:
        return np.array([getattr(t, attr) for t in truths])[g_idx]

    mer = world.merchants
    quality = np.asarray(mer["quality"])[m_idx]
    rating = np.asarray(mer["merchant_rating"])[m_idx] - 4.3
    price = np.asarray(mer["merchant_price_level"])[m_idx]
    category = np.asarray(mer["merchant_category"])[m_idx]
    affinity = np.asarray(world.affinity)[m_idx, g_idx]
    d = np.asarray(s["discount_depth"], dtype=float)
    fee = np.asarray(s["delivery_fee"], dtype=float)
    coupon = np.asarray(s["coupon_type"])
    ad = np.asarray(s["ad_spend"], dtype=float)
    menu = np.asarray(s["menu_breadth"], dtype=float)

    ctr_logit = (per_group("ctr0") + per_group("discount_ctr") * d + 0.15 * (coupon != "none")
                 + per_group("ad_ctr") * np.log1p(ad / 100) + 0.3 * rating + quality + ctx_ctr)
    habit = np.array([truths[g].habit.get(c, 0.0) for g, c in zip(g_idx, category, strict=True)])
    lift = np.array([truths[g].coupon.get(c, 0.0) for g, c in zip(g_idx, coupon, strict=True)])
    pay_ratio = (price * (1 - d) + np.where(coupon == "free_delivery", 0.0, fee)) / (price + 3.0)
    response = (-per_group("elasticity") * np.log(pay_ratio)
                - per_group("deep_penalty") * np.maximum(0.0, d - 0.35) / 0.1
                + lift + per_group("menu_pref") * np.log(menu / 40.0))
    inertia = per_group("inertia")
    level = np.exp(per_group("cvr0") + habit + 0.25 * rating + 0.5 * quality + affinity + ctx_cvr)
    cvr = np.minimum(level * (inertia + (1 - inertia) * np.exp(response)), 0.95)
    return 1 / (1 + np.exp(-ctr_logit)), cvr


def true_rates(world: World, queries: pl.DataFrame) -> pl.DataFrame:
    """What each group would do, in expectation and in an ordinary week (no rain, no holiday),
    for rows with merchant_id, user_group and the strategy features: adds ctr, cvr and
    order_rate. This is the counterfactual truth no observational data can show."""
    m_of = {m: i for i, m in enumerate(world.merchants["merchant_id"])}
    g_of = {g: i for i, g in enumerate(world.groups)}
    missing = set(queries["merchant_id"].unique()) - set(m_of)
    if missing:
        raise ValueError(f"true_rates: merchants not in this world: {sorted(missing)[:5]}")
    m_idx = np.array([m_of[m] for m in queries["merchant_id"]])
    g_idx = np.array([g_of[g] for g in queries["user_group"]])
    ctr, cvr = _rates(world, m_idx, g_idx, {c: queries[c].to_numpy() for c in STRATEGY_FEATURES})
    return queries.with_columns(pl.Series("ctr", ctr), pl.Series("cvr", cvr),
                                pl.Series("order_rate", ctr * cvr))
