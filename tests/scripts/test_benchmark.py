"""scripts/benchmark.py end to end on tiny presets (CPU, seconds): fields, FLOPs, KV bytes, score-only, budgets."""
import importlib.util
import json
import subprocess
import sys

import pytest
import torch

from paths import REPO
from SequentialPrune import METHODS, PruneConfig, apply_pruning, prefill_flops
from scripts import benchmark
from scripts.bench.methods import register_score_only
from scripts.bench.measure import expected_cache_bytes
from scripts.bench.presets import PRESETS, build_random
from scripts.bench.inputs import make_layout

FAST = ["--repeats", "2", "--warmup", "1", "--new-tokens", "3", "--threads", "1", "--no-progress"]
RUN_FIELDS = {"e2e_ms", "ttft_ms", "decode_ms_per_token", "prefill_ms", "decode_lm_ms", "vision_ms", "vision_calls",
              "peak_mem_bytes", "peak_mem_delta_bytes", "kv_bytes", "new_tokens", "rep", "loadavg_1min"}
ROW_FIELDS = {"preset", "block", "images", "image_size", "batch", "n_image_tokens", "seq_len", "num_layers", "method",
              "attn", "label", "status", "note", "budget", "config", "layer", "ratio", "step", "new_tokens", "runs",
              "tokens", "median", "avg_image_tokens_planned", "avg_image_tokens", "image_tokens_per_layer", "flops",
              "kv_bytes", "kv_bytes_expected", "prefill_vs_none", "time_over_flops"}
META_FIELDS = {"command", "argv", "args", "machine", "dtype", "new_tokens", "repeats", "slow_repeats", "warmup",
               "started", "wall_s"}
MACHINE_FIELDS = {"platform", "python", "torch", "transformers", "cpu", "cpu_count", "torch_threads", "ram_bytes",
                  "device", "cuda", "gpu", "git_commit"}


@pytest.fixture(scope="module")
def cli_report(tmp_path_factory):
    """The CLI as a user runs it: a subprocess writing JSON, Markdown and PNG."""
    out = tmp_path_factory.mktemp("bench")
    cmd = [sys.executable, str(REPO / "scripts" / "benchmark.py"), "--preset", "tiny-llava", "--methods", "none",
           "fastv", "sequential", "score_only", "original", "--ratios", "0.5", "0.75", "--out", str(out), *FAST]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads((out / "benchmark.json").read_text())
    return report, out


