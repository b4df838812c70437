"""The gate: validate one artifact against its suite with Great Expectations, and fail loudly.

`gate(frame, suite, source=...)`
1. checks the schema in polars (exact dtypes: pandas cannot tell Int64-with-nulls from
   Float64). A missing or mistyped column, or one the suite does not know (and does not list
   in `extra_columns`), makes every row offend; the GX suite records the same contract as
   `expect_column_to_exist` / `expect_column_values_to_be_of_type`;
2. adds the suite's derived "_" columns and a row number, converts to pandas with nullable
   dtypes (so GX sees ints as ints even with nulls, and a NaN stays a NaN, not a null) and
   validates with result format COMPLETE keyed by the suite's id columns plus the row number;
3. writes `<report_dir>/<suite>.json` (the GX result), `<suite>.html` (the Data Docs page GX
   renders for a validation result) and `<suite>.summary.json` (flat rows for a Prefect table);
4. writes the offending rows, with every reason, to `<quarantine_dir>/<suite>.parquet` (or
   removes a stale one), and raises `GateError` naming file, column, expectation and examples.

The input is never modified: the frame is only read, and `gate_file` only reads its file
(an unreadable one is copied to the quarantine, never moved). Every write is atomic.
"""

from __future__ import annotations

import functools
import hashlib
import html
import json
import logging
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from distillery.io import atomic_path
from distillery.quality.suites import Refs, Suite

log = logging.getLogger(__name__)

ROW = "_gate_row"     # row number in the input: the key that survives null and duplicate ids
REASON = "_reason"
N_EXAMPLES = 5

# Keyword arguments worth showing in a reason, and how to name them.
_SHOWN_KWARGS = {"min_value": "min", "max_value": "max", "value_set": "in", "type_": "type"}
_SCHEMA_KINDS = ("expect_column_to_exist", "expect_column_values_to_be_of_type")


# ---------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------


@dataclass
class GateResult:
    """What one gate found. `suite` is the suite's name; paths are where reports went.

    `failures` has one dict per failed expectation: expectation, column, unexpected_count,
    examples (up to 5 dicts: the row's ids, the offending values and `_gate_row`), reason.
    `expectations` has one flat row per expectation evaluated (see `summary_rows`).
    """

    suite: str
    source: str
    success: bool
    n_rows: int
    n_failed_rows: int
    failures: list[dict[str, Any]]
    statistics: dict[str, Any]
    report_json: Path
    report_html: Path
    quarantine_path: Path | None
    expectations: list[dict[str, Any]] = field(default_factory=list)
    report_summary: Path | None = None

    def summary_rows(self) -> list[dict[str, Any]]:
        """expectation, column, success, unexpected_count per expectation: a Prefect table."""
        return [dict(row) for row in self.expectations]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("report_json", "report_html", "quarantine_path", "report_summary"):
            d[key] = None if d[key] is None else str(d[key])
        return d


class GateError(Exception):
    """A gate failed. The message says what and where; `.result` holds the details."""

    def __init__(self, message: str, result: GateResult | None = None) -> None:
        super().__init__(message)
        self.result = result

    def __reduce__(self):  # keep `.result` when pickled across a process pool
        return (type(self), (str(self), self.result))


# ---------------------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------------------


