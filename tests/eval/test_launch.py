"""End-to-end tests of eval/VLMEvalKit/run.py on tiny offline checkpoints (CPU, no network).

One session builds a tiny LLaVA and a tiny Qwen2-VL and a synthetic LMUData
(MCQ, Y/N, VQA), then launches a small grid through run.py, single process and
``torchrun --nproc-per-node=2`` (gloo), and checks what it wrote.
"""
from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

import pytest
from eval_helpers import (
    COMBINATION_FAILED,
    EVAL_DIR,
    Launch,
    launch,
    predictions,
    stats_lines,
    subprocess_env,
    tsv_indices,
)

from scripts.tiny.checkpoints import build_tiny_llava, build_tiny_qwen2vl
from scripts.tiny.families import BUILDERS as NEW_FAMILIES
from scripts.tiny.lmudata import synthetic_dataset_names, write_synthetic_benchmarks
from SequentialPrune import PruneConfig
from SequentialPrune.frontends.vlmevalkit.flags import parse_flags

N = 6                      # rows per synthetic dataset
LAYERS = 12                # decoder layers of both tiny models
# image tokens of the synthetic 112 px images (OneVision: base + 2x2 tiles + newlines; InternVL: 2x2 tiles + thumbnail)
IMAGE_TOKENS = {"llava_seqprune": 64, "qwen2vl_seqprune": 16, "qwen2_5vl_seqprune": 16, "qwen3vl_seqprune": 16,
                "llava_onevision_seqprune": 88, "internvl_seqprune": 80}
QWEN_PIXELS = ["--min-pixels", "12544", "--max-pixels", "12544"]  # keep Qwen at 112x112 -> 16 tokens
QWEN3_PIXELS = ["--min-pixels", "16384", "--max-pixels", "16384"]  # Qwen3-VL (patch 16): 128x128 -> 16 tokens
NAMES = synthetic_dataset_names()  # kind -> dataset name
KIND_FLAG = {"MCQ": "mcq", "YN": "yn", "VQA": "vqa"}
EVAL_SUFFIX = {"MCQ": "_acc.csv", "YN": "_score.csv", "VQA": "_acc.csv"}


@dataclass
class Env:
    root: Path
    llava: Path
    qwen: Path
    qwen2_5: Path
    lmudata: Path
    env: Dict[str, str]
    new: Dict[str, Path]

    def path_of(self, model: str) -> Path:
        paths = {"llava": self.llava, "qwen2vl": self.qwen, "qwen2_5vl": self.qwen2_5, **self.new}
        return paths[model.split("_seqprune")[0]] if "_seqprune" in model else self.llava

    def args(self, model: str, kinds: List[str], work_dir: Path, *flags: str, path=None) -> List[str]:
        reg = [x for k in NAMES for x in ("--register-dataset", f"{NAMES[k]}={KIND_FLAG[k]}")]
        return ["--data", *[NAMES[k] for k in kinds], "--model", model, "--model-path", str(path or
                self.path_of(model)), "--work-dir", str(work_dir), "--max-new-tokens", "4", *reg, *flags]


@pytest.fixture(scope="session")
def eval_env(tmp_path_factory) -> Env:
    root = tmp_path_factory.mktemp("eval_layer")
    llava = build_tiny_llava(root / "tiny-llava", num_layers=LAYERS)
    qwen = build_tiny_qwen2vl(root / "tiny-qwen2vl", num_layers=LAYERS)
    qwen2_5 = build_tiny_qwen2vl(root / "tiny-qwen2_5vl", num_layers=LAYERS, qwen2_5=True)
    new = {name: Path(build(root / f"tiny-{name}", num_layers=LAYERS)) for name, build in NEW_FAMILIES.items()}
    lmudata = root / "LMUData"
    write_synthetic_benchmarks(lmudata, n=N)
    return Env(root, Path(llava), Path(qwen), Path(qwen2_5), lmudata, subprocess_env(lmudata), new)


