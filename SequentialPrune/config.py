"""The one object describing a pruning setting."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Dict, Optional, Tuple

from .schedules import SCHEDULES, tokens_per_layer
from .scorers import SCORERS

# method name -> (schedule, default scorer). New methods are one line here.
METHODS: Dict[str, Tuple[str, str]] = {
    "none": ("none", "attention"),
    "fastv": ("oneshot", "attention"),
    "sequential": ("stepwise", "attention"),
    "random": ("stepwise", "random"),
    "random_oneshot": ("oneshot", "random"),
}

CACHE_MODES = ("static", "recompute")


@dataclass(frozen=True)
class PruneConfig:
    """A pruning setting.

    method: one of ``METHODS`` (none, fastv, sequential, random, random_oneshot).
    ratio: R, the fraction of image tokens finally dropped, in [0, 1).
    layer: K, the first decoder layer that sees fewer tokens (0-based, K >= 1).
    step: the further fraction of N dropped per layer by stepwise schedules.
    scorer: override the method's scorer (``attention`` or ``random``).
    seed: seed of the random scorer.
    cache_mode: ``static`` (prune at prefill, decode on the pruned KV cache) or
        ``recompute`` (no KV cache, re-select at every generated token).
    """
    method: str = "sequential"
    ratio: float = 0.75
    layer: int = 2
    step: float = 0.1
    scorer: Optional[str] = None
    seed: int = 0
    cache_mode: str = "static"

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown pruning method {self.method!r}; choose from {sorted(METHODS)}")
        if not (0.0 <= float(self.ratio) < 1.0):
            raise ValueError(f"ratio must be in [0, 1), got {self.ratio} (it is the fraction of image tokens dropped)")
        if isinstance(self.layer, bool) or int(self.layer) != self.layer or self.layer < 1:
            raise ValueError(f"layer K must be an integer >= 1 (layer 0 has no previous layer to score with), got {self.layer}")
        if not (self.step > 0):
            raise ValueError(f"step must be > 0 (a fraction of the image tokens, e.g. 0.1), got {self.step}")
        if self.step > 1:
            raise ValueError(f"step is a fraction in (0, 1], got {self.step}; did you mean {self.step / 100}?")
        if self.scorer is not None and self.scorer not in SCORERS:
            raise ValueError(f"unknown scorer {self.scorer!r}; choose from {sorted(SCORERS)}")
        if self.cache_mode not in CACHE_MODES:
            raise ValueError(f"cache_mode must be one of {CACHE_MODES}, got {self.cache_mode!r}")

    @property
    def schedule_name(self) -> str:
        return METHODS[self.method][0]

    @property
    def scorer_name(self) -> str:
        return self.scorer or METHODS[self.method][1]

    @property
    def prunes(self) -> bool:
        """Whether this setting can drop anything at all."""
        return self.schedule_name != "none" and self.ratio > 0

    def plan(self, n_image: int) -> Dict[int, int]:
        """``{layer: image tokens kept entering it}`` for N = ``n_image``."""
        return SCHEDULES[self.schedule_name](n_image, self)

    def check_model(self, num_layers: int) -> None:
        """Raise if this setting cannot run on a decoder with ``num_layers`` layers."""
        if not self.prunes:
            return
        if self.layer >= num_layers:
            raise ValueError(f"layer K={self.layer} must be < the number of decoder layers ({num_layers})")
        last = max(self.plan(10_000))
        if last >= num_layers:
            raise ValueError(
                f"the {self.method} schedule (ratio {self.ratio}, layer {self.layer}, step {self.step}) prunes up to "
                f"layer {last}, but the decoder has only {num_layers} layers (0..{num_layers - 1}); "
                f"lower the ratio or the layer, or raise the step")

    def tokens_per_layer(self, n_image: int, num_layers: int) -> list[int]:
        """Image tokens entering each of ``num_layers`` layers."""
        return tokens_per_layer(self.plan(n_image), n_image, num_layers)

    def average_image_tokens(self, n_image: int, num_layers: int) -> float:
        """Average image tokens per decoder layer."""
        return sum(self.tokens_per_layer(n_image, num_layers)) / num_layers

    def to_dict(self) -> dict:
        """Every field plus the resolved schedule and scorer, for logs and result files."""
        d = asdict(self)
        d.update(schedule=self.schedule_name, scorer=self.scorer_name)
        return d

    def tag(self) -> str:
        """A short, file-name-safe name for this setting, e.g. ``sequential_r0.75_l2_s10``."""
        if not self.prunes:
            return "none"
        t = f"{self.method}_r{self.ratio:g}_l{self.layer}"
        if self.schedule_name == "stepwise":
            t += f"_s{self.step * 100:g}"
        if self.scorer is not None and self.scorer != METHODS[self.method][1]:
            t += f"_{self.scorer}"
        if self.scorer_name == "random":
            t += f"_seed{self.seed}"
        if self.cache_mode != "static":
            t += f"_{self.cache_mode}"
        return t

    @classmethod
    def for_budget(cls, method: str, avg_image_tokens: float, n_image: int, num_layers: int,
                   layer: int = 2, step: float = 0.1, resolution: float = 1e-4, **kw) -> "PruneConfig":
        """Solve the ratio R so that the average image tokens per layer is as close as
        possible to ``avg_image_tokens`` (not above it when reachable), for N = ``n_image``."""
        if not (0 < avg_image_tokens <= n_image):
            raise ValueError(f"avg_image_tokens must be in (0, {n_image}], got {avg_image_tokens}")
        best = None
        steps = int(round(1 / resolution))
        for i in range(steps):
            r = round(i * resolution, 10)
            try:
                c = cls(method=method, ratio=r, layer=layer, step=step, **kw)
                c.check_model(num_layers)
            except ValueError:
                continue
            avg = c.average_image_tokens(n_image, num_layers)
            # Keep the smallest R reaching the budget, else the closest.
            key = (avg > avg_image_tokens + 1e-9, abs(avg - avg_image_tokens))
            if best is None or key < best[0]:
                best = (key, c)
        if best is None or best[0][0]:
            reach = None if best is None else best[1].average_image_tokens(n_image, num_layers)
            raise ValueError(
                f"no {method} setting at layer {layer}, step {step} reaches an average of {avg_image_tokens} image "
                f"tokens per layer over {num_layers} layers (closest: {reach}); lower the layer K")
        return best[1]

    def replace(self, **changes) -> "PruneConfig":
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)
