"""`distillery ...`: the command line. Each command is a thin wrapper over the library.

Heavy imports (torch, GX, Prefect) happen inside commands, so `distillery --help` is fast.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="distillery",
    help="A data-versioned pipeline that turns agent trajectories into better agents.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


@app.command()
def version() -> None:
    """Print the installed version."""
    from distillery import __version__

    typer.echo(__version__)


@app.command()
def serve(
    model_dir: str = typer.Argument(..., help="A model directory (lm.model.save_model_dir) or a local HF checkpoint."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind; 0.0.0.0 exposes it to the network."),
    port: int = typer.Option(8000, help="TCP port."),
    api_key: str = typer.Option("", envvar="DISTILLERY_API_KEY", show_default=False,
                                help="Require 'Authorization: Bearer KEY' on /v1 routes."),
    max_batch: int = typer.Option(32, min=1, help="Most requests decoded together; 1 turns batching off."),
    batch_wait_ms: float = typer.Option(5.0, min=0, help="How long the first request waits for others to join its batch."),
    model_name: str = typer.Option("", show_default=False, help="Name clients send as `model` (default: MODEL_DIR as given)."),
    device: str = typer.Option("auto", help="auto (CUDA if present), cpu, cuda, cuda:1, ..."),
    log_level: str = typer.Option("info", help="debug | info | warning | error"),
) -> None:
    """Serve a model as an OpenAI-compatible endpoint (/v1/chat/completions, /v1/models, /health).

    Any OpenAI client can then use it, e.g. the `openai` policy with
    base_url http://127.0.0.1:8000/v1 and model MODEL_DIR.
    """
    from distillery.serve import ServeError
    from distillery.serve import serve as run_server

    try:
        run_server(model_dir, host=host, port=port, api_key=api_key or None, max_batch=max_batch,
                   batch_wait_ms=batch_wait_ms, model_name=model_name or None, device=device,
                   log_level=log_level)
    except ServeError as e:
        typer.echo(f"distillery serve: {e}", err=True)
        raise typer.Exit(code=2) from e


@app.command()
def simulate(
    merchant: str = typer.Option("", help="A merchant id known to the simulator (see models/pghs/merchants.parquet)."),
    category: str = typer.Option("", help="For a new merchant: its category (e.g. pizza)."),
    rating: float = typer.Option(-1.0, help="For a new merchant: its rating in [0, 5]."),
    price_level: float = typer.Option(-1.0, help="For a new merchant: its typical basket price."),
    strategies: str = typer.Option("", help="A CSV, JSON (list of objects) or parquet file of candidate strategies."),
    strategy: list[str] = typer.Option([], help='A candidate as key=value pairs, e.g. "discount_depth=0.2,coupon_type=percent"; repeatable.'),
    discount: float = typer.Option(-1.0, help="One candidate from flags: discount depth (0-0.95)."),
    delivery_fee: float = typer.Option(-1.0, help="One candidate from flags: delivery fee."),
    coupon: str = typer.Option("", help="One candidate from flags: none | fixed | percent | free_delivery | new_user."),
    ad_spend: float = typer.Option(-1.0, help="One candidate from flags: weekly ad spend."),
    menu_breadth: int = typer.Option(-1, help="One candidate from flags: menu items."),
    model_dir: str = typer.Option("models/pghs", help="The fitted simulator (written by `dvc repro pghs`)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Simulate each user group's response to candidate strategies of a merchant, and rank them (PGHS)."""
    import json

    import polars as pl

    from distillery.pghs.simulator import (
        STRATEGY_DEFAULTS,
        Simulator,
        parse_strategy,
        read_strategies,
    )

    def fail(message: str) -> None:
        typer.echo(f"distillery simulate: {message}", err=True)
        raise typer.Exit(code=2)

    try:
        sim = Simulator.load(model_dir)
        if merchant and not (category or rating >= 0 or price_level >= 0):
            m = sim.merchant(merchant)
        elif category and rating >= 0 and price_level > 0:
            m = {"merchant_id": merchant or "new", "merchant_category": category,
                 "merchant_rating": rating, "merchant_price_level": price_level}
        else:
            fail("name a known --merchant, or give --category, --rating and --price-level")
        frames = [read_strategies(strategies)] if strategies else []
        if strategy:
            frames.append(pl.DataFrame([parse_strategy(s) for s in strategy]))
        flags = {"discount_depth": discount, "delivery_fee": delivery_fee, "coupon_type": coupon,
                 "ad_spend": ad_spend, "menu_breadth": menu_breadth}
        given = {k: v for k, v in flags.items() if v not in (-1, -1.0, "")}
        if given:
            frames.append(pl.DataFrame([{**STRATEGY_DEFAULTS, **given}]))
        if not frames:
            fail("give candidate strategies: --strategies FILE, --strategy k=v,..., or the strategy flags")
        cands = pl.concat([f.select(sorted(f.columns)) for f in frames], how="diagonal_relaxed")
        outcomes = sim.simulate(m, cands)
    except (FileNotFoundError, KeyError, ValueError) as e:
        fail(str(e.args[0]) if isinstance(e, KeyError) else str(e))
    ranking = sim.rank(outcomes)
    t = sim.headline
    cols = ["strategy_id", "user_group", *[c for x in sim.targets for c in (f"reason_{x}", f"fit_{x}", f"pred_{x}")]]
    if as_json:
        typer.echo(json.dumps({"merchant": m, "outcomes": outcomes.select(cols).to_dicts(),
                               "ranking": ranking.to_dicts()}, indent=2, default=str))
        return
    typer.echo(f"merchant {m['merchant_id']}: {m['merchant_category']}, rating {m['merchant_rating']}, "
               f"price level {m['merchant_price_level']}")
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=220, fmt_str_lengths=40,
                   tbl_hide_dataframe_shape=True, float_precision=4,
                   tbl_hide_column_data_types=True):
        typer.echo("\npredicted group-level rates (reason_ / fit_ = branches, pred_ = fused):")
        typer.echo(str(outcomes.select(cols)))
        typer.echo(f"\nranking by group-mix-weighted {t}:")
        typer.echo(str(ranking))


if __name__ == "__main__":
    app()
