"""VisPruner: important image tokens by the vision tower's attention, the rest chosen for diversity."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .base import (Scorer, ScoreInputs, check_scope, keep_mask_from_rows, pool_split, register_scorer, row_units,
                   unit_split)


def vispruner_keep(score: torch.Tensor, features: torch.Tensor, keep: int, important_ratio: float,
                   per_round: int) -> torch.Tensor:
    """One row's VisPruner over its ``N`` image tokens (``score`` (N,), ``features`` (N, C) pre-projector).

    Important: the top ``int(keep * important_ratio)`` by score. The others, in descending-score order, are
    thinned in rounds until ``keep - important`` remain: split into even (``a``) and odd (``b``) places of the
    current order, score each ``a`` by its highest cosine to any ``b``, drop the ``min(per_round, R - diverse)``
    most similar ``a``, and continue with the surviving ``a`` (most similar first) followed by ``b``. The
    official loop raises an IndexError when R is odd or a round would drop more than ``|a|``; here a round
    drops at most ``|a|`` (all of them), and an odd R simply has one more ``a``. Returns kept indices."""
    important_n = int(keep * important_ratio)
    diverse_n = keep - important_n
    order = torch.sort(score.float(), descending=True, stable=True).indices
    residual = order[important_n:]
    unit = F.normalize(features.float(), dim=-1).to(order.device)
    while diverse_n > 0:
        r = min(per_round, residual.numel() - diverse_n)
        if r <= 0:
            break
        a, b = residual[0::2], residual[1::2]
        sim = (unit[a] @ unit[b].T).max(dim=1).values
        by_sim = torch.sort(sim, descending=True, stable=True).indices
        residual = torch.cat([a[by_sim[r:]], b])
    return torch.cat([order[:important_n], residual if diverse_n > 0 else residual[:0]])


@register_scorer("vispruner")
@dataclass
class VisPruner(Scorer):
    """VisPruner (Zhang et al., ICCV 2025): ``important_ratio`` of the budget by the vision select layer's
    attention (the CLS row on CLIP / InternViT, attention received on towers without CLS, as
    ``vision_attention``), the rest by removing near-duplicates of the pre-projector features in rounds of up to
    ``per_round``. ``scope="image"`` (the official code's): each vision-encoder input (image, crop, tile) runs
    this on its own share of the budget (``vision_attention``'s split); ``"prompt"``: one pool for all images.
    Tokens the tower never saw (LLaVA-NeXT / OneVision newline tokens) are in no pool."""
    important_ratio: float = 0.5
    per_round: int = 8
    scope: str = "image"
    needs_vision = frozenset({"features"})

    def __post_init__(self):
        check_scope(self.scope)
        if not 0 <= float(self.important_ratio) <= 1:
            raise ValueError(f"important_ratio must be in [0, 1], got {self.important_ratio!r}")
        if isinstance(self.per_round, bool) or int(self.per_round) != self.per_round or self.per_round < 1:
            raise ValueError(f"per_round must be a positive integer, got {self.per_round!r}")

    def select(self, inp: ScoreInputs):
        if inp.vision_tokens is None:
            raise RuntimeError("the vispruner scorer needs the vision tower's features, which were not captured")
        b, n = inp.visual.shape
        rows = []
        for r in range(b):
            slots = inp.visual[r].nonzero().flatten()
            idx = inp.image_index[r, slots].long()
            feats, pool = inp.vision_tokens[r]["features"], inp.vision_tokens[r].get("pool")
            cand, k, fill = pool_split(None if pool is None else pool[idx.to(pool.device)], idx.numel(), inp.keep)
            pick = idx[cand.to(idx.device)]
            score, feat = inp.vision[r, pick.to(inp.vision.device)], feats[pick.to(feats.device)]
            got = [fill]
            for sub, ku in unit_split(row_units(inp, r, pick, self.scope), k):  # sub: one unit's (None: all)
                sub = torch.arange(pick.numel()) if sub is None else sub
                at = vispruner_keep(score[sub.to(score.device)], feat[sub.to(feat.device)], ku,
                                    float(self.important_ratio), int(self.per_round)).cpu()
                got.append(cand[sub[at]])
            got = torch.cat(got)
            rows.append(slots[got.to(slots.device)])
        return keep_mask_from_rows((b, n), rows, inp.visual.device)
