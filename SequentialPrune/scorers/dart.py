"""DART: keep the image tokens least similar to a few pivot tokens."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .base import Scorer, ScoreInputs, keep_mask_from_rows, register_scorer, top_by_order


@register_scorer("dart")
@dataclass
class DuplicationAware(Scorer):
    """DART (Wen et al. 2025, "Stop looking for important tokens..."), as in its official code:

    1. pivots: the ``image_pivots`` image tokens and the ``text_pivots`` text tokens
       after the last image with the largest L1 norm of layer K-1's keys (after
       RoPE, all heads concatenated); at K = 0, of the input embeddings instead;
    2. features: the decoder's final norm applied to the hidden states entering
       layer K, compared by cosine similarity;
    3. the image pivots are kept; then each pivot in turn (in prompt order) takes
       its least similar image tokens not taken yet, ``ceil((keep - image
       pivots) / pivots)`` each, until exactly ``keep`` image tokens are kept.

    Deviations: the original visits pivots in Python set order and keeps
    ``image_pivots + pivots * floor(budget / pivots)`` tokens (132 for its "128");
    here the order is the prompt order and the count is exactly the schedule's.
    """
    image_pivots: int = 4
    text_pivots: int = 4
    needs = frozenset({"keys"})
    allows_layer0 = True  # at K = 0 the pivots come from the input embeddings

    def __post_init__(self):
        for name in ("image_pivots", "text_pivots"):
            v = getattr(self, name)
            if isinstance(v, bool) or int(v) != v or v < 0:
                raise ValueError(f"dart {name} must be an integer >= 0, got {v!r}")
            setattr(self, name, int(v))
        if self.image_pivots + self.text_pivots == 0:
            raise ValueError("dart needs at least one pivot (image_pivots + text_pivots > 0)")

    def select(self, inp: ScoreInputs):
        b, n = inp.visual.shape
        if inp.keys is not None:  # (B, Hkv, n, d) -> (B, n, Hkv * d)
            pivot_src = inp.keys.transpose(1, 2).reshape(b, n, -1)
        else:
            pivot_src = inp.hidden
        norms = pivot_src.float().abs().sum(-1)
        feats = F.normalize((inp.final_norm(inp.hidden) if inp.final_norm else inp.hidden).float(), dim=-1)
        rows = [self._row(norms[r], feats[r], inp.visual[r], inp.valid[r], inp.keep) for r in range(b)]
        return keep_mask_from_rows((b, n), rows, inp.visual.device)

    def _row(self, norms, feats, visual, valid, keep):
        img = visual.nonzero().flatten()
        if keep <= 0 or img.numel() == 0:
            return img[:0]
        after = torch.arange(visual.numel(), device=visual.device) > img[-1]
        txt = (after & valid & ~visual).nonzero().flatten()
        img_piv = img[top_by_order(norms[img], min(self.image_pivots, keep, img.numel()))]
        txt_piv = txt[top_by_order(norms[txt], min(self.text_pivots, txt.numel()))]
        pivots = torch.cat([img_piv, txt_piv]).sort().values
        taken = torch.zeros_like(visual)
        taken[img_piv] = True
        count = img_piv.numel()
        quota = math.ceil((keep - count) / pivots.numel()) if pivots.numel() else 0
        for p in pivots.tolist():
            if count >= keep:
                break
            free = img[~taken[img]]
            take = min(quota, keep - count, free.numel())
            sim = feats[free] @ feats[p]
            taken[free[top_by_order(-sim, take)]] = True
            count += take
        return taken.nonzero().flatten()