def test_help_lists_presets(capsys):
    with pytest.raises(SystemExit) as e:
        benchmark.parse_args(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for name in ("llava-1.5-7b", "llava-1.5-13b", "qwen2-vl-2b", "qwen2-vl-7b", "llava-next-7b",
                 "cpu-mid-576", "cpu-mid-2880", "--budget", "--model-path"):
        assert name in text


def test_cli_writes_every_field(cli_report):
    report, out = cli_report
    assert (out / "benchmark.md").read_text().count("| none | sdpa |") == 1
    if importlib.util.find_spec("matplotlib"):  # plotting is optional (the GPU machine's env lacks it)
        assert (out / "benchmark.png").stat().st_size > 1000
    assert META_FIELDS <= set(report["meta"]) and MACHINE_FIELDS <= set(report["meta"]["machine"])
    assert report["meta"]["machine"]["torch"] == torch.__version__
    rows = report["rows"]
    assert {r["method"] for r in rows} == {"none", "fastv", "sequential", "score_only", "original"}
    assert len(rows) == 1 + 4 * 2
    for r in rows:
        assert ROW_FIELDS <= set(r), ROW_FIELDS - set(r)
        assert r["status"] == "ok" and len(r["runs"]) == 2
        for run in r["runs"]:
            assert RUN_FIELDS <= set(run)
            assert run["new_tokens"] == 3 and run["prefill_ms"] > 0 and run["vision_ms"] > 0
        assert r["median"]["e2e_ms"] >= r["median"]["ttft_ms"] > r["median"]["prefill_ms"]
    original = [r for r in rows if r["method"] == "original"]
    assert all(r["attn"] == "eager" and r["kv_bytes"] is None for r in original)  # no KV cache
    assert {c["target"] for c in report["targets"]} == {
        "flops_fidelity", "scoring_overhead", "sequential_vs_fastv", "original_speedup", "kv_bytes"}


def test_flops_column_is_the_core_figure(cli_report):
    register_score_only()  # the rows' configs name it
    for r in cli_report[0]["rows"]:
        n, L = r["n_image_tokens"], r["num_layers"]
        cfg = PruneConfig(**{k: v for k, v in r["config"].items() if k not in ("schedule",)}) if r["config"] else None
        kept = cfg.tokens_per_layer(n, L) if cfg else [n] * L
        text = r["seq_len"] - n
        f = prefill_flops([text + k for k in kept], r["seq_len"], 64, 128)
        assert r["flops"]["pruned"] == f.pruned and r["flops"]["ratio"] == f.ratio
        if r["method"] not in ("none", "original"):  # original: recompute mode, stats of its last re-run
            assert r["flops"]["source"] == "pruner.stats"
            assert r["image_tokens_per_layer"] == kept


def test_kv_bytes_match_kept_token_arithmetic(cli_report):
    text_cfg = PRESETS["tiny-llava"].config().text_config
    per_token = 2 * text_cfg.num_key_value_heads * (text_cfg.hidden_size // text_cfg.num_attention_heads) * 4
    checked = 0
    for r in cli_report[0]["rows"]:
        if r["method"] == "original":
            continue
        text = r["seq_len"] - r["n_image_tokens"]
        expected = per_token * sum(text + k for k in r["image_tokens_per_layer"])
        assert r["kv_bytes"] == r["kv_bytes_expected"] == expected
        checked += 1
    assert checked == 7
    assert all(c["pass"] for c in cli_report[0]["targets"] if c["target"] == "kv_bytes")


def test_score_only_computes_scores_and_drops_nothing(cli_report):
    register_score_only()
    assert (METHODS["score_only"].schedule, METHODS["score_only"].scorer) == ("stepwise_scoreonly", "attention")
    none = next(r for r in cli_report[0]["rows"] if r["method"] == "none")
    for r in cli_report[0]["rows"]:
        if r["method"] != "score_only":
            continue
        plan = PruneConfig("sequential", r["ratio"], r["layer"], r["step"]).plan(r["n_image_tokens"])
        assert r["pruner_stats"]["score_layers"] == [k - 1 for k in sorted(plan)]
        assert r["image_tokens_per_layer"] == [r["n_image_tokens"]] * r["num_layers"]
        assert r["kv_bytes"] == none["kv_bytes"] and r["tokens"] == none["tokens"]


def test_score_only_in_process_keeps_the_logits():
    register_score_only()
    model = build_random(PRESETS["tiny-llava"], torch.device("cpu"), torch.float32, "sdpa")
    inputs = make_layout(model, 1, None).inputs
    with torch.no_grad():
        ref = model(**inputs).logits
        with apply_pruning(model, PruneConfig("score_only", 0.75, 2)) as pruner:
            got = model(**inputs).logits
    assert sorted(pruner.stats.scores) == [1, 2, 3, 4, 5, 6, 7]
    assert pruner.stats.image_tokens_per_layer == [64] * 12 and not pruner.stats.kept_image_indices
    assert torch.equal(ref, got)


def test_budget_rows_report_solved_ratio(tmp_path):
    report = benchmark.main(["--preset", "tiny-llava", "--methods", "none", "fastv", "sequential", "--budget",
                             "40", "16", "--out", str(tmp_path), "--no-plot", *FAST])
    rows = {(r["method"], r["budget"]): r for r in report["rows"]}
    md = (tmp_path / "benchmark.md").read_text()
    for method, budget in [("fastv", 40), ("fastv", 16), ("sequential", 40)]:
        r = rows[(method, budget)]
        solved = PruneConfig.for_budget(method, budget, 64, 12, layer=2,
                                        **({"step": 0.1} if method == "sequential" else {}))
        assert r["status"] == "ok" and r["ratio"] == solved.ratio and len(r["runs"]) == 2
        assert r["avg_image_tokens"] == solved.average_image_tokens(64, 12) <= budget
        assert f"| {method} | sdpa | 2 | {solved.ratio:.4g} |" in md
    # Sequential at K=2 cannot average 16 tokens over 12 layers: kept, marked unreachable, not run
    r = rows[("sequential", 16)]
    assert r["status"] == "unreachable" and "closest" in r["note"] and r["runs"] == []
    assert "**unreachable**" in md


TOKENS = {"tiny-qwen2-vl": 16, "tiny-llava-next": 56, "tiny-qwen3-vl": 16, "tiny-onevision": 88, "tiny-internvl": 80}


@pytest.mark.parametrize("preset", list(TOKENS))
def test_other_layouts(preset, tmp_path):
    report = benchmark.main(["--preset", preset, "--methods", "none", "sequential", "--ratios", "0.75",
                             "--out", str(tmp_path), "--no-plot", "--repeats", "1", "--warmup", "0",
                             "--new-tokens", "2", "--threads", "1", "--no-progress"])
    for r in report["rows"]:
        assert r["status"] == "ok" and r["kv_bytes"] == r["kv_bytes_expected"]
        assert r["n_image_tokens"] == TOKENS[preset]


def test_every_method_at_equal_budgets(tmp_path):
    """Each method at its paper's K, with the budget solved per method: FLOPs, tokens and KV bytes agree."""
    methods = [m for m in METHODS if m not in ("none", "score_only")]  # score_only: the benchmark's own
    report = benchmark.main(["--preset", "tiny-llava", "--methods", "none", *methods, "--budget", "40",
                             "--layers", "paper", "--prune-option", "stages=2,5,8", "--prune-option",
                             "schedule=1:0.6,4:0.3", "--out", str(tmp_path), "--no-plot", "--repeats", "1",
                             "--warmup", "0", "--new-tokens", "2", "--threads", "1", "--no-progress"])
    rows = {r["method"]: r for r in report["rows"]}
    assert set(rows) == {"none", *methods}
    for m in methods:
        r = rows[m]
        assert r["status"] == "ok", (m, r["note"])
        cfg = PruneConfig.from_dict(r["config"])
        assert cfg.layer == (PruneConfig(m, options={"schedule": "1:0.6,4:0.3"}) if m == "custom" else
                             PruneConfig(m, options={"stages": (2, 5, 8)}) if m == "pdrop" else PruneConfig(m)).layer
        assert r["avg_image_tokens"] == cfg.average_image_tokens(64, 12) <= 40
        assert r["kv_bytes"] == r["kv_bytes_expected"] and r["flops"]["ratio"] < 1


def test_expected_cache_bytes_handles_gqa_and_dtype():
    cfg = PRESETS["qwen2-vl-7b"].config().text_config   # 28 heads, 4 kv heads, head_dim 128
    assert expected_cache_bytes(cfg, 2, [10, 5], torch.bfloat16) == 2 * 15 * 4 * 128 * 2 * 2


def test_gpu_presets_refused_on_cpu(tmp_path):
    with pytest.raises(SystemExit, match="needs a GPU"):
        benchmark.main(["--preset", "llava-1.5-7b", "--device", "cpu", "--out", str(tmp_path)])


def test_replot_redraws_from_json(cli_report, tmp_path):
    pytest.importorskip("matplotlib")
    _, out = cli_report
    merged = benchmark.main(["--replot", str(out / "benchmark.json"), str(out / "benchmark.json"),
                             "--out", str(tmp_path), "--name", "again"])
    assert (tmp_path / "again.png").stat().st_size > 1000 and len(merged["rows"]) == 2 * 9


def test_an_unusable_out_fails_before_measuring(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for out in (blocker, blocker / "below"):
        with pytest.raises(SystemExit, match="is not a writable folder"):
            benchmark.main(["--preset", "tiny-llava", "--methods", "none", "--out", str(out), "--no-progress"])
    assert "ms" not in capsys.readouterr().out  # nothing was measured


def test_a_failed_write_still_prints_the_tables(tmp_path, capsys, monkeypatch):
    def no_space(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(benchmark, "write_json", no_space)
    with pytest.raises(SystemExit, match="cannot write the report .*No space left"):
        benchmark.main(["--preset", "tiny-llava", "--methods", "none", "fastv", "--ratios", "0.5", "--out",
                        str(tmp_path), "--no-plot", "--repeats", "1", "--warmup", "0", "--new-tokens", "2",
                        "--threads", "1", "--no-progress"])
    out = capsys.readouterr().out
    assert "fastv" in out and out.count("|") > 10  # the measured rows, as the report's markdown tables


def test_a_fractional_budget_is_a_fraction_of_n_as_in_run_py(tmp_path):
    args = ["--preset", "tiny-llava", "--methods", "fastv", "--out", str(tmp_path), "--no-plot", "--repeats", "1",
            "--warmup", "0", "--new-tokens", "1", "--threads", "1", "--no-progress"]
    half = benchmark.main(args + ["--budget", "0.5"])["rows"][0]
    tokens = benchmark.main(args + ["--budget", str(half["n_image_tokens"] / 2)])["rows"][0]
    assert half["ratio"] == tokens["ratio"] and half["status"] == "ok"


@pytest.mark.parametrize("preset, shape", [("tiny-qwen2-vl", ["--image-size", "112x112", "56x112", "112x168"]),
                                           ("tiny-llava", ["--images", "1", "2", "3"])])
def test_throughput_per_batch_size_on_mixed_shapes(preset, shape, tmp_path):
    """--batch 1 3: the same three prompts of three image-token counts answered one at a time and in one call;
    every row pruned by its own schedule, throughput and memory per setting and size."""
    rep = benchmark.main(["--preset", preset, "--batch", "1", "3", *shape, "--methods", "none", "fastv", "sequential",
                          "--ratios", "0.75", "--layers", "2", "--out", str(tmp_path), "--repeats", "1", "--warmup",
                          "0", "--new-tokens", "2", "--threads", "1", "--no-progress"])
    rows = rep["throughput"]
    want = {(m, b) for m in ("none", "fastv", "sequential") for b in (1, 3)}
    assert {(r["method"], r["batch"]) for r in rows} == want
    for r in rows:
        assert len(set(r["n_image_tokens"])) == 3 and r["prompts"] == 3 and r["calls"] == 3 // r["batch"]
        assert r["samples_per_s"] > 0 and r["tokens_per_s"] == pytest.approx(r["samples_per_s"] * 2)
        assert r["peak_mem_bytes"] > 0
        assert r["rows_follow_plan"] is (None if r["method"] == "none" else True)
        if r["batch"] == 1:
            assert r["samples_per_s_vs_batch1"] == 1
    md = (tmp_path / "benchmark.md").read_text()
    assert "### Throughput: " + preset in md and "| samples/s vs batch 1 |" in md


def test_throughput_refuses_a_budget(tmp_path):
    with pytest.raises(SystemExit, match="several: give --ratios"):
        benchmark.main(["--preset", "tiny-llava", "--batch", "1", "2", "--budget", "0.5", "--out", str(tmp_path)])


@pytest.mark.parametrize("argv, says", [
    (["--before-ratio", "0.5"], "add --before METHOD"),
    (["--before-option", "contextual_ratio=0.2"], "add --before METHOD"),
    (["--before", "visionzip", "--methods", "none"], "--methods none visionzip"),
    (["--before", "visionzip", "--batch", "1", "4"], "not supported with --batch"),
    (["--before", "visionzip", "--before-ratio", "2"], "--before-ratio must be in [0, 1]"),
    (["--before", "visionzip", "--before-option", "pivots=2"], "--before-option KEY=VALUE"),
    (["--before", "fastv"], "invalid choice"),
])
def test_bad_before_flags_are_refused(argv, says, capsys):
    with pytest.raises(SystemExit) as e:
        benchmark.parse_args(argv)
    assert e.value.code == 2 and says in capsys.readouterr().err


def test_before_wraps_every_pruned_setting_of_the_grid():
    """No model: the grid of settings (64 image tokens, 12 layers), each pruned one after the --before stage."""
    from scripts.bench.methods import expand

    args = benchmark.parse_args(["--methods", "none", "sequential", "divprune", "--ratios", "0.5", "--layers", "2",
                                 "--before", "visionzip", "--before-ratio", "0.5"])
    before = benchmark.before_stage(args)
    assert before == PruneConfig("visionzip", 0.5)
    grid = expand(args.methods, args.attn, args.ratios, args.layers, args.step, None, 64, 12)
    rows = {s.method: s for s in benchmark.with_before(grid, before, 64, 12)}
    assert rows["none"].config is None  # the baseline stays unpruned
    assert rows["sequential"].config.tag() == "visionzip_r0.5_l0+sequential_r0.5_l2_s10"
    assert rows["divprune"].status == "ok" and rows["divprune"].config.before == before
    # the label and the table's method cell name the before stage: a combination's row never reads as single-stage
    assert rows["sequential"].label().startswith("visionzip R=0.5 + sequential K=2 R=0.5")
    from scripts.bench.report import method_cell
    assert method_cell({"method": "sequential", "config": rows["sequential"].config.to_dict()}) == \
        "visionzip R=0.5 + sequential"
    assert method_cell({"method": "none", "config": None}) == "none"
    # a budget is solved for the combination; a decoder-side stage at layer 0 is an invalid row, not a crash
    grid = expand(["sequential", "divprune"], ["sdpa"], [0.5], [2, 0], 0.1, [20], 64, 12)
    rows = {(s.method, s.config.layer if s.config else None): s for s in benchmark.with_before(grid, before, 64, 12)}
    cfg = rows[("sequential", 2)].config
    assert cfg.before == before and cfg.average_image_tokens(64, 12) <= 20
    assert rows[("divprune", 0)].status == "unreachable" and "two stages at layer 0" in rows[("divprune", 0)].note
