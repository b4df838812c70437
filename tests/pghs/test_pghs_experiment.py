"""The experiment on the micro world, the saved simulator, `distillery simulate`, and the
report (`dvc repro pghs` itself: tests/e2e/test_pghs_track.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from distillery.cli import app
from distillery.pghs.evaluate import COMPARED, METHODS, claims, run_experiment, split, splits
from distillery.pghs.report import plot_groups, render
from distillery.pghs.simulator import Simulator, parse_strategy, read_strategies
from distillery.types import Claim


@pytest.fixture(scope="module")
def ran(micro, tmp_path_factory):
    frame, groups, world = micro
    cfg = _micro_cfg()
    summary, results = run_experiment(frame, groups, world, cfg, progress=False)
    out = tmp_path_factory.mktemp("sim")
    results[0].simulator.save(out)
    return summary, results, out


def _micro_cfg():
    from distillery.config import PghsConfig, from_dict

    params = yaml.safe_load(Path(__file__).with_name("micro_params.yaml").read_text())
    return from_dict(PghsConfig, params["pghs"])


def test_split_is_disjoint_and_seeded(micro):
    frame, _, _ = micro
    cfg = _micro_cfg()
    a, b = split(frame, cfg, 0), split(frame, cfg, 0)
    assert a == b and split(frame, cfg, 1) != a
    assert not (set(a.train) & set(a.val) or set(a.train) & set(a.test) or set(a.val) & set(a.test))


def test_folds_hold_out_every_merchant_once(micro):
    frame, _, _ = micro
    cfg = _micro_cfg()
    cfg.folds = 3
    folds = splits(frame, cfg, 0)
    tests = [m for f in folds for m in f.test]
    assert sorted(tests) == sorted(frame["merchant_id"].unique().to_list())
    for f in folds:
        assert not (set(f.train) & set(f.test) or set(f.val) & set(f.test) or set(f.train) & set(f.val))
        assert f.held_out_strategies == folds[0].held_out_strategies


def test_summary_has_every_method_slice_and_the_criterion(ran):
    summary, results, _ = ran
    assert len(results) == len(summary["seeds"])
    assert set(summary["errors"]) == set(METHODS)
    for m in METHODS:
        s = summary["errors"][m]["test_merchants"]["order_rate"]
        assert 0 < s["mean"] and len(s["per_seed"]) == len(summary["seeds"])
    assert "test_merchants_counterfactual" in summary["slices"]
    assert [c["compared_with"] for c in summary["criterion"]] == list(COMPARED)
    assert {"spearman", "top1", "regret"} <= set(summary["ranking"]["pghs"])
    pghs = summary["errors"]["pghs"]["test_merchants"]["order_rate"]["per_seed"]
    for c in summary["criterion"]:
        other = summary["errors"][c["compared_with"]]["test_merchants"]["order_rate"]["per_seed"]
        diffs = [o - p for o, p in zip(other, pghs, strict=True)]
        assert c["paired_differences"] == pytest.approx(diffs)
        assert c["paired_margin"] == pytest.approx(c["margin"])   # mean of differences
        assert c["holds"] == (c["paired_margin"] > c["paired_spread"])
        assert c["holds_unpaired"] == (c["margin"] > c["spread"])
    rows = claims(summary)
    assert rows and all(isinstance(r, Claim) and isinstance(r.holds, bool) and r.seeds and r.command
                        for r in rows)
    json.dumps(summary)


def test_reasoning_only_baseline_is_far_worse_than_the_hybrid(ran):
    summary, _, _ = ran
    e = {m: summary["errors"][m]["test_merchants"]["order_rate"]["mean"] for m in METHODS}
    assert e["pghs"] < 0.75 * e["reasoning_only"]


def test_simulator_round_trip_simulate_and_rank(ran, micro):
    _, results, out = ran
    sim = Simulator.load(out)
    merchant = sim.merchant(sim.meta["test_merchants"][0])
    strategies = pl.DataFrame([parse_strategy("discount_depth=0.0"),
                               parse_strategy("discount_depth=0.4,coupon_type=percent,ad_spend=400")])
    outcomes = sim.simulate(merchant, strategies)
    assert outcomes.height == 2 * len(sim.groups)
    again = results[0].simulator.simulate(merchant, strategies)
    assert outcomes["pred_order_rate"].to_list() == pytest.approx(again["pred_order_rate"].to_list())
    ranking = sim.rank(outcomes)
    assert ranking["rank"].to_list() == [1, 2]
    assert ranking["mix_order_rate"].is_sorted(descending=True)
    with pytest.raises(KeyError, match="not in the simulator"):
        sim.merchant("nobody")
    with pytest.raises(ValueError, match="key=value"):
        parse_strategy("discount=0.2")


def test_cli_simulate_prints_outcomes_and_ranking(ran, tmp_path):
    _, _, out = ran
    sim = Simulator.load(out)
    file = tmp_path / "cands.csv"
    file.write_text("strategy_id,discount_depth,coupon_type\ncheap,0.0,none\ndeal,0.3,percent\n")
    assert read_strategies(file).height == 2
    runner = CliRunner()
    merchant = sim.meta["test_merchants"][0]
    res = runner.invoke(app, ["simulate", "--model-dir", str(out), "--merchant", merchant,
                              "--strategies", str(file), "--discount", "0.1"])
    assert res.exit_code == 0, res.output
    assert "ranking by group-mix-weighted order_rate" in res.output and "deal" in res.output
    res = runner.invoke(app, ["simulate", "--model-dir", str(out), "--category", "pizza",
                              "--rating", "4.5", "--price-level", "20", "--strategy",
                              "discount_depth=0.2", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert len(data["outcomes"]) == len(sim.groups) and data["ranking"][0]["rank"] == 1
    res = runner.invoke(app, ["simulate", "--model-dir", str(out), "--merchant", merchant])
    assert res.exit_code == 2 and "candidate strategies" in res.output


@pytest.mark.parametrize(("args", "files", "said"), [
    (["--discount", "1.5"], {}, "discount_depth must be in [0, 0.95], got 1.5"),
    (["--discount", "-0.5"], {}, "discount_depth must be in [0, 0.95]"),
    (["--coupon", "bogus"], {}, "coupon_type must be one of"),
    (["--delivery-fee", "-3"], {}, "--delivery-fee -3: delivery_fee must be a finite number >= 0"),
    (["--delivery-fee", "inf"], {}, "--delivery-fee inf: delivery_fee must be a finite number >= 0, got inf"),
    (["--strategy", "ad_spend=inf"], {}, "ad_spend must be a finite number >= 0, got inf"),
    (["--strategy", "menu_breadth=1e30"], {}, "menu_breadth must be a whole number, got '1e30'"),
    # a whole number, but past what the simulator's integer column holds
    (["--strategies", "{wide}"], {"wide": '[{"menu_breadth": 1e30}]'}, "menu_breadth must be a whole number >= 1 (below 2^63)"),
    (["--menu-breadth", "0"], {}, "menu_breadth must be a whole number >= 1"),
    (["--strategy", "discount_depth=nan"], {}, "discount_depth must be in [0, 0.95], got nan"),
    (["--strategies", "{dup}"], {"dup": "strategy_id,discount_depth\nA,0.1\nA,0.3\n"},
     "strategy_id ['A'] given to more than one candidate"),
    (["--strategies", "{bad}"], {"bad": "discount_depth\nabc\n"}, "discount_depth must be a number, got 'abc'"),
    (["--strategies", "{broken}"], {"broken": "{"}, "cannot be read as strategies"),
    (["--strategies", "{big}"], {"big": '[{"discount_depth": 1' + "0" * 40 + "}]"},
     "cannot be read as strategies: int value too large"),
    # more digits than Python converts to an int: json raises ValueError, not JSONDecodeError
    (["--strategies", "{huge}"], {"huge": '[{"discount_depth": ' + "9" * 5000 + "}]"},
     "cannot be read as strategies: Exceeds the limit (4300 digits)"),
    (["--strategies", "{deep}"], {"deep": "[" * 100_000}, "cannot be read as strategies: nested too deeply"),
    (["--strategies", "{dir}"], {}, "not a file"),
])
def test_cli_simulate_refuses_bad_candidates_in_one_line(ran, tmp_path, args, files, said):
    """A candidate outside the data's ranges, an unknown coupon, a repeated strategy_id, an
    unreadable file: exit 2 and one line naming it, no traceback, no prediction."""
    _, _, out = ran
    merchant = Simulator.load(out).meta["test_merchants"][0]
    paths = {"dir": str(tmp_path)}
    for name, text in files.items():
        paths[name] = str(tmp_path / (name + (".json" if name in ("broken", "big", "huge", "deep", "wide") else ".csv")))
        Path(paths[name]).write_text(text)
    args = [a.format(**paths) for a in args]
    res = CliRunner().invoke(app, ["simulate", "--model-dir", str(out), "--merchant", merchant, *args])
    assert res.exit_code == 2, res.output
    assert said in res.output and "Traceback" not in res.output and "ranking" not in res.output


@pytest.mark.parametrize(("args", "said"), [
    (["--merchant", "m1", "--discount", "-1"], "--discount -1: discount_depth must be in [0, 0.95], got -1.0"),
    (["--merchant", "m1", "--menu-breadth", "-1"], "--menu-breadth -1: menu_breadth must be a whole number >= 1"),
    (["--merchant", "m1", "--coupon", ""], "--coupon '': coupon_type must be one of"),
    (["--category", "pizza", "--rating", "4", "--price-level", "0"],
     "--price-level 0: a price level is a basket price above 0"),
    (["--category", "pizza", "--rating", "-1", "--price-level", "20"], "--rating -1: a rating is in [0, 5]"),
    (["--category", "pizza", "--rating", "4"], "a new merchant needs --category, --rating and --price-level: "
                                               "--price-level not given"),
    (["--discount", "0.2"], "name a known --merchant, or give --category, --rating and --price-level"),
])
def test_cli_simulate_takes_every_typed_value_as_given_and_names_the_option(tmp_path, args, said):
    """No value the user can type means "not given" (-1 is a discount of -1, refused as such),
    and each mistake is named by its option before the simulator is loaded."""
    res = CliRunner().invoke(app, ["simulate", "--model-dir", str(tmp_path / "none"), *args])
    assert res.exit_code == 2, res.output
    assert said in " ".join(res.output.split()) and "simulator.json" not in res.output


def test_cli_simulate_help_shows_no_sentinel_default():
    res = CliRunner().invoke(app, ["simulate", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "--price-level" in res.output
    assert "-1" not in res.output and "[default: ]" not in res.output


def test_cli_simulate_names_every_candidate_and_checks_the_rating(ran, tmp_path):
    """A file's named candidates beside flag candidates: each gets an id (none is null); a
    new merchant's rating beyond [0, 5] is refused."""
    _, _, out = ran
    merchant = Simulator.load(out).meta["test_merchants"][0]
    file = tmp_path / "cands.csv"
    file.write_text("strategy_id,discount_depth\nA,0.1\nB,0.3\n")
    res = CliRunner().invoke(app, ["simulate", "--model-dir", str(out), "--merchant", merchant,
                                   "--strategies", str(file), "--discount", "0.2", "--json"])
    assert res.exit_code == 0, res.output
    ids = [r["strategy_id"] for r in json.loads(res.output)["ranking"]]
    assert sorted(ids) == ["A", "B", "cand2"]
    res = CliRunner().invoke(app, ["simulate", "--model-dir", str(out), "--category", "pizza", "--rating", "7",
                                   "--price-level", "20", "--discount", "0.2"])
    assert res.exit_code == 2 and "--rating 7: a rating is in [0, 5]" in res.output


