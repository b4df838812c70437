"""Delete the pipeline's outputs: exactly the paths dvc.lock records as stage outputs.

    python -m tools.clean_outputs          # list what would go, delete nothing
    python -m tools.clean_outputs --yes    # delete them (`make clean-outputs CONFIRM=1`)

Only what DVC can rebuild goes: imported logs (`distillery import ... --out data/imports/...`),
a pipeline's inputs and anything else under data/ that no stage writes stay where they are.
The DVC cache is not touched, so `dvc checkout` (or `dvc repro`, which restores unchanged
stages from it) brings the outputs back.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def lock_outputs(lock_text: str) -> list[str]:
    """The output paths of every stage in a dvc.lock, sorted, each once."""
    lock = yaml.safe_load(lock_text) or {}
    stages = lock.get("stages") or {}
    return sorted({o["path"] for stage in stages.values() for o in stage.get("outs") or []})


def existing(root: Path, paths: list[str]) -> list[Path]:
    """Those of `paths` (relative to `root`) that exist, refusing any that leaves `root`."""
    base = root.resolve()
    found = []
    for rel in paths:
        p = (root / rel).resolve()
        if p == base or base not in p.parents:
            raise ValueError(f"dvc.lock output {rel!r} is not inside {root}: refusing to delete it")
        if (root / rel).exists() or (root / rel).is_symlink():
            found.append(root / rel)
    return found


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.clean_outputs", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--yes", action="store_true", help="delete; without it, only list what would be deleted")
    ap.add_argument("--repo", default=str(ROOT), help="the repository (default: this checkout)")
    args = ap.parse_args([] if argv is None else argv)
    root = Path(args.repo)
    lock = root / "dvc.lock"
    if not lock.is_file():
        print(f"{lock}: not found: no stage has run, so there are no outputs to delete", file=sys.stderr)
        return 0
    try:
        paths = existing(root, lock_outputs(lock.read_text()))
    except (ValueError, yaml.YAMLError) as e:
        print(f"python -m tools.clean_outputs: {lock}: {e}", file=sys.stderr)
        return 2
    if not paths:
        print("no pipeline output is present", file=sys.stderr)
        return 0
    for p in paths:
        print(p.relative_to(root))
    if not args.yes:
        print(f"{len(paths)} outputs listed above would be deleted: run `make clean-outputs CONFIRM=1`",
              file=sys.stderr)
        return 0
    for p in paths:
        if p.exists() or p.is_symlink():     # not already gone with a folder listed before it
            remove(p)
    print(f"deleted {len(paths)} outputs (the DVC cache keeps them: `dvc checkout` restores them)",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
