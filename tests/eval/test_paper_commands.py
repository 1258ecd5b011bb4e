"""The paper's commands: the original research code's flags run the original procedure, the paper protocol is
refused where the paper has none, and the demo scripts' grids are the paper's (dry runs), against
re-derivations of the original (LeeBumSeok/Tokenpruning @ 0898f4a)."""

import json
import os
import shlex
import subprocess
import sys

import pytest
from eval_helpers import COMBINATION_FAILED, EVAL_DIR, launch, stats_lines, subprocess_env

from scripts.tiny import checkpoints as tc
from scripts.tiny.lmudata import synthetic_dataset_names, write_synthetic_benchmarks
from SequentialPrune import PruneConfig
from SequentialPrune.frontends.vlmevalkit.flags import parse_flags


# ----------------------------------------------------------------------------- the original flags
@pytest.fixture(scope="module")
def launch_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("protocol_runs")
    llava = tc.build_tiny_llava(root / "tiny-llava", num_layers=12)
    lmudata = root / "LMUData"
    write_synthetic_benchmarks(lmudata, n=4)
    return root, llava, lmudata, subprocess_env(lmudata)


def _original_command(root, llava, *flags):
    mcq = synthetic_dataset_names()["MCQ"]
    return ["--data", mcq, "--model", "llava_v1.5_7b", "--model-path", str(llava), "--work-dir", str(root / "work"),
            "--register-dataset", f"{mcq}=mcq", "--use-fast-v", "--fast-v-inplace", "--fast-v-sys-length", "36",
            "--fast-v-image-token-length", "576", "--fast-v-agg-layer", "2", *flags]


def _check_run(res, run_dir):
    assert res.rc == 0 and COMBINATION_FAILED not in res.out, str(res)
    return json.loads((run_dir / "seqprune_setting.json").read_text())["identity"], stats_lines(run_dir)


def test_original_flags_fastv_rank_1_drops_every_image_token(launch_env):
    """The original's demo flags with R=1.0 (its Qwen grid's column): the paper protocol, recompute, model-precision
    scores, 100 new tokens; float32 here because this is a CPU (float16 on GPU: see the resolution test)."""
    root, llava, _, env = launch_env
    res = launch(_original_command(root, llava, "--fast-v-attention-rank", "1.0"), env)
    cfg = PruneConfig("fastv", 1.0, 2, cache_mode="recompute", score_dtype="model")
    ident, lines = _check_run(res, root / "work" / f"llava_seqprune_{cfg.tag()}")
    assert ident["prune"] == cfg.to_dict()
    assert (ident["protocol"], ident["dtype"], ident["attn_impl"], ident["max_new_tokens"]) == (
        "paper", "float32", "eager", 100)
    assert "llava_seqprune: paper protocol" in res.out
    assert len(lines) == 4
    for rec in lines:
        assert rec["image_tokens_per_layer"] == [64, 64] + [0] * 10  # none from layer K = 2 on
        assert rec["prefill_calls"] == rec["new_tokens"] >= 1  # no KV cache: re-selected at every token
        assert rec["dtype"] == "float32"


def test_original_sequential_rank_1_in_bfloat16(launch_env):
    """Sequential to R=1.0 with the model in bfloat16 on CPU: the last stage keeps no image token, the setting and
    every sample record bfloat16."""
    root, llava, _, env = launch_env
    res = launch(_original_command(root, llava, "--fast-v-sequential-prune", "--fast-v-attention-rank", "1.0",
                                   "--dtype", "bfloat16", "--max-new-tokens", "3"), env)
    cfg = PruneConfig("sequential", 1.0, 2, cache_mode="recompute", score_dtype="model")
    ident, lines = _check_run(res, root / "work" / f"llava_seqprune_{cfg.tag()}")
    assert ident["dtype"] == "bfloat16" and ident["max_new_tokens"] == 3
    assert len(lines) == 4
    for rec in lines:
        assert rec["image_tokens_per_layer"] == cfg.tokens_per_layer(64, 12)
        assert rec["image_tokens_per_layer"][-1] == 0 and rec["image_tokens_per_layer"][2] == int(0.9 * 64)
        assert rec["dtype"] == "bfloat16"


