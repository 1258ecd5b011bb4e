"""HiPrune: anchors from a middle vision layer, their grid neighbours, and registers from the deep layer."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch

from .base import Scorer, ScoreInputs, check_scope, keep_mask_from_rows, register_scorer, row_units, unit_split

# The official object layers as fractions of the tower's depth, for towers of other depths: 9 of CLIP-L's 24
# (LLaVA: towers with CLS), 16 of Qwen2.5-VL's 32 blocks (towers without CLS).
OBJECT_FRACTION = {True: 9 / 24, False: 16 / 32}


def grids_of(coords: torch.Tensor) -> Tuple[List[int], List[int], List[int]]:
    """Per image token (rows of ``coords`` (N, 3)): its segment's first token, its segment's token count and
    width, for the neighbour rule (tokens of a segment are consecutive and row-major)."""
    seg = coords[:, 0].tolist()
    first, size, width = [], [], []
    start: Dict[int, int] = {}
    for t, s in enumerate(seg):
        start.setdefault(s, t)
    counts = {s: seg.count(s) for s in start}
    cols = {s: int(coords[coords[:, 0] == s, 2].max()) + 1 for s in start}
    for s in seg:
        first.append(start[s])
        size.append(counts[s])
        width.append(cols[s])
    return first, size, width


def _place_in_row(rows: torch.Tensor) -> torch.Tensor:
    """Per token (row-major), its index among the tokens of its row: a tile cut from a LLaVA-NeXT canvas gets
    columns from 0, whatever its place on the canvas (a unit not a rectangle, as between OneVision's
    downsampled tiles, gets the width of its longest row)."""
    out, seen = [], {}
    for r in rows.tolist():
        out.append(seen.get(r, 0))
        seen[r] = out[-1] + 1
    return torch.tensor(out, dtype=torch.long)


def hiprune_keep(shallow: torch.Tensor, deep: torch.Tensor, coords: torch.Tensor, keep: int, alpha: float
                 ) -> torch.Tensor:
    """One row's HiPrune over its ``N`` image tokens. Anchors: the top ``round(keep * alpha / 5)`` by the object
    layer's score; buffers: each anchor's ``q - 1, q + 1, q - width, q + width`` (``q`` its cell in its own
    image / tile / crop grid), clamped into that grid as the official code clamps into ``[0, 575]``; fewer
    anchors while anchors and buffers exceed ``keep``. Registers: the top of the other tokens by the deep score.
    Returns kept indices."""
    n = shallow.numel()
    first, size, width = grids_of(coords)
    order = torch.sort(shallow.float(), descending=True, stable=True).indices.tolist()
    anchors_n = int(round(keep * alpha / 5))
    while True:
        near = set()
        for p in order[:anchors_n]:
            q = p - first[p]
            for d in (0, -1, 1, -width[p], width[p]):
                near.add(first[p] + min(max(q + d, 0), size[p] - 1))
        if len(near) <= keep or anchors_n == 0:
            break
        anchors_n -= 1
    rest = torch.ones(n, dtype=torch.bool)
    rest[list(near)] = False
    others = rest.nonzero().flatten()
    by_deep = torch.sort(deep.float().cpu()[others], descending=True, stable=True).indices[:keep - len(near)]
    return torch.cat([torch.tensor(sorted(near), dtype=torch.long), others[by_deep]])


@register_scorer("hiprune")
@dataclass
class HiPrune(Scorer):
    """HiPrune (Liu et al., 2025): the vision tower's attention each token receives (head mean, query mean, on
    every tower) at an object layer gives a few anchors and their four grid neighbours; the deep (select)
    layer's gives the registers that fill the budget. ``object_layer`` is 1-based as the official
    ``HIPRUNE_OBJECT_LAYER``; None: the official layer scaled to the tower's depth, 9 of 24 on towers with CLS
    (9 on CLIP-L), 16 of 32 on towers without (16 on Qwen2.5-VL, as its official code). ``scope="image"`` (the
    official code's, which gives each of its B images and crops ``int(budget / B)``): each vision-encoder input
    (image, crop, tile) runs this on its own share of the budget (``vision_attention``'s split) and its own grid
    (a LLaVA-NeXT tile's without the newline column); ``"prompt"``: one pool, buffers within each anchor's own
    image, tile or crop grid."""
    alpha: float = 0.1
    object_layer: Optional[int] = None
    scope: str = "image"
    needs_vision = True
    needs_coords = True
    vision_statistic = "received"

    def __post_init__(self):
        check_scope(self.scope)
        if not 0 <= float(self.alpha) <= 1:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha!r}")
        ol = self.object_layer
        if ol is not None and (isinstance(ol, bool) or int(ol) != ol or ol < 1):
            raise ValueError(f"object_layer must be a 1-based layer number, got {ol!r}")

    def extra_vision_layers(self, n_layers: int, has_cls: bool = True) -> Tuple[int, ...]:
        ol = self.object_layer
        if ol is None:
            ol = max(1, round(n_layers * OBJECT_FRACTION[bool(has_cls)]))
        return (int(ol) - 1,)

    def select(self, inp: ScoreInputs):
        if inp.vision is None or not inp.vision_layers or inp.coords is None:
            raise RuntimeError("the hiprune scorer needs the vision tower's scores at two layers and the image grids")
        (shallow_all,) = inp.vision_layers.values()
        b, n = inp.visual.shape
        rows = []
        for r in range(b):
            slots = inp.visual[r].nonzero().flatten()
            idx = inp.image_index[r, slots].long()
            coords = inp.coords[r].cpu()
            coords = coords[coords[:, 0] >= 0]
            if slots.numel() != coords.shape[0]:
                raise RuntimeError("the hiprune scorer needs every image token present (it prunes once)")
            shallow, deep = shallow_all[r, idx.to(shallow_all.device)], inp.vision[r, idx.to(inp.vision.device)]
            units = row_units(inp, r, idx, self.scope)
            got = []
            for sub, ku in unit_split(units, inp.keep):
                if sub is None:
                    got.append(hiprune_keep(shallow, deep, coords, ku, float(self.alpha)))
                elif int(units[sub[0]]) < 0:  # tokens of no unit (newlines) fill what the units cannot hold: registers
                    got.append(sub[torch.sort(deep.float().cpu()[sub], descending=True, stable=True).indices[:ku]])
                else:  # the unit's own grid: one segment, each token's column its place in its row of the unit
                    c = coords[sub].clone()
                    c[:, 0], c[:, 2] = 0, _place_in_row(c[:, 1])
                    got.append(sub[hiprune_keep(shallow[sub.to(shallow.device)], deep[sub.to(deep.device)], c, ku,
                                                float(self.alpha))])
            rows.append(slots[torch.cat(got).to(slots.device)])
        return keep_mask_from_rows((b, n), rows, inp.visual.device)
