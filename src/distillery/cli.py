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


# ---------------------------------------------------------------------------------------
# distillery tasks ...
# ---------------------------------------------------------------------------------------

tasks_app = typer.Typer(
    help="Author tasks from hints with a model (kept only if they validate), and publish the draft format.",
    no_args_is_help=True,
)
app.add_typer(tasks_app, name="tasks")


def _fail(command: str, message: str, code: int = 2) -> None:
    typer.echo(f"distillery {command}: {message}", err=True)
    raise typer.Exit(code=code)


@tasks_app.command("schema")
def tasks_schema(
    env: str = typer.Option("stage", help="A registered environment that declares a draft format."),
    out: str = typer.Option("", show_default=False, help="Write the schema to this file instead of printing it."),
) -> None:
    """Print the JSON Schema of a task draft: what a model writes when it drafts a task.

    Generated from the Task record, the environment's tools, its initial-state schema and its declared check types. Paths have format 'sandbox-path' (relative, no '..').
    """
    import json

    from distillery.io import write_text
    from distillery.registry import RegistryError
    from distillery.tasks.schema import draft_schema

    try:
        text = json.dumps(draft_schema(env), indent=2, ensure_ascii=False) + "\n"
    except (ValueError, RegistryError) as e:
        _fail("tasks schema", str(e))
    if out:
        write_text(text, out)
        typer.echo(f"wrote {out}", err=True)
    else:
        typer.echo(text, nl=False)