def _simulate(out: Path, *args: str) -> tuple[int, str]:
    res = CliRunner().invoke(app, ["simulate", "--model-dir", str(out), *args])
    return res.exit_code, res.output


def _refused(code: int, output: str, said: str) -> None:
    """Exit 2 with one line that says `said`: no traceback, no prediction."""
    assert code == 2, output
    assert said in output, output
    assert len(output.strip().splitlines()) == 1 and "Traceback" not in output and "ranking" not in output


def test_simulate_refuses_a_category_or_coupon_type_the_simulator_does_not_know(ran):
    """A misspelt category (or one in the wrong case) is refused with the known ones, not read
    as "no category"; a library caller's unknown coupon type likewise, as the CLI refuses it."""
    _, _, out = ran
    sim = Simulator.load(out)
    assert set(sim.fit.levels["merchant_category"]) <= set(sim.categories)
    assert set(sim.merchants["merchant_category"].to_list()) <= set(sim.categories)
    known = sim.merchant(sim.meta["test_merchants"][0])
    new = {"merchant_id": "new", "merchant_category": known["merchant_category"],
           "merchant_rating": 4.0, "merchant_price_level": 20.0}
    strategies = pl.DataFrame([parse_strategy("discount_depth=0.1")])
    assert sim.simulate(new, strategies).height == len(sim.groups)
    assert sim.simulate(known, strategies).height == len(sim.groups)
    for wrong in ("martian", known["merchant_category"].upper()):
        with pytest.raises(ValueError, match="merchant_category must be one of"):
            sim.simulate({**new, "merchant_category": wrong}, strategies)
        code, output = _simulate(out, "--category", wrong, "--rating", "4", "--price-level", "20",
                                 "--discount", "0.1", "--json")
        _refused(code, output, f"merchant 'new': merchant_category must be one of {sim.categories}, "
                               f"got {wrong!r}")
    with pytest.raises(ValueError, match=r"strategy 'x': coupon_type must be one of \['none'"):
        sim.simulate(known, pl.DataFrame([parse_strategy("strategy_id=x,coupon_type=bogus")]))
    with pytest.raises(ValueError, match="no strategies to simulate"):
        sim.simulate(known, strategies.clear())