ALL = ["MCQ", "YN", "VQA"]
# key -> (model, pruning config, extra flags, processes, dataset kinds)
GRID = {
    "llava_seq": ("llava_seqprune", PruneConfig("sequential", 0.5, 2),
                  ["--prune-method", "sequential", "--prune-ratio", "0.5", "--prune-layer", "2"], 1, ALL),
    "llava_fastv_2proc": ("llava_seqprune", PruneConfig("fastv", 0.5, 2),
                          ["--prune-method", "fastv", "--prune-ratio", "0.5", "--prune-layer", "2"], 2, ["MCQ", "YN"]),
    "llava_none": ("llava_seqprune", PruneConfig("none"), ["--prune-method", "none"], 1, ALL),
    "qwen_seq_2proc": ("qwen2vl_seqprune", PruneConfig("sequential", 0.75, 2, step=0.2),
                       ["--prune-method", "sequential", "--prune-ratio", "0.75", "--prune-layer", "2",
                        "--prune-step", "20", *QWEN_PIXELS], 2, ALL),
    "qwen_fastv_eager": ("qwen2vl_seqprune", PruneConfig("fastv", 0.5, 3),
                         ["--prune-method", "fastv", "--prune-ratio", "0.5", "--prune-layer", "3", "--attn-impl",
                          "eager", *QWEN_PIXELS], 1, ["MCQ", "VQA"]),
    # Qwen2.5-VL uses the datasets' own prompts (as VLMEvalKit's entry of that name does).
    "qwen2_5_seq": ("qwen2_5vl_seqprune", PruneConfig("sequential", 0.5, 2),
                    ["--prune-ratio", "0.5", *QWEN_PIXELS], 1, ["MCQ", "YN"]),
    # the newer families, each with one of the newer methods (K <= 2 on Qwen3-VL goes through DeepStack)
    "qwen3_dart": ("qwen3vl_seqprune", PruneConfig("dart", 0.5, 1, options={"image_pivots": 2, "text_pivots": 2}),
                   ["--prune-method", "dart", "--prune-ratio", "0.5", "--prune-layer", "1", "--prune-option",
                    "image_pivots=2", "--prune-option", "text_pivots=2", *QWEN3_PIXELS], 1, ALL),
    "onevision_pdrop": ("llava_onevision_seqprune", PruneConfig("pdrop", 0.875, options={"stages": (2, 5, 8)}),
                        ["--prune-method", "pdrop", "--prune-option", "stages=2,5,8"], 1, ["MCQ", "VQA"]),
    "internvl_divprune_2proc": ("internvl_seqprune", PruneConfig("divprune", 0.75),
                                ["--prune-method", "divprune", "--prune-ratio", "0.75"], 2, ["MCQ", "YN"]),
}


@dataclass
class Done:
    launch: Launch
    run_dir: Path
    cfg: PruneConfig
    model: str
    kinds: List[str]
    nproc: int


@pytest.fixture(scope="session")
def grid(eval_env) -> Dict[str, Done]:
    work_dir = eval_env.root / "work"
    out = {}
    for key, (model, cfg, flags, nproc, kinds) in GRID.items():
        res = launch(eval_env.args(model, kinds, work_dir, *flags), eval_env.env, nproc=nproc)
        out[key] = Done(res, work_dir / f"{model}_{cfg.tag()}", cfg, model, kinds, nproc)
    return out


# ----------------------------------------------------------------------------- runs
@pytest.mark.parametrize("key", list(GRID))
def test_run_succeeds_without_swallowed_errors(grid, key):
    d = grid[key]
    assert d.launch.rc == 0, str(d.launch)
    assert COMBINATION_FAILED not in d.launch.out, str(d.launch)
    assert "produced results" in d.launch.out, str(d.launch)
    assert "using --judge exact_matching" in d.launch.out  # no API key: no judge retries
    # VLMEvalKit's note on the optional .env file is kept, at its real level
    assert "Did not detect the .env file" in d.launch.out and "ERROR - __init__.py: load_env" not in d.launch.out


@pytest.mark.parametrize("key", list(GRID))
def test_every_sample_predicted_exactly_once(grid, eval_env, key):
    d = grid[key]
    for kind in d.kinds:
        ds = NAMES[kind]
        want = tsv_indices(eval_env.lmudata, ds)
        pred = predictions(d.run_dir, ds)
        assert sorted(pred["index"].tolist()) == want
        assert pred["prediction"].notna().all()  # an empty answer would read back as NaN
        logged = sorted(r["index"] for r in stats_lines(d.run_dir) if r["dataset"] == ds)
        assert logged == want, f"stats of {ds}: {logged}"
        files = sorted((d.run_dir / "seqprune_stats").glob(f"{ds}.rank*.jsonl"))
        assert [f.name for f in files] == [f"{ds}.rank{r}.jsonl" for r in range(d.nproc)]
        if d.nproc > 1:  # strided sharding: each rank its own rows, none twice
            per_rank = [{json.loads(x)["index"] for x in f.read_text().splitlines()} for f in files]
            assert not per_rank[0] & per_rank[1] and all(per_rank)


