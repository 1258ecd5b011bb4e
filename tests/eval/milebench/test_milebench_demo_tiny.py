"""eval/MileBench/demo_tiny.sh end to end on a reduced grid: the multi-image checkpoint, every synthetic set,
score.py's tables, the timing log, and per-sample stats that follow each sample's own plan."""
import json
import os
import subprocess
import sys

import pandas as pd
from paths import REPO

from SequentialPrune import PruneConfig


def test_demo_tiny_runs_the_multi_image_checkpoint_and_prints_the_table(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, WORK_DIR=str(tmp_path), N="3", METHODS="sequential",
               RATIOS="0.75", OMP_NUM_THREADS="1")
    proc = subprocess.run(["bash", str(REPO / "eval/MileBench/demo_tiny.sh")], cwd=str(tmp_path), env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "checkpoints/tiny-shapes-llava-multi" in proc.stdout
    runs = tmp_path / "runs"
    table = pd.read_csv(runs / "milebench_summary.csv")
    assert list(table["setting"]) == ["llava_seqprune_none", "llava_seqprune_sequential_r0.75_l2_s10"]
    assert {"SynthShapesMCQ (Accuracy)", "SynthShapesOpen (Rouge-L f)",
            "SynthTextNeedleInAHaystack (Accuracy)"} <= set(table.columns)
    assert "| llava_seqprune_sequential_r0.75_l2_s10" in proc.stdout  # the Markdown table is printed
    assert set(json.loads((runs / "result.json").read_text())) >= {"llava_seqprune_none"}
    times = pd.read_csv(runs / "execution_times.csv")
    assert list(times.columns) == ["name", "Elapsed Time (seconds)"] and len(times) == 6  # 2 settings x 3 sets
    cfg = PruneConfig("sequential", 0.75, 2, step=0.1)
    lines = [json.loads(x) for f in (runs / "llava_seqprune_sequential_r0.75_l2_s10" / "seqprune_stats").iterdir()
             for x in f.read_text().splitlines()]
    assert len(lines) == 9
    for s in lines:  # 2-8 images of 64 tokens, each sample pruned on its own count
        assert s["n_image_tokens"] % 64 == 0 and 128 <= s["n_image_tokens"] <= 512
        assert s["image_tokens_per_layer"] == cfg.tokens_per_layer(s["n_image_tokens"], 12)
