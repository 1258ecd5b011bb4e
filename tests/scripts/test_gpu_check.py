"""scripts/gpu_check.sh in its reduced CPU mode: every part runs, the summary holds what it measured."""
import json
import os
import subprocess
import sys

from paths import REPO


def test_gpu_check_reduced_mode(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, OUT_DIR=str(tmp_path), OMP_NUM_THREADS="1")
    p = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--cpu"], env=env, capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    parts = ["oracle", "bench", "bench_vision", "batch"]
    assert all(f"== {part}: rc=0" in p.stdout for part in parts), p.stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [x["part"] for x in summary["parts"]] == parts and summary["flash_skipped"]
    assert all(isinstance(x["seconds"], float) for x in summary["parts"])
    oracle = summary["oracle"]
    assert {(r["preset"], r["dtype"], r["method"]) for r in oracle} == {
        (p, d, m) for p in ("tiny-llava", "tiny-qwen2-vl", "tiny-qwen3-vl") for d in ("float32", "bfloat16")
        for m in ("sequential", "fastv")}
    for r in oracle:
        if r["dtype"] == "float32":  # the exact case: same picks at every layer, same tokens
            assert r["layers_same_picks"] == r["pruning_layers"] > 0
            assert r["logit_gap_vs_reference"] < 1e-4 and r["greedy_tokens_agreeing"] == r["new_tokens"]
        assert r["logit_gap_unpruned_vs_reference"] > r["logit_gap_vs_reference"]  # the check is not vacuous
    bench = summary["bench"]
    assert {(r["method"], r["images"]) for r in bench} >= {("none", 1), ("sequential", 2), ("fastv", 1),
                                                           ("fastervlm", 1), ("visionzip", 1)}
    assert all(r["kv_bytes"] == r["kv_bytes_expected"] for r in bench if r["status"] == "ok")
    batch = summary["batch"]
    assert {(r["preset"], r["method"], r["batch"]) for r in batch} == {
        (p, m, b) for p in ("tiny-llava", "tiny-qwen2-vl") for m in ("none", "sequential") for b in (1, 4)}
    assert all(r["samples_per_s"] > 0 and r["rows_follow_plan"] is (r["method"] != "none" or None) for r in batch)
    md = (tmp_path / "summary.md").read_text()
    assert "## Throughput per batch size" in md
    assert "## Oracle" in md and "| tiny-qwen3-vl | bfloat16 | sdpa | sequential |" in md
