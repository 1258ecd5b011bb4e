"""The embedded default demo on a reduced row count: the whole evaluation path, offline."""
import json
import os
import subprocess
import sys

import pandas as pd
import pytest
from paths import REPO

from SequentialPrune import PruneConfig


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    work = tmp_path_factory.mktemp("demo_tiny")
    # One ratio (each setting is one launch of ~10 s; the ratio grid itself is test_launch's).
    env = dict(os.environ, PYTHON=sys.executable, WORK_DIR=str(work), N="6", RATIOS="0.9", OMP_NUM_THREADS="1")
    proc = subprocess.run(["bash", str(REPO / "eval/VLMEvalKit/demo_tiny.sh")], cwd=str(work), env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "combination failed" not in proc.stdout + proc.stderr
    return work, proc.stdout


def test_demo_prints_the_full_table(demo):
    work, out = demo
    table = pd.read_csv(work / "runs" / "seqprune_summary.csv")
    expected = {("none", 0.0)} | {(m, r) for m in ("fastv", "sequential", "random") for r in (0.9,)}
    assert {(m, r) for m, r in zip(table["method"], table["ratio"])} == expected
    assert (table["status"] == "ok").all()
    assert "| sequential | 0.90 | 2 |" in out  # the Markdown table is printed at the end


def test_efficiency_columns_equal_the_logged_stats(demo):
    work, _ = demo
    table = pd.read_csv(work / "runs" / "seqprune_summary.csv")
    for _, row in table.iterrows():
        cfg = PruneConfig("none") if row["method"] == "none" else PruneConfig(row["method"], row["ratio"], 2)
        tag = cfg.tag()
        run = work / "runs" / f"llava_seqprune_{tag}" / "seqprune_stats"
        lines = [json.loads(line) for f in sorted(run.glob("*.jsonl")) for line in f.read_text().splitlines()]
        assert len(lines) == row["samples"] > 0
        n, layers = lines[0]["n_image_tokens"], lines[0]["num_layers"]
        assert row["avg image tokens/layer"] == pytest.approx(cfg.average_image_tokens(n, layers))
        flops = sum(x["prefill_flops"] for x in lines) / sum(x["prefill_flops_unpruned"] for x in lines)
        assert row["prefill FLOPs (x unpruned)"] == pytest.approx(flops, rel=1e-3)
        assert row["prefill time ms"] > 0
