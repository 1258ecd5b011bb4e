"""PyramidDrop's criterion: the pruning layer's own attention of the last token."""
from __future__ import annotations

from dataclasses import dataclass

from .base import Scorer, ScoreInputs, register_scorer


@register_scorer("pdrop")
@dataclass
class StageLayerAttention(Scorer):
    """Just before a stage layer runs, apply that layer's input norm, q/k
    projections and RoPE to the hidden states entering it, take the last token's
    softmax attention over every key (causal), average over heads, and rank the
    image tokens by it (PyramidDrop, Xing et al. 2024, ``pdrop_rank_drop``).

    The engine runs the layer's own attention module on the tokens present (the
    "probe") so every family's norms, GQA and RoPE are its own; nothing of the
    previous layer is needed, so this scorer also works at layer 0.
    """
    uses_score_dtype = True

    def select(self, inp: ScoreInputs):
        return inp.probe()
