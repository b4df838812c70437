"""The reasoning branch: predict each group's outcome rates by reasoning, not by fitting.

One interface (`predict(frame) -> frame + pred_<target>`), two backends:

* `rules` (`RulesReasoner`): deterministic. With policies it composes them (baseline +
  context + fired responses, in log space). Without policies it reasons from the textbook:
  market averages, the group's *stated* stereotype, and standard price elasticities applied
  to every user. That is the over-rationalising reasoner the PGHS paper warns about: it
  cannot see habits or inertia (most of a habitual group's orders ignore the strategy), so
  it gets levels wrong and responses too large.
* `llm` (`LLMReasoner`): any OpenAI-compatible endpoint through `distillery.llm.ChatEndpoint`,
  prompted (see `prompts.py`) with the market averages, the group descriptions, the merchant,
  the strategy and, when given, the policies that fire for them.

Without policies either backend is the reasoning-only baseline.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from distillery.config import PghsLLMConfig
from distillery.llm import ChatEndpoint
from distillery.pghs import prompts
from distillery.pghs.data import MERCHANT_FEATURES, STRATEGY_FEATURES, GroupDescription
from distillery.pghs.policies import PolicySet, apply_policies

# What a reasoner "knows" without data: textbook demand response, applied to everyone.
TEXTBOOK = {
    "elasticity": {"low": 0.8, "medium": 1.5, "high": 2.5},   # by stated price sensitivity
    "propensity": {"low": 0.7, "medium": 1.0, "high": 1.3},   # CVR multiplier by stated propensity
    "coupon_lift": 0.08,      # log lift of any coupon on conversion
    "ad_ctr": 0.2,            # log lift of CTR per log1p(ad_spend / 100)
    "discount_ctr": 1.0,      # log lift of CTR per unit of discount (the badge)
    "menu": 0.1,              # log lift of conversion per log of menu breadth
}


@dataclass
class MarketPrior:
    """Market-wide averages from the training trajectories: what anyone may know."""

    rates: dict[str, float]               # ctr, cvr, order_rate: ratios of sums
    strategy_means: dict[str, float]      # mean discount, fee, log1p(ad/100), log(menu/40), coupon share
    group_mix: dict[str, float]           # each group's share of exposures

    @classmethod
    def from_rows(cls, rows: pl.DataFrame) -> MarketPrior:
        s = rows.select(pl.col("exposures", "clicks", "orders").sum()).row(0, named=True)
        means = rows.select(
            pl.col("discount_depth").mean(), pl.col("delivery_fee").mean(),
            (pl.col("ad_spend") / 100).log1p().mean().alias("log_ad"),
            (pl.col("menu_breadth") / 40).log().mean().alias("log_menu"),
            (pl.col("coupon_type") != "none").mean().alias("coupon_share"),
        ).row(0, named=True)
        mix = rows.group_by("user_group").agg(pl.col("exposures").sum())
        total = max(mix["exposures"].sum(), 1)
        return cls(
            rates={"ctr": s["clicks"] / max(s["exposures"], 1),
                   "cvr": s["orders"] / max(s["clicks"], 1),
                   "order_rate": s["orders"] / max(s["exposures"], 1)},
            strategy_means={k: float(v) for k, v in means.items()},
            group_mix={g: e / total for g, e in mix.iter_rows()},
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        r = self.rates
        return (f"ctr {r['ctr']:.4f}, cvr {r['cvr']:.4f}, order_rate {r['order_rate']:.4f}; "
                f"average discount {100 * self.strategy_means['discount_depth']:.0f}%, average "
                f"delivery fee {self.strategy_means['delivery_fee']:.2f}")


def textbook_rates(frame: pl.DataFrame, groups: dict[str, GroupDescription],
                   prior: MarketPrior) -> dict[str, np.ndarray]:
    """ctr, cvr and order_rate as a textbook reasoner would put them: market averages,
    moved by the group's stereotype and by standard elasticities relative to the average
    strategy. No habits, no inertia: every user is a price-responsive optimiser."""
    tb, m = TEXTBOOK, prior.strategy_means
    d = frame["discount_depth"].to_numpy().astype(float)
    fee = np.where(frame["coupon_type"].to_numpy() == "free_delivery", 0.0,
                   frame["delivery_fee"].to_numpy().astype(float))
    price = frame["merchant_price_level"].to_numpy().astype(float)
    ad = np.log1p(frame["ad_spend"].to_numpy().astype(float) / 100)
    menu = np.log(frame["menu_breadth"].to_numpy().astype(float) / 40)
    coupon = (frame["coupon_type"].to_numpy() != "none").astype(float)
    stated = [groups.get(g) for g in frame["user_group"].to_list()]
    elasticity = np.array([tb["elasticity"][g.stated_price_sensitivity] if g else 1.5 for g in stated])
    propensity = np.array([tb["propensity"][g.stated_propensity] if g else 1.0 for g in stated])

    pay = np.log((price * (1 - d) + fee) / (price + m["delivery_fee"]))
    pay_typical = np.log((price * (1 - m["discount_depth"]) + m["delivery_fee"])
                         / (price + m["delivery_fee"]))
    ctr = prior.rates["ctr"] * np.exp(tb["ad_ctr"] * (ad - m["log_ad"])
                                      + tb["discount_ctr"] * (d - m["discount_depth"]))
    cvr = prior.rates["cvr"] * propensity * np.exp(
        -elasticity * (pay - pay_typical) + tb["coupon_lift"] * (coupon - m["coupon_share"])
        + tb["menu"] * (menu - m["log_menu"]))
    ctr, cvr = np.clip(ctr, 1e-6, 1.0), np.clip(cvr, 1e-6, 1.0)
    return {"ctr": ctr, "cvr": cvr, "order_rate": ctr * cvr}


class RulesReasoner:
    """Deterministic reasoner: composes policies, or (without) reasons from the textbook."""

    backend = "rules"

    def __init__(self, groups: Sequence[GroupDescription], prior: MarketPrior,
                 targets: Sequence[str], policies: PolicySet | None = None) -> None:
        self.groups = {g.name: g for g in groups}
        self.prior = prior
        self.targets = list(targets)
        self.policies = policies

    @property
    def guided(self) -> bool:
        return self.policies is not None

    def predict(self, frame: pl.DataFrame) -> pl.DataFrame:
        book = textbook_rates(frame, self.groups, self.prior)
        if self.policies is None:
            return frame.with_columns([pl.Series(f"pred_{t}", book[t]) for t in self.targets])
        composed = apply_policies(self.policies, frame)
        out = []
        for t in self.targets:
            pred = composed[f"pol_{t}_pred"].to_numpy().astype(float)
            # A group the policies do not cover (none of its trajectories in training) falls
            # back to the textbook rather than to nothing.
            out.append(pl.Series(f"pred_{t}", np.where(np.isfinite(pred), np.exp(pred), book[t])))
        return frame.with_columns(out)


class LLMError(RuntimeError):
    """An endpoint reply that could not be turned into rates, even after one retry."""


@dataclass(frozen=True)
class _Request:
    key: tuple
    merchant: dict[str, Any]
    strategy: dict[str, Any]
    groups: tuple[str, ...]


class LLMReasoner:
    """Reasoning by an LLM behind any OpenAI-compatible endpoint (vLLM, SGLang, Ollama,
    `distillery serve`). One request per merchant and strategy covers every group.

    A request that fails after the client's retries raises `distillery.llm.EndpointError`;
    `client`, when given, is used instead of the client built from `cfg`."""

    backend = "llm"

    def __init__(self, groups: Sequence[GroupDescription], prior: MarketPrior,
                 targets: Sequence[str], cfg: PghsLLMConfig, policies: PolicySet | None = None,
                 client: Any = None, progress: bool = True) -> None:
        self.groups = {g.name: g for g in groups}
        self.prior = prior
        self.targets = list(targets)
        self.cfg = cfg
        self.policies = policies
        self.progress = progress
        self._cache: dict[str, dict[str, dict[str, float]]] = {}
        self.endpoint = ChatEndpoint(cfg.base_url, cfg.model, cfg.api_key_env, cfg.timeout_s, cfg.max_retries,
                                     temperature=cfg.temperature, max_tokens=cfg.max_tokens, client=client)

    @property
    def guided(self) -> bool:
        return self.policies is not None

    # -- prompts --------------------------------------------------------------------------

    def messages(self, req: _Request) -> list[dict[str, str]]:
        m, s = req.merchant, req.strategy
        group_lines = "\n".join(prompts.GROUP_LINE.format(name=g, description=self.groups[g].description
                                                          if g in self.groups else "(no description)")
                                for g in req.groups)
        policy_block = ""
        if self.policies is not None:
            probe = pl.DataFrame([{**m, **s, "user_group": g} for g in req.groups])
            lines = [p.text() for p in self.policies.policies
                     if p.target in self.targets and p.fires(probe).any()]
            policy_block = prompts.POLICIES.format(policies="\n".join(lines))
        user = prompts.USER.format(
            prior=self.prior.text(), merchant_id=m["merchant_id"],
            merchant_category=m["merchant_category"], merchant_rating=m["merchant_rating"],
            merchant_price_level=m["merchant_price_level"],
            discount_pct=100 * s["discount_depth"], delivery_fee=s["delivery_fee"],
            coupon_type=s["coupon_type"], ad_spend=s["ad_spend"], menu_breadth=s["menu_breadth"],
            groups=group_lines, policies=policy_block,
            targets=", ".join(prompts.TARGET_TEXT[t] for t in self.targets),
            target_keys=", ".join(f'"{t}": <rate>' for t in self.targets))
        return [{"role": "system", "content": prompts.SYSTEM}, {"role": "user", "content": user}]

    # -- calls ----------------------------------------------------------------------------

    def _ask(self, req: _Request) -> dict[str, dict[str, float]]:
        messages = self.messages(req)
        key = json.dumps(messages, sort_keys=True)
        if key in self._cache:
            return self._cache[key]
        content = self.endpoint.complete(messages)
        try:
            parsed = parse_reply(content, req.groups, self.targets)
        except ValueError as e:
            retry = [*messages, {"role": "assistant", "content": content},
                     {"role": "user", "content": prompts.RETRY.format(error=e)}]
            content = self.endpoint.complete(retry)
            try:
                parsed = parse_reply(content, req.groups, self.targets)
            except ValueError as e2:
                raise LLMError(f"pghs llm reasoner ({self.cfg.base_url}, model {self.cfg.model}): "
                               f"merchant {req.merchant['merchant_id']}, strategy {req.strategy}: "
                               f"{e2}; reply began {content[:200]!r}") from e2
        self._cache[key] = parsed
        return parsed

    def predict(self, frame: pl.DataFrame) -> pl.DataFrame:
        cols = ["merchant_id", *MERCHANT_FEATURES, *STRATEGY_FEATURES]
        reqs: dict[tuple, _Request] = {}
        for row in frame.select(*cols, "user_group").iter_rows(named=True):
            key = tuple(row[c] for c in cols)
            m = {c: row[c] for c in ("merchant_id", *MERCHANT_FEATURES)}
            s = {c: row[c] for c in STRATEGY_FEATURES}
            old = reqs.get(key)
            groups = (*old.groups, row["user_group"]) if old else (row["user_group"],)
            reqs[key] = _Request(key, m, s, tuple(dict.fromkeys(groups)))
        with ThreadPoolExecutor(max_workers=max(self.cfg.concurrency, 1)) as pool:
            answers = list(tqdm(pool.map(self._ask, reqs.values()), total=len(reqs),
                                desc=f"llm reasoner ({'policies' if self.guided else 'no policies'})",
                                disable=not self.progress, leave=False))
        by_key = dict(zip(reqs, answers, strict=True))
        out = {t: [] for t in self.targets}
        for row in frame.select(*cols, "user_group").iter_rows(named=True):
            answer = by_key[tuple(row[c] for c in cols)][row["user_group"]]
            for t in self.targets:
                out[t].append(answer[t])
        return frame.with_columns([pl.Series(f"pred_{t}", out[t], dtype=pl.Float64)
                                   for t in self.targets])


_JSON = re.compile(r"\{.*\}", re.DOTALL)


def parse_reply(content: str, groups: Sequence[str], targets: Sequence[str]
                ) -> dict[str, dict[str, float]]:
    """{"groups": {group: {target: rate}}} -> {group: {target: rate}}; ValueError says what
    is wrong (no JSON, a missing group or rate, a rate outside (0, 1])."""
    match = _JSON.search(content or "")
    if not match:
        raise ValueError("no JSON object in the reply")
    try:
        data = json.loads(match.group(0))
    except json.JSONDecodeError as e:
        raise ValueError(f"invalid JSON ({e.msg})") from e
    table = data.get("groups", data) if isinstance(data, dict) else None
    if not isinstance(table, dict):
        raise ValueError('expected {"groups": {...}}')
    out: dict[str, dict[str, float]] = {}
    for g in groups:
        entry = table.get(g)
        if not isinstance(entry, dict):
            raise ValueError(f"group {g!r} missing")
        out[g] = {}
        for t in targets:
            value = entry.get(t)
            if isinstance(value, bool) or not isinstance(value, int | float) or \
                    not math.isfinite(value) or not 0 < value <= 1:
                raise ValueError(f"group {g!r}: {t} must be a rate in (0, 1], got {value!r}")
            out[g][t] = float(value)
    return out


def make_reasoner(backend: str, groups: Sequence[GroupDescription], prior: MarketPrior,
                  targets: Sequence[str], policies: PolicySet | None = None,
                  llm: PghsLLMConfig | None = None, client: Any = None,
                  progress: bool = True) -> RulesReasoner | LLMReasoner:
    if backend == "rules":
        return RulesReasoner(groups, prior, targets, policies)
    if backend == "llm":
        return LLMReasoner(groups, prior, targets, llm or PghsLLMConfig(), policies, client,
                           progress)
    raise ValueError(f"reasoning backend must be 'rules' or 'llm', not {backend!r}")
