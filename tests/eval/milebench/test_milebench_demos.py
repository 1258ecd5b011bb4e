"""The MileBench demo grids (eval/MileBench/demo_*.sh) run the original's grid, each command parsing as generate.py
parses it, and share the VLMEvalKit grids' settings (eval/_grid_common.sh)."""
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from SequentialPrune.frontends.milebench.flags import parse

EVAL = Path(__file__).resolve().parents[3] / "eval"
GRID_VARS = ("MODEL", "MODEL_PATH", "DATA_DIR", "DATA", "RATIOS", "LAYERS", "METHODS", "STEP", "CACHE_MODE",
             "SCORE_DTYPE", "OUTPUT_DIR", "GPUS", "NPROC", "TORCHRUN", "EXTRA_ARGS", "DOCVQA_ANN", "OCRVQA_DIR")


def _dry_run(script, **env):
    e = {k: v for k, v in os.environ.items() if k not in GRID_VARS}
    e.update(DRY_RUN="1", PYTHON=sys.executable, **env)
    p = subprocess.run(["bash", str(EVAL / "MileBench" / script)], env=e, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    runs = [shlex.split(x)[1:] for x in p.stdout.splitlines() if x.startswith("RUN ")]
    return runs, [x for x in p.stdout.splitlines() if x.startswith("SUMMARY ")]


@pytest.mark.parametrize("script,nproc", [("demo_llava.sh", None), ("demo_multigpu_llava.sh", "4")])
def test_milebench_demo_grid_is_the_originals(script, nproc):
    runs, summary = _dry_run(script, **({"NPROC": nproc} if nproc else {}))
    points = []
    for argv in runs:
        gen = next(i for i, a in enumerate(argv) if a.endswith("generate.py"))
        args, setting = parse(argv[gen + 1:])
        p = setting.prune
        points.append((p.method, p.ratio, p.layer if p.prunes else None, p.cache_mode, p.score_dtype,
                       p.step if p.prunes else None))
        assert len(args.datasets) == 29 and args.output_dir.endswith("outputs/milebench_llava_seqprune")
        assert ("--nproc-per-node=4" in argv) == bool(nproc)
    assert points == [("none", 0.0, None, "static", None, None)] + [
        (m, r, k, "recompute", "model", 0.1 if m == "sequential" else None)
        for m in ("sequential", "fastv") for r in (0.5, 0.75, 0.9) for k in (2, 3, 5)]
    assert len(summary) == 1 and "score.py" in summary[0]


def test_milebench_grid_settings_follow_the_shared_overrides():
    """The same METHODS/CACHE_MODE/SCORE_DTYPE as the VLMEvalKit grids: the shared settings, and an output folder
    that never mixes the fast variant with the paper's runs."""
    runs, _ = _dry_run("demo_llava.sh", METHODS="random pdrop", RATIOS="0.75", LAYERS="2", CACHE_MODE="static",
                       SCORE_DTYPE="float32")
    flags = [argv[argv.index("--prune-method"):] for argv in runs]
    assert flags[1] == ["--prune-method", "random", "--prune-ratio", "0.75", "--prune-layer", "2", "--cache-mode",
                        "static", "--prune-step", "10"]
    assert flags[2][-2:] == ["--score-dtype", "float32"]
    assert all(argv[argv.index("--output_dir") + 1].endswith("milebench_llava_seqprune_static_scorefloat32")
               for argv in runs)
