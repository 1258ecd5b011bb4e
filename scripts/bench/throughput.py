"""Throughput per batch size (``scripts/benchmark.py --batch 1 4 8``): samples/s, generated tokens/s and peak
memory of every setting, on mixed-shape batches.

The workload is the same at every batch size: as many prompts as the largest batch, cycling through the shapes
given (``--images`` counts x ``--image-size`` sizes), so a batch mixes prompts of different image counts and, on
dynamic-resolution families (Qwen), of different image-token counts. At batch size B the prompts are answered B
at a time, in order, joined with left padding as the evaluation front ends join them; each row is pruned by the
schedule of its own image-token count (checked on every call against the setting's plan). One run answers the
whole workload; settings are run in a rotating interleaved order, ``--repeats`` times after ``--warmup``, and
each number is the median.
"""
from __future__ import annotations

import itertools
import statistics
from typing import Dict, List, Optional, Tuple

from SequentialPrune.evaluation.batch_inputs import join_rows
from scripts.bench.inputs import make_layout
from scripts.bench.methods import BENCH_METHODS, Setting, expand
from scripts.bench.report import MiB


class MixedBatch:
    """Rows joined with left padding (``.inputs``), and each row's image tokens."""

    def __init__(self, rows):
        self.inputs = join_rows([r.inputs for r in rows], pad_id=0)
        self.n_image_tokens = [r.n_image_tokens for r in rows]


def workload(model, shapes: List[Tuple[int, Optional[tuple]]], n: int, text_tokens: int, seed: int):
    """``n`` one-prompt layouts cycling through ``shapes`` ((images, image size or None))."""
    cycle = itertools.islice(itertools.cycle(shapes), n)
    return [make_layout(model, images, size, text_tokens, 1, seed + r) for r, (images, size) in enumerate(cycle)]


def _median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _rows_follow_plan(snap: dict, s: Setting, ns: List[int], num_layers: int) -> Optional[bool]:
    """Whether every row carried the image tokens its own N's plan gives (None: nothing to check)."""
    if snap is None or s.config is None or not s.use_cache:  # recompute mode's stats are of its last re-run
        return None
    rows = snap.get("rows") or [snap] * len(ns)
    return all(r["image_tokens_per_layer"] == s.config.tokens_per_layer(n, num_layers) for r, n in zip(rows, ns))


def sweep(bench, args, shapes, bar) -> List[dict]:
    """Every setting at every ``args.batch`` size on one model (``bench``): one row per (batch size, setting)."""
    prompts = workload(bench.model, shapes, max(args.batch), args.text_tokens, args.seed)
    n_tokens = [p.n_image_tokens for p in prompts]
    settings = expand(args.methods, args.attn, args.ratios, args.layers, args.step, None, n_tokens[0],
                      bench.num_layers, dict(args.prune_option))
    ok = [s for s in settings if s.status == "ok"]
    out = []
    for batch in args.batch:
        calls = [MixedBatch(prompts[i:i + batch]) for i in range(0, len(prompts), batch)]

        def answer_all(s: Setting, new_tokens: int) -> dict:
            """One run: every prompt, ``batch`` at a time."""
            got = [bench.run(s, c, new_tokens) for c in calls]
            follow = [_rows_follow_plan(snap, s, c.n_image_tokens, bench.num_layers)
                      for c, (_, snap) in zip(calls, got)]
            return {"ms": sum(m["e2e_ms"] for m, _ in got),
                    "tokens": sum(m["new_tokens"] * len(c.n_image_tokens) for c, (m, _) in zip(calls, got)),
                    "peak": max((m["peak_mem_bytes"] or 0 for m, _ in got), default=None),
                    "follow": None if any(f is None for f in follow) else all(follow)}

        runs: Dict[Setting, list] = {s: [] for s in ok}
        for s in ok:
            for _ in range(args.warmup):
                bar.set_postfix_str(f"warm-up b{batch} {s.label()}")
                answer_all(s, min(2, args.new_tokens))
                bar.update()
        reps = {s: (args.slow_repeats or args.repeats) if BENCH_METHODS[s.method].slow else args.repeats for s in ok}
        for rep in range(max(reps.values(), default=0)):
            for s in ok[rep % len(ok):] + ok[:rep % len(ok)]:
                if rep < reps[s]:
                    bar.set_postfix_str(f"rep {rep} b{batch} {s.label()}")
                    runs[s].append(answer_all(s, args.new_tokens))
                    bar.update()
        for s in settings:
            mine = runs.get(s, [])
            ms, tokens = _median([r["ms"] for r in mine]), _median([r["tokens"] for r in mine])
            follow = [r["follow"] for r in mine if r["follow"] is not None]
            out.append({
                "preset": bench.label, "shapes": [p.describe() for p in prompts[:len(shapes)]], "batch": batch,
                "prompts": len(prompts), "calls": len(calls), "n_image_tokens": n_tokens,
                "method": s.method, "attn": s.attn, "label": s.label(), "status": s.status, "note": s.note,
                "config": s.config.to_dict() if s.config else None, "repeats": len(mine),
                "total_ms": ms, "generated_tokens": tokens,
                "samples_per_s": len(prompts) / (ms / 1e3) if ms else None,
                "tokens_per_s": tokens / (ms / 1e3) if ms and tokens else None,
                "peak_mem_bytes": _median([r["peak"] for r in mine]),
                "rows_follow_plan": all(follow) if follow else None,
                "total_ms_runs": [r["ms"] for r in mine],
            })
    for r in out:
        one = next((b for b in out if b["label"] == r["label"] and b["preset"] == r["preset"] and b["batch"] == 1),
                   None)
        r["samples_per_s_vs_batch1"] = (r["samples_per_s"] / one["samples_per_s"]
                                        if one and one["samples_per_s"] and r["samples_per_s"] else None)
    return out


def runs_needed(n_settings: int, args) -> int:
    return len(args.batch) * n_settings * (args.warmup + args.repeats)


def markdown(rows: List[dict]) -> List[str]:
    """The throughput table: per preset and shapes, every setting at every batch size."""
    lines = []
    for preset in dict.fromkeys(r["preset"] for r in rows):
        mine = [r for r in rows if r["preset"] == preset]
        lines += ["", f"### Throughput: {preset}", "",
                  f"{mine[0]['prompts']} prompts cycling through: " + "; ".join(mine[0]["shapes"]) + ".", "",
                  "| setting | batch | generate calls | samples/s | generated tokens/s | total ms | peak MiB "
                  "| samples/s vs batch 1 | rows follow their plans |", "|---|---|---|---|---|---|---|---|---|"]
        f = lambda x, fmt="{:.2f}": "-" if x is None else fmt.format(x)  # noqa: E731
        for r in sorted(mine, key=lambda r: (r["label"], r["batch"])):
            lines.append(f"| {r['label']} | {r['batch']} | {r['calls']} | "
                         f"{f(r['samples_per_s'])} | {f(r['tokens_per_s'], '{:.1f}')} | {f(r['total_ms'], '{:.0f}')} | "
                         f"{f(None if r['peak_mem_bytes'] is None else r['peak_mem_bytes'] / MiB, '{:.0f}')} | "
                         f"{f(r['samples_per_s_vs_batch1'])} | {r['rows_follow_plan']} |")
    return lines
