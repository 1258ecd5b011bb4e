"""Scorers: which image tokens to keep.

A scorer turns what a pruning step knows into one importance value per current
token; the engine keeps the highest-scoring image tokens. ``needs_attention``
tells the engine whether it must compute the last-token attention row of the
layer before the pruning layer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import torch

SCORERS: Dict[str, type] = {}


def register_scorer(name: str):
    """Class decorator adding a scorer to the registry under ``name``."""
    def deco(cls):
        cls.name = name
        SCORERS[name] = cls
        return cls
    return deco


@dataclass
class Scorer:
    """Base scorer; subclasses implement :meth:`score`."""
    needs_attention = False
    seed: int = 0

    def reset(self) -> None:
        """Called at the start of every prefill."""

    def score(self, layer: int, attention: Optional[torch.Tensor], n_tokens: int,
              batch: int, device) -> torch.Tensor:
        """Return a float tensor (batch, n_tokens); higher means keep."""
        raise NotImplementedError


@register_scorer("attention")
@dataclass
class LastTokenAttentionScorer(Scorer):
    """FastV's criterion: the last token's attention to each key, averaged over heads."""
    needs_attention = True

    def score(self, layer, attention, n_tokens, batch, device):
        return attention


@register_scorer("random")
@dataclass
class RandomScorer(Scorer):
    """Control method: uniform random scores from a generator reseeded every prefill,
    so a sample's selection does not depend on what ran before it."""

    def reset(self) -> None:
        self._gen = torch.Generator(device="cpu").manual_seed(self.seed)

    def score(self, layer, attention, n_tokens, batch, device):
        if not hasattr(self, "_gen"):
            self.reset()
        return torch.rand(batch, n_tokens, generator=self._gen).to(device)
