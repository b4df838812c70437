"""`distillery ...`: the command line. Each command is a thin wrapper over the library.

Heavy imports (torch, GX, Prefect) happen inside commands, so `distillery --help` is fast.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any

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
    port: int = typer.Option(8000, min=0, max=65535, help="TCP port."),
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

    if log_level.lower() not in ("debug", "info", "warning", "error", "critical"):
        _fail("serve", f"--log-level {log_level}: expected one of debug, info, warning, error, critical")
    _check_finite("serve", batch_wait_ms=batch_wait_ms)
    try:
        run_server(model_dir, host=host, port=port, api_key=api_key or None, max_batch=max_batch,
                   batch_wait_ms=batch_wait_ms, model_name=model_name or None, device=device,
                   log_level=log_level)
    except ServeError as e:
        typer.echo(f"distillery serve: {e}", err=True)
        raise typer.Exit(code=2) from e


@app.command()
def simulate(
    merchant: str = typer.Option("", show_default=False,
                                 help="A merchant id known to the simulator (see models/pghs/merchants.parquet)."),
    category: str | None = typer.Option(None, show_default=False, help="For a new merchant: its category, one the simulator was fitted on (e.g. pizza)."),
    rating: float | None = typer.Option(None, show_default=False, help="For a new merchant: its rating in [0, 5]."),
    price_level: float | None = typer.Option(None, show_default=False,
                                             help="For a new merchant: its typical basket price (above 0)."),
    strategies: str = typer.Option("", show_default=False,
                                   help="A CSV, JSON (list of objects), JSON Lines (.jsonl/.ndjson, an object a line) or parquet file of "
                                        "candidate strategies, told by its suffix in any case; fields left out, null or empty take "
                                        "the defaults."),
    strategy: list[str] = typer.Option([], show_default=False, help='A candidate as key=value pairs, e.g. '
                                       '"discount_depth=0.2,coupon_type=percent"; repeatable.'),
    discount: float | None = typer.Option(None, show_default=False,
                                          help="One candidate from flags: discount depth in [0, 0.95]."),
    delivery_fee: float | None = typer.Option(None, show_default=False, help="One candidate from flags: delivery "
                                                                            "fee (>= 0)."),
    coupon: str | None = typer.Option(None, show_default=False, help="One candidate from flags: none | fixed | "
                                                                     "percent | free_delivery | new_user."),
    ad_spend: float | None = typer.Option(None, show_default=False, help="One candidate from flags: weekly ad "
                                                                        "spend (>= 0)."),
    menu_breadth: int | None = typer.Option(None, show_default=False, help="One candidate from flags: menu items "
                                                                          "(>= 1)."),
    model_dir: str = typer.Option("models/pghs", help="The fitted simulator (written by `dvc repro pghs`)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Simulate each user group's response to candidate strategies of a merchant, and rank them (PGHS).

    The merchant is a known --merchant, or a new one given by --category, --rating and --price-level (named --merchant if given). Flags left out of a flag candidate (--discount, --delivery-fee, --coupon, --ad-spend, --menu-breadth) take the simulator's defaults.
    """
    import json
    import math

    import polars as pl

    from distillery.pghs.simulator import (
        COUPON_TYPES,
        STRATEGY_DEFAULTS,
        Simulator,
        check_candidates,
        parse_strategy,
        read_strategies,
        strategy_value_problem,
    )

    def fail(message: str) -> None:
        typer.echo(f"distillery simulate: {message}", err=True)
        raise typer.Exit(code=2)

    # The options first, before the simulator is loaded: each mistake named by its option.
    new = {"--category": category, "--rating": rating, "--price-level": price_level}
    if rating is not None and not 0 <= rating <= 5:
        fail(f"--rating {rating:g}: a rating is in [0, 5]")
    if price_level is not None and not (math.isfinite(price_level) and price_level > 0):
        fail(f"--price-level {price_level:g}: a price level is a basket price above 0")
    if category is not None and not category.strip():
        fail("--category is empty: give the new merchant's category (e.g. pizza)")
    missing = [k for k, v in new.items() if v is None]
    if len(missing) < len(new) and missing:
        fail(f"a new merchant needs --category, --rating and --price-level: {', '.join(missing)} not given")
    if not merchant and missing:
        fail("name a known --merchant, or give --category, --rating and --price-level")
    flags = {"discount_depth": ("--discount", discount), "delivery_fee": ("--delivery-fee", delivery_fee),
             "ad_spend": ("--ad-spend", ad_spend), "menu_breadth": ("--menu-breadth", menu_breadth)}
    for key, (flag, value) in flags.items():
        why = strategy_value_problem(key, value) if value is not None else None
        if why:
            fail(f"{flag} {value:g}: {why}")
    if coupon is not None and coupon not in COUPON_TYPES:
        fail(f"--coupon {coupon!r}: coupon_type must be one of {list(COUPON_TYPES)}")
    given = {key: value for key, (_, value) in flags.items() if value is not None}
    if coupon is not None:
        given["coupon_type"] = coupon

    try:
        sim = Simulator.load(model_dir)
        if missing:
            m = sim.merchant(merchant)
        else:
            m = {"merchant_id": merchant or "new", "merchant_category": category,
                 "merchant_rating": rating, "merchant_price_level": price_level}
        frames = [read_strategies(strategies)] if strategies else []
        if strategy:
            frames.append(pl.DataFrame([parse_strategy(s) for s in strategy]))
        if given:
            frames.append(pl.DataFrame([{**STRATEGY_DEFAULTS, **given}]))
        if not frames:
            fail("give candidate strategies: --strategies FILE, --strategy k=v,..., or the strategy flags")
        cands = check_candidates(pl.concat([f.select(sorted(f.columns)) for f in frames],
                                           how="diagonal_relaxed"))
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
    help="Generate and validate tasks (`distillery tasks --env E --family F`), author tasks from hints with a "
         "model (`draft`), and publish the draft format (`schema`).\n\n"
         "With --env, tasks are drafted, built, solved by their reference solution and probed with random "
         "episodes as the `tasks` stage does, into OUT: tasks.parquet (gated), validation.json (every rejection "
         "and why), quality/ and quarantine/ (the gate's reports). A failed run exits 1 and writes only "
         "OUT/failed/: what OUT already held stays as the last successful run left it. A successful run "
         "replaces it and removes OUT/failed/.",
    no_args_is_help=True,
)
app.add_typer(tasks_app, name="tasks")


