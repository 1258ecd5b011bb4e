"""The benchmark's runner: one model on one device, timing settings on input layouts and turning the runs into
rows (medians, planned and achieved tokens, FLOPs, KV bytes, ratios over the stock model). The CLI that builds
models and writes the report is ``scripts/benchmark.py``."""
from __future__ import annotations

import os
import statistics
from typing import Dict, List

import torch

from SequentialPrune import apply_pruning, prefill_flops
from SequentialPrune.adapters import adapter_for
from scripts.bench.measure import Clock, PeakMemory, Probe, expected_cache_bytes, measure_generate
from scripts.bench.methods import BENCH_METHODS, Setting
from scripts.bench.targets import paired_ratio

# the per-run numbers whose medians a row reports
METRICS = ("prefill_ms", "ttft_ms", "decode_ms_per_token", "decode_lm_ms", "e2e_ms", "vision_ms",
           "peak_mem_bytes", "peak_mem_delta_bytes")


class Bench:
    """One model on one device: runs settings on input layouts and turns runs into rows."""

    def __init__(self, model, args, label: str, device: torch.device):
        self.model, self.args, self.label, self.device = model, args, label, device
        self.adapter = adapter_for(model)
        self.text_cfg = self.adapter.text_config(model)
        self.num_layers = len(self.adapter.layers(model))
        self.clock = Clock(device)
        self.probe = Probe(model, self.clock)
        self.memory = PeakMemory(device)

    def run(self, s: Setting, layout, new_tokens: int):
        """One generate under ``s``; returns (measurement, pruner stats snapshot or None)."""
        self.model.set_attn_implementation({self.adapter.text_config_key: s.attn})
        if s.config is None:
            return measure_generate(self.model, layout.inputs, new_tokens, True, self.probe, self.memory), None
        with apply_pruning(self.model, s.config) as pruner:
            m = measure_generate(self.model, layout.inputs, new_tokens, s.use_cache, self.probe, self.memory)
            st = pruner.stats
            snap = dict(st.to_dict(), flops_swiglu_ratio=st.flops("swiglu").ratio, score_layers=sorted(st.scores),
                        kept_layers=sorted(st.kept_image_indices))
        return m, snap

    def block(self, layout, settings: List[Setting], bar) -> List[dict]:
        """Warm up, then repeat every runnable setting in a rotating interleaved order."""
        a = self.args
        ok = [s for s in settings if s.status == "ok"]
        reps = {s: (a.slow_repeats or a.repeats) if BENCH_METHODS[s.method].slow else a.repeats for s in ok}
        runs: Dict[Setting, list] = {s: [] for s in ok}
        snaps: Dict[Setting, dict] = {}
        for s in ok:
            for _ in range(a.warmup):
                bar.set_postfix_str(f"warm-up {s.label()}")
                self.run(s, layout, min(2, a.new_tokens))
                bar.update()
        for rep in range(max(reps.values(), default=0)):
            order = ok[rep % len(ok):] + ok[:rep % len(ok)]
            for s in order:
                if rep >= reps[s]:
                    continue
                bar.set_postfix_str(f"rep {rep} {s.label()}")
                m, snaps[s] = self.run(s, layout, a.new_tokens)
                m.update(rep=rep, loadavg_1min=os.getloadavg()[0])
                runs[s].append(m)
                bar.update()
        rows = [self.row(layout, s, runs.get(s, []), snaps.get(s)) for s in settings]
        _relative_columns(rows)
        return rows

    def row(self, layout, s: Setting, runs: list, snap) -> dict:
        """Every number of one setting: planned and achieved tokens, FLOPs, KV bytes, raw runs, medians."""
        n, L, cfg = layout.n_image_tokens, self.num_layers, self.text_cfg
        planned = s.tokens_per_layer(n, L) if s.status == "ok" else None
        text = layout.seq_len - n
        c = s.config
        row = {
            "preset": self.label, "block": f"{self.label}: {layout.describe()}", "images": layout.images,
            "image_size": list(layout.image_size), "batch": 1, "n_image_tokens": n,
            "seq_len": layout.seq_len, "num_layers": L, "method": s.method, "attn": s.attn, "label": s.label(),
            "status": s.status, "note": s.note, "budget": s.budget, "config": c.to_dict() if c else None,
            "layer": c.layer if c else None, "ratio": c.ratio if c else None,
            "step": c.step if c and c.schedule_name.startswith("stepwise") else None,
            "new_tokens": self.args.new_tokens, "runs": [{k: v for k, v in r.items() if k != "tokens"} for r in runs],
            "tokens": runs[0]["tokens"] if runs else None,
            "median": {k: _median([r[k] for r in runs]) for k in METRICS},
            "avg_image_tokens_planned": sum(planned) / L if planned else None,
            "image_tokens_per_layer": planned, "flops": None, "kv_bytes": None, "kv_bytes_expected": None,
        }
        if s.status != "ok":
            return row
        full = [text + k for k in planned]
        f = prefill_flops(full, layout.seq_len, cfg.hidden_size, cfg.intermediate_size)
        fs = prefill_flops(full, layout.seq_len, cfg.hidden_size, cfg.intermediate_size, "swiglu")
        row["flops"] = {"pruned": f.pruned, "unpruned": f.unpruned, "ratio": f.ratio, "ratio_swiglu": fs.ratio,
                        "formula": "fastv", "source": "planned"}
        row["avg_image_tokens"] = row["avg_image_tokens_planned"]
        if snap is not None:  # what the engine saw (the source of truth when a pruner ran)
            row.update(pruner_stats=snap, avg_image_tokens=snap["avg_image_tokens_per_layer"],
                       image_tokens_per_layer=snap["image_tokens_per_layer"])
        if snap is not None and s.use_cache:  # recompute mode's stats describe its last, longer re-run
            row["flops"].update(pruned=snap["prefill_flops"], unpruned=snap["prefill_flops_unpruned"],
                                ratio=snap["prefill_flops_ratio"], ratio_swiglu=snap["flops_swiglu_ratio"],
                                source="pruner.stats")
        if runs and s.use_cache:
            row["kv_bytes"] = runs[0]["kv_bytes"]
            row["kv_bytes_expected"] = expected_cache_bytes(cfg, 1, full, self.model.dtype)
        return row


def _median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _relative_columns(rows: List[dict]) -> None:
    """Prefill time over the stock model of the same attention, and that over the FLOPs ratio."""
    for r in rows:
        r["prefill_vs_none"] = r["time_over_flops"] = None
        base = next((b for b in rows if b["method"] == "none" and b["attn"] == r["attn"] and b["runs"]), None)
        if r["status"] == "ok" and r["runs"] and base is not None:
            t = paired_ratio(r, base, "prefill_ms")
            r["prefill_vs_none"] = t
            r["time_over_flops"] = t / r["flops"]["ratio"] if t else None
