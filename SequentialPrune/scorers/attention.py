"""FastV's criterion: the last token's attention in the previous layer."""
from __future__ import annotations

from dataclasses import dataclass

from .base import Scorer, ScoreInputs, register_scorer


@register_scorer("attention")
@dataclass
class LastTokenAttention(Scorer):
    """The attention row of the last input token in layer K-1, averaged over heads
    (FastV, Chen et al. 2024; Sequential Prune). Computed from the query and key
    states the stock attention function receives, never from ``output_attentions``."""
    needs = frozenset({"attention"})
    uses_score_dtype = True

    def select(self, inp: ScoreInputs):
        return inp.attention
