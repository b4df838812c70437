"""Before `make push`: name the outputs dvc.lock records that are not in the local DVC cache.

`dvc push` uploads from the cache. An output that is not in it (never built or pulled here,
or its cache entry removed) is skipped with a warning that lists hashes, not paths, and the
push still ends with "Everything is up to date". This says which ones, in one line, before
the push; the push then sends what there is. When there is nothing at all to send (nothing
built or pulled here), it says so in one line and exits 2, and `make push` stops there.

    python -m tools.push_check            # nothing printed when every output is cached; exit 0
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from tools.clean_outputs import ROOT, lock_outputs

SHOWN = 8   # paths named in the line; the rest are counted


def cache_state(root: Path) -> tuple[list[str], set[str], set[str]]:
    """The outputs dvc.lock records (as `lock_outputs` lists them), those of the stages' outputs
    DVC caches (the ones `dvc push` can send), and those of them not in the local DVC cache."""
    lock = root / "dvc.lock"
    if not lock.is_file():
        return [], set(), set()
    recorded = lock_outputs(lock.read_text())
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        cached = [out for out in repo.index.outs if out.use_cache]
        return recorded, {o.def_path for o in cached}, {o.def_path for o in cached if o.changed_cache()}


def not_cached(root: Path) -> tuple[list[str], int]:
    """The outputs dvc.lock records (as `lock_outputs` lists them) that `dvc push` has nothing
    to send for: not in the local DVC cache, whether or not the workspace holds them; and how
    many outputs it records. Outputs kept out of the cache (`cache: false`, as metrics files
    are) are never pushed, and not listed."""
    recorded, _, absent = cache_state(root)
    return [p for p in recorded if p in absent], len(recorded)


def nothing_to_push(recorded: list[str], cacheable: set[str], absent: set[str]) -> str:
    """One line when `dvc push` could send nothing at all (no dvc.lock, or none of the cached
    outputs it records is in the local cache: `cache_state`'s three); '' when it can send some."""
    if not recorded:
        return "nothing to push: no dvc.lock records an output here (make repro builds them)"
    pushable = [p for p in recorded if p in cacheable and p not in absent]
    if not pushable:
        return (f"nothing to push: none of the {len(recorded)} outputs dvc.lock records is in the DVC cache "
                "(make repro builds them)")
    return ""


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
        recorded, cacheable, absent = cache_state(Path(args.repo))
        nothing = nothing_to_push(recorded, cacheable, absent)
        line = message([p for p in recorded if p in absent], len(recorded))
    except (yaml.YAMLError, DvcException) as e:
        print(f"python -m tools.push_check: {args.repo}: {e}", file=sys.stderr)
        return 2
    if nothing:
        print(nothing, file=sys.stderr)
        return 2
    if line:
        print(line, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
