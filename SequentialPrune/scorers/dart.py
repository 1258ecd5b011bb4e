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
    3. the image pivots are kept; then each pivot in turn takes its least
       similar image tokens not taken yet, ``ceil((keep - image pivots) /
       pivots)`` each, until exactly ``keep`` image tokens are kept.

    The pivots are visited in the order the official code does: it iterates a
    Python set of their sequence positions (image pivots, then text pivots, each
    by decreasing norm). The order matters, as each pivot's picks are gone for
    the next; CPython's order for a set of ints depends only on the values and
    the insertion order, so the same set gives the same order. Positions count
    from the row's first token, so left padding changes nothing.

    Deviation: the official code keeps ``image_pivots + pivots * floor(budget /
    pivots)`` tokens (132 for its "128"); here the count is exactly the
    schedule's, and the picks are the official ones at its counts.
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
        index = inp.token_index if inp.token_index is not None else \
            torch.arange(n, device=inp.visual.device).expand(b, n)
        rows = [self._row(norms[r], feats[r], inp.visual[r], inp.valid[r], index[r], inp.keep) for r in range(b)]
        return keep_mask_from_rows((b, n), rows, inp.visual.device)

    def _row(self, norms, feats, visual, valid, index, keep):
        img = visual.nonzero().flatten()
        if keep <= 0 or img.numel() == 0:
            return img[:0]
        after = torch.arange(visual.numel(), device=visual.device) > img[-1]
        txt = (after & valid & ~visual).nonzero().flatten()
        img_piv = img[top_by_order(norms[img], min(self.image_pivots, keep, img.numel()))]
        txt_piv = txt[top_by_order(norms[txt], min(self.text_pivots, txt.numel()))]
        pivots = official_order(torch.cat([img_piv, txt_piv]), index - index[valid][0])
        taken = torch.zeros_like(visual)
        taken[img_piv] = True
        count = img_piv.numel()
        quota = math.ceil((keep - count) / len(pivots)) if pivots else 0
        for p in pivots:
            if count >= keep:
                break
            free = img[~taken[img]]
            take = min(quota, keep - count, free.numel())
            sim = feats[free] @ feats[p]
            taken[free[top_by_order(-sim, take)]] = True
            count += take
        return taken.nonzero().flatten()


def official_order(pivots: torch.Tensor, position: torch.Tensor) -> list:
    """``pivots`` (indices into the row) in the iteration order of a Python set of their ``position``."""
    positions = position[pivots].tolist()
    at = dict(zip(positions, pivots.tolist()))
    return [at[q] for q in set(positions)]
