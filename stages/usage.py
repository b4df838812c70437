"""The stages' command lines: `--help` prints the stage's docstring as written (what it reads,
writes and takes), and `main()` called from Python means no arguments."""

from __future__ import annotations

import argparse


def stage_parser(name: str, doc: str | None) -> argparse.ArgumentParser:
    """The parser of `python -m stages.<name>`, its description the module docstring unwrapped."""
    return argparse.ArgumentParser(prog=f"python -m stages.{name}", description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def take_no_options(name: str, doc: str | None, argv: list[str] | None) -> None:
    """For a stage without options: `--help` prints `doc` and exits, any argument is refused
    (exit 2) before the stage reads or writes anything."""
    stage_parser(name, doc).parse_args([] if argv is None else argv)


if __name__ == "__main__":      # a helper, not a stage: say so rather than do nothing and exit 0
    import sys

    print("python -m stages.usage: error: a helper module of the stages' command lines, not a stage; "
          "the stages are dvc.yaml's (python -m stages.<stage> --help)", file=sys.stderr)
    sys.exit(2)
