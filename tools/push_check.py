"""Before `make push`: name the outputs dvc.lock records that are not in the local DVC cache.

`dvc push` uploads from the cache. An output that is not in it (never built or pulled here,
or its cache entry removed) is skipped with a warning that lists hashes, not paths, and the
push still ends with "Everything is up to date". This says which ones, in one line, before
the push; the push then sends what there is.

    python -m tools.push_check            # nothing printed when every output is cached; exit 0
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from tools.clean_outputs import ROOT, lock_outputs

SHOWN = 8   # paths named in the line; the rest are counted


def not_cached(root: Path) -> tuple[list[str], int]:
    """The outputs dvc.lock records (as `lock_outputs` lists them) that `dvc push` has nothing
    to send for: not in the local DVC cache, whether or not the workspace holds them; and how
    many outputs it records. Outputs kept out of the cache (`cache: false`, as metrics files
    are) are never pushed, and not listed."""
    lock = root / "dvc.lock"
    if not lock.is_file():
        return [], 0
    recorded = lock_outputs(lock.read_text())
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        absent = {out.def_path for out in repo.index.outs if out.use_cache and out.changed_cache()}
    return [p for p in recorded if p in absent], len(recorded)


def message(paths: list[str], total: int) -> str:
    """One line naming them (the first few, then how many more); '' when there are none."""
    if not paths:
        return ""
    shown = ", ".join(paths[:SHOWN]) + (f" and {len(paths) - SHOWN} more" if len(paths) > SHOWN else "")
    return (f"not pushed, not in the DVC cache: {len(paths)} of the {total} outputs dvc.lock records "
            f"(dvc repro makes them): {shown}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.push_check", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", default=str(ROOT), help="the repository (default: this checkout)")
    args = ap.parse_args([] if argv is None else argv)
    from dvc.exceptions import DvcException

    try:
        line = message(*not_cached(Path(args.repo)))
    except (yaml.YAMLError, DvcException) as e:
        print(f"python -m tools.push_check: {args.repo}: {e}", file=sys.stderr)
        return 2
    if line:
        print(line, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
