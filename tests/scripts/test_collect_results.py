"""scripts/collect_results.py on hand-made work dirs: numbers, markers, efficiency ratios."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from SequentialPrune import PruneConfig
from scripts import collect_results as cr

DS = ["BenchA", "BenchB"]


def make_run(work_dir: Path, cfg: PruneConfig, results=None, stats=(), files=(), model="llava_seqprune",
             datasets=DS) -> Path:
    """A run folder as run.py leaves it: setting, results, stats; ``files`` are extra empty files."""
    run_dir = work_dir / f"{model}_{cfg.tag()}"
    (run_dir / cr.STATS_DIR).mkdir(parents=True)
    (run_dir / cr.SETTING_FILE).write_text(json.dumps({
        "model_name": run_dir.name, "identity": {"model": model, "prune": cfg.to_dict()},
        "launches": [{"datasets": list(datasets)}]}))
    if results is not None:
        (run_dir / cr.RESULTS_FILE).write_text(json.dumps(results))
    lines = [json.dumps(dict(dataset=d, index=i, prefill_time_s=t, prefill_flops=f, prefill_flops_unpruned=fu,
                             avg_image_tokens_per_layer=a)) for d, i, t, f, fu, a in stats]
    (run_dir / cr.STATS_DIR / "all.rank0.jsonl").write_text("\n".join(lines) + "\n")
    for name in files:
        (run_dir / name.format(name=run_dir.name)).touch()
    return run_dir


def ok(v):
    return {"metric": "Overall", "value": v, "problem": None}


@pytest.fixture
def work(tmp_path):
    wd = tmp_path / "wd"
    make_run(wd, PruneConfig("none"), {"BenchA": ok(80.0), "BenchB": ok(40.0)},
             stats=[("BenchA", 0, 0.010, 100, 100, 64), ("BenchA", 1, 0.030, 100, 100, 64),
                    ("BenchB", 0, 0.020, 100, 100, 64)])
    make_run(wd, PruneConfig("sequential", 0.5, 2), {"BenchA": ok(60.0), "BenchB": ok(40.0)},
             stats=[("BenchA", 0, 0.005, 60, 100, 40), ("BenchA", 1, 0.015, 60, 100, 40),
                    ("BenchB", 0, 0.010, 80, 100, 44),
                    ("BenchB", 0, 0.010, 70, 100, 42)])  # a re-generated sample: the last line counts
    # Evaluation failed on one dataset, never evaluated the other.
    make_run(wd, PruneConfig("fastv", 0.5, 2), {"BenchA": {"metric": None, "value": None, "problem": "failed: boom"}},
             files=["{name}_BenchB.xlsx"])
    # Interrupted: only a rank's partial pickle and some stats.
    make_run(wd, PruneConfig("fastv", 0.5, 3), None, stats=[("BenchA", 0, 0.004, 50, 100, 32)],
             files=["02_BenchA.pkl"])
    return wd


def rows_by(rows):
    return {(r["method"], r["ratio"], r["layer"]): r for r in rows}


def test_numbers_relative_scores_and_efficiency(work):
    rows, cols = cr.build_table([work])
    assert cols == DS
    by = rows_by(rows)
    base, seq = by[("none", 0.0, None)], by[("sequential", 0.5, 2)]
    assert base["Average"] == pytest.approx(60.0) and base["% of unpruned"] == pytest.approx(100.0)
    assert seq["Average"] == pytest.approx(50.0)
    assert seq["% of unpruned"] == pytest.approx(100 * (60 / 80 + 40 / 40) / 2)  # mean of per-dataset ratios
    assert seq["samples"] == 3
    assert seq["avg image tokens/layer"] == pytest.approx((40 + 40 + 42) / 3)
    assert seq["prefill FLOPs (x unpruned)"] == pytest.approx((60 + 60 + 70) / 300)
    assert seq["prefill time ms"] == pytest.approx(10.0)
    assert seq["prefill time (x unpruned)"] == pytest.approx(0.010 / 0.020)
    assert seq["step %"] == pytest.approx(10) and seq["status"] == "ok"


def test_failed_partial_and_unevaluated_are_marked_not_dropped(work):
    by = rows_by(cr.build_table([work])[0])
    failed = by[("fastv", 0.5, 2)]
    assert failed["BenchA"] == "failed" and failed["BenchB"] == "no-eval"
    assert failed["Average"] == "incomplete" and failed["% of unpruned"] is None
    assert failed["status"] == "failed, no-eval"
    partial = by[("fastv", 0.5, 3)]
    assert partial["BenchA"] == "partial" and partial["BenchB"] == "missing"
    assert partial["samples"] == 1 and partial["prefill time (x unpruned)"] == pytest.approx(0.004 / 0.010)


def test_expected_grid_adds_missing_runs(work):
    rows, _ = cr.build_table([work], ratios=[0.5, 0.9], layers=[2])
    by = rows_by(rows)
    assert len(rows) == 4 + 2  # the found runs, plus fastv and sequential at 0.9 (the rest exist)
    for key in [("fastv", 0.9, 2), ("sequential", 0.9, 2)]:
        assert by[key]["status"] == "missing run" and by[key]["BenchA"] == "missing"
    assert by[("sequential", 0.5, 2)]["status"] == "ok"  # found runs are not duplicated


def test_vision_side_methods_at_an_equal_budget_are_collected(work):
    """A budget-solved vision-side run (192 of 576: R = 0.665 at K = 0) is a row of its own, after the decoder-side
    methods; the expected grid puts VisionZip, which merges before the decoder only, at its own K = 0."""
    for m in ("visionzip", "fastervlm"):
        make_run(work, PruneConfig(m, 0.665, 0), {"BenchA": ok(70.0), "BenchB": ok(40.0)},
                 stats=[("BenchA", 0, 0.004, 35, 100, 21), ("BenchB", 0, 0.004, 35, 100, 21)])
    rows, _ = cr.build_table([work], methods=["sequential", "visionzip", "fastervlm"], ratios=[0.665], layers=[2])
    assert [r["method"] for r in rows if r["status"] == "ok"] == ["none", "sequential", "fastervlm", "visionzip"]
    by = rows_by(rows)
    vz = by[("visionzip", 0.665, 0)]
    assert vz["setting"] == "visionzip_r0.665_l0" and vz["avg image tokens/layer"] == pytest.approx(21)
    assert vz["% of unpruned"] == pytest.approx(100 * (70 / 80 + 1) / 2) and vz["step %"] is None
    assert ("visionzip", 0.665, 2) not in by  # found at K = 0, not expected again at a layer it refuses
    assert by[("fastervlm", 0.665, 2)]["status"] == "missing run"  # FasterVLM may also prune later


def test_missing_dataset_column_and_outputs(work, tmp_path, capsys):
    prefix = tmp_path / "out" / "table"
    assert cr.main([str(work), "--datasets", "BenchA", "BenchB", "BenchC", "--out", str(prefix)]) == 0
    md = prefix.with_suffix(".md").read_text()
    assert "BenchC" in md and "| missing |" in md and "Markers:" in md
    import pandas as pd
    df = pd.read_csv(prefix.with_suffix(".csv"))
    assert len(df) == 4 and set(df["BenchC"]) == {"missing"}
    assert prefix.with_suffix(".xlsx").is_file()
    assert "BenchC" in capsys.readouterr().out


def test_an_unwritable_out_is_one_line_after_the_table(work, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert cr.main([str(work), "--out", str(blocker / "table")]) == 1
    out, err = capsys.readouterr()
    assert "BenchA" in out  # the table was printed first
    assert err.startswith("collect_results: error: cannot write ") and "choose another --out" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_no_baseline_means_no_relative_numbers(tmp_path):
    make_run(tmp_path, PruneConfig("sequential", 0.75, 2), {"BenchA": ok(10.0), "BenchB": ok(20.0)},
             stats=[("BenchA", 0, 0.01, 50, 100, 30)])
    (row,), _ = cr.build_table([tmp_path])
    assert row["% of unpruned"] is None and row["prefill time (x unpruned)"] is None
    assert row["prefill FLOPs (x unpruned)"] == pytest.approx(0.5)  # needs no baseline run


def test_ratios_without_layers_is_an_error(work):
    with pytest.raises(SystemExit):
        cr.main([str(work), "--ratios", "0.5"])


def test_failed_rows_and_empty_answers_are_shown(tmp_path):
    res = {"BenchA": dict(ok(50.0), samples=6, empty_answers=2, failed_rows=0),
           "BenchB": dict(ok(40.0), samples=6, empty_answers=0, failed_rows=3,
                          problem="failed rows: 3 of 6 rows failed")}
    make_run(tmp_path, PruneConfig("sequential", 0.5, 2), res)
    (row,), _ = cr.build_table([tmp_path])
    assert row["BenchA"] == pytest.approx(50.0) and row["BenchB"] == "failed rows"
    assert row["empty answers"] == 2 and row["failed rows"] == 3
    assert row["Average"] == "incomplete" and row["status"] == "failed rows"
    assert "`failed rows`: some rows failed" in cr.to_markdown(*cr.build_table([tmp_path]))


def test_counts_unknown_when_a_dataset_has_none(work):
    by = rows_by(cr.build_table([work])[0])  # results written before counts were recorded
    assert by[("none", 0.0, None)]["empty answers"] is None and by[("none", 0.0, None)]["failed rows"] is None


def test_unreadable_run_folders_are_listed_and_the_rest_is_printed(work, capsys):
    """An older layout of the record (every method carried step and seed) and a setting file cut short: each
    is a row marked unreadable with the reason, the other runs' table is printed, and the grid does not add
    their settings again as missing."""
    old = make_run(work, PruneConfig("fastv", 0.9, 2), {"BenchA": ok(10.0), "BenchB": ok(5.0)})
    rec = json.loads((old / cr.SETTING_FILE).read_text())
    rec["identity"]["prune"].update(step=0.1, seed=0)  # what an older version wrote for every method
    (old / cr.SETTING_FILE).write_text(json.dumps(rec))
    cut = make_run(work, PruneConfig("sequential", 0.9, 3))
    (cut / cr.SETTING_FILE).write_text('{"model_name": "llava_seqpr')
    rows, cols = cr.build_table([work], ratios=[0.9], layers=[2, 3])
    by_name = {r["setting"]: r for r in rows}
    assert by_name[old.name]["status"].startswith("unreadable: its pruning setting cannot be read (step")
    assert by_name[cut.name]["status"].startswith(f"unreadable: {cut / cr.SETTING_FILE} is not a setting record")
    assert by_name[cut.name]["model"] == "llava_seqprune" and by_name[cut.name]["BenchA"] == "unreadable"
    assert not any(r["setting"] in ("fastv_r0.9_l2", "sequential_r0.9_l3_s10") for r in rows)  # not "missing"
    assert any(r["status"] == "ok" for r in rows)
    assert cr.main([str(work), "--out", str(work / "table")]) == 0
    assert "unreadable" in (work / "table.md").read_text()


def test_milebench_groups_and_image_quantity_levels(tmp_path):
    """Datasets the front end files under a group (MileBench) get a mean column per group, and the
    image-quantity levels a mean over the row's datasets; a group with a missing dataset is incomplete."""
    def mb(v, group, levels):
        return dict(ok(v), group=group, image_quantity_levels=levels)

    ds = ["T1", "T2", "S1"]
    wd = tmp_path / "wd"
    make_run(wd, PruneConfig("none"), {"T1": mb(0.6, "Realistic Temporal", {"Few": 0.8, "Many": 0.4}),
                                       "T2": mb(0.4, "Realistic Temporal", {"Few": 0.6}),
                                       "S1": mb(0.9, "Realistic Semantic", {"Medium": 0.9})}, datasets=ds)
    make_run(wd, PruneConfig("fastv", 0.5, 2), {"T1": mb(0.5, "Realistic Temporal", {"Few": 0.5})}, datasets=ds)
    rows, cols = cr.build_table([wd])
    full, cut = rows_by(rows)[("none", 0.0, None)], rows_by(rows)[("fastv", 0.5, 2)]
    assert full["Realistic Temporal (mean)"] == pytest.approx(0.5)
    assert full["Realistic Semantic (mean)"] == pytest.approx(0.9)
    assert (full["Few images"], full["Medium images"], full["Many images"]) == (pytest.approx(0.7), 0.9, 0.4)
    assert cut["Realistic Temporal (mean)"] == "incomplete" and cut["Realistic Semantic (mean)"] == "incomplete"
    assert cut["Few images"] == 0.5 and cut["Many images"] is None
    assert full["peak memory GiB"] is None  # no figure in the stats (CPU)


def test_runs_without_groups_get_no_group_columns(work):
    rows, _ = cr.build_table([work])
    assert not any(k.endswith("(mean)") or k.endswith(" images") for k in rows[0])