def test_strategies_file_fields_left_out_null_or_empty_take_their_defaults(ran, tmp_path):
    """Objects with different keys, a null and an empty CSV cell: each missing value takes its
    default, and the candidates simulate as if the defaults had been written out."""
    _, _, out = ran
    merchant = Simulator.load(out).meta["test_merchants"][0]
    spelt = tmp_path / "spelt.csv"
    spelt.write_text("strategy_id,discount_depth,delivery_fee,coupon_type,ad_spend,menu_breadth\n"
                     "a,0.1,3.0,none,0.0,40\nb,0.2,3.0,percent,0.0,40\nc,0.0,1.5,none,0.0,25\n")
    files = {
        "hetero.json": '[{"strategy_id": "a", "discount_depth": 0.1},\n'
                       ' {"strategy_id": "b", "discount_depth": 0.2, "coupon_type": "percent"},\n'
                       ' {"strategy_id": "c", "delivery_fee": 1.5, "menu_breadth": 25, "coupon_type": null}]',
        "cells.csv": "strategy_id,discount_depth,delivery_fee,coupon_type,menu_breadth\n"
                     "a,0.1,,,\nb,0.2,,percent,\nc,,1.5,,25\n",
    }
    code, output = _simulate(out, "--merchant", merchant, "--strategies", str(spelt), "--json")
    assert code == 0, output
    want = json.loads(output)
    for name, text in files.items():
        path = tmp_path / name
        path.write_text(text)
        frame = read_strategies(path)
        assert frame.null_count().row(0) == (0,) * frame.width
        assert frame.sort("strategy_id")["coupon_type"].to_list() == ["none", "percent", "none"]
        code, output = _simulate(out, "--merchant", merchant, "--strategies", str(path), "--json")
        assert code == 0, output
        assert json.loads(output) == want, name


