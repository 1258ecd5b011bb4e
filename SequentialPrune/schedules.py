"""Schedules: how many image tokens enter each decoder layer.

A schedule maps (number of image tokens N, number of decoder layers, config) to
``{layer: kept}``: before ``layer`` runs, only ``kept`` image tokens remain.
Layers absent from the mapping keep what the previous layer had.
"""
from __future__ import annotations

from typing import Callable, Dict

Plan = Dict[int, int]
ScheduleFn = Callable[[int, "object"], Plan]

SCHEDULES: Dict[str, ScheduleFn] = {}


def register_schedule(name: str):
    """Decorator adding a schedule function to the registry under ``name``."""
    def deco(fn: ScheduleFn) -> ScheduleFn:
        SCHEDULES[name] = fn
        return fn
    return deco


def stepwise_fractions(ratio: float, step: float) -> list[float]:
    """Cumulative pruned fractions of the stepwise schedule, one per pruning layer.

    ``n = int(ratio / step)`` layers; the j-th (1-based) prunes ``j * step`` of the
    original tokens, the last exactly ``ratio``. Python float arithmetic is kept
    on purpose: it reproduces the original research code's counts.
    """
    if ratio <= 0:
        return []
    # A ratio below one step would give n = 0 in the original and silently prune
    # nothing; we prune once, to the ratio, instead.
    n = max(1, int(ratio / step))
    return [j * step if j < n else ratio for j in range(1, n + 1)]


@register_schedule("none")
def no_schedule(n_image: int, cfg) -> Plan:
    """Keep every image token."""
    return {}


@register_schedule("oneshot")
def oneshot_schedule(n_image: int, cfg) -> Plan:
    """FastV: drop the whole ratio before layer K."""
    if cfg.ratio <= 0:
        return {}
    return {cfg.layer: int(n_image * (1 - cfg.ratio))}


@register_schedule("stepwise")
def stepwise_schedule(n_image: int, cfg) -> Plan:
    """Sequential Prune: drop a further ``step`` of N before each layer from K on."""
    return {
        cfg.layer + j: int((1 - frac) * n_image)
        for j, frac in enumerate(stepwise_fractions(cfg.ratio, cfg.step))
    }


def tokens_per_layer(plan: Plan, n_image: int, num_layers: int) -> list[int]:
    """Image tokens entering each decoder layer under ``plan``."""
    out, cur = [], n_image
    for layer in range(num_layers):
        cur = min(cur, plan.get(layer, cur))
        out.append(cur)
    return out