@tasks_app.command("draft")
def tasks_draft(
    base_url: str = typer.Option(..., help="The endpoint's API root, e.g. http://127.0.0.1:8000/v1 (vLLM, Ollama, "
                                           "OpenAI, or `distillery serve`)."),
    model: str = typer.Option(..., help="The model name the endpoint serves."),
    hint: list[str] = typer.Option([], help="A hint, e.g. \"the user wants last month's invoices filed\"; repeatable."),
    hints: str = typer.Option("", show_default=False,
                              help="A hints file: .txt (one per line) or .json/.jsonl/.yaml ({text, family?, split?, n?})."),
    env: str = typer.Option("stage", help="The environment the tasks are for."),
    family: str = typer.Option("", show_default=False,
                               help="Family of the --hint tasks (default: drafted_ plus the hint's first words)."),
    split: str = typer.Option("train", help="Split of the kept tasks (a hints file may say per hint)."),
    n: int = typer.Option(1, min=1, help="Drafts (conversations) per hint."),
    max_repairs: int = typer.Option(2, min=0, help="Replies after the first, each told why the last was rejected."),
    probes: int = typer.Option(8, min=0, help="Random-policy episodes per draft; one success rejects it."),
    power_rate: float = typer.Option(0.05, min=0.001, max=0.5,
                                     help="Family-level probes continue until they rule out this random success rate."),
    max_steps: int = typer.Option(15, min=2, help="Step limit of kept tasks."),
    profile: str = typer.Option("default", help="Workspace profile recorded on kept tasks."),
    temperature: float = typer.Option(0.0, min=0.0, help="Sampling temperature (raise it with --n > 1)."),
    max_tokens: int = typer.Option(4096, min=1, help="Most tokens per reply."),
    timeout: float = typer.Option(120.0, min=1.0, help="Seconds per request attempt."),
    max_retries: int = typer.Option(2, min=0, help="The client's retries per request."),
    api_key_env: str = typer.Option("OPENAI_API_KEY", help="Environment variable holding the key (local servers need none)."),
    price_in: float = typer.Option(0.0, min=0.0, help="US dollars per million prompt tokens (for the cost report)."),
    price_out: float = typer.Option(0.0, min=0.0, help="US dollars per million completion tokens."),
    seed: int = typer.Option(0, help="Seed of the random probes and of each request's sampling seed."),
    out: str = typer.Option("data/tasks/drafted", help="Folder of attempts.parquet, kept.parquet and report.json (appended)."),
    report: str = typer.Option("reports/drafted.md", help="The summary page."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Draft tasks from hints with a model; keep the ones that validate, say why the others failed.

    Each reply is screened as data (JSON, schema, sandboxed paths, no code), built in a real sandbox, its reference solution run, its checks verified, and probed with random episodes; a rejection's reasons go back to the model for --max-repairs more tries.

    Every attempt is recorded in OUT/attempts.parquet, kept tasks in OUT/kept.parquet (params.yaml's tasks.drafted merges them into the task table), the summary in REPORT.

    Example: distillery tasks draft --base-url http://127.0.0.1:8000/v1 --model my-model --hint "the user wants last month's invoices filed"
    """
    import json
    from pathlib import Path

    from tqdm.auto import tqdm

    from distillery.agents.openai import Price
    from distillery.envs.base import env_spec
    from distillery.llm import ChatEndpoint
    from distillery.quality import GateError
    from distillery.registry import RegistryError
    from distillery.tasks.draft import DraftConfig, Hint, draft_tasks, read_hints
    from distillery.tasks.drafted import KEPT, read_kept, write_outputs
    from distillery.types import DraftAttempt

    try:
        todo = [Hint(h, family=family, split=split, n=n) for h in hint]
        if hints:
            todo += read_hints(hints, split=split, n=n)
        if not todo:
            _fail("tasks draft", "give at least one --hint or a --hints file")
        cfg = DraftConfig(env=env, max_repairs=max_repairs, probes=probes, power_rate=power_rate,
                          max_steps=max_steps, profile=profile, temperature=temperature, max_tokens=max_tokens,
                          seed=seed, price=Price(price_in, price_out) if price_in or price_out else None)
        endpoint = ChatEndpoint(base_url, model, api_key_env=api_key_env, timeout=timeout, max_retries=max_retries,
                                temperature=temperature, max_tokens=max_tokens)
        env_spec(env).check_profile(profile)
        kept_path = Path(out) / KEPT
        known = read_kept(kept_path, env) if kept_path.exists() else []   # earlier runs' tasks count as duplicates
    except (ValueError, FileNotFoundError, RegistryError) as e:
        _fail("tasks draft", str(e))

    bar = tqdm(total=sum(h.n for h in todo), desc="drafts", unit="draft", disable=not progress)

    def show(a: DraftAttempt) -> None:
        where = f"{a.family} (draft {a.draft_no}, round {a.round})"
        if a.verdict == "kept":
            instruction = json.loads(a.draft_json)["instruction"]
            bar.write(f"KEPT    {a.task_id} (draft {a.draft_no}, round {a.round}): {instruction[:100]}")
        else:
            bar.write(f"{'REJECT ' if a.verdict == 'rejected' else 'ERROR  '} {where}:")
            for kind, reason in zip(a.reason_kinds, a.reasons, strict=True):
                bar.write(f"          {kind}: {reason}")

    try:
        result = draft_tasks(todo, endpoint, cfg, known=known, on_attempt=show, on_draft=bar.update)
    finally:
        bar.close()
        endpoint.close()
    try:
        written = write_outputs(result.attempts, result.kept, result.power, run_id=result.run_id,
                                model=model, out_dir=out, report_md=report)
    except GateError as e:
        _fail("tasks draft", f"the drafted tables fail their gate: {e}", code=1)
    for p in result.power:
        typer.echo(f"family-level probes: {p.sentence()}")
    for line in written.run.lines():
        typer.echo(line)
    typer.echo(f"wrote {written.attempts}, {written.kept} ({written.total.kept} kept in all), "
               f"{written.report_json}, {written.report_md}")
    if result.attempts and all(a.verdict == "error" for a in result.attempts):
        _fail("tasks draft", "the endpoint answered no request (see the errors above)", code=1)


if __name__ == "__main__":
    app()
