"""VisionZip: dominant image tokens by the vision tower's attention, the rest merged into a few contextual ones."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F

from .base import (Scorer, ScoreInputs, Selection, check_scope, pool_split, register_scorer, row_units,
                   unit_split)


def contextual_count(keep: int, ratio: float) -> int:
    """Contextual tokens of a ``keep``-token budget: ``round(keep * ratio)``; the default 5/32 gives the paper's
    30 / 20 / 10 for 192 / 128 / 64 kept."""
    return int(round(keep * ratio))


def zip_tokens(score: torch.Tensor, metric: torch.Tensor, features: torch.Tensor,
               cls: Sequence[Tuple[int, torch.Tensor]], keep: int, contextual: int
               ) -> Tuple[List[int], Dict[int, torch.Tensor]]:
    """One row's VisionZip over its ``N`` image tokens: ``score`` (N,), ``metric`` (N, Dh) head-mean keys,
    ``features`` (N, C) pre-projector features, ``cls`` the images' CLS features ``[(first token, (C,))]``.

    Dominant: the CLS tokens (each counts as one, as in the official code) and the top ``keep - contextual -
    len(cls)`` tokens by score. Contextual: over the other tokens in position order, targets every
    ``max(1, R // contextual)``-th one; every other remaining token joins the target of highest cosine (of the
    L2-normalised metric, first on ties); a target's feature becomes target + mean of its joined tokens. A CLS
    feature takes the slot of the first remaining non-target token from its image's first token on (its own
    patch still joins a target). Returns (kept token indices, sorted; {slot: new pre-projector feature})."""
    n = score.shape[0]
    dominant_n = keep - contextual
    cls = list(cls)[:max(dominant_n, 0)]
    order = torch.sort(score.float(), descending=True, stable=True).indices
    dominant = sorted(order[:dominant_n - len(cls)].tolist())
    taken = set(dominant)
    rest = [p for p in range(n) if p not in taken]
    new: Dict[int, torch.Tensor] = {}
    targets: List[int] = []
    if contextual > 0:
        step = max(1, len(rest) // contextual)
        targets = rest[::step][:contextual]
        unit = F.normalize(metric.float(), dim=-1)
        others = [p for p in rest if p not in set(targets)]
        feats = features.float()
        sums = torch.zeros(len(targets), feats.shape[1], dtype=feats.dtype, device=feats.device)
        counts = torch.zeros(len(targets), dtype=feats.dtype, device=feats.device)
        if others:
            o = torch.tensor(others, device=unit.device)
            best = torch.argmax(unit[o] @ unit[torch.tensor(targets, device=unit.device)].T, dim=1)  # first max
            sums.index_add_(0, best.to(feats.device), feats[o.to(feats.device)])
            counts.index_add_(0, best.to(feats.device), torch.ones_like(best, dtype=feats.dtype).to(feats.device))
        for j, t in enumerate(targets):
            new[t] = feats[t] + sums[j] / counts[j].clamp(min=1)
    free = [p for p in rest if p not in set(targets)]
    for start, feat in cls:
        slot = next((p for p in free if p >= start), free[-1] if free else None)
        if slot is None:
            break
        free.remove(slot)
        new[slot] = feat.float()
    return sorted(taken | set(new)), new


@register_scorer("visionzip")
@dataclass
class VisionZip(Scorer):
    """VisionZip (Yang et al., CVPR 2025): at the vision select layer, keep the dominant tokens (the CLS row's
    attention on CLIP / InternViT, the attention each token receives on towers without CLS, as
    ``vision_attention``) and merge the others into ``round(keep * contextual_ratio)`` contextual tokens by the
    similarity of that layer's keys. Merging happens on the pre-projector features, then the family's own
    projector maps each merged token (it is non-linear: merging after it would differ). A contextual token sits
    in its target's slot; on LLaVA-1.5 each image's CLS feature takes one slot too (on LLaVA-NeXT each crop's).
    ``scope="image"`` (the official code's): each vision-encoder input (image, crop, tile) zips its own share of
    the budget (``vision_attention``'s split; its contextual count from that share, its CLS in its first free
    slot); ``"prompt"``: one pool for all images of a prompt. Tokens the tower never saw (LLaVA-NeXT / OneVision
    newline tokens) are in no pool. Before the decoder only (K = 0)."""
    contextual_ratio: float = 0.15625
    scope: str = "image"
    needs_vision = frozenset({"keys", "features", "cls"})
    merges = True

    def __post_init__(self):
        check_scope(self.scope)
        if not 0 <= float(self.contextual_ratio) <= 1:
            raise ValueError(f"contextual_ratio must be in [0, 1], got {self.contextual_ratio!r}")

    def select(self, inp: ScoreInputs):
        if inp.layer != 0 or inp.vision_tokens is None or inp.project is None:
            raise RuntimeError("the visionzip scorer merges image embeddings before the decoder: it runs at layer 0 "
                               "with the vision tower's keys and features captured")
        b, n = inp.visual.shape
        keep = torch.zeros_like(inp.visual)
        replaced = torch.zeros_like(inp.visual)
        feats = inp.hidden.new_zeros(inp.hidden.shape)
        for r in range(b):
            slots = inp.visual[r].nonzero().flatten()
            idx = inp.image_index[r, slots].long()
            data = inp.vision_tokens[r]
            if slots.numel() != data["features"].shape[0]:
                raise RuntimeError("the visionzip scorer needs every image token present (it runs at layer 0)")
            pool = data.get("pool")
            cand, k, fill = pool_split(None if pool is None else pool[idx.to(pool.device)], idx.numel(), inp.keep)
            pick = idx[cand.to(idx.device)]
            score, metric = inp.vision[r, pick.to(inp.vision.device)], data["keys"][pick.to(data["keys"].device)]
            pre = data["features"][pick.to(data["features"].device)]
            units = row_units(inp, r, pick, self.scope)
            first = None if units is None else int(inp.units[r][inp.units[r] >= 0].min())  # the row's first unit
            kept, new = fill.tolist(), {}
            for at, q, cls in self._groups(units, first, cand, data["cls"], k):  # at: positions among candidates
                got, merged = zip_tokens(score[at.to(score.device)], metric[at.to(metric.device)],
                                         pre[at.to(pre.device)], cls, q,
                                         contextual_count(q, float(self.contextual_ratio)))
                kept += cand[at[torch.tensor(got, dtype=torch.long)]].tolist()
                new.update({int(cand[at[p]]): f for p, f in merged.items()})
            keep[r, slots[kept]] = True
            if new:
                at = sorted(new)
                x = torch.stack([new[p] for p in at]).to(data["features"].dtype)
                emb = inp.project(x)
                pos = slots[torch.tensor(at, device=slots.device)]
                replaced[r, pos] = True
                feats[r, pos] = emb.to(feats.device, feats.dtype)
        return Selection(keep, replaced, feats)

    @staticmethod
    def _groups(units, first, cand: torch.Tensor, cls: list, k: int):
        """``[(candidate positions, share of k, [(slot from, CLS feature)])]``: one pool (``units`` None) with each
        CLS from its image's first candidate on, or one group per vision-encoder input with its own CLS from its
        first token on: the row's j-th CLS feature is its unit ``first + j`` (an image on LLaVA-1.5, a crop on
        LLaVA-NeXT, numbered in that order from the row's first unit)."""
        if units is None:
            return [(torch.arange(cand.numel()), k, [(int(torch.searchsorted(cand, s)), f) for s, f in cls])]
        own = {first + j: [(0, f)] for j, (_, f) in enumerate(cls)}
        return [(sub, q, own.get(int(units[sub[0]]), [])) for sub, q in unit_split(units, k)]
