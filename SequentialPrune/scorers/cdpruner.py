"""CDPruner: a conditional DPP over the image embeddings, weighted by their relevance to the instruction."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from .base import Scorer, ScoreInputs, keep_mask_from_rows, register_scorer


def relevance(image: torch.Tensor, text: torch.Tensor, negate: bool = True) -> torch.Tensor:
    """(N,): each image embedding's mean cosine to the text embeddings (``text`` (M, D)), negated as the
    official code does on purpose, then min-max normalised as ``(r - min + 1e-6) / (max - min)``."""
    cos = F.normalize(image.double(), dim=-1) @ F.normalize(text.double(), dim=-1).T
    r = (-cos if negate else cos).mean(dim=1)
    lo, hi = r.min(), r.max()
    return (r - lo + 1e-6) / (hi - lo) if hi > lo else torch.ones_like(r)


def greedy_dpp(features: torch.Tensor, rel: torch.Tensor, keep: int, theta: Optional[float] = None) -> torch.Tensor:
    """Greedy MAP of the DPP with kernel ``L = diag(r) S diag(r)`` (``S`` the cosine similarity of
    ``features``), in float64: each step takes the largest remaining marginal gain (first on ties). Beyond the
    kernel's rank (no gain left; the official code divides by ``sqrt(<= 0)``) the rest go by relevance.
    ``theta`` (commented out in the official code) maps ``r -> exp(theta / (2 (1 - theta)) r)``. Returns picks."""
    n = features.shape[0]
    keep = min(keep, n)
    r = rel.double()
    if theta is not None:
        r = torch.exp(theta / (2 * (1 - theta)) * r)
    unit = F.normalize(features.double(), dim=-1)
    kernel = r[:, None] * (unit @ unit.T) * r[None, :]
    d = kernel.diagonal().clone()
    eps = 1e-12 * float(d.max()) if n else 0.0  # a gain this small is rounding: the kernel's rank is reached
    cs = kernel.new_zeros(keep, n)
    picks = []
    for t in range(keep):
        j = int(torch.argmax(d))
        if not d[j] > eps:
            break
        picks.append(j)
        e = (kernel[j] - cs[:t, j] @ cs[:t]) / torch.sqrt(d[j])
        cs[t] = e
        d = d - e * e
        d[picks] = float("-inf")
    if len(picks) < keep:
        free = torch.ones(n, dtype=torch.bool, device=features.device)
        free[picks] = False
        rest = free.nonzero().flatten()
        picks += rest[torch.sort(r[rest], descending=True, stable=True).indices[:keep - len(picks)]].tolist()
    return torch.tensor(picks, dtype=torch.long, device=features.device)


def instruction_positions(visual: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The row's text tokens after its last image token (where chat templates put the question), or every text
    token when none follows."""
    text = valid & ~visual
    img = visual.nonzero().flatten()
    after = text.clone()
    if img.numel():
        after[:int(img[-1]) + 1] = False
    return (after if after.any() else text).nonzero().flatten()


@register_scorer("cdpruner")
@dataclass
class CDPruner(Scorer):
    """CDPruner (Zhang et al., 2025): maximise the DPP volume of the kept image embeddings (the hidden states
    entering the pruning layer: at K = 0 the projector's outputs), each weighted by its relevance to the
    instruction. Relevance uses the LLM's own input embeddings of the instruction's text tokens (the text
    tokens after the last image token) on every family (HF checkpoints ship no CLIP text tower), keeping the
    author's negated cosine and min-max normalisation. All images of a prompt form one pool."""
    theta: Optional[float] = None

    def __post_init__(self):
        if self.theta is not None and not 0 <= float(self.theta) < 1:
            raise ValueError(f"theta must be in [0, 1) or None, got {self.theta!r}")

    def select(self, inp: ScoreInputs):
        b, n = inp.visual.shape
        rows = []
        for r in range(b):
            img = inp.visual[r].nonzero().flatten()
            text = instruction_positions(inp.visual[r], inp.valid[r])
            feats = inp.hidden[r, img]
            rel = relevance(feats, inp.hidden[r, text]) if text.numel() else torch.ones(img.numel(),
                                                                                          dtype=torch.float64)
            got = greedy_dpp(feats, rel.to(feats.device), inp.keep, None if self.theta is None else float(self.theta))
            rows.append(img[got.to(img.device)])
        return keep_mask_from_rows((b, n), rows, inp.visual.device)
