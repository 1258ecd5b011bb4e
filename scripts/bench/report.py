"""Benchmark output: machine facts, the JSON file, the Markdown tables and the PNG plot."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import List

import torch
import transformers

MiB = 2 ** 20


def machine_info(device: torch.device) -> dict:
    """What ran the benchmark: CPU, GPU, memory and library versions."""
    info = {
        "platform": platform.platform(), "python": platform.python_version(),
        "torch": torch.__version__, "transformers": transformers.__version__,
        "cpu": _cpu_model(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "ram_bytes": _meminfo_bytes("MemTotal"), "device": str(device),
        "cuda": torch.version.cuda, "gpu": None, "git_commit": _git_commit(),
    }
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(gpu=p.name, gpu_memory_bytes=p.total_memory)
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _meminfo_bytes(key: str):
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None


def _git_commit():
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def write_json(report: dict, path: Path) -> None:
    path.write_text(json.dumps(report, indent=1, default=str))


# ---------------------------------------------------------------- Markdown
def _f(x, fmt="{:.1f}"):
    return "-" if x is None else fmt.format(x)


def method_cell(r: dict) -> str:
    """The row's method; a combination's before stage first (``visionzip R=0.666 + sequential``)."""
    before = (r.get("config") or {}).get("before")
    return r["method"] if not before else f"{before['method']} R={before['ratio']:g} + {r['method']}"


COLUMNS = [  # (header, row -> cell)
    ("method", method_cell),
    ("attn", lambda r: r["attn"]),
    ("K", lambda r: _f(r["layer"], "{}")),
    ("R", lambda r: _f(r["ratio"], "{:.4g}")),
    ("step", lambda r: _f(r["step"], "{:g}")),
    ("budget", lambda r: _f(r["budget"], "{:g}")),
    ("avg img tok/layer", lambda r: _f(r["avg_image_tokens"])),
    ("FLOPs ratio", lambda r: _f(r["flops"]["ratio"], "{:.3f}") if r["flops"] else "-"),
    ("prefill ms", lambda r: _f(r["median"].get("prefill_ms"))),
    ("prefill / none", lambda r: _f(r.get("prefill_vs_none"), "{:.3f}")),
    ("time / FLOPs", lambda r: _f(r.get("time_over_flops"), "{:.3f}")),
    ("vision ms", lambda r: _f(r["median"].get("vision_ms"))),
    ("TTFT ms", lambda r: _f(r["median"].get("ttft_ms"))),
    ("decode ms/tok", lambda r: _f(r["median"].get("decode_ms_per_token"))),
    ("e2e ms", lambda r: _f(r["median"].get("e2e_ms"))),
    ("peak mem MiB", lambda r: _f(_div(r["median"].get("peak_mem_bytes"), MiB), "{:.0f}")),
    ("KV MiB", lambda r: _f(_div(r["kv_bytes"], MiB), "{:.2f}")),
    ("KV = expected", lambda r: "-" if r["kv_bytes_expected"] is None else
     ("yes" if r["kv_bytes"] == r["kv_bytes_expected"] else "NO")),
    ("reps", lambda r: str(len(r["runs"]))),
]


def _div(x, d):
    return None if x is None else x / d


def markdown(report: dict) -> str:
    """Per input block a table of every row; then the targets."""
    meta = report["meta"]
    m = meta["machine"]
    lines = [f"Command: `{meta['command']}`", "",
             f"Machine: {m['cpu']} ({m['cpu_count']} cores, {m['torch_threads']} torch threads), "
             f"GPU: {m['gpu'] or 'none'}; torch {m['torch']}, transformers {m['transformers']}; "
             f"device {m['device']}, dtype {meta['dtype']}; {meta['new_tokens']} new tokens, "
             f"{meta['repeats']} repetitions (medians), {meta['warmup']} warm-up.",
             f"Load average (1 min) during the timed runs: {_load(report['rows'])}; wall time {meta['wall_s']:.0f} s.",
             ""]
    blocks = defaultdict(list)
    for r in report["rows"]:
        blocks[r["block"]].append(r)
    for block, rows in blocks.items():
        lines += [f"### {block}", "", "| " + " | ".join(h for h, _ in COLUMNS) + " |",
                  "|" + "---|" * len(COLUMNS)]
        for r in rows:
            if r["status"] != "ok":
                lines.append(f"| {method_cell(r)} | {r['attn']} | {_f(r['layer'], '{}')} | - | {_f(r['step'], '{:g}')} "
                             f"| {_f(r['budget'], '{:g}')} | **{r['status']}**: {r['note']} |" + " |" * (len(COLUMNS) - 7))
                continue
            lines.append("| " + " | ".join(fn(r) for _, fn in COLUMNS) + " |")
        lines.append("")
    if report["targets"]:
        lines += ["### Targets", "", "| target | block | setting | value | threshold | pass | detail |",
                  "|---|---|---|---|---|---|---|"]
        for c in report["targets"]:
            detail = ", ".join(f"{k}={_short(v)}" for k, v in c.items()
                               if k not in ("target", "block", "setting", "value", "threshold", "op", "pass"))
            thr = "-" if c["threshold"] is None else f"{c['op']} {c['threshold']:g}"
            ok = {True: "yes", False: "**NO**", None: "-"}[c["pass"]]
            lines.append(f"| {c['target']} | {c['block']} | {c['setting']} | {_short(c['value'])} | {thr} | {ok} "
                         f"| {detail} |")
    return "\n".join(lines) + "\n"


def _load(rows) -> str:
    loads = sorted(r["loadavg_1min"] for row in rows for r in row["runs"])
    if not loads:
        return "-"
    return f"median {loads[len(loads) // 2]:.1f} (range {loads[0]:.1f}-{loads[-1]:.1f})"


def _short(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


# ---------------------------------------------------------------- plot
def plot(report: dict, path: Path) -> bool:
    """Prefill time vs average image tokens per layer: one line per method, the FLOPs prediction dashed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot", file=sys.stderr)
        return False
    panels = defaultdict(list)
    for r in report["rows"]:
        if r["status"] == "ok" and r["median"].get("prefill_ms"):
            panels[(r.get("run", ""), r["block"], r["attn"])].append(r)
    if not panels:
        return False
    cols = min(len(panels), 2)
    n_rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(n_rows, cols, figsize=(5.2 * cols, 4 * n_rows), squeeze=False)
    for ax, ((run, block, attn), rows) in zip(axes.flat, panels.items()):
        _panel(ax, rows, f"{block}\n[{attn}] {run}")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def _panel(ax, rows: List[dict], title: str) -> None:
    base = next((r for r in rows if r["method"] == "none"), None)
    colors = iter(["C0", "C1", "C2", "C3", "C4", "C5", "C6"])
    by_method = defaultdict(list)
    for r in rows:
        if r["method"] != "none":
            by_method[r["method"]].append(r)
    for method, rs in by_method.items():
        c = next(colors)
        pts = sorted(rs, key=lambda r: r["avg_image_tokens"])
        if base is not None and method != "score_only":
            pts.append(base)  # each line starts from the unpruned point
        xs = [r["avg_image_tokens"] for r in pts]
        ax.plot(xs, [r["median"]["prefill_ms"] for r in pts], "o-", color=c, label=f"{method} measured")
        if base is not None and any(r["flops"]["ratio"] < 1 for r in pts):  # nothing to predict otherwise
            pred = [base["median"]["prefill_ms"] * r["flops"]["ratio"] for r in pts]
            ax.plot(xs, pred, "x--", color=c, alpha=0.6, label=f"{method} FLOPs prediction")
    if base is not None:
        ax.plot([base["avg_image_tokens"]], [base["median"]["prefill_ms"]], "ks", label="none")
    ax.set_xlabel("average image tokens per layer")
    ax.set_ylabel("decoder prefill time (ms, median)")
    ax.set_title(title, fontsize=8)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