@pytest.mark.parametrize("key", list(GRID))
def test_evaluation_files_and_results(grid, key):
    d = grid[key]
    results = json.loads((d.run_dir / "seqprune_results.json").read_text())
    for kind in d.kinds:
        ds = NAMES[kind]
        assert (d.run_dir / f"{d.run_dir.name}_{ds}{EVAL_SUFFIX[kind]}").is_file()
        assert results[ds]["value"] is not None and results[ds]["problem"] is None, results[ds]


@pytest.mark.parametrize("key", list(GRID))
def test_setting_json(grid, eval_env, key):
    d = grid[key]
    rec = json.loads((d.run_dir / "seqprune_setting.json").read_text())
    assert rec["model_name"] == d.run_dir.name == f"{d.model}_{d.cfg.tag()}"
    ident = rec["identity"]
    assert ident["prune"] == d.cfg.to_dict()
    assert ident["model_path"] == str(eval_env.path_of(d.model))
    # the paper protocol (eager attention) is the default of the paper's models, hf of the others
    paper = d.model in ("llava_seqprune", "qwen2vl_seqprune")
    assert ident["protocol"] == ("paper" if paper else "hf")
    assert ident["attn_impl"] == ("eager" if paper or "eager" in key else "sdpa")
    assert ident["dtype"] == "float32" and ident["max_new_tokens"] == 4
    if d.model == "qwen2_5vl_seqprune":  # inherited from VLMEvalKit's Qwen2.5-VL-7B-Instruct entry
        assert ident["use_custom_prompt"] is False
    assert ident["image_files"] == ("original-jpeg" if paper else "harness-rgb")
    # how the model really decoded, once it loaded: the checkpoint's generation_config with the protocol's
    gen = rec["effective_generation"]
    assert gen["max_new_tokens"] == 4 and gen["num_beams"] == 1
    assert (gen.get("use_cache") is False) == (d.cfg.cache_mode == "recompute" and d.cfg.prunes)
    if d.model == "qwen2vl_seqprune":  # the original's Qwen2-VL arguments
        assert (gen["top_k"], gen["top_p"], gen["temperature"], gen["repetition_penalty"]) == (1, 0.001, 0.01, 1.0)
    else:
        assert gen["do_sample"] is False
    launch_rec = rec["launches"][-1]
    assert "--model" in launch_rec["argv"] and d.model in launch_rec["argv"]  # the command as typed
    assert launch_rec["world_size"] == d.nproc
    assert launch_rec["versions"]["transformers"] and launch_rec["versions"]["ms-vlmeval"] == "0.0.20"
    assert launch_rec["vlmeval_args"]["judge"] == "exact_matching"


@pytest.mark.parametrize("key", list(GRID))
def test_pruning_stats_logged(grid, key):
    d = grid[key]
    lines = stats_lines(d.run_dir)
    assert len(lines) == N * len(d.kinds)
    n = IMAGE_TOKENS[d.model]
    for rec in lines:
        assert rec["n_image_tokens"] == n and rec["num_layers"] == LAYERS
        assert rec["image_tokens_per_layer"] == d.cfg.tokens_per_layer(n, LAYERS)
        assert rec["avg_image_tokens_per_layer"] == pytest.approx(d.cfg.average_image_tokens(n, LAYERS))
        assert rec["prefill_time_s"] > 0 and rec["prefill_calls"] == 1  # static cache: one prefill
        assert rec["generate_time_s"] >= rec["prefill_time_s"]
        assert "peak_memory_bytes" in rec and rec["peak_memory_bytes"] is None  # CPU: no per-call figure exists
        assert rec["setting"] == d.cfg.tag() and rec["new_tokens"] >= 1
        if d.cfg.prunes:
            assert rec["prefill_flops_ratio"] < 1
        else:
            assert rec["prefill_flops_ratio"] == pytest.approx(1.0)