@pytest.mark.parametrize(("name", "text"), [
    ("header.csv", "discount_depth\n"), ("blank.csv", ""), ("empty.json", "[]"), ("lines.jsonl", "\n\n"),
    ("rows.parquet", None),
])
def test_a_strategies_file_without_strategies_is_refused(ran, tmp_path, name, text):
    _, _, out = ran
    merchant = Simulator.load(out).meta["test_merchants"][0]
    path = tmp_path / name
    if text is None:
        pl.DataFrame({"discount_depth": []}, schema={"discount_depth": pl.Float64}).write_parquet(path)
    else:
        path.write_text(text)
    with pytest.raises(ValueError, match="no strategies in it"):
        read_strategies(path)
    _refused(*_simulate(out, "--merchant", merchant, "--strategies", str(path)), f"{path}: no strategies in it")


def test_strategies_file_suffix_in_any_case_and_json_lines(ran, tmp_path):
    """.JSON is JSON and .jsonl is JSON Lines (not CSV); each reads as the same candidates."""
    _, _, out = ran
    merchant = Simulator.load(out).meta["test_merchants"][0]
    rows = [{"strategy_id": "a", "discount_depth": 0.1}, {"strategy_id": "b", "coupon_type": "fixed"}]
    (tmp_path / "c.json").write_text(json.dumps(rows))
    (tmp_path / "c.JSON").write_text(json.dumps(rows))
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    (tmp_path / "c.NDJSON").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "c.CSV").write_text("strategy_id,discount_depth,coupon_type\na,0.1,\nb,,fixed\n")
    pl.DataFrame(rows).write_parquet(tmp_path / "c.Parquet")
    want = read_strategies(tmp_path / "c.json")
    assert want.height == 2 and want["coupon_type"].to_list() == ["none", "fixed"]
    results = set()
    for name in ("c.json", "c.JSON", "c.jsonl", "c.NDJSON", "c.CSV", "c.Parquet"):
        got = read_strategies(tmp_path / name)
        assert got.select(want.columns).cast(want.schema).equals(want), name
        code, output = _simulate(out, "--merchant", merchant, "--strategies", str(tmp_path / name), "--json")
        assert code == 0, output
        results.add(output)
    assert len(results) == 1
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"discount_depth": 0.1}\n[0.2]\n')
    _refused(*_simulate(out, "--merchant", merchant, "--strategies", str(bad)),
             f"{bad}: line 2: expected a JSON object (one strategy a line)")
    bad.write_text('{"discount_depth": 0.1}\n{x\n')
    _refused(*_simulate(out, "--merchant", merchant, "--strategies", str(bad)),
             f"{bad}: cannot be read as strategies: line 2: Expecting property name")


