"""`dvc metrics show` one file to a line (`make metrics`).

DVC prints every metrics file as a row of one table whose columns are the union of all names,
which with several tracks is far wider than a terminal; here each file is a line of
`name value` pairs, wrapped to the terminal's width; a file not built yet is a line saying
so, and when none is built it says what to run (stderr, exit 2). It runs `dvc metrics show
--json [TARGET ...]` itself, so that DVC's own summary of unbuilt files ("failed to load some
metrics") is not printed above the lines that say which; DVC's other messages pass through.

    python -m tools.metrics_view [--width 120] [TARGET ...]
    dvc metrics show --json | python -m tools.metrics_view --from-stdin
"""

from __future__ import annotations

import argparse
import json
import subprocess
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
# DVC's stderr line when some metrics files are missing: the view names each one instead.
DVC_UNBUILT_SUMMARY = "DVC failed to load some metrics"


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


def dvc_metrics(targets: list[str]) -> tuple[str, int]:
    """`dvc metrics show --json TARGETS` (the DVC of this interpreter): its output and exit
    code; its stderr is passed on, less its summary of unbuilt files."""
    done = subprocess.run([sys.executable, "-m", "dvc", "metrics", "show", "--json", *targets],
                          capture_output=True, text=True)
    for line in done.stderr.splitlines():
        if not line.startswith(DVC_UNBUILT_SUMMARY):
            print(line, file=sys.stderr)
    return done.stdout, done.returncode


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.metrics_view", description=__doc__.split("\n\n")[0])
    ap.add_argument("--width", type=int, default=120, help="line width (default 120)")
    ap.add_argument("--from-stdin", action="store_true",
                    help="read `dvc metrics show --json` output from stdin instead of running DVC")
    ap.add_argument("targets", nargs="*", help="metrics files to show (default: every one dvc.yaml names)")
    args = ap.parse_args(argv)
    if args.from_stdin:
        text = sys.stdin.read()
    else:
        text, code = dvc_metrics(args.targets)
        if code != 0:
            return code
    try:
        shown = json.loads(text or "{}")
    except json.JSONDecodeError as e:
        print(f"metrics_view: not `dvc metrics show --json` output ({e})", file=sys.stderr)
        return 2
    text = render(shown, args.width)
    if text == NONE_YET:                 # nothing built: say what to run, as `make metrics TRACK=...` does
        print(text, file=sys.stderr)
        return 2
    print(text)
    return 0

if __name__ == "__main__":
    sys.exit(main())