def test_second_setting_gets_its_own_predictions(grid):
    seq, fastv = grid["llava_seq"], grid["llava_fastv_2proc"]
    assert seq.run_dir != fastv.run_dir
    assert "Reuse" not in fastv.launch.out
    # The second setting generated every sample itself, with its own schedule.
    fastv_counts = {tuple(r["image_tokens_per_layer"]) for r in stats_lines(fastv.run_dir)}
    assert fastv_counts == {tuple(fastv.cfg.tokens_per_layer(64, LAYERS))}
    assert fastv.cfg.tokens_per_layer(64, LAYERS) != seq.cfg.tokens_per_layer(64, LAYERS)


# ----------------------------------------------------------------------------- stale results
def test_changed_setting_under_same_name_is_refused(grid, eval_env):
    d = grid["llava_seq"]
    pred = d.run_dir / f"{d.run_dir.name}_{NAMES['MCQ']}.xlsx"
    before = pred.stat().st_mtime_ns
    args = eval_env.args("llava_seqprune", ["MCQ"], d.run_dir.parent, "--prune-method", "sequential",
                         "--prune-ratio", "0.5", "--prune-layer", "2")
    args[args.index("--max-new-tokens") + 1] = "3"  # same name, different generation length
    res = launch(args, eval_env.env)
    assert res.rc == 2 and "another setting" in res.out and "max_new_tokens" in res.out, str(res)
    assert "Loading weights" not in res.out
    assert pred.stat().st_mtime_ns == before


def test_original_flags_run_the_original_procedure(eval_env):
    """--use-fast-v means the original's procedure: no KV cache (re-selection at every token) and scores in the
    model's precision; the same as the new flags that say so."""
    work_dir = eval_env.root / "work_original_flags"
    args = eval_env.args("llava_v1.5_7b", ["MCQ"], work_dir, "--use-fast-v", "--fast-v-inplace",
                         "--fast-v-sys-length", "36", "--fast-v-image-token-length", "576",
                         "--fast-v-attention-rank", "0.5", "--fast-v-agg-layer", "2",
                         "--fast-v-sequential-prune", "--prune-step", "10", path=eval_env.llava)
    res = launch(args, eval_env.env)
    assert res.rc == 0, str(res)
    assert "llava_v1.5_7b runs as llava_seqprune" in res.out
    assert "--fast-v-image-token-length 576 does not match the prompt: found 64" in res.out
    cfg = PruneConfig("sequential", 0.5, 2, cache_mode="recompute", score_dtype="model")
    run_dir = work_dir / f"llava_seqprune_{cfg.tag()}"
    rec = json.loads((run_dir / "seqprune_setting.json").read_text())
    assert rec["identity"]["prune"] == cfg.to_dict()
    new, _, _ = parse_flags(["--prune-method", "sequential", "--prune-ratio", "0.5", "--prune-layer", "2",
                             "--cache-mode", "recompute", "--score-dtype", "model", "--model", "llava_seqprune"])
    assert new.prune == cfg
    for line in stats_lines(run_dir):  # no KV cache: one full prefill per generated token
        assert line["prefill_calls"] == line["new_tokens"]


def test_recompute_cache_mode(eval_env):
    work_dir = eval_env.root / "work_recompute"
    res = launch(eval_env.args("llava_seqprune", ["MCQ"], work_dir, "--prune-ratio", "0.5",
                               "--cache-mode", "recompute"), eval_env.env)
    assert res.rc == 0, str(res)
    cfg = PruneConfig("sequential", 0.5, 2, cache_mode="recompute")
    lines = stats_lines(work_dir / f"llava_seqprune_{cfg.tag()}")
    assert len(lines) == N
    for rec in lines:  # no KV cache: every generated token re-runs the whole sequence
        assert rec["prefill_calls"] == rec["new_tokens"] >= 2
        assert rec["image_tokens_per_layer"] == cfg.tokens_per_layer(64, LAYERS)


