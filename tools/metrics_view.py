"""`dvc metrics show` one file to a line: `make metrics` pipes `dvc metrics show --json` here.

DVC prints every metrics file as a row of one table whose columns are the union of all names,
which with several tracks is far wider than a terminal; here each file is a line of
`name value` pairs, wrapped to the terminal's width; a file not built yet is a line saying
so, and when none is built it says what to run (stderr, exit 2).

    dvc metrics show --json | python -m tools.metrics_view [--width 120]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from typing import Any


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def _flat(data: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in data.items():
        if isinstance(value, Mapping):
            out += _flat(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", value))
    return out


def _wrap(pairs: list[str], width: int) -> list[str]:
    """`pairs` two spaces apart, in lines of at most `width` (a pair is never split)."""
    lines = [""]
    for pair in pairs:
        if lines[-1] and len(lines[-1]) + 2 + len(pair) > width:
            lines.append("")
        lines[-1] = f"{lines[-1]}  {pair}" if lines[-1] else pair
    return lines


NONE_YET = "no metrics yet: make repro"
NOT_BUILT = "not built yet"


def _files(shown: Mapping[str, Any]) -> dict[str, Any]:
    """path -> its numbers, {"error": ...}, or None for a file not built yet (DVC's FileNotFoundError)."""
    files: dict[str, Any] = {}
    for rev in shown.values():
        for path, entry in (rev.get("data") or {}).items():
            error = entry.get("error")
            if error is None:
                files[path] = entry.get("data", {})
            else:
                files[path] = None if error.get("type") == "FileNotFoundError" else {"error": error}
    return files


def render(shown: Mapping[str, Any], width: int = 120) -> str:
    """The files of `dvc metrics show --json`'s output (the workspace's), one per line; a file
    not built yet is one line saying so."""
    files = _files(shown)
    if not files or all(v is None for v in files.values()):
        return NONE_YET
    pad = max(len(p) for p in files) + 2
    lines = []
    for path in sorted(files):
        if files[path] is None:
            lines.append(path.ljust(pad) + NOT_BUILT)
            continue
        wrapped = _wrap([f"{k} {_number(v)}" for k, v in _flat(files[path])], max(width - pad, 40))
        lines.append(path.ljust(pad) + wrapped[0])
        lines += [" " * pad + w for w in wrapped[1:]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.metrics_view", description=__doc__.split("\n\n")[0])
    ap.add_argument("--width", type=int, default=120, help="line width (default 120)")
    args = ap.parse_args(argv)
    text = sys.stdin.read()
    try:
        shown = json.loads(text or "{}")
    except json.JSONDecodeError as e:
        print(f"metrics_view: stdin is not `dvc metrics show --json` output ({e})", file=sys.stderr)
        return 2
    text = render(shown, args.width)
    if text == NONE_YET:                 # nothing built: say what to run, as `make metrics TRACK=...` does
        print(text, file=sys.stderr)
        return 2
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