def test_protocol_paper_is_refused_for_a_model_the_paper_did_not_run(launch_env, tiny_qwen):
    root, _, _, env = launch_env
    mcq = synthetic_dataset_names()["MCQ"]
    work_dir = root / "work_refused"
    res = launch(["--data", mcq, "--model", "qwen2_5vl_seqprune", "--model-path", str(tiny_qwen), "--work-dir",
                  str(work_dir), "--register-dataset", f"{mcq}=mcq", "--protocol", "paper",
                  "--prune-method", "none"], env)
    assert res.rc == 2 and "the paper did not evaluate qwen2_5vl_seqprune" in res.out, str(res)
    assert "Loading weights" not in res.out and not work_dir.exists()


# ----------------------------------------------------------------------------- the demo grids
GRID_VARS = ("MODEL", "MODEL_PATH", "DATA", "RATIOS", "LAYERS", "METHODS", "STEP", "CACHE_MODE", "SCORE_DTYPE",
             "WORK_DIR", "NPROC", "GPUS", "TORCHRUN", "EXTRA_ARGS")


def _dry_run(script, **env):
    e = {k: v for k, v in os.environ.items() if k not in GRID_VARS}  # the demo's own defaults
    e.update(DRY_RUN="1", PYTHON=sys.executable, **env)
    p = subprocess.run(["bash", str(EVAL_DIR / script)], env=e, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    runs = [shlex.split(x)[1:] for x in p.stdout.splitlines() if x.startswith("RUN ")]
    summary = [shlex.split(x)[1:] for x in p.stdout.splitlines() if x.startswith("SUMMARY ")]
    return runs, summary[0]


def _grid_points(runs):
    points = []
    for argv in runs:
        run_py = next(i for i, a in enumerate(argv) if a.endswith("run.py"))
        setting, rest, _ = parse_flags(argv[run_py + 1:])  # every command the demo runs parses
        assert "--data" in rest and "--model" in rest
        p = setting.prune
        points.append((p.method, p.ratio, p.layer if p.prunes else None, p.cache_mode, p.score_dtype,
                       setting.protocol))
    return points


@pytest.mark.parametrize("script,ratios", [
    ("demo_llava.sh", (0.5, 0.75, 0.9)), ("demo_multigpu_llava.sh", (0.5, 0.75, 0.9)),
    ("demo_qwenvl2.sh", (0.5, 0.75, 0.9, 1.0)), ("demo_multigpu_qwenvl2.sh", (0.5, 0.75, 0.9, 1.0)),
])
def test_demo_grids_are_the_papers(script, ratios):
    runs, summary = _dry_run(script)
    want = [("none", 0.0, None, "static", None, None)] + [
        (m, r, k, "recompute", "model", None) for m in ("sequential", "fastv") for r in ratios for k in (2, 3, 5)]
    assert _grid_points(runs) == want  # protocol None: the model's default, the paper's
    if "multigpu" in script:
        assert all("--nproc-per-node=4" in argv for argv in runs)
    assert summary[summary.index("--cache-mode") + 1] == "recompute"
    assert [float(r) for r in summary[summary.index("--ratios") + 1:summary.index("--layers")]] == list(ratios)


def test_cache_mode_static_runs_the_fast_variant():
    runs, summary = _dry_run("demo_qwenvl2.sh", CACHE_MODE="static")
    points = _grid_points(runs)
    assert {p[3] for p in points} == {"static"} and {p[1] for p in points} == {0.0, 0.5, 0.75, 0.9, 1.0}
    work_dir = runs[0][runs[0].index("--work-dir") + 1]
    assert work_dir.endswith("outputs/qwen2vl_seqprune_static")  # never mixed with the paper runs' folder
    assert summary[summary.index("--cache-mode") + 1] == "static"
