"""DivPrune: a maximally diverse subset of the image tokens."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .base import Scorer, ScoreInputs, keep_mask_from_rows, register_scorer


def max_min_diverse(x: torch.Tensor, k: int) -> torch.Tensor:
    """Greedy max-min selection of ``k`` rows of ``x`` under cosine distance (1 - cos).

    The first pick is the row whose nearest other row is farthest; each next pick
    maximises the distance to its nearest picked row. Ties go to the lower index.
    Returns the picks in the order they were made.
    """
    n = x.shape[0]
    k = min(k, n)
    if k <= 0:
        return torch.empty(0, dtype=torch.long, device=x.device)
    xn = F.normalize(x.float(), dim=-1)
    dist = 1 - xn @ xn.T
    if n == 1:
        return torch.zeros(1, dtype=torch.long, device=x.device)
    nearest = dist.masked_fill(torch.eye(n, dtype=torch.bool, device=x.device), float("inf")).min(dim=0).values
    picks = [int(torch.argmax(nearest))]
    mind = dist[picks[0]].clone()
    chosen = torch.zeros(n, dtype=torch.bool, device=x.device)
    chosen[picks[0]] = True
    for _ in range(k - 1):
        i = int(torch.argmax(mind.masked_fill(chosen, -1.0)))
        picks.append(i)
        chosen[i] = True
        mind = torch.minimum(mind, dist[i])
    return torch.tensor(picks, dtype=torch.long, device=x.device)


@register_scorer("divprune")
@dataclass
class MaxMinDiversity(Scorer):
    """DivPrune (Alvar et al., CVPR 2025): keep the image tokens that solve the
    max-min diversity problem greedily, on the hidden states entering the pruning
    layer (at K = 0 these are the projected image embeddings, the paper's choice).
    All images of a prompt form one pool, as in the official code."""

    def select(self, inp: ScoreInputs):
        b, n = inp.visual.shape
        rows = []
        for r in range(b):
            img = inp.visual[r].nonzero().flatten()
            rows.append(img[max_min_diverse(inp.hidden[r, img], inp.keep)])
        return keep_mask_from_rows((b, n), rows, inp.visual.device)