# ----------------------------------------------------------------------------- failures
@pytest.mark.parametrize("flags,message", [
    (["--use-fast-v", "--prune-method", "none"], "--prune-method none turns it off"),
    (["--use-fast-v", "--fast-v-attention-rank", "0.5", "--prune-ratio", "0.75"], "contradicts"),
    (["--prune-ratio", "1.5"], "ratio must be in [0, 1]"),
])
def test_bad_flags_fail_before_anything_loads(eval_env, flags, message, monkeypatch, capsys):
    """run.py's main in this process, with VLMEvalKit made unimportable: a flag error must exit 2 with its
    message before VLMEvalKit (and so any model) is imported, and write nothing."""
    from SequentialPrune.frontends.vlmevalkit import cli as run

    monkeypatch.setitem(sys.modules, "vlmeval.run", None)  # importing it now raises ImportError
    monkeypatch.setenv("LMUData", eval_env.env["LMUData"])
    work_dir = eval_env.root / "work_bad"
    with pytest.raises(SystemExit) as e:
        run.main(eval_env.args("llava_seqprune", ["MCQ"], work_dir, *flags))
    assert e.value.code == 2 and message in capsys.readouterr().err
    assert not work_dir.exists()


@pytest.mark.parametrize("flags,message", [
    (["--prune-ratio", "0.9", "--prune-layer", "5"], "decoder has only 12 layers"),
    (["--min-pixels", "12544"], "apply to Qwen models only"),
])
def test_checks_that_need_the_config_fail_before_model_load(eval_env, flags, message):
    work_dir = eval_env.root / "work_bad_config"
    res = launch(eval_env.args("llava_seqprune", ["MCQ"], work_dir, *flags), eval_env.env)
    assert res.rc == 2 and message in res.out, str(res)
    assert "Loading weights" not in res.out and not (work_dir / "llava_seqprune_sequential_r0.9_l5_s10").exists()


def test_unknown_dataset_fails_before_model_load(eval_env):
    args = eval_env.args("llava_seqprune", ["MCQ"], eval_env.root / "work_bad_ds")
    args[args.index("--data") + 1] = "NoSuchBench"
    res = launch(args, eval_env.env)
    assert res.rc == 2 and "unknown dataset(s) ['NoSuchBench']" in res.out, str(res)


def test_model_failure_inside_vlmeval_is_not_lost(eval_env):
    broken = eval_env.root / "tiny-llava-no-weights"
    shutil.copytree(eval_env.llava, broken, ignore=shutil.ignore_patterns("*.safetensors"))
    work_dir = eval_env.root / "work_broken"
    res = launch(eval_env.args("llava_seqprune", ["MCQ"], work_dir, path=broken), eval_env.env)
    assert COMBINATION_FAILED in res.out  # vlmeval swallowed it ...
    assert res.rc == 1 and "NO RESULT" in res.out, res  # ... the launcher did not
    results = json.loads(next(work_dir.glob("*/seqprune_results.json")).read_text())
    assert results[NAMES["MCQ"]]["problem"].startswith("failed")


# ----------------------------------------------------------------------------- budgets
def test_budget_is_solved_for_each_model_of_a_launch(eval_env, tmp_path):
    """Two of our models in one launch, each with its own checkpoint (NAME=PATH): --prune-budget gives each the
    ratio solved for its own layer count, and each run records its own."""
    qwen8 = build_tiny_qwen2vl(tmp_path / "qwen-8-layers", num_layers=8)
    work = tmp_path / "work"
    args = ["--data", NAMES["MCQ"], "--model", "llava_seqprune", "qwen2vl_seqprune", "--model-path",
            f"llava_seqprune={eval_env.llava}", f"qwen2vl_seqprune={qwen8}", "--work-dir", str(work),
            "--max-new-tokens", "2", "--register-dataset", f"{NAMES['MCQ']}=mcq", "--prune-budget", "0.8",
            *QWEN_PIXELS]
    res = launch(args, eval_env.env)
    assert res.rc == 0, str(res)
    # the same solver, given each model's own counts (LLaVA: 64 image tokens; Qwen's vary: a fraction of N=1000)
    want = {"llava_seqprune": PruneConfig.for_budget("sequential", 0.8 * 64, 64, LAYERS, layer=2, step=0.1),
            "qwen2vl_seqprune": PruneConfig.for_budget("sequential", 800, 1000, 8, layer=2, step=0.1)}
    assert want["llava_seqprune"].ratio != want["qwen2vl_seqprune"].ratio
    for model, cfg in want.items():
        rec = json.loads((work / f"{model}_{cfg.tag()}" / "seqprune_setting.json").read_text())
        assert rec["setting"]["prune"]["ratio"] == pytest.approx(cfg.ratio), model
        assert rec["identity"]["model_path"] == str(eval_env.llava if model == "llava_seqprune" else qwen8)
        assert all(r["image_tokens_per_layer"][-1] < r["image_tokens_per_layer"][0]
                   for r in stats_lines(work / f"{model}_{cfg.tag()}"))


