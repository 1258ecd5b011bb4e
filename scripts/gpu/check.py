"""The one-command GPU check (run it through ``scripts/gpu_check.sh``): what needs a GPU, in one short session.

Parts, each a subprocess with its own time limit, timed and logged:

1. ``oracle``: the masked-reference oracle at full size (random weights, real configs) in bfloat16 and
   float16 for LLaVA-1.5-7B, Qwen2-VL-7B and Qwen3-VL-8B (``scripts/gpu/oracle.py``);
2. ``bench``: the benchmark's 7B presets, none / fastv / sequential at R = 0.5 / 0.75 / 0.9, K = 2, with one
   and five images, 5 timed repeats after 2 warm-ups (``scripts/benchmark.py``);
3. ``bench_vision``: LLaVA-1.5-7B, the vision-side methods FasterVLM and VisionZip at R = 0.75 (K = 0), one
   and five images;
4. ``batch``: throughput at batch 1 and 8 for LLaVA-1.5-7B on mixed shapes (16 prompts of 1, 2 and 3
   images), none / sequential at R = 0.75, K = 2, 8 new tokens (``scripts/benchmark.py --batch``; the first
   GPU run's batch 1/8/16 sweep over two presets and three methods did not fit the part's 172 s);
5. ``flash``: the oracle and a benchmark row set with ``flash_attention_2``, if ``flash_attn`` imports.

Writes ``summary.json`` and ``summary.md`` (plus each part's JSON and log) under ``--out``. ``--cpu`` is the
reduced mode the test suite runs: tiny presets on the CPU, the same code paths.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the parts run from the repository root

FULL = {
    "oracle": ["--presets", "llava-1.5-7b", "qwen2-vl-7b", "qwen3-vl-8b", "--dtypes", "bfloat16", "float16"],
    "bench": ["--preset", "llava-1.5-7b", "qwen2-vl-7b", "--methods", "none", "fastv", "sequential", "--ratios",
              "0.5", "0.75", "0.9", "--layers", "2", "--images", "1", "5", "--new-tokens", "8", "--repeats", "5",
              "--warmup", "2"],
    "bench_vision": ["--preset", "llava-1.5-7b", "--methods", "none", "fastervlm", "visionzip", "--ratios", "0.75",
                     "--layers", "0", "--images", "1", "5", "--new-tokens", "8", "--repeats", "5", "--warmup", "2"],
    "batch": ["--preset", "llava-1.5-7b", "--batch", "1", "8", "--methods", "none", "sequential", "--ratios", "0.75",
              "--layers", "2", "--images", "1", "2", "3", "--new-tokens", "8", "--repeats", "1", "--warmup", "1"],
    "flash_oracle": ["--presets", "llava-1.5-7b", "--dtypes", "bfloat16", "--attn", "flash_attention_2"],
    "flash_bench": ["--preset", "llava-1.5-7b", "--methods", "none", "fastv", "sequential", "--ratios", "0.75",
                    "--layers", "2", "--attn", "sdpa", "flash_attention_2", "--new-tokens", "16", "--repeats", "2"],
}
REDUCED = {
    "oracle": ["--presets", "tiny-llava", "tiny-qwen2-vl", "tiny-qwen3-vl", "--dtypes", "float32", "bfloat16",
               "--new-tokens", "4"],
    "bench": ["--preset", "tiny-llava", "--methods", "none", "fastv", "sequential", "--ratios", "0.5", "0.9",
              "--layers", "2", "--images", "1", "2", "--new-tokens", "3", "--repeats", "1", "--warmup", "0",
              "--threads", "1"],
    "bench_vision": ["--preset", "tiny-llava", "--methods", "none", "fastervlm", "visionzip", "--ratios", "0.75",
                     "--layers", "0", "--images", "1", "--new-tokens", "3", "--repeats", "1", "--warmup", "0",
                     "--threads", "1"],
    "batch": ["--preset", "tiny-llava", "tiny-qwen2-vl", "--batch", "1", "4", "--methods", "none", "sequential",
              "--ratios", "0.75", "--layers", "2", "--images", "1", "2", "--image-size", "112x112", "56x112",
              "--new-tokens", "3", "--repeats", "1", "--warmup", "0", "--threads", "1"],
}


def run_part(name: str, cmd: list, out: Path, limit: int) -> dict:
    """Run one part; its output goes to ``<out>/<name>.log``. Never raises: a failed part is recorded."""
    t0 = time.time()
    with open(out / f"{name}.log", "w") as log:
        try:
            rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, timeout=limit).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    seconds = round(time.time() - t0, 1)
    print(f"== {name}: rc={rc}, {seconds} s", flush=True)
    tail = (out / f"{name}.log").read_text(errors="replace").splitlines()[-15:]
    return {"part": name, "rc": rc, "seconds": seconds, "command": " ".join(cmd), "log_tail": tail}


def bench_rows(path: Path) -> list:
    if not path.is_file():
        return []
    rows = json.loads(path.read_text())["rows"]
    return [{k: r.get(k) for k in ("preset", "attn", "method", "images", "n_image_tokens", "ratio", "status")} |
            {"prefill_ms": (r.get("median") or {}).get("prefill_ms"),
             "decode_ms_per_token": (r.get("median") or {}).get("decode_ms_per_token"),
             "prefill_vs_none": r.get("prefill_vs_none"), "flops_ratio": (r.get("flops") or {}).get("ratio"),
             "kv_bytes": r.get("kv_bytes"), "kv_bytes_expected": r.get("kv_bytes_expected")} for r in rows]


def batch_rows(path: Path) -> list:
    if not path.is_file():
        return []
    return [{k: r.get(k) for k in ("preset", "method", "label", "batch", "samples_per_s", "tokens_per_s",
                                   "peak_mem_bytes", "samples_per_s_vs_batch1", "rows_follow_plan", "status")}
            for r in json.loads(path.read_text())["throughput"]]


def _fmt(v, d=3):
    return "n/a" if v is None else (f"{v:.{d}g}" if isinstance(v, float) else str(v))


def markdown(summary: dict) -> str:
    lines = [f"# GPU check ({summary['mode']})", "", f"Command: `{summary['command']}`", "",
             f"Machine: {summary['machine']}", "", "| part | exit | seconds |", "|---|---|---|"]
    lines += [f"| {p['part']} | {p['rc']} | {p['seconds']} |" for p in summary["parts"]]
    lines += ["", "## Oracle: physical pruning vs the masked reference", "",
              "| preset | dtype | attn | method | image tokens | layers with the same picks | min kept overlap | "
              "logit gap | unpruned vs reference | greedy tokens agreeing | seconds |", "|" + "---|" * 11]
    for r in summary["oracle"]:
        lines.append(f"| {r['preset']} | {r['dtype']} | {r['attn']} | {r['method']} | {r['n_image_tokens']} | "
                     f"{r['layers_same_picks']}/{r['pruning_layers']} | {_fmt(r['min_kept_overlap'])} | "
                     f"{_fmt(r['logit_gap_vs_reference'])} | {_fmt(r['logit_gap_unpruned_vs_reference'])} | "
                     f"{r['greedy_tokens_agreeing']}/{r['new_tokens']} | {r['seconds']} |")
    lines += ["", "## Benchmark (medians)", "", "| preset | attn | method | images | image tokens | R | prefill ms | "
              "prefill x none | FLOPs x none | decode ms/token | KV bytes = expected |", "|" + "---|" * 11]
    for r in summary["bench"]:
        kv = None if r["kv_bytes"] is None else r["kv_bytes"] == r["kv_bytes_expected"]
        lines.append(f"| {r['preset']} | {r['attn']} | {r['method']} | {r['images']} | {r['n_image_tokens']} | "
                     f"{_fmt(r['ratio'])} | {_fmt(r['prefill_ms'], 4)} | {_fmt(r['prefill_vs_none'])} | "
                     f"{_fmt(r['flops_ratio'])} | {_fmt(r['decode_ms_per_token'], 3)} | {_fmt(kv)} |")
    lines += ["", "## Throughput per batch size (mixed shapes)", "", "| preset | setting | batch | samples/s | "
              "tokens/s | peak GiB | samples/s x batch 1 | rows follow their plans |", "|" + "---|" * 8]
    for r in summary.get("batch", []):
        gib = None if r["peak_mem_bytes"] is None else r["peak_mem_bytes"] / 2 ** 30
        lines.append(f"| {r['preset']} | {r['label']} | {r['batch']} | {_fmt(r['samples_per_s'])} | "
                     f"{_fmt(r['tokens_per_s'])} | {_fmt(gib)} | {_fmt(r['samples_per_s_vs_batch1'])} | "
                     f"{r['rows_follow_plan']} |")
    if summary.get("flash_skipped"):
        lines += ["", f"Flash attention: skipped ({summary['flash_skipped']})."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu", action="store_true", help="reduced mode: tiny presets on the CPU")
    ap.add_argument("--out", type=Path, default=ROOT / "outputs" / "gpu_check")
    ap.add_argument("--part-limit", type=int, default=240, help="seconds each part may take")
    a = ap.parse_args(argv)
    t0 = time.time()
    import torch

    if not a.cpu and not torch.cuda.is_available():
        print("gpu_check: no CUDA device; run with --cpu for the reduced CPU mode", file=sys.stderr)
        return 2
    a.out.mkdir(parents=True, exist_ok=True)
    py, plan = sys.executable, (REDUCED if a.cpu else FULL)
    device = ["--device", "cpu"] if a.cpu else []
    parts = [run_part("oracle", [py, "scripts/gpu/oracle.py", *plan["oracle"], *device,
                                 "--out", str(a.out / "oracle.json")], a.out, a.part_limit),
             run_part("bench", [py, "scripts/benchmark.py", *plan["bench"], *device, "--out", str(a.out),
                                "--name", "bench", "--no-plot", "--no-progress"], a.out, a.part_limit),
             run_part("bench_vision", [py, "scripts/benchmark.py", *plan["bench_vision"], *device, "--out",
                                       str(a.out), "--name", "bench_vision", "--no-plot", "--no-progress"],
                      a.out, a.part_limit),
             run_part("batch", [py, "scripts/benchmark.py", *plan["batch"], *device, "--out", str(a.out),
                                "--name", "batch", "--no-progress"], a.out, a.part_limit)]
    flash_skipped = None
    if a.cpu:
        flash_skipped = "reduced CPU mode"
    elif importlib.util.find_spec("flash_attn") is None:
        flash_skipped = "flash_attn is not importable"
    else:
        parts.append(run_part("flash_oracle", [py, "scripts/gpu/oracle.py", *plan["flash_oracle"],
                                               "--out", str(a.out / "flash_oracle.json")], a.out, a.part_limit))
        parts.append(run_part("flash_bench", [py, "scripts/benchmark.py", *plan["flash_bench"], "--out",
                                              str(a.out), "--name", "flash_bench", "--no-plot", "--no-progress"],
                              a.out, a.part_limit))
    oracle = []
    for name in ("oracle.json", "flash_oracle.json"):
        if (a.out / name).is_file():
            oracle += json.loads((a.out / name).read_text())["rows"]
    machine = (torch.cuda.get_device_name() if torch.cuda.is_available() and not a.cpu else "CPU") + \
        f", torch {torch.__version__}, transformers {__import__('transformers').__version__}"
    summary = {"mode": "reduced CPU" if a.cpu else "GPU", "machine": machine,
               "command": "bash scripts/gpu_check.sh" + (" --cpu" if a.cpu else ""), "parts": parts,
               "oracle": oracle,
               "bench": [r for n in ("bench", "bench_vision", "flash_bench") for r in bench_rows(a.out / f"{n}.json")],
               "batch": batch_rows(a.out / "batch.json"),
               "flash_skipped": flash_skipped, "wall_s": round(time.time() - t0, 1)}
    (a.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (a.out / "summary.md").write_text(markdown(summary))
    print(f"gpu_check: {summary['wall_s']} s; wrote {a.out / 'summary.json'} and {a.out / 'summary.md'}")
    return 0 if all(p["rc"] == 0 for p in parts) else 1


if __name__ == "__main__":
    sys.exit(main())