def gate(
    frame: pl.DataFrame,
    suite: Suite,
    *,
    source: str,
    refs: Refs | None = None,
    report_dir: str | Path = "reports/quality",
    quarantine_dir: str | Path = "data/quarantine",
    raise_on_failure: bool = True,
) -> GateResult:
    """Validate `frame` (the artifact `source`) against `suite`; raise `GateError` on failure."""
    t0 = time.perf_counter()
    refs = refs or {}
    paths = _Paths(suite.name, Path(report_dir), Path(quarantine_dir))
    paths.refuse_to_overwrite(source)
    if ROW in frame.columns:
        raise ValueError(f"gate {suite.name!r} on {source}: column {ROW!r} is reserved for "
                         f"the gate's row numbers")

    problems = _schema_problems(frame, suite)
    broken = {p.column for p in problems}
    validated = _frame_to_validate(frame, suite, refs, problems)
    expectations = _schema_expectations(suite, frame) + [
        e for e in suite.expectations(refs) if not broken & set(_columns(e))]
    id_columns = [c for c in suite.id_columns if c in validated.columns]
    pandas_frame = _to_pandas(validated)

    with _GX_LOCK:
        gx, batch_definition = _gx()
        gx_suite = gx.ExpectationSuite(name=suite.name, expectations=expectations)
        batch = batch_definition.get_batch(batch_parameters={"dataframe": pandas_frame})
        gx_result = batch.validate(gx_suite, result_format={
            "result_format": "COMPLETE",
            "unexpected_index_column_names": [*id_columns, ROW],
            "return_unexpected_index_query": False,
        })
        # Data Docs titles a page by its run name: make it the artifact's path.
        gx_result.meta["run_id"] = {"run_name": source,
                                    "run_time": datetime.now(UTC).isoformat()}
        page = _render_data_docs(gx_result, source)

    failures, reasons, checks = _failures(gx_result, frame, suite, problems)
    success = bool(gx_result.success) and not problems
    quarantine = _quarantine(frame, reasons, paths) if reasons else None
    if quarantine is None:
        paths.quarantine.unlink(missing_ok=True)   # a stale file would blame fixed data
    paths.unreadable.unlink(missing_ok=True)
    paths.unreadable_note.unlink(missing_ok=True)

    result = GateResult(
        suite=suite.name, source=source, success=success, n_rows=frame.height,
        n_failed_rows=len(reasons), failures=failures,
        statistics=_plain(dict(gx_result.statistics)),
        report_json=paths.json, report_html=paths.html, quarantine_path=quarantine,
        expectations=checks, report_summary=paths.summary,
    )
    gx_result.meta["distillery"] = {
        "suite": suite.name, "source": source, "n_rows": result.n_rows,
        "n_failed_rows": result.n_failed_rows, "id_columns": list(suite.id_columns),
        "schema_problems": [f"{p.column}: {p.text()}" for p in problems],
        "quarantine_path": None if quarantine is None else str(quarantine),
    }
    _write_json(paths.json, gx_result.to_json_dict())
    _write_text(paths.html, page)
    _write_json(paths.summary, result.to_dict())
    log.info("gate %s on %s: %s, %d of %d rows offend (%.2f s)", suite.name, source,
             "passed" if success else "FAILED", result.n_failed_rows, result.n_rows,
             time.perf_counter() - t0)
    if not success and raise_on_failure:
        raise GateError(_message(result, suite), result)
    return result


