"""PGHS at scale: LightGBM training time on 1M trajectories against scikit-learn's
HistGradientBoostingRegressor, and simulation throughput (strategies per second) batched
against one strategy per call.

Same machine, same run, same rows (the synthetic market grown to 1M trajectories), same
features (group, merchant attributes, strategy), same target (log order rate), same number
of rounds, leaves, learning rate and threads. Rounds alternate the sides (A B A B) and each
side reports its best round: other work on a shared machine slows whichever run it
overlaps, and the best round is the least disturbed.

Simulation: the fitted PGHS simulator (policies, policy-guided LightGBM, rules reasoner,
fusion) scores candidate strategies for one merchant across every user group. Batched = all
candidates in one call; the peer is the same simulator called once per strategy, the way a
naive what-if loop would use it.

    python bench/pghs_scale.py [--rows 1000000] [--rounds 100] [--repeats 2] [--strategies 5000] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import polars as pl

from distillery.config import PghsDataConfig, PghsFitConfig, PghsPoliciesConfig
from distillery.pghs.data import generate
from distillery.pghs.fit import CATEGORICAL, NUMERIC, _features, train_fit_branch
from distillery.pghs.fuse import Fusion
from distillery.pghs.policies import log_rate, mine_policies
from distillery.pghs.reason import MarketPrior
from distillery.pghs.simulator import Simulator, merchants_table
from machine import positive_int  # bench/, the script's own folder


def _world(rows: int, periods: int = 50) -> pl.DataFrame:
    cfg = PghsDataConfig()
    merchants = max(4, round(rows / (periods * len(cfg.groups))))
    frame, _, _ = generate(PghsDataConfig(n_merchants=merchants, n_periods=periods))
    return frame.head(rows)


def bench_training(frame: pl.DataFrame, rounds: int, repeats: int, threads: int) -> None:
    import lightgbm as lgb
    from sklearn.ensemble import HistGradientBoostingRegressor
    from threadpoolctl import threadpool_limits

    levels = {c: sorted(frame[c].unique().to_list()) for c in CATEGORICAL}
    x, _ = _features(frame, levels, None, "order_rate", False)
    y, w = log_rate(frame, "order_rate")
    n_cat = len(CATEGORICAL)
    params = {"objective": "regression", "learning_rate": 0.1, "num_leaves": 31,
              "min_child_samples": 20, "num_threads": threads, "verbose": -1,
              "max_bin": 255, "seed": 0}
    times: dict[str, list[float]] = {"lightgbm": [], "sklearn_hgb": []}
    for _ in range(repeats):
        t = time.perf_counter()
        data = lgb.Dataset(x, label=y, weight=w, categorical_feature=list(range(n_cat)))
        booster = lgb.train(params, data, num_boost_round=rounds)
        times["lightgbm"].append(time.perf_counter() - t)

        t = time.perf_counter()
        hgb = HistGradientBoostingRegressor(
            max_iter=rounds, learning_rate=0.1, max_leaf_nodes=31, min_samples_leaf=20,
            max_bins=255, early_stopping=False, categorical_features=list(range(n_cat)),
            random_state=0)
        with threadpool_limits(threads):          # the same OpenMP thread count as lightgbm
            hgb.fit(x, y, sample_weight=w)
        times["sklearn_hgb"].append(time.perf_counter() - t)
    lg, sk = min(times["lightgbm"]), min(times["sklearn_hgb"])
    fit_err = float(np.sqrt(np.average((booster.predict(x) - y) ** 2, weights=w)))
    sk_err = float(np.sqrt(np.average((hgb.predict(x) - y) ** 2, weights=w)))
    print(f"training on {len(y):,} trajectories x {x.shape[1]} features, {rounds} rounds, "
          f"31 leaves, {threads} threads (best of {repeats}):")
    print(f"  lightgbm      {lg:7.2f} s   ({len(y) * rounds / lg / 1e6:6.1f} M row-rounds/s, "
          f"train rmse {fit_err:.4f})")
    print(f"  sklearn HGB   {sk:7.2f} s   ({len(y) * rounds / sk / 1e6:6.1f} M row-rounds/s, "
          f"train rmse {sk_err:.4f})")
    print(f"  ratio sklearn/lightgbm time: {sk / lg:.2f}x")


def _simulator(frame: pl.DataFrame) -> Simulator:
    from distillery.pghs.data import BUILTIN_GROUPS

    groups = [BUILTIN_GROUPS[g][0] for g in sorted(frame["user_group"].unique().to_list())]
    policies = mine_policies(frame, ["order_rate"], PghsPoliciesConfig())
    fit = train_fit_branch(frame, ["order_rate"], PghsFitConfig(), policies)
    even = {"order_rate": {g.name: {"a": 0.5, "b": 0.5} for g in groups}}
    return Simulator(targets=["order_rate"], groups=groups, prior=MarketPrior.from_rows(frame),
                     policies=policies, fit=fit, fusion=Fusion("weights", even),
                     merchants=merchants_table(frame))


def bench_simulation(n_strategies: int, repeats: int) -> None:
    frame, _, _ = generate(PghsDataConfig())          # the default market: 101 merchants
    sim = _simulator(frame)
    merchant = sim.merchant(sim.merchants["merchant_id"][0])
    rng = np.random.default_rng(0)
    cands = pl.DataFrame({
        "discount_depth": rng.uniform(0, 0.5, n_strategies).round(2),
        "delivery_fee": rng.uniform(0, 6, n_strategies).round(1),
        "coupon_type": rng.choice(["none", "fixed", "percent", "free_delivery", "new_user"], n_strategies),
        "ad_spend": rng.choice([0.0, 100, 300, 800], n_strategies),
        "menu_breadth": rng.integers(10, 120, n_strategies),
    })
    batched, single = [], []
    n_single = min(200, n_strategies)
    for _ in range(repeats):
        t = time.perf_counter()
        sim.rank(sim.simulate(merchant, cands))
        batched.append(n_strategies / (time.perf_counter() - t))
        t = time.perf_counter()
        for i in range(n_single):
            sim.rank(sim.simulate(merchant, cands.slice(i, 1)))
        single.append(n_single / (time.perf_counter() - t))
    b, s = max(batched), max(single)
    groups = len(sim.groups)
    print(f"simulation (rules reasoner + policy-guided LightGBM + fusion, {groups} groups, "
          f"best of {repeats}):")
    print(f"  batched        {b:10,.0f} strategies/s  ({n_strategies:,} candidates in one call, "
          f"{b * groups:,.0f} group predictions/s)")
    print(f"  one per call   {s:10,.0f} strategies/s  ({n_single} calls)")
    print(f"  ratio batched/one-per-call: {b / s:.1f}x")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=positive_int, default=1_000_000,
                    help="trajectories to train on, from the synthetic market grown to fit (default 1,000,000)")
    ap.add_argument("--rounds", type=positive_int, default=100,
                    help="boosting rounds, both sides (default 100)")
    ap.add_argument("--repeats", type=positive_int, default=2,
                    help="timed runs per side, training and simulation; each side's best counts (default 2)")
    ap.add_argument("--strategies", type=positive_int, default=5000,
                    help="candidate strategies the simulator scores in one batched call; the one-per-call "
                         "side scores the first 200 of them (default 5000)")
    # One thread by default: OpenMP workers spin-wait, so on a machine shared with other
    # work more threads than free cores can be many times slower, for both sides.
    ap.add_argument("--threads", type=positive_int, default=1,
                    help=f"OpenMP threads for both (cores: {os.cpu_count()})")
    return ap


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    t = time.perf_counter()
    frame = _world(args.rows)
    print(f"generated {frame.height:,} trajectories ({frame['merchant_id'].n_unique():,} merchants) "
          f"in {time.perf_counter() - t:.1f} s; features: {', '.join((*CATEGORICAL, *NUMERIC))}")
    bench_training(frame, args.rounds, args.repeats, args.threads)
    del frame
    bench_simulation(args.strategies, args.repeats)


if __name__ == "__main__":
    main()