def _fail(command: str, message: str, code: int = 2) -> None:
    typer.echo(f"distillery {command}: {message}", err=True)
    raise typer.Exit(code=code)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's stop, `timeout`, `kill`) while a long command runs: handled as
    Ctrl-C is, so sandboxes are closed and the journal says how to resume."""


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    def stop(signum: int, frame: object) -> None:
        raise Terminated

    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:          # not the main thread: leave the signal alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupted(command: str, e: KeyboardInterrupt, what_then: str) -> None:
    """End a command stopped by Ctrl-C (exit 130) or SIGTERM (143), saying what is kept."""
    terminated = isinstance(e, Terminated)
    _fail(command, f"{'terminated' if terminated else 'interrupted'} {what_then}", code=143 if terminated else 130)


def _resume_later(done: str, journal: object) -> str:
    return f"after {done}; the finished ones are kept in {journal}: run the same command again to resume"


def _refuse_journal(command: str, e: Exception) -> None:
    _fail(command, f"{e}. Run that command again to finish it, pass --no-resume to discard it, or choose "
                   "another --out")


def _check_finite(command: str, **options: float) -> None:
    """Refuse an infinite number where a finite one is meant (typer's bounds let `inf` through)."""
    import math

    for name, value in options.items():
        if not math.isfinite(value):
            _fail(command, f"--{name.replace('_', '-')} {value}: expected a finite number")


def _check_out_folder(command: str, out: str, option: str = "--out") -> None:
    """Refuse an output folder that cannot be written before any work is done: an existing
    file, or a path whose nearest existing folder is not writable."""
    import os
    from pathlib import Path

    path = Path(out)
    if path.exists() and not path.is_dir():
        _fail(command, f"{option} {out}: exists and is not a folder")
    existing = next((p for p in (path, *path.absolute().parents) if p.exists()), None)
    if existing is not None and (not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK)):
        _fail(command, f"{option} {out}: cannot write there ({existing} is not a writable folder)")


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
        try:
            write_text(text, out)
        except OSError as e:
            _fail("tasks schema", f"cannot write {out}: {e.strerror or e}")
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
    resume: bool = typer.Option(True, help="Keep the drafts an interrupted run of the same settings left in "
                                           "OUT/drafts.partial.jsonl and ask only for the rest (--no-resume: "
                                           "discard them)."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Draft tasks from hints with a model; keep the ones that validate, say why the others failed.

    Each reply is screened as data (JSON, schema, sandboxed paths, no code), built in a real sandbox, its reference solution run, its checks verified, and probed with random episodes; a rejection's reasons go back to the model for --max-repairs more tries.

    Every attempt is recorded in OUT/attempts.parquet, kept tasks in OUT/kept.parquet (params.yaml's tasks.drafted merges them into the task table), the summary in REPORT.

    Each draft is journaled in OUT/drafts.partial.jsonl as it ends: an interrupted run (Ctrl-C, a dropped connection, a killed process) resumes where it stopped when the same command is run again. Drafts the endpoint did not answer are asked again.

    Example: distillery tasks draft --base-url http://127.0.0.1:8000/v1 --model my-model --hint "the user wants last month's invoices filed"
    """
    import json
    from pathlib import Path

    from tqdm.auto import tqdm

    from distillery.agents.openai import Price
    from distillery.envs.base import env_spec
    from distillery.journal import JournalMismatch, open_journal
    from distillery.llm import ChatEndpoint
    from distillery.quality import GateError
    from distillery.registry import RegistryError
    from distillery.tasks.draft import (
        DRAFT_JOURNAL,
        DraftConfig,
        FinishedDraft,
        Hint,
        draft_journal_header,
        draft_tasks,
        finished_drafts,
        new_run_id,
        read_hints,
    )
    from distillery.tasks.drafted import check_out_dir, write_outputs
    from distillery.tasks.schema import draft_format
    from distillery.types import DraftAttempt

    _check_finite("tasks draft", timeout=timeout, price_in=price_in, price_out=price_out)
    _check_out_folder("tasks draft", out)
    if Path(report).is_dir():
        _fail("tasks draft", f"--report {report}: a folder; give the summary page's file (e.g. {report}/drafted.md)")
    _check_out_folder("tasks draft", str(Path(report).parent), option=f"--report {report}: its folder")
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
        draft_format(env)       # an environment that declares none is named here, not in a traceback
        known = check_out_dir(out, env)     # earlier runs' kept tasks count as duplicates
        journal = open_journal(Path(out) / DRAFT_JOURNAL, draft_journal_header(todo, cfg, endpoint),
                               FinishedDraft.from_line, what="drafts", resume=resume)
    except JournalMismatch as e:
        _refuse_journal("tasks draft", e)
    except (ValueError, FileNotFoundError, RegistryError) as e:
        _fail("tasks draft", str(e))
    done = finished_drafts(journal.records)
    # The resumed drafts' seeds and attempt ids come from the interrupted run's id.
    run_id = journal.records[0].attempts[0].run_id if journal.records else new_run_id()
    total = sum(h.n for h in todo)

    bar = tqdm(total=total, desc="drafts", unit="draft", disable=not progress)
    if done or journal.damaged:
        bar.write(journal.resuming(len(done)))

    def show(a: DraftAttempt) -> None:
        where = f"{a.family} (draft {a.draft_no}, round {a.round})"
        if a.verdict == "kept":
            instruction = json.loads(a.draft_json)["instruction"]
            bar.write(f"KEPT    {a.task_id} (draft {a.draft_no}, round {a.round}): {instruction[:100]}")
        else:
            bar.write(f"{'REJECT ' if a.verdict == 'rejected' else 'ERROR  '} {where}:")
            for kind, reason in zip(a.reason_kinds, a.reasons, strict=True):
                bar.write(f"          {kind}: {reason}")

    passed = 0

    def advance(n: int) -> None:
        nonlocal passed
        passed += n
        bar.update(n)

    def finished(draft: FinishedDraft) -> None:
        journal.append(draft.to_line())

    try:
        with _terminate_as_interrupt():
            result = draft_tasks(todo, endpoint, cfg, known=known, run_id=run_id, done=done, on_attempt=show,
                                 on_draft=advance, on_finished=finished)
    except KeyboardInterrupt as e:
        bar.close()
        _interrupted("tasks draft", e, _resume_later(f"{passed} of {total} drafts", journal.path))
    finally:
        bar.close()
        endpoint.close()
    try:
        written = write_outputs(result.attempts, result.kept, result.power, run_id=result.run_id,
                                model=model, out_dir=out, report_md=report)
    except GateError as e:
        _fail("tasks draft", f"the drafted tables fail their gate: {e}", code=1)
    except (ValueError, OSError) as e:
        why = _os_error_line(e) if isinstance(e, OSError) else str(e)
        _fail("tasks draft", f"{why}; the drafts are kept in {journal.path}: run the same command again once "
                             "that is mended", code=1)
    journal.remove()
    for p in result.power:
        typer.echo(f"family-level probes: {p.sentence()}")
    for line in written.run.lines():
        typer.echo(line)
    typer.echo(f"wrote {written.attempts}, {written.kept} ({written.total.kept} kept in all), "
               f"{written.report_json}, {written.report_md}")
    if result.attempts and all(a.verdict == "error" for a in result.attempts):
        _fail("tasks draft", "the endpoint answered no request (see the errors above)", code=1)


# ---------------------------------------------------------------------------------------
# distillery tasks --env ... --family ...   (generate and validate)
# ---------------------------------------------------------------------------------------


@tasks_app.callback(invoke_without_command=True)
def tasks_generate(
    ctx: typer.Context,
    env: str = typer.Option("", show_default=False, help="Generate tasks of this registered environment."),
    family: list[str] = typer.Option([], show_default=False,
                                     help="A family of --env to generate (repeatable; default: every family of --env)."),
    n_train: int = typer.Option(5, min=0, help="Kept train tasks per family."),
    n_test: int = typer.Option(3, min=0, help="Kept test tasks per family."),
    seed: int = typer.Option(0, help="Master seed: every task's own seed derives from it."),
    max_steps: int = typer.Option(15, min=2, help="Step limit of every task."),
    random_probes: int = typer.Option(3, min=0, help="Random-policy episodes a task must survive unsolved."),
    max_attempts_factor: int = typer.Option(4, min=1, help="Drafts a family may try per wanted task before it "
                                                           "fails (the `tasks` stage's tasks.max_attempts_factor)."),
    out: str = typer.Option("data/tasks/generated", help="Folder of tasks.parquet (gated), validation.json, quality/ "
                                                         "and quarantine/; a failed run writes OUT/failed/ instead."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Generate tasks of an environment's families and keep those that validate.

    With --env (and optionally --family): draft tasks, build each in a real environment, run its reference solution, verify its checks and probe it with random episodes, exactly as the `tasks` stage does; write OUT/tasks.parquet (gated by the tasks suite), OUT/validation.json (every rejection and why) and the gate's OUT/quality/ and OUT/quarantine/. `distillery eval --tasks OUT/tasks.parquet` benchmarks on them.

    A failed run (a family that does not validate, tasks that fail their gate) exits 1 and writes only OUT/failed/ (its validation.json; the gate's quality/ and quarantine/ when the gate failed): OUT's tasks.parquet, validation.json, quality/ and quarantine/ stay as the last successful run wrote them. A successful run replaces those together and removes OUT/failed/.

    Example: distillery tasks --env stage --family file_invoice --n-test 5
    """
    if ctx.invoked_subcommand is not None:
        if env or family:
            _fail("tasks", f"--env/--family generate tasks; give them without a subcommand, or after "
                           f"`{ctx.invoked_subcommand}`")
        return
    if not env:
        # Typed on the command line (typer may vendor its own click: compare the source by name).
        given = [p.opts[0] for p in ctx.command.params if p.name and p.name != "progress"
                 and getattr(ctx.get_parameter_source(p.name), "name", "") == "COMMANDLINE"]
        if given:
            _fail("tasks", f"{', '.join(given)} {'needs' if len(given) == 1 else 'need'} --env, the environment "
                           "whose tasks to generate (e.g. --env stage --family file_invoice)")
        typer.echo(ctx.get_help())
        raise typer.Exit(code=0)
    from distillery.agents.evaluate_policy import generate
    from distillery.envs.base import EngineUnavailable, env_names, families
    from distillery.quality import GateError
    from distillery.registry import RegistryError
    from distillery.tasks.generate import ValidationFailed
    from distillery.tasks.publish import TasksGateFailed, previous_run, publish, record_failure

    try:
        if env not in env_names():
            _fail("tasks", f"--env {env}: not a registered environment; registered: {', '.join(env_names())}")
        known = [f.name for f in families(env)]
    except RegistryError as e:
        _fail("tasks", str(e))
    unknown = [f for f in family if f not in known]
    if unknown:
        _fail("tasks", f"--family {', '.join(unknown)}: not {'a family' if len(unknown) == 1 else 'families'} of "
                       f"environment {env!r}; its families: {', '.join(known) or 'none'}")
    if n_train + n_test == 0:
        _fail("tasks", "--n-train and --n-test are both 0: nothing to generate")
    _check_out_folder("tasks", out)
    family = list(dict.fromkeys(family))     # a family named twice is generated once
    try:
        with _terminate_as_interrupt():
            result = generate(env, family, n_train=n_train, n_test=n_test, seed=seed, max_steps=max_steps,
                              random_probes=random_probes, max_attempts_factor=max_attempts_factor,
                              attempts_hint="--max-attempts-factor", progress=progress)
    except KeyboardInterrupt as e:
        _interrupted("tasks", e, f"before any task was kept; {out} is as the last run left it")
    except ValidationFailed as e:
        written = record_failure(e.result, out)
        _fail("tasks", f"{e}\n(every rejection: {written}; {previous_run(out)})", code=1)
    except (ValueError, RegistryError, EngineUnavailable) as e:
        _fail("tasks", str(e))
    try:
        done = publish(result, out)
    except TasksGateFailed as e:
        _fail("tasks", f"{e}\n({e.failed}: this run's reports; {previous_run(out)})", code=1)
    except GateError as e:
        _fail("tasks", f"the generated tasks fail their gate: {e}", code=1)
    by = done.frame.group_by("family", "split").len().sort("family", "split")
    for fam, split, n in by.iter_rows():
        typer.echo(f"{fam:>24} {split:>14}: {n} kept")
    typer.echo(f"kept {done.frame.height} tasks ({result.report['n_rejected']} drafts rejected) -> "
               f"{done.tasks}; why each draft was rejected: {done.validation}"
               + (f"; removed {done.removed_failed} (an earlier failed run's reports)" if done.removed_failed else ""))


# ---------------------------------------------------------------------------------------
# distillery import openai|inspect PATH...
# ---------------------------------------------------------------------------------------


@app.command("import")
def import_cmd(
    fmt: str = typer.Argument(..., metavar="FORMAT", help="openai (chat JSONL) or inspect (inspect_ai .eval/.json logs)."),
    paths: list[str] = typer.Argument(..., metavar="PATH...", help="Log files, or folders of them."),
    out: str = typer.Option(..., help="The import folder (created, or added to: records kept in it before are skipped, "
                                           "rejected ones judged again)."),
    assume_success: bool = typer.Option(False, help="A record with no outcome counts as a success "
                                                    "(otherwise it is rejected)."),
    tasks: str = typer.Option("auto", help="The project's task table: records naming its tasks take their env, "
                                           "family and split, and its test split is refused. 'auto': "
                                           "data/tasks/tasks.parquet when it exists; '' = none."),
    env: str = typer.Option("imported", help="Environment of records whose metadata names none (a registered one "
                                            "checks every call with its parser)."),
    outcomes: str = typer.Option("", show_default=False, help="openai: a side file of outcomes for the one file "
                                                              "given (default: <file>.outcomes.jsonl beside it)."),
    scorer: str = typer.Option("", show_default=False, help="inspect: the score to read (default: the only or first)."),
    min_score: float = typer.Option(0.0, min=0.0, max=1.0, help="The reward filter: records scored below it are "
                                                                 "rejected (low_score); 0 keeps failures, which "
                                                                 "mining learns from."),
    max_context_tokens: int | None = typer.Option(None, min=0, show_default=False, help="The student's context: "
                                                  "longer episodes are rejected; 0 = no check. Default: the "
                                                  "--tokenizer student's own (its model card), else 8192."),
    tokenizer: str = typer.Option("", show_default=False, help="The student (a model dir): count tokens with its "
                                                               "tokenizer instead of estimating."),
    show: int = typer.Option(20, min=0, help="Print at most this many rejection reasons (all are in rejects.parquet)."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Import agent logs as gated trajectories: tasks, episodes and steps in the project's schemas.

    Every record is judged against the import rules (first message, roles, tool calls and their answers, errors, outcome, limits, duplicates, test-split leaks, context length, secrets). Kept records become OUT/{tasks,episodes,steps}.parquet with OUT/tools.json; every record read is in OUT/records.parquet and every rejection, naming file and line or sample, in OUT/rejects.parquet. Inputs are only read; importing the same files again changes nothing. docs/importing.md has the formats.

    Examples:

      distillery import openai runs/chat.jsonl --out data/imports/chat

      distillery import inspect logs/ --out data/imports/inspect --assume-success
    """
    from collections import Counter
    from pathlib import Path

    import polars as pl
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from distillery.importers import ImportConfig, import_logs
    from distillery.importers.core import DEFAULT_CONTEXT, FORMATS, student_context
    from distillery.quality import GateError

    if fmt not in FORMATS:
        _fail("import", f"unknown format {fmt!r}; formats: {', '.join(FORMATS)}")
    _check_out_folder("import", out)
    if tokenizer and not Path(tokenizer).is_dir():
        _fail("import", f"--tokenizer {tokenizer}: not a model/tokenizer folder (no such folder)")
    if outcomes and not Path(outcomes).is_file():
        _fail("import", f"--outcomes {outcomes}: " + ("a folder, not a file" if Path(outcomes).is_dir()
                                                      else "no such file"))
    task_table: str | None = tasks
    if tasks == "auto":
        task_table = "data/tasks/tasks.parquet" if Path("data/tasks/tasks.parquet").is_file() else None
    task_table = task_table or None
    console = Console(stderr=True)
    from distillery.envs.base import env_names

    if env != "imported" and env not in env_names():
        console.print(f"--env {env}: not a registered environment, so no parser checks the calls of records that "
                      f"name no environment (registered: {', '.join(env_names())})", style="yellow", markup=False,
                      highlight=False)
    if task_table is None:
        console.print("[yellow]no task table (--tasks): test-split leaks are caught only by the records' own "
                      "split labels[/yellow]")
    if max_context_tokens is None:
        try:
            own = student_context(tokenizer) if tokenizer else None
        except (ValueError, OSError) as e:
            _fail("import", f"--tokenizer {tokenizer}: {e}")
        max_context_tokens = own or DEFAULT_CONTEXT
        if tokenizer:
            console.print(f"context check: {max_context_tokens} tokens (" + (
                f"the student's, from {tokenizer}" if own else f"{tokenizer} does not say its context: the default")
                + "; --max-context-tokens to change)")
    try:
        cfg = ImportConfig(env=env, assume_success=assume_success, scorer=scorer, min_score=min_score,
                           max_context_tokens=max_context_tokens, tokenizer=tokenizer)
        with (_terminate_as_interrupt(),
              Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                       console=console, disable=not progress, transient=True) as bar):
            total = None
            if fmt == "openai" and progress:
                from distillery.importers.core import input_files
                from distillery.importers.openai_jsonl import count_records

                total = sum(count_records(f) for f in input_files(fmt, paths))
            job = bar.add_task(f"import {fmt}", total=total)
            seen: Counter[str] = Counter()

            def on_record(raw: object) -> None:
                seen[raw.source] += 1
                bar.update(job, advance=1, description=f"import {raw.source}")

            result = import_logs(fmt, paths, out, cfg, tasks=task_table, outcomes=outcomes or None,
                                 on_record=on_record)
    except KeyboardInterrupt as e:
        # The folder's record list is written last: a record not in it is imported again.
        _interrupted("import", e, f"before the import finished; the same command imports whatever {out} does "
                                  "not hold yet")
    except ImportError as e:
        _fail("import", str(e))
    except (FileNotFoundError, ValueError) as e:
        _fail("import", str(e))
    except GateError as e:
        _fail("import", f"the imported trajectories fail their gate (nothing written): {e}", code=1)
    except OSError as e:
        _fail("import", f"cannot write {e.filename}: {e.strerror}" if e.filename else f"--out {out}: {e}")
    except pl.exceptions.PolarsError as e:
        from distillery.io import error_line

        _fail("import", f"--out {out}: {error_line(e)}")
    table = Table(title=f"import {fmt} -> {out}")
    # short headers leave the file names room on an 80-column terminal
    for col in ("file", "read", "kept", "as failure", "rejected", "already"):
        table.add_column(col, justify="left" if col == "file" else "right", overflow="fold")
    for f in result.files:
        table.add_row(f["source"], *[str(f[k]) for k in ("read", "kept", "kept_as_failure", "rejected",
                                                         "already_imported")])
    out_console = Console()
    out_console.print(table)
    for warning in result.warnings:
        console.print(f"warning: {warning}", style="yellow", markup=False, highlight=False, soft_wrap=True)
    rejects = result.new_rejects
    if rejects.height:
        kinds = Counter(rejects["kind"].to_list())
        out_console.print("rejections by rule: " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))
        for reason in rejects["reason"].to_list()[:show]:
            # soft_wrap: a long path is left whole for the terminal to wrap (and to copy)
            out_console.print(f"  {reason}", markup=False, highlight=False, soft_wrap=True)
        if rejects.height > show:
            out_console.print(f"  ... {rejects.height - show} more in {Path(out) / 'rejects.parquet'}")
    totals = result.totals
    for f in result.files:
        if f["read"] == 0:
            out_console.print(f"{f['source']}: no records", markup=False, highlight=False)
    if not result.written and totals["read"] == 0:
        out_console.print(f"{out} is unchanged")
    elif not result.written:
        out_console.print(f"nothing new: every record was read before and judged the same; {out} is unchanged")
    else:
        logs = result.logs
        out_console.print(f"{out}: {logs.episodes.height} episodes ({int(logs.episodes['success'].sum())} "
                          f"successes), {logs.steps.height} steps, {logs.tasks.height} tasks in all")


# ---------------------------------------------------------------------------------------
# distillery eval
# ---------------------------------------------------------------------------------------


@app.command("eval")
def eval_cmd(
    env: str = typer.Option("stage", help="A registered environment: stage, sql, table, textworldexpress; "
                                          "textworld and scienceworld with their extras; or a plugin's."),
    policy: str = typer.Option("openai", help="openai (any OpenAI-compatible endpoint), hf (a local model dir), "
                                              "oracle, random, or a plugin policy."),
    model: str = typer.Option("", show_default=False, help="openai: the model name the endpoint serves; hf: the "
                                                           "model directory (or local HF checkpoint)."),
    policy_kwargs: str = typer.Option("", show_default=False,
                                      help="The policy's constructor arguments as a JSON object, over those the "
                                           "options below give (a plugin policy gets only these), e.g. "
                                           "'{\"seed\": 3}'."),
    base_url: str = typer.Option("", show_default=False, help="openai: the API root, e.g. http://127.0.0.1:8000/v1 "
                                                              "(vLLM, Ollama, OpenAI, `distillery serve`)."),
    mode: str = typer.Option("text", help="openai: text (compact call syntax) or tools (function calling)."),
    api_key_env: str = typer.Option("OPENAI_API_KEY", help="openai: environment variable holding the key "
                                                           "(local servers need none)."),
    concurrency: int = typer.Option(8, min=1, help="openai: requests in flight at once."),
    timeout: float = typer.Option(120.0, min=1.0, help="openai: seconds per request attempt."),
    max_retries: int = typer.Option(2, min=0, help="openai: the client's retries per request."),
    temperature: float = typer.Option(0.0, min=0.0, help="Sampling temperature (0: greedy)."),
    max_tokens: int = typer.Option(96, min=1, help="Most tokens per action."),
    device: str = typer.Option("auto", help="hf: auto, cpu, cuda, ..."),
    tasks: str = typer.Option("auto", help="A task table; 'auto': data/tasks/tasks.parquet when it exists, "
                                           "else test tasks are generated and validated for --env."),
    split: str = typer.Option("test", help="The split benchmarked."),
    family: list[str] = typer.Option([], show_default=False, help="Only this family (repeatable)."),
    per_family: int = typer.Option(0, min=0, help="At most this many tasks per family (0: all)."),
    generate_per_family: int = typer.Option(4, min=1, help="Test tasks generated per family when there is no "
                                                           "task table."),
    k: int = typer.Option(1, min=1, help="Episodes per task."),
    seed: int = typer.Option(0, help="Seed of the episodes (and of generated tasks)."),
    batch_size: int = typer.Option(64, min=1, help="Episodes played together."),
    label: str = typer.Option("", show_default=False, help="The policy's name in the tables (default: the "
                                                           "model's name, or the policy)."),
    out: str = typer.Option("", show_default=False, help="Output folder (default: reports/eval/<label>)."),
    imported: str = typer.Option("", show_default=False,
                                 help="Instead: score --policy hf --model DIR offline on an import folder "
                                      "(`distillery import --out`): held-out next-action accuracy."),
    held_out: float | None = typer.Option(None, show_default=False,
                                          help="With --imported: share of the imported tasks scored, in (0, 1] "
                                               "(by the warm-up's hash; default: the model card's eval_fraction, "
                                               "else 0.1; 1 = all)."),
    resume: bool = typer.Option(True, help="Keep the episodes an interrupted run of the same settings left in "
                                           "OUT/episodes.partial.jsonl and play only the rest (--no-resume: "
                                           "discard them and play every episode)."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Benchmark a policy on an environment's test split: the benchmark tables and the HTML report.

    Plays every test task (from the task table, or generated and validated for --env) with the policy, gates the trajectories, and writes OUT/{episodes,steps,tasks}.parquet, OUT/benchmark.json (every number per family), OUT/headline.json and OUT/benchmark.html, the same tables the `evaluate` stage writes.

    Each episode is journaled in OUT/episodes.partial.jsonl as it ends: an interrupted run (Ctrl-C, a dropped connection, a killed process) resumes where it stopped when the same command is run again. Episodes that ended in an error are played again.

    With --imported DIR (imported logs cannot be replayed): the model sees each held-out logged step's context (instruction, logged actions and observations so far) and its greedy action is compared with the logged one; writes OUT/next_action.json and OUT/next_action_steps.parquet.

    Examples:

      distillery eval --env stage --policy openai --base-url http://127.0.0.1:8000/v1 --model models/warmup

      distillery eval --env stage --policy hf --model models/warmup --device cpu

      distillery eval --policy hf --model models/warmup --imported data/imports/chat
    """
    import json
    from pathlib import Path

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from distillery.agents.base import PolicySpec, check_kind, check_policy_kwargs
    from distillery.agents.evaluate_policy import (
        DEFAULT_TASKS,
        JOURNAL,
        NothingMeasured,
        eval_tasks,
        run_eval,
    )
    from distillery.envs.base import EngineUnavailable, env_spec
    from distillery.journal import JournalMismatch
    from distillery.quality import GateError
    from distillery.registry import RegistryError
    from distillery.rollout import PolicyError, error_counts

    # The names first: a misspelt one is reported before any other check or any task is made.
    try:
        check_kind(policy)
        if not imported:
            env_spec(env)
    except (ValueError, RegistryError) as e:
        _fail("eval", str(e))
    if imported and policy != "hf":
        _fail("eval", "--imported scores a local model: give --policy hf --model MODEL_DIR")
    kwargs: dict[str, object]
    if policy == "openai":
        if not base_url or not model:
            _fail("eval", "--policy openai needs --base-url and --model")
        if mode not in ("text", "tools"):
            _fail("eval", f"--mode must be text or tools, got {mode!r}")
        kwargs = {"base_url": base_url, "model": model, "api_key_env": api_key_env, "mode": mode,
                  "temperature": temperature, "max_tokens": max_tokens, "concurrency": concurrency,
                  "timeout": timeout, "max_retries": max_retries}
    elif policy == "hf":
        if not model:
            _fail("eval", "--policy hf needs --model MODEL_DIR")
        if not Path(model).is_dir():
            _fail("eval", f"--model {model}: no such model directory")
        kwargs = {"model_dir": model, "temperature": temperature, "max_new_tokens": max_tokens, "device": device}
    else:
        kwargs = {}
    if policy_kwargs:
        try:
            extra = json.loads(policy_kwargs)
        except json.JSONDecodeError as e:
            _fail("eval", f"--policy-kwargs: not JSON ({e})")
        except ValueError as e:     # a number too long to convert
            from distillery.io import json_error

            _fail("eval", f"--policy-kwargs: not JSON ({json_error(e)})")
        if not isinstance(extra, dict):
            _fail("eval", f"--policy-kwargs: expected a JSON object of keyword arguments, got {policy_kwargs!r}")
        kwargs |= extra
    try:
        check_policy_kwargs(PolicySpec(kind=policy, kwargs=kwargs))
    except (ValueError, TypeError) as e:
        _fail("eval", f"--policy-kwargs: {e}" if policy_kwargs else str(e))
    name = label or (Path(model.rstrip("/")).name if model else policy)
    if not out and (Path(name).name != name or name in (".", "..")):
        _fail("eval", f"--label {name}: it names the output folder under reports/eval/, so it cannot hold a path; "
                      "give --out as well")
    folder = Path(out or f"reports/eval/{name}")
    _check_out_folder("eval", str(folder))
    if not imported and (folder / "records.parquet").is_file():
        _fail("eval", f"--out {folder}: an import folder (it holds records.parquet), whose tables the benchmark's "
                      "would replace: choose another --out")
    if held_out is not None and not imported:
        _fail("eval", "--held-out applies to --imported only (a benchmark plays every task of --split)")
    if imported:
        _offline_score(model, imported, folder, held_out, max_tokens, device, progress)
        return
    console = Console(stderr=True)
    table_path: str | None = tasks
    if tasks == "auto":
        table_path = DEFAULT_TASKS if Path(DEFAULT_TASKS).is_file() else None
    try:
        if not table_path:
            n = min(generate_per_family, per_family) if per_family else generate_per_family
            console.print(f"no task table: generating {n} {split} tasks per family of {env}")
        todo = eval_tasks(env, tasks_path=table_path or None, split=split, families=family, per_family=per_family,
                          generate_per_family=generate_per_family, seed=seed, progress=False,
                          warn=lambda m: console.print(m, style="yellow", markup=False, highlight=False))
    except (FileNotFoundError, ValueError, RegistryError, EngineUnavailable) as e:
        _fail("eval", str(e))
    spec = PolicySpec(kind=policy, kwargs=kwargs, label=name)
    played = 0
    try:
        with (_terminate_as_interrupt(),
              Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                       console=console, disable=not progress, transient=True) as bar):
            job = bar.add_task(f"eval {name} on {env}", total=len(todo) * k)

            def advance(_: object) -> None:
                nonlocal played
                played += 1
                bar.update(job, advance=1)

            result = run_eval(todo, spec, folder, k=k, seed=seed, batch_size=batch_size, split=split, resume=resume,
                              on_episode=advance,
                              on_resume=lambda sentence: console.print(sentence, markup=False, highlight=False))
    except KeyboardInterrupt as e:
        _interrupted("eval", e, _resume_later(f"{played} of {len(todo) * k} episodes", folder / JOURNAL))
    except JournalMismatch as e:
        _refuse_journal("eval", e)
    except GateError as e:
        _fail("eval", f"the trajectories fail their gate: {e}", code=1)
    except PolicyError as e:
        _fail("eval", str(e), code=1)
    except NothingMeasured as e:
        _say_errors(console, e.by_policy, e.by_env)
        _fail("eval", str(e), code=1)
    except OSError as e:
        _fail("eval", _os_error_line(e))
    except ValueError as e:
        _fail("eval", str(e))
    cols = ["family", "episodes", "success_rate", "mean_score", "mean_steps", "validity_rate"]
    table = Table(title=f"{name} on {env} ({split}: {len({t.task_id for t in todo})} tasks)")
    heads = {"success_rate": "success", "mean_score": "score", "mean_steps": "steps", "validity_rate": "valid"}
    for c in cols:
        table.add_column(heads.get(c, c), justify="left" if c == "family" else "right", overflow="fold")
    for r in result.table.sort(pl_family_key()).iter_rows(named=True):
        table.add_row(*[f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols])
    Console().print(table)
    _say_errors(console, *error_counts(result.episodes), see=f" (see {folder / 'episodes.parquet'}, column error)")
    if result.notes:
        console.print(f"policy notes: {result.notes}")
    typer.echo(f"wrote {folder}/benchmark.json, headline.json, benchmark.html, episodes.parquet, steps.parquet")


def _say_errors(console: Any, by_policy: int, by_env: int, see: str = "") -> None:
    for count, side in ((by_policy, "a policy error"), (by_env, "an error of the environment")):
        if count:
            console.print(f"{count} episodes ended with {side}{see}", style="yellow", markup=False, highlight=False)


def _os_error_line(e: OSError) -> str:
    """An OSError in one line that names the path, not a temporary file's."""
    return f"{e.filename}: {e.strerror}" if e.filename and e.strerror else str(e)


def _offline_score(model_dir: str, imported: str, folder: object, held_out: float | None, max_tokens: int,
                   device: str, progress: bool) -> None:
    """`distillery eval --imported`: held-out next-action accuracy on an import folder."""
    from pathlib import Path

    import polars as pl

    from distillery.importers import ImportedLogs, next_action_accuracy
    from distillery.io import error_line, write_together
    from distillery.types import tasks_from_frame

    if held_out is not None and not 0 < held_out <= 1:
        _fail("eval", f"--held-out {held_out:g}: expected a share of the tasks in (0, 1] (1 = all)")
    src, out = Path(imported), Path(str(folder))
    if not (src / "records.parquet").is_file():
        _fail("eval", f"--imported {src}: not an import folder (no records.parquet; write one with "
                      "`distillery import`)")
    try:
        logs = ImportedLogs.read(src, option="--imported")
        tasks = tasks_from_frame(logs.tasks, str(src / "tasks.parquet"))
        res = next_action_accuracy(model_dir, tasks, logs.episodes, logs.steps, fraction=held_out,
                                   max_new_tokens=max_tokens, device=device, progress=progress)
    except FileNotFoundError as e:      # the model directory's files
        _fail("eval", str(e))
    except pl.exceptions.PolarsError as e:
        _fail("eval", f"--imported {src}: the import folder is damaged ({error_line(e)}): import its logs again")
    except ValueError as e:
        _fail("eval", str(e))
    if res.accuracy is None:
        how = "raise --held-out" if res.fraction < 1 else "the folder holds no step to score"
        _fail("eval", f"no held-out imported step to score ({res.held_out_tasks} held-out tasks, skipped: "
                      f"{res.skipped}; fraction {res.fraction:g}): {how}; nothing written", code=1)
    try:
        write_together({out / "next_action.json": res.to_dict(), out / "next_action_steps.parquet": res.steps})
    except OSError as e:
        _fail("eval", f"cannot write {_os_error_line(e)}")
    typer.echo(f"held-out next-action accuracy {res.accuracy:.3f} ({res.n_correct}/{res.n_steps} steps, "
               f"{res.n_episodes} episodes of {res.held_out_tasks} held-out tasks, fraction {res.fraction:g}, "
               f"seed {res.seed})")
    for fam, acc in res.by_family().items():
        typer.echo(f"  {fam:>24}: {acc:.3f}")
    if res.skipped:
        typer.echo(f"skipped episodes: {res.skipped}")
    typer.echo(f"wrote {out / 'next_action.json'}, {out / 'next_action_steps.parquet'}")


def pl_family_key() -> object:
    """Families in order, the overall row ("all") last."""
    import polars as pl

    return [pl.col("family") == "all", pl.col("family")]


if __name__ == "__main__":
    app()
