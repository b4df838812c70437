"""Resolve the exact package versions a fresh set-up installs, and write them to constraints.txt.

    make lock                                  # after changing pyproject.toml's dependencies
    python -m tools.lock torch==2.13.0 '.[dev,textworld]' --out constraints.txt

`make setup` installs with `pip install -c constraints.txt`, so a clone made next year runs on
the versions the recorded results and the tests ran on, not on whatever the package index has
published since (a new transformers or numpy release can change every trained weight). This
asks pip what a fresh environment would install for the given requirements (`pip install
--dry-run --ignore-installed --report`: nothing is installed) and pins each distribution to
that version. The project itself is left out, and so are local version labels: torch
`2.13.0+cpu` is pinned as `torch==2.13.0`, which the CPU wheel here and another build
elsewhere both satisfy.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def canonical_name(name: str) -> str:
    """A distribution's name as the package index compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(report: dict[str, Any]) -> list[str]:
    """`name==version` for every distribution a `pip install --report` would install, sorted by
    name; those installed from a local folder (the project being locked) are left out."""
    found: dict[str, str] = {}
    for item in report.get("install", []):
        if "dir_info" in item.get("download_info", {}):
            continue
        meta = item["metadata"]
        found[canonical_name(meta["name"])] = str(meta["version"]).split("+", 1)[0]
    return [f"{name}=={found[name]}" for name in sorted(found)]


def render(pinned: list[str], requirements: list[str], environment: dict[str, str]) -> str:
    """The constraints file: a header saying what was resolved where, then one pin a line."""
    where = (f"{environment.get('implementation_name', 'python')} {environment.get('python_full_version', '?')} "
             f"on {environment.get('sys_platform', '?')} {environment.get('platform_machine', '?')}")
    head = [
        "# The exact versions `make setup` installs (pip install -c constraints.txt).",
        f"# Written by `make lock` (python -m tools.lock) resolving: {' '.join(requirements)}",
        f"# for {where}. Edit pyproject.toml, then run `make lock`; do not edit by hand.",
    ]
    return "\n".join(head + pinned) + "\n"


def resolve(requirements: list[str], python: str = sys.executable) -> dict[str, Any]:
    """pip's installation report for `requirements` in a fresh environment; nothing is installed."""
    with tempfile.TemporaryDirectory(prefix="distillery-lock-") as tmp:
        report = Path(tmp) / "report.json"
        cmd = [python, "-m", "pip", "install", "--disable-pip-version-check", "--quiet", "--dry-run",
               "--ignore-installed", "--report", str(report), *requirements]
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"pip could not resolve {' '.join(requirements)} (exit {done.returncode}):\n"
                               f"{done.stderr[-3000:]}")
        return json.loads(report.read_text())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.lock", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("requirements", nargs="+", help="what a set-up installs, as pip reads it (e.g. torch==2.13.0 '.[dev]')")
    ap.add_argument("--out", default="constraints.txt", help="the constraints file to write (default: %(default)s)")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    print(f"resolving {' '.join(args.requirements)} with pip (a minute or two; nothing is installed)", file=sys.stderr)
    try:
        report = resolve(args.requirements)
    except RuntimeError as e:
        print(e, file=sys.stderr)
        return 1
    pinned = pins(report)
    out = Path(args.out) if Path(args.out).is_absolute() else ROOT / args.out
    old = set(out.read_text().splitlines()) if out.is_file() else set()
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_text(render(pinned, args.requirements, report.get("environment", {})))
    tmp.replace(out)
    changed = sorted(set(pinned) - old)
    print(f"{out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}: {len(pinned)} pins, "
          f"{len(changed)} new or changed{': ' + ', '.join(changed) if changed and len(changed) <= 20 else ''}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
