"""Schedules: how many image tokens enter each decoder layer.

A schedule turns a setting and the number of image tokens N into a plan
``{layer: kept}``: before ``layer`` runs, only ``kept`` image tokens remain.
Layers absent from the plan keep what the previous layer had. Every schedule
is driven by the same knob, the ratio R (the fraction of the N image tokens
dropped by the end), which is what ``PruneConfig.for_budget`` solves for.

A schedule is a small dataclass whose fields are its options (for example the
stage layers of PyramidDrop); ``PruneConfig(options=...)`` sets them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

Plan = Dict[int, int]

SCHEDULES: Dict[str, type] = {}


def register_schedule(name: str):
    """Class decorator adding a schedule to the registry under ``name``."""
    def deco(cls):
        cls.name = name
        SCHEDULES[name] = cls
        return cls
    return deco


def _kept(fraction_kept: float, n_image: int) -> int:
    # Rounded first so that e.g. 1 - 0.7 does not floor one token too low.
    return int(round(fraction_kept, 12) * n_image)


@dataclass(frozen=True)
class Schedule:
    """Base class. ``uses_step``/``uses_layer`` say which generic config fields apply."""
    uses_step = False
    uses_layer = True

    def plan(self, n_image: int, ratio: float, layer: int, step: Optional[float]) -> Plan:
        raise NotImplementedError

    def first_layer(self, layer: Optional[int]) -> Optional[int]:
        """The first layer this schedule may prune before (``layer`` is the config's K)."""
        return layer

    def default_ratio(self) -> Optional[float]:
        """The ratio implied by the schedule's own options, if any (custom schedules)."""
        return None


@register_schedule("none")
@dataclass(frozen=True)
class NoSchedule(Schedule):
    """Keep every image token."""
    uses_layer = False

    def plan(self, n_image, ratio, layer, step):
        return {}


@register_schedule("oneshot")
@dataclass(frozen=True)
class OneShot(Schedule):
    """FastV: drop the whole ratio before layer K, keeping ``int(N * (1 - R))``."""

    def plan(self, n_image, ratio, layer, step):
        return {layer: int(n_image * (1 - ratio))} if ratio > 0 else {}


def stepwise_fractions(ratio: float, step: float) -> list[float]:
    """Cumulative pruned fractions of the stepwise schedule, one per pruning layer.

    The original research code prunes before ``int(1 / step * R)`` layers (in
    this float expression: ``int(R / step)`` differs for R = 0.3, 0.6, 0.7 at
    10% steps); the j-th (1-based) prunes ``j * step`` of N, the last exactly R.
    """
    if ratio <= 0:
        return []
    # A ratio below one step gives 0 layers in the original, which silently
    # prunes nothing; we prune once, to the ratio, instead.
    n = max(1, int(1 / step * ratio))
    return [j * step if j < n else ratio for j in range(1, n + 1)]


@register_schedule("stepwise")
@dataclass(frozen=True)
class Stepwise(Schedule):
    """Sequential Prune: drop a further ``step`` of N before each layer from K on, until R."""
    uses_step = True

    def plan(self, n_image, ratio, layer, step):
        return {layer + j: int((1 - frac) * n_image) for j, frac in enumerate(stepwise_fractions(ratio, step))}


def _layer_tuple(v) -> Tuple[int, ...]:
    if isinstance(v, str):
        v = [x for x in v.replace("-", ",").split(",") if x.strip()]
    return tuple(int(x) for x in v)


@register_schedule("stages")
@dataclass(frozen=True)
class Stages(Schedule):
    """PyramidDrop: before stage layer j (1-based) keep ``int(N * lam**j)``, with
    ``lam = (1 - R) ** (1 / len(stages))`` so that the last stage keeps ``1 - R``.

    PDrop's default for LLaVA-1.5-7B, stages (8, 16, 24) and lam = 0.5, is R = 0.875.
    """
    stages: Tuple[int, ...] = (8, 16, 24)
    uses_layer = False

    def __post_init__(self):
        st = _layer_tuple(self.stages)
        if not st or any(b <= a for a, b in zip(st, st[1:])) or st[0] < 0:
            raise ValueError(f"stages must be increasing layer indices >= 0, got {self.stages!r}")
        object.__setattr__(self, "stages", st)

    def lam(self, ratio: float) -> float:
        """The per-stage keep factor for ratio R."""
        return round((1 - ratio) ** (1 / len(self.stages)), 12)

    def plan(self, n_image, ratio, layer, step):
        if ratio <= 0:
            return {}
        lam = self.lam(ratio)
        return {s: _kept(lam ** (j + 1), n_image) for j, s in enumerate(self.stages)}

    def first_layer(self, layer):
        return self.stages[0]


def parse_custom(spec) -> Tuple[Tuple[int, float], ...]:
    """``"2:0.5,6:0.3"`` or ``{2: 0.5, 6: 0.3}`` -> ((2, 0.5), (6, 0.3)), validated."""
    if isinstance(spec, str):
        items = []
        for part in spec.replace(" ", "").split(","):
            if not part:
                continue
            if ":" not in part:
                raise ValueError(f"custom schedule item {part!r} is not LAYER:KEPT_FRACTION (e.g. '2:0.5,6:0.3')")
            a, b = part.split(":", 1)
            items.append((int(a), float(b)))
    elif isinstance(spec, dict):
        items = [(int(k), float(v)) for k, v in spec.items()]
    else:
        items = [(int(k), float(v)) for k, v in spec]
    items = sorted(items)
    if not items:
        raise ValueError("a custom schedule needs at least one LAYER:KEPT_FRACTION item, e.g. '2:0.5,6:0.3'")
    layers = [k for k, _ in items]
    if len(set(layers)) != len(layers) or layers[0] < 0:
        raise ValueError(f"custom schedule layers must be distinct and >= 0, got {layers}")
    fracs = [f for _, f in items]
    if any(not (0 <= f <= 1) for f in fracs):
        raise ValueError(f"custom schedule fractions are the image tokens KEPT, in [0, 1]; got {fracs}")
    if any(b > a for a, b in zip(fracs, fracs[1:])):
        raise ValueError(f"custom schedule fractions must not increase with the layer (a dropped token does "
                         f"not come back); got {dict(items)}")
    if fracs[-1] == 1:
        raise ValueError(f"custom schedule {dict(items)} keeps every token; give at least one fraction below 1")
    return tuple(items)


@register_schedule("custom")
@dataclass(frozen=True)
class Custom(Schedule):
    """Your own ``{layer: fraction of the N image tokens kept entering it}``, e.g. ``"2:0.5,6:0.3"``.

    R defaults to ``1 - last fraction``. Another R scales every dropped fraction
    by the same factor (the shape stays), which lets ``for_budget`` solve it.
    """
    schedule: object = None
    uses_layer = False

    def __post_init__(self):
        if self.schedule is None:
            raise ValueError("the custom method needs options={'schedule': 'LAYER:KEPT,...'}, e.g. '2:0.5,6:0.3'")
        object.__setattr__(self, "schedule", parse_custom(self.schedule))

    def default_ratio(self) -> float:
        return round(1 - self.schedule[-1][1], 12)

    def plan(self, n_image, ratio, layer, step):
        if ratio <= 0:
            return {}
        scale = ratio / self.default_ratio()
        return {k: _kept(1 - (1 - f) * scale, n_image) for k, f in self.schedule}

    def first_layer(self, layer):
        return self.schedule[0][0]


def tokens_per_layer(plan: Plan, n_image: int, num_layers: int) -> list[int]:
    """Image tokens entering each decoder layer under ``plan``."""
    out, cur = [], n_image
    for layer in range(num_layers):
        cur = min(cur, plan.get(layer, cur))
        out.append(cur)
    return out
