"""Experience pools on disk: one JSON object per line (an `Experience` record), written
atomically (temp file beside the target, then one rename) so a killed stage never leaves a
half-written pool, and read back with the file and line named in any error."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import fields
from pathlib import Path

from distillery.io import atomic_path
from distillery.types import Experience

KINDS = ("instance", "principle", "skill")
STATUSES = ("candidate", "active", "retired")
_FIELDS = {f.name for f in fields(Experience)}


def _check(item: Experience, where: str) -> None:
    if item.kind not in KINDS:
        raise ValueError(f"{where}: kind must be one of {KINDS}, not {item.kind!r}")
    if item.status not in STATUSES:
        raise ValueError(f"{where}: status must be one of {STATUSES}, not {item.status!r}")
    if not item.exp_id:
        raise ValueError(f"{where}: exp_id is empty")


def read_pool(path: str | Path) -> list[Experience]:
    """The records of a pool file, in file order; a missing file is an empty pool."""
    p = Path(path)
    if not p.exists():
        return []
    items: list[Experience] = []
    for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{p}:{i}"
        try:
            d = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not valid JSON ({e.msg})") from e
        if not isinstance(d, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(d).__name__}")
        unknown = sorted(set(d) - _FIELDS)
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {unknown}; an Experience has {sorted(_FIELDS)}")
        try:
            item = Experience.from_dict(d)
        except TypeError as e:
            raise ValueError(f"{where}: not an Experience record ({e})") from e
        _check(item, where)
        items.append(item)
    return items


def write_pool(path: str | Path, items: Iterable[Experience]) -> Path:
    """Write `items` as JSON lines, replacing `path` in one rename; returns the path."""
    rows = []
    for n, item in enumerate(items):
        _check(item, f"{path} item {n}")
        rows.append(json.dumps(item.to_dict(), sort_keys=True, ensure_ascii=False))
    with atomic_path(path) as tmp:
        tmp.write_text("".join(r + "\n" for r in rows), encoding="utf-8")
    return Path(path)