def gate_file(
    path: str | Path,
    suite: Suite,
    *,
    refs: Refs | None = None,
    report_dir: str | Path = "reports/quality",
    quarantine_dir: str | Path = "data/quarantine",
    raise_on_failure: bool = True,
) -> GateResult:
    """Read the parquet file at `path` (never writing it) and `gate` it.

    A file that cannot be read as parquet fails the gate: it is copied whole to
    `<quarantine_dir>/<suite>.unreadable.parquet`, with the reader's error beside it in
    `<suite>.unreadable.txt`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"gate {suite.name!r}: no file at {path}")
    try:
        frame = pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as e:
        paths = _Paths(suite.name, Path(report_dir), Path(quarantine_dir))
        return _unreadable(path, suite, e, paths, raise_on_failure)
    return gate(frame, suite, source=str(path), refs=refs, report_dir=report_dir,
                quarantine_dir=quarantine_dir, raise_on_failure=raise_on_failure)


# ---------------------------------------------------------------------------------------
# Great Expectations: one context per process
# ---------------------------------------------------------------------------------------

# GX contexts are not documented as thread-safe, and Prefect runs tasks in threads.
_GX_LOCK = threading.Lock()


@functools.cache
def _gx() -> tuple[Any, Any]:
    """The GX module and a whole-dataframe batch definition on an ephemeral context.

    Built once per process: importing GX takes ~3 s, and an ephemeral context keeps nothing
    on disk. Suites are never added to it (a batch validates a suite object directly), so
    gating the same suite twice cannot collide with "already exists".
    """
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    asset = context.data_sources.add_pandas("distillery").add_dataframe_asset("frame")
    return gx, asset.add_batch_definition_whole_dataframe("whole")


def _schema_expectations(suite: Suite, frame: pl.DataFrame) -> list:
    import great_expectations.expectations as gxe

    out = []
    for column, dtype in suite.schema.items():
        out.append(gxe.ExpectColumnToExist(column=column))
        gx_type = _GX_TYPES.get(dtype.base_type())
        if gx_type and column in frame.columns:
            out.append(gxe.ExpectColumnValuesToBeOfType(column=column, type_=gx_type))
    return out


def _render_data_docs(gx_result: Any, source: str) -> str:
    """The page a Data Docs site shows for this validation, rendered by GX's own renderer.

    A Data Docs *site* would file each run under validations/<suite>/<run>/<time>/..., keep
    an index of runs and copy static assets; one stable page per suite beside the JSON is
    what a DVC out and a reviewer want, and it is the same HTML the site builder writes.
    """
    from great_expectations.render.renderer import ValidationResultsPageRenderer
    from great_expectations.render.view import DefaultJinjaPageView

    try:
        document = ValidationResultsPageRenderer().render(gx_result)
        return DefaultJinjaPageView().render(document, show_how_to_buttons=False)
    except Exception as e:  # noqa: BLE001 - GX's site builder also renders pages best-effort
        log.warning("gate: GX could not render Data Docs for %s", source, exc_info=True)
        return _plain_html(f"Validation of {source}", [
            f"GX failed to render this page ({type(e).__name__}: {e}).",
            "The validation result is in the JSON report beside this file."])


# ---------------------------------------------------------------------------------------
# Schema and conversion
# ---------------------------------------------------------------------------------------

# The pandas dtype `_to_pandas` gives each polars dtype, as ExpectColumnValuesToBeOfType names it.
_GX_TYPES: dict[Any, str] = {
    pl.Int64: "int64", pl.Float64: "float64", pl.Boolean: "bool", pl.String: "str",
    pl.List: "list",
}


@dataclass(frozen=True)
class _SchemaProblem:
    column: str
    expected: pl.DataType | None   # None: a column the suite does not know
    found: pl.DataType | None      # None: the column is missing

    @property
    def expectation(self) -> str:
        if self.expected is None:
            return _UNKNOWN_KIND
        return _SCHEMA_KINDS[0] if self.found is None else _SCHEMA_KINDS[1]

    def text(self) -> str:
        if self.expected is None:
            return f"not in the suite's schema (found {self.found}); write only the schema's columns " \
                   f"or list it in the suite's extra_columns"
        return "missing" if self.found is None else f"expected {self.expected}, found {self.found}"


# How an unknown column is reported (GX's name for "the table's columns are these").
_UNKNOWN_KIND = "expect_table_columns_to_match_set"


def _schema_problems(frame: pl.DataFrame, suite: Suite) -> list[_SchemaProblem]:
    found = frame.schema
    problems = [_SchemaProblem(c, dtype, found.get(c)) for c, dtype in suite.schema.items()
                if found.get(c) != dtype]
    return problems + [_SchemaProblem(c, None, dtype) for c, dtype in found.items()
                       if c not in suite.schema and c not in suite.extra_columns]


def _frame_to_validate(frame: pl.DataFrame, suite: Suite, refs: Refs,
                       problems: list[_SchemaProblem]) -> pl.DataFrame:
    """The input plus derived columns and row numbers, as GX should see it.

    `derive` is written against the schema, so it runs on a conformed copy (missing columns
    null, mistyped ones cast where possible, else null): nulls make derived checks "not
    applicable", and the schema failure already names the column. GX then sees the columns
    as written, so its type check observes the wrong dtype.
    """
    unknown = [p.column for p in problems if p.expected is None]
    known = [p for p in problems if p.expected is not None]
    # Unknown columns are reported as such and play no part in the checks.
    frame = frame.drop(unknown)
    conformed = frame.with_columns(
        [_conform(frame, p.column, p.expected) for p in known]) if known else frame
    try:
        derived = suite.derive(conformed, refs) if suite.derive else conformed
    except pl.exceptions.PolarsError as e:
        # The frame was conformed to the schema above, so the refs are what does not fit.
        raise ValueError(f"suite {suite.name!r}: deriving its check columns failed "
                         f"({type(e).__name__}: {e}); refs given: {sorted(refs)}, each must "
                         f"follow its own suite's schema") from e
    if derived.height != frame.height:
        raise ValueError(f"suite {suite.name!r}: derive changed the row count "
                         f"({frame.height} -> {derived.height}); it must only add columns")
    mistyped = [frame.get_column(p.column) for p in known if p.found is not None]
    missing = [p.column for p in known if p.found is None]
    return (derived.with_columns(mistyped).drop(missing)
            .with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias(ROW)))


def _conform(frame: pl.DataFrame, column: str, dtype: pl.DataType) -> pl.Series:
    if column in frame.columns:
        try:
            return frame.get_column(column).cast(dtype, strict=False)
        except pl.exceptions.PolarsError:   # e.g. no cast from String to Boolean at all
            pass
    return pl.Series(column, [None] * frame.height, dtype=dtype)


@functools.cache
def _nullable_pandas_dtypes() -> dict[Any, Any]:
    # Nullable pandas dtypes keep an Int64 column with nulls an int column (numpy would make
    # it float64) and a Boolean column with nulls boolean (numpy: object).
    import pandas as pd
    import pyarrow as pa

    return {
        pa.int8(): pd.Int8Dtype(), pa.int16(): pd.Int16Dtype(), pa.int32(): pd.Int32Dtype(),
        pa.int64(): pd.Int64Dtype(), pa.uint8(): pd.UInt8Dtype(), pa.uint16(): pd.UInt16Dtype(),
        pa.uint32(): pd.UInt32Dtype(), pa.uint64(): pd.UInt64Dtype(),
        pa.float32(): pd.Float32Dtype(), pa.float64(): pd.Float64Dtype(),
        pa.bool_(): pd.BooleanDtype(),
        pa.string(): pd.StringDtype(), pa.large_string(): pd.StringDtype(),
        pa.string_view(): pd.StringDtype(),
    }


def _arrow_to_pandas_dtype(t: Any) -> Any:
    import pandas as pd
    import pyarrow as pa

    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_list_view(t):
        return pd.ArrowDtype(t)     # GX's type check sees `list`; numpy would give `object`
    return _nullable_pandas_dtypes().get(t)


def _to_pandas(frame: pl.DataFrame) -> Any:
    out = frame.to_pandas(types_mapper=_arrow_to_pandas_dtype)
    # pandas' nullable floats read an Arrow NaN as a null; rebuilt from values and validity,
    # a NaN stays a NaN (not null, and not finite), as polars and the derived checks see it.
    import pandas as pd

    for name, dtype in frame.schema.items():
        if dtype in (pl.Float32, pl.Float64):
            col = frame.get_column(name)
            if col.is_nan().any():
                out[name] = pd.arrays.FloatingArray(col.fill_null(0).to_numpy(),
                                                    col.is_null().to_numpy())
    return out


def _columns(expectation: Any) -> list[str]:
    """The columns an expectation reads (a GX expectation object or its kwargs dict)."""
    get = expectation.get if isinstance(expectation, dict) else (
        lambda k: getattr(expectation, k, None))
    cols = [get("column"), get("column_A"), get("column_B"), *(get("column_list") or [])]
    return [c for c in cols if c]


# ---------------------------------------------------------------------------------------
# Reading the GX result
# ---------------------------------------------------------------------------------------


def _failures(gx_result: Any, frame: pl.DataFrame, suite: Suite, problems: list[_SchemaProblem],
              ) -> tuple[list[dict[str, Any]], dict[int, list[str]], list[dict[str, Any]]]:
    """(failures, reasons by row number, one summary row per expectation)."""
    failures: list[dict[str, Any]] = []
    reasons: dict[int, list[str]] = {}
    rows: list[dict[str, Any]] = []
    broken = {p.column: p for p in problems}

    # Schema first: polars knows the exact dtypes, so it decides; every row offends.
    for p in problems:
        failure = _failure(p.expectation, [p.column], f"[{p.text()}]", None, frame.height)
        for i in range(frame.height):
            reasons.setdefault(i, []).append(failure["reason"])
        failure["examples"] = [_schema_example(frame, suite, p.column, i)
                               for i in range(min(N_EXAMPLES, frame.height))]
        failures.append(failure)
        if p.expected is None:      # GX never saw it: the summary still lists the check
            rows.append({"expectation": p.expectation, "column": p.column, "success": False,
                         "unexpected_count": frame.height})

    for r in gx_result.results:
        config = r.expectation_config
        kind, kwargs = config.type, dict(config.kwargs)
        columns = _columns(kwargs)
        result = dict(r.result or {})
        # Existence and dtype of a broken column were reported above, with both dtypes.
        schema_check = kind in _SCHEMA_KINDS and bool(columns) and columns[0] in broken
        ok = bool(r.success) and not schema_check
        rows.append({"expectation": kind, "column": ", ".join(columns) or None, "success": ok,
                     "unexpected_count": result.get("unexpected_count")})
        if ok or schema_check:
            continue
        failure = _failure(kind, columns, _params(kwargs), getattr(config, "description", None),
                           result.get("unexpected_count"))
        info = r.exception_info or {}
        if info.get("raised_exception"):
            failure["detail"] = f"GX raised: {info.get('exception_message')}"
        elif "observed_value" in result:
            failure["detail"] = f"observed {_plain(result['observed_value'])!r}"
        # A derived check's own value is just False; the input columns it names explain it.
        show = [c for c in (config.meta or {}).get("show", []) if c in frame.columns]
        for item in result.get("unexpected_index_list") or []:
            if not isinstance(item, dict) or ROW not in item:
                continue
            row = int(item[ROW])
            reasons.setdefault(row, []).append(failure["reason"])
            if len(failure["examples"]) < N_EXAMPLES:
                example = {k: _clip(_plain(v)) for k, v in item.items()
                           if not (show and k in columns)}
                example.update({c: _clip(_plain(frame.get_column(c)[row])) for c in show})
                failure["examples"].append(example)
        failures.append(failure)
    return failures, reasons, rows


def _failure(kind: str, columns: list[str], params: str, description: str | None,
             count: int | None) -> dict[str, Any]:
    """One failed expectation; `reason` is what its offending rows carry in quarantine,
    e.g. "expect_column_values_to_be_between(score) [min 0, max 1]"."""
    reason = f"{kind}({', '.join(columns)})" + (f" {params}" if params else "")
    reason += f" ({description})" if description else ""
    return {"expectation": kind, "column": ", ".join(columns) or None, "unexpected_count": count,
            "examples": [], "reason": reason, "params": params, "description": description,
            "detail": None}


def _schema_example(frame: pl.DataFrame, suite: Suite, column: str, i: int) -> dict[str, Any]:
    row = {c: _clip(_plain(frame.get_column(c)[i]))
           for c in (*suite.id_columns, column) if c in frame.columns}
    return {**row, ROW: i}


def _params(kwargs: dict[str, Any]) -> str:
    """The arguments worth reading in a message, e.g. "[min 0, max 1]"."""
    shown = [f"{label} {_short(kwargs[k])}" for k, label in _SHOWN_KWARGS.items()
             if kwargs.get(k) is not None]
    if kwargs.get("or_equal"):
        shown.append("or equal")
    return f"[{', '.join(shown)}]" if shown else ""


# ---------------------------------------------------------------------------------------
# Quarantine, reports, messages
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Paths:
    name: str
    report_dir: Path
    quarantine_dir: Path

    @property
    def json(self) -> Path:
        return self.report_dir / f"{self.name}.json"

    @property
    def html(self) -> Path:
        return self.report_dir / f"{self.name}.html"

    @property
    def summary(self) -> Path:
        return self.report_dir / f"{self.name}.summary.json"

    @property
    def quarantine(self) -> Path:
        return self.quarantine_dir / f"{self.name}.parquet"

    @property
    def unreadable(self) -> Path:
        return self.quarantine_dir / f"{self.name}.unreadable.parquet"

    @property
    def unreadable_note(self) -> Path:
        return self.quarantine_dir / f"{self.name}.unreadable.txt"

    def refuse_to_overwrite(self, source: str | Path) -> None:
        """Gating a quarantine file in place would overwrite the input: refuse."""
        src = Path(source).resolve()
        outputs = (self.json, self.html, self.summary, self.quarantine, self.unreadable,
                   self.unreadable_note)
        if any(src == p.resolve() for p in outputs):
            raise ValueError(f"gate {self.name!r}: the input {source} is one of the gate's own "
                             f"outputs; choose another report_dir or quarantine_dir")


def _quarantine(frame: pl.DataFrame, reasons: dict[int, list[str]], paths: _Paths) -> Path:
    rows = sorted(reasons)
    offending = frame.select(pl.all().gather(rows)).with_columns(
        pl.Series(REASON, ["; ".join(reasons[i]) for i in rows], dtype=pl.String))
    with atomic_path(paths.quarantine) as tmp:
        offending.write_parquet(tmp)
        _readable(tmp)
    return paths.quarantine


def _unreadable(path: Path, suite: Suite, error: Exception, paths: _Paths,
                raise_on_failure: bool) -> GateResult:
    paths.refuse_to_overwrite(path)
    reason = f"cannot read {path} as parquet: {type(error).__name__}: {error}"
    with atomic_path(paths.unreadable) as tmp:
        shutil.copyfile(path, tmp)           # a copy: the input stays where and as it was
        _readable(tmp)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    _write_text(paths.unreadable_note,
                f"source: {path}\nsha256: {digest}\nsize: {path.stat().st_size} bytes\n"
                f"reason: {reason}\n")
    paths.quarantine.unlink(missing_ok=True)
    failure = {"expectation": "read_parquet", "column": None, "unexpected_count": None,
               "examples": [], "reason": reason, "detail": str(error)}
    result = GateResult(
        suite=suite.name, source=str(path), success=False, n_rows=0, n_failed_rows=0,
        failures=[failure], statistics={"evaluated_expectations": 0},
        report_json=paths.json, report_html=paths.html, quarantine_path=paths.unreadable,
        expectations=[{"expectation": "read_parquet", "column": None, "success": False,
                       "unexpected_count": None}],
        report_summary=paths.summary,
    )
    # Not a GX result (GX never saw the data), but the reports must not keep a stale pass.
    _write_json(paths.json, {
        "success": False, "suite_name": suite.name, "results": [], "statistics": {},
        "meta": {"distillery": {"suite": suite.name, "source": str(path), "unreadable": reason}},
    })
    _write_text(paths.html, _plain_html(f"gate {suite.name}: {path} is unreadable", [reason]))
    _write_json(paths.summary, result.to_dict())
    if raise_on_failure:
        raise GateError(f"gate {suite.name!r} failed on {path}: {reason}; "
                        f"copied to {paths.unreadable}", result) from error
    return result


def _message(result: GateResult, suite: Suite) -> str:
    where = (f"quarantined to {result.quarantine_path}" if result.quarantine_path
             else "no row quarantined")
    lines = [f"gate {result.suite!r} failed on {result.source}: {result.n_failed_rows} of "
             f"{result.n_rows} rows offend; {where}; report {result.report_html}"]
    for f in result.failures:
        head = " ".join(x for x in (f["expectation"], f["params"],
                                    f["description"] and f"({f['description']})") if x)
        count = f["unexpected_count"]
        tail = [] if count is None else [f"{count} row{'' if count == 1 else 's'}"]
        if f["detail"]:
            tail.append(f["detail"])
        if f["examples"]:
            tail.append("e.g. " + "; ".join(_example_text(x, suite.id_columns)
                                            for x in f["examples"]))
        line = f"  - {f['column'] or '(table)'}: {head}"
        lines.append(f"{line}: {', '.join(tail)}" if tail else line)
    return "\n".join(lines)


def _example_text(example: dict[str, Any], id_columns: tuple[str, ...]) -> str:
    """E.g. "episode_id=e7 (score=1.7)"; the row number only where an id can't say which."""
    ids = [f"{c}={example[c]}" for c in id_columns if c in example]
    values = [f"{k}={v!r}" for k, v in example.items() if k not in id_columns and k != ROW]
    if ROW in example and (not ids or any(example.get(c) is None for c in id_columns)):
        values.append(f"row {example[ROW]}")
    text = ", ".join(ids) or "?"
    return f"{text} ({', '.join(values)})" if values else text


