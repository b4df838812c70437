"""The SQL grid's pure pieces: cells, names, per-run numbers, TRUST-SQL's findings over seeds."""

from __future__ import annotations

import pytest

from distillery.evaluate.sql_grid import (
    CELLS,
    Cell,
    cells,
    claim_rows,
    exp_name,
    markdown,
    parse_exp_name,
    run_numbers,
    runs_from_record,
)


def summary(acc, hall=0.1, calls=4.0, share=0.02):
    return {"accuracy": acc, "hallucination_rate": hall, "explore_calls": calls, "described_share": share,
            "schema_f1": 0.5, "n": 100.0}


def metrics(warm, rl, hall=0.1, scale=None, calls=4.0, share=0.02):
    held = {"oracle": summary(1.0), "random": summary(0.0), "sql_warmup": summary(warm),
            "sql_rl": summary(rl, hall, calls, share)}
    return {"heldout": held, "test": {k: summary(v["accuracy"] / 2) for k, v in held.items()},
            "scale": {"sql_rl": {k: summary(v) for k, v in (scale or {}).items()}},
            "rl": {"method": "dual", "seed": 0, "curve": [warm, rl]}, "seconds": 9.0}


def test_cells_names_round_trip_and_overrides():
    cs = cells()
    assert [c.name for c in cs] == list(CELLS) and cs[0].name == "dual"
    for c in cs:
        assert parse_exp_name(exp_name(c, 2, "t1"), "t1") == (c, 2)
        assert parse_exp_name(exp_name(c, 2, "t1"), "t9") is None
        assert c.target == "sql_evaluate" and c.metrics_file == "reports/details/sql_evaluate.json"
    assert Cell("grpo").overrides(1) == ["sql_rl.method=grpo", "sql_rl.seed=1"]
    assert "sql_track.propose_phase=false" in Cell("no_propose").overrides(0)
    assert parse_exp_name("sg-t1-nosuch-s0", "t1") is None and parse_exp_name("sg-t1-dual-x", "t1") is None


def test_run_numbers_reads_a_sql_metrics_record():
    r = run_numbers(metrics(0.1, 0.2, scale={"20": 0.3}))
    assert r.accuracy == 0.2 and r.gain == pytest.approx(0.1) and r.scale["20"]["accuracy"] == 0.3
    assert r.test_accuracy == 0.1
    with pytest.raises(ValueError, match="reports/details/sql_evaluate.json"):
        run_numbers({"rl": {}})


def _record():
    runs = []
    for seed, (d, g) in enumerate([(0.30, 0.25), (0.32, 0.26), (0.31, 0.27)]):
        runs.append({"name": "dual", "seed": seed, "metrics": metrics(0.10, d, hall=0.05, scale={"20": 0.3, "200": 0.3})})
        runs.append({"name": "grpo", "seed": seed, "metrics": metrics(0.10, g)})
        runs.append({"name": "no_propose", "seed": seed, "metrics": metrics(0.08, d - 0.05, hall=0.30)})
        runs.append({"name": "full_schema", "seed": seed, "metrics": metrics(0.1, 0.3, scale={"20": 0.5, "200": 0.1})})
    return {"tag": "t", "runs": runs}


def test_findings_over_seeds():
    runs = runs_from_record(_record())
    rows = {c.finding: c for c in claim_rows(runs)}
    dual = rows["Dual-Track GRPO beats standard GRPO (summed reward) in execution accuracy"]
    # paired diffs 0.05, 0.06, 0.04: mean 0.05 > std 0.01; relative 0.31 / 0.26 - 1 = +19.2%
    assert dual.holds is True and "+19.2%" in dual.measured and dual.seeds == "0, 1, 2"
    rl = rows["Dual-Track RL beats its warm-up student on held-out databases"]
    assert rl.holds is True                      # gain 0.21 > 2 x std 0.01
    hall = rows["without the Propose phase, more answers use hallucinated identifiers"]
    assert hall.holds is True and "30.0" in hall.measured
    small = rows["at 20 tables, tools match or beat the full schema in the prompt"]
    big = rows["at 200 tables, tools match or beat the full schema in the prompt"]
    assert small.holds is False and big.holds is True
    assert "cell gold_schema" in rows and rows["cell gold_schema"].measured == "no finished run"
    assert "RL without the warm-up learns to enumerate the schema" not in rows     # no such runs
    text = markdown(runs, "# grid")
    assert text.startswith("# grid") and "acc@200" in text and text.count("| dual |") == 3


def test_no_warmup_enumeration_rule():
    record = {"runs": [{"name": "dual", "seed": s, "metrics": metrics(0.1, 0.2, share=0.02)} for s in (0, 1)]
              + [{"name": "no_warmup", "seed": s, "metrics": metrics(0.0, 0.0, calls=12.0, share=0.2)} for s in (0, 1)]}
    row = next(c for c in claim_rows(runs_from_record(record)) if c.finding.startswith("RL without the warm-up"))
    assert row.holds is True and "12.00" in row.measured


def test_too_few_seeds_say_so():
    record = {"runs": [{"name": "dual", "seed": 0, "metrics": metrics(0.1, 0.2)},
                       {"name": "grpo", "seed": 0, "metrics": metrics(0.1, 0.1)}]}
    rows = {c.finding: c for c in claim_rows(runs_from_record(record))}
    assert rows["Dual-Track GRPO beats standard GRPO (summed reward) in execution accuracy"].holds is None
    assert rows["Dual-Track RL beats its warm-up student on held-out databases"].holds is None
