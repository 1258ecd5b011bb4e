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
    per present token (text included, padding left out), in prompt order, at each
    pruning layer where the row prunes, from a generator of the row's own: a row
    of a batch gets the draws it gets alone."""
    seed: int = 0
    uses_seed = True

    def reset(self) -> None:
        self._gens = {}

    def select(self, inp: ScoreInputs):
        if not hasattr(self, "_gens"):
            self.reset()
        b, n = inp.visual.shape
        out = torch.full((b, n), float("-inf"))
        valid = inp.valid.cpu()
        for j, row in enumerate(inp.rows if inp.rows is not None else range(b)):
            gen = self._gens.get(row)
            if gen is None:
                gen = self._gens[row] = torch.Generator(device="cpu").manual_seed(self.seed)
            out[j, valid[j]] = torch.rand(int(valid[j].sum()), generator=gen)
        return out.to(inp.visual.device)