# ----------------------------------------------------------------------------- demo script
def test_demo_grid_runs_from_any_directory(eval_env, tmp_path):
    """demo_multigpu_llava.sh end to end (2 processes on CPU): baseline + one setting + the table."""
    import subprocess

    work_dir = tmp_path / "demo_work"
    reg = " ".join(f"--register-dataset {NAMES[k]}={KIND_FLAG[k]}" for k in NAMES)
    env = dict(eval_env.env, DATA=NAMES["MCQ"], MODEL_PATH=str(eval_env.llava), RATIOS="0.5", LAYERS="2",
               METHODS="sequential", WORK_DIR=str(work_dir), PYTHON=sys.executable, NPROC="2", GPUS="",
               TORCHRUN=f"{sys.executable} -m torch.distributed.run --standalone",  # picks its own free port
               EXTRA_ARGS=f"{reg} --max-new-tokens 4")
    p = subprocess.run(["bash", str(EVAL_DIR / "demo_multigpu_llava.sh")], cwd=str(tmp_path), env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-6000:]
    assert COMBINATION_FAILED not in p.stdout
    paper = PruneConfig("sequential", 0.5, 2, cache_mode="recompute", score_dtype="model")  # the demos' default
    for name in ("llava_seqprune_none", f"llava_seqprune_{paper.tag()}"):
        rec = json.loads((work_dir / name / "seqprune_setting.json").read_text())
        assert rec["launches"][-1]["world_size"] == 2
        assert len(stats_lines(work_dir / name)) == N
    table = (work_dir / "seqprune_summary.md").read_text()
    assert "| sequential |" in table and "| none |" in table and "missing" not in table.split("Markers")[0]


# ----------------------------------------------------------------------------- the table
def test_collect_results_on_the_grid(grid, tmp_path):
    from scripts import collect_results as cr

    work_dir = grid["llava_seq"].run_dir.parent
    prefix = tmp_path / "table"
    assert cr.main([str(work_dir), "--ratios", "0.5", "--layers", "2", "3", "--out", str(prefix)]) == 0
    for suffix in (".md", ".csv", ".xlsx"):
        assert prefix.with_suffix(suffix).is_file()
    rows, cols = cr.build_table([work_dir], ratios=[0.5], layers=[2, 3])
    assert cols == [NAMES[k] for k in ALL]
    by = {(r["model"], r["method"], r["ratio"], r["layer"]): r for r in rows}
    seq = by[("llava_seqprune", "sequential", 0.5, 2)]
    assert seq["status"] == "ok" and all(isinstance(seq[c], float) for c in cols)
    assert seq["samples"] == N * 3
    expected_tokens = PruneConfig("sequential", 0.5, 2).average_image_tokens(64, 12)
    assert seq["avg image tokens/layer"] == pytest.approx(expected_tokens)
    assert 0 < seq["prefill FLOPs (x unpruned)"] < 1
    assert seq["prefill time (x unpruned)"] > 0  # the llava baseline is in the same work dir
    base = by[("llava_seqprune", "none", 0.0, None)]
    assert base["prefill FLOPs (x unpruned)"] == pytest.approx(1.0) and base["prefill time (x unpruned)"] == 1.0
    # Not run: kept and marked, never dropped.
    assert by[("llava_seqprune", "sequential", 0.5, 3)]["status"] == "missing run"
    fastv = by[("llava_seqprune", "fastv", 0.5, 2)]
    assert fastv[NAMES["VQA"]] == "missing" and fastv["Average"] == "incomplete"
    assert isinstance(fastv[NAMES["MCQ"]], float)
    qwen = by[("qwen2vl_seqprune", "sequential", 0.75, 2)]
    assert qwen["step %"] == pytest.approx(20) and qwen["prefill time (x unpruned)"] is None  # no qwen baseline
    assert by[("qwen2vl_seqprune", "none", 0.0, None)]["status"] == "missing run"
    md = prefix.with_suffix(".md").read_text()
    assert "missing run" in md and "incomplete" in md
