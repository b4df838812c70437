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


if __name__ == "__main__":
    app()