def _write_json(path: Path, obj: Any) -> None:
    _write_text(path, json.dumps(obj, indent=2, default=_jsonable) + "\n")


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
        _readable(tmp)


def _readable(path: Path) -> None:
    # atomic_path's temp file is mkstemp's 0600; reports and quarantine are meant to be read.
    path.chmod(0o644)


def _plain_html(title: str, paragraphs: list[str]) -> str:
    body = "".join(f"<p>{html.escape(p)}</p>" for p in paragraphs)
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title></head><body><h1>{html.escape(title)}</h1>{body}</body></html>\n")


# ---------------------------------------------------------------------------------------
# Values from GX (numpy scalars, pd.NA, pyarrow scalars) as plain Python
# ---------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):                # numpy scalar (np.float64 is a float) or array
        return _plain(value.tolist())
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if hasattr(value, "as_py"):                 # pyarrow scalar
        return _plain(value.as_py())
    if type(value).__name__ == "NAType":        # pandas.NA
        return None
    if isinstance(value, pl.Series):
        return _plain(value.to_list())
    return str(value)


def _jsonable(value: Any) -> Any:
    plain = _plain(value)
    return plain if plain is not value else str(value)


def _clip(value: Any, limit: int = 120) -> Any:
    """Examples quote values, not whole documents (initial_state can be kilobytes)."""
    if isinstance(value, str) and len(value) > limit:
        return value[: limit - 3] + "..."
    return value


def _short(value: Any, limit: int = 80) -> str:
    value = _plain(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)                      # GX stores bounds as floats: show 1, not 1.0
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
