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


if __name__ == "__main__":
    app()