def _set_json(path: Path, *keys: str, value: object) -> None:
    data = json.loads(path.read_text())
    inner = data
    for k in keys[:-1]:
        inner = inner[k]
    inner[keys[-1]] = value
    path.write_text(json.dumps(data))


REBUILT = "(written by `dvc repro pghs`; run it again)"


@pytest.mark.parametrize(("file", "damage", "said"), [
    ("fit_ctr.txt", None, "not found (made by the `pghs` stage: run `dvc repro pghs`)"),
    ("fit_ctr.txt", "garbage\n", f"not a LightGBM text model, or cut short {REBUILT}"),
    ("fit_ctr.txt", "", f"not a LightGBM text model, or cut short {REBUILT}"),
    ("fit_order_rate.txt", "fit_ctr.txt", "not a model of the simulator's order_rate features"),
    ("merchants.parquet", "garbage\n", "not a parquet file ("),
    ("merchants.parquet", None, "not found, so merchant"),
    ("simulator.json", "[]", f"expected a JSON object, got a list {REBUILT}"),
    ("simulator.json", "{}", f"no 'targets' entry {REBUILT}"),
    ("simulator.json", "{x", "not valid JSON (Expecting property name enclosed in double quotes at line 1"),
    ("simulator.json", ("prior", "rates", {}), "'prior.rates' must be an object of numbers"),
    ("simulator.json", ("fit", "files", {}), "no model file for target"),
    ("simulator.json", ("groups", [{"x": 1}]), "groups[0]: "),
    ("policies.json", "{x", "not valid JSON (Expecting property name enclosed in double quotes at line 1"),
    ("policies.json", "[]", f"expected a JSON object, got a list {REBUILT}"),
    ("policies.json", None, "not found (made by the `pghs` stage"),
])
def test_a_damaged_simulator_is_named_by_its_file_in_one_line(ran, tmp_path, file, damage, said):
    """A simulator file missing or broken: one line naming the file, from Simulator.load (or,
    for the merchant table, from looking a merchant up), and the stage that writes it."""
    import shutil

    _, _, out = ran
    merchant = Simulator.load(out).meta["test_merchants"][0]
    model = tmp_path / "pghs"
    shutil.copytree(out, model)
    path = model / file
    if damage is None:
        path.unlink()
    elif isinstance(damage, tuple):
        _set_json(path, *damage[:-1], value=damage[-1])
    elif damage.startswith("fit_"):
        shutil.copyfile(model / damage, path)
    else:
        path.write_text(damage)
    code, output = _simulate(model, "--merchant", merchant, "--discount", "0.1")
    _refused(code, output, f"{path}: {said}")
    assert "dvc repro pghs" in output
    with pytest.raises((ValueError, FileNotFoundError), match=re.escape(f"{path}: {said}")):
        Simulator.load(model).merchant(merchant)


def test_report_renders_tables_claims_and_one_plot_per_group(ran, tmp_path):
    summary, results, _ = ran
    plots = plot_groups(results[0].predictions, "order_rate", tmp_path / "pghs")
    assert len(plots) == len(set(results[0].predictions["user_group"].to_list()))
    assert all(p.stat().st_size > 1000 for p in plots)
    text = render(summary, claims(summary), plots, tmp_path / "pghs.md", results[0].policies)
    assert "## Done criterion" in text and "| pghs " in text and "45.8%" in text
    assert "](pghs/pred_vs_actual_students.png)" in text
