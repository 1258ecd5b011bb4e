"""The benchmark's performance targets (FLOPs fidelity, scoring overhead, Sequential vs FastV, the speed-up over
the original code, KV-cache bytes), each checked on the rows of one run (ratios measured side by side).

A target is a function ``rows -> [check]``; a check is a dict with the value,
the threshold and whether it passed (``None`` where there is no threshold).
Ratios of two settings are medians of per-repetition ratios: the settings ran
interleaved, so repetition i of each saw the same machine load.
"""
from __future__ import annotations

import statistics
from typing import Callable, Dict, List, Optional

TARGETS: Dict[str, Callable[[List[dict]], List[dict]]] = {}

FLOPS_FIDELITY_MAX = 1.10
SCORING_OVERHEAD_MAX = 1.03
ORIGINAL_SPEEDUP_MIN = {1: 2.0, 5: 10.0}   # images per prompt -> end-to-end speed-up required


def register_target(name: str):
    def deco(fn):
        TARGETS[name] = fn
        return fn
    return deco


def paired_ratio(a: dict, b: dict, metric: str) -> Optional[float]:
    """Median over repetitions of a[metric] / b[metric]; the ratio of medians if repetitions differ."""
    ra = {r["rep"]: r[metric] for r in a["runs"] if r.get(metric)}
    rb = {r["rep"]: r[metric] for r in b["runs"] if r.get(metric)}
    both = sorted(set(ra) & set(rb))
    if len(both) == min(len(ra), len(rb)) and len(ra) == len(rb) and both:
        return statistics.median(ra[i] / rb[i] for i in both)
    ma, mb = a["median"].get(metric), b["median"].get(metric)
    return ma / mb if ma and mb else None


def _block(row: dict) -> tuple:
    return row["preset"], row["images"], tuple(row["image_size"]), row["batch"]


def _find(rows, like: dict, **match) -> List[dict]:
    out = []
    for r in rows:
        if r["status"] != "ok" or _block(r) != _block(like):
            continue
        if all(r.get(k) == v for k, v in match.items()):
            out.append(r)
    return out


def _check(target, row, value, threshold=None, op="<=", **detail) -> dict:
    ok = None
    if threshold is not None and value is not None:
        ok = value <= threshold if op == "<=" else value >= threshold
    return {"target": target, "block": row["block"], "setting": row["label"], "value": value,
            "threshold": threshold, "op": op, "pass": ok, **detail}


@register_target("flops_fidelity")
def flops_fidelity(rows):
    """(prefill time pruned / unpruned) / (FLOPs pruned / unpruned) for FastV and Sequential."""
    out = []
    for r in rows:
        if r["status"] != "ok" or r["method"] not in ("fastv", "sequential"):
            continue
        for base in _find(rows, r, method="none", attn=r["attn"]):
            t = paired_ratio(r, base, "prefill_ms")
            f = r["flops"]["ratio"]
            out.append(_check("flops_fidelity", r, t / f if t else None, FLOPS_FIDELITY_MAX,
                              time_ratio=t, flops_ratio=f, flops_ratio_swiglu=r["flops"]["ratio_swiglu"],
                              ttft_ratio=paired_ratio(r, base, "ttft_ms")))
    return out


@register_target("scoring_overhead")
def scoring_overhead(rows):
    """Prefill time of score_only (every score, nothing dropped) over the stock model."""
    out = []
    for r in rows:
        if r["status"] == "ok" and r["method"] == "score_only":
            for base in _find(rows, r, method="none", attn=r["attn"]):
                out.append(_check("scoring_overhead", r, paired_ratio(r, base, "prefill_ms"), SCORING_OVERHEAD_MAX,
                                  e2e_ratio=paired_ratio(r, base, "e2e_ms"),
                                  tokens_equal_none=r["tokens"] == base["tokens"]))
    return out


@register_target("sequential_vs_fastv")
def sequential_vs_fastv(rows):
    """Sequential over FastV at the same K and R (or budget): prefill times and FLOPs side by side."""
    out = []
    for r in rows:
        if r["status"] != "ok" or r["method"] != "sequential":
            continue
        match = dict(method="fastv", attn=r["attn"], layer=r["layer"], budget=r["budget"])
        if r["budget"] is None:
            match["ratio"] = r["ratio"]
        for f in _find(rows, r, **match):
            out.append(_check("sequential_vs_fastv", r, paired_ratio(r, f, "prefill_ms"),
                              sequential_prefill_ms=r["median"]["prefill_ms"], fastv_prefill_ms=f["median"]["prefill_ms"],
                              flops_ratio=r["flops"]["pruned"] / f["flops"]["pruned"]))
    return out


@register_target("original_speedup")
def original_speedup(rows):
    """End-to-end generate: the original-style run over ours (sequential, static cache) at the same K and R."""
    out = []
    for r in rows:
        if r["status"] != "ok" or r["method"] != "original":
            continue
        for ours in _find(rows, r, method="sequential", layer=r["layer"], ratio=r["ratio"], step=r["step"]):
            need = ORIGINAL_SPEEDUP_MIN.get(r["images"])
            out.append(_check("original_speedup", ours, paired_ratio(r, ours, "e2e_ms"), need, op=">=",
                              original_e2e_ms=r["median"]["e2e_ms"], ours_e2e_ms=ours["median"]["e2e_ms"],
                              original_peak_mem=r["median"]["peak_mem_bytes"],
                              ours_peak_mem=ours["median"]["peak_mem_bytes"],
                              original_peak_mem_delta=r["median"]["peak_mem_delta_bytes"],
                              ours_peak_mem_delta=ours["median"]["peak_mem_delta_bytes"], new_tokens=r["new_tokens"],
                              original_attn=r["attn"]))
    return out


@register_target("kv_bytes")
def kv_bytes(rows):
    """KV-cache bytes after prefill equal tokens-per-layer x kv heads x head_dim x 2 x dtype size."""
    out = []
    for r in rows:
        if r["status"] == "ok" and r["kv_bytes_expected"] is not None:
            c = _check("kv_bytes", r, r["kv_bytes"], op="==", expected=r["kv_bytes_expected"])
            c["pass"] = r["kv_bytes"] == r["kv_bytes_expected"]
            out.append(c)
    return out


def evaluate(rows: List[dict], names=None) -> List[dict]:
    """Every registered target (or ``names``) over ``rows``."""
    out = []
    for name, fn in TARGETS.items():
        if names is None or name in names:
            out += fn(rows)
    return out
