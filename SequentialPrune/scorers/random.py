"""The random control."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Scorer, ScoreInputs, register_scorer


@register_scorer("random")
@dataclass
class RandomScores(Scorer):
    """Uniform random scores from a generator reseeded at every prefill, so a
    sample's selection does not depend on which samples ran before it. One draw
    per present token (text included), in prompt order, at each pruning layer."""
    seed: int = 0
    uses_seed = True

    def reset(self) -> None:
        self._gen = torch.Generator(device="cpu").manual_seed(self.seed)

    def select(self, inp: ScoreInputs):
        if not hasattr(self, "_gen"):
            self.reset()
        b, n = inp.visual.shape
        return torch.rand(b, n, generator=self._gen).to(inp.visual.device)
