"""Spatial downsampling: an evenly spaced lattice of each image's token grid."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import torch

from .base import Scorer, ScoreInputs, keep_mask_from_rows, register_scorer


def split_budget(keep: int, sizes: Sequence[int]) -> List[int]:
    """Share ``keep`` among segments in proportion to their sizes (largest remainder, ties to the earlier)."""
    total = sum(sizes)
    if total == 0:
        return [0] * len(sizes)
    exact = [keep * s / total for s in sizes]
    out = [min(int(e), s) for e, s in zip(exact, sizes)]
    order = sorted(range(len(sizes)), key=lambda i: (-(exact[i] - int(exact[i])), i))
    left = keep - sum(out)
    while left > 0:
        progressed = False
        for i in order:
            if left and out[i] < sizes[i]:
                out[i] += 1
                left -= 1
                progressed = True
        if not progressed:
            break
    return out


def lattice(h: int, w: int, k: int) -> List[Tuple[int, int]]:
    """``k`` cells of an ``h x w`` grid on an evenly spaced lattice (row-major order).

    The lattice has ``r`` rows and ``c`` columns with ``r / c`` close to ``h / w``
    and ``r * c >= k``; cell (i, j) is at the centre of its block,
    ``(floor((i + 0.5) h / r), floor((j + 0.5) w / c))``. When ``r * c > k`` the
    ``k`` cells are spread evenly over the lattice's row-major order. For a 24x24
    grid: k = 144 is every other row and column, k = 64 every third.
    """
    if k <= 0:
        return []
    if k >= h * w:
        return [(i, j) for i in range(h) for j in range(w)]
    r = min(h, max(1, round(math.sqrt(k * h / w))))
    c = min(w, math.ceil(k / r))
    r = min(h, math.ceil(k / c))
    cells = [(math.floor((i + 0.5) * h / r), math.floor((j + 0.5) * w / c)) for i in range(r) for j in range(c)]
    m = len(cells)
    return [cells[math.floor((t + 0.5) * m / k)] for t in range(k)]


@register_scorer("spatial")
@dataclass
class GridDownsample(Scorer):
    """Uniform spatial downsampling of each image's token grid (a lattice subsample
    that keeps the layout), the plain baseline VTC-Bench (Liao et al. 2025) found to
    beat many published methods; they downsample pixels, which fixed-resolution
    models such as LLaVA-1.5 undo, so here it is done on the tokens.

    The adapter gives each image token its (segment, row, col): a segment is an
    image, a video frame or a tile. The budget is shared among segments in
    proportion to their tokens present; each gets the lattice of :func:`lattice`
    over its grid, and each lattice point keeps its token or, when an earlier
    layer dropped it, the nearest token not kept yet.
    """
    needs_coords = True

    def select(self, inp: ScoreInputs):
        if inp.coords is None:
            raise RuntimeError("the spatial scorer needs the image tokens' grid coordinates, which were not computed")
        b, n = inp.visual.shape
        rows = [self._row(inp.coords[r], inp.image_index[r], inp.visual[r], inp.keep) for r in range(b)]
        return keep_mask_from_rows((b, n), rows, inp.visual.device)

    @staticmethod
    def _row(coords: torch.Tensor, image_index: torch.Tensor, visual: torch.Tensor, keep: int) -> torch.Tensor:
        """Positions (in the current sequence) of the ``keep`` image tokens this row keeps."""
        pos = visual.nonzero().flatten().cpu()      # current positions of the image tokens present
        present = image_index.cpu()[pos]            # their index among the prompt's image tokens
        coords = coords.cpu()
        coords = coords[coords[:, 0] >= 0]          # a batch pads rows with fewer image tokens with -1
        seg_all = coords[:, 0]
        segments = torch.unique(seg_all).tolist()
        seg = seg_all[present]
        counts = [int((seg == s).sum()) for s in segments]
        picked = []
        for s, k in zip(segments, split_budget(keep, counts)):
            if k == 0:
                continue
            full = coords[seg_all == s]
            h, w = int(full[:, 1].max()) + 1, int(full[:, 2].max()) + 1
            mine = (seg == s).nonzero().flatten()
            rc = coords[present[mine]][:, 1:]
            cell = {(int(i), int(j)): t for t, (i, j) in enumerate(rc.tolist())}
            yx = rc.float() / torch.tensor([h, w], dtype=torch.float)
            free = torch.ones(len(mine), dtype=torch.bool)
            for i, j in lattice(h, w, k):
                t = cell.get((i, j))
                if t is None or not free[t]:  # dropped earlier, or not a token (e.g. a ragged grid)
                    d = (yx - torch.tensor([i / h, j / w])).pow(2).sum(1).masked_fill(~free, float("inf"))
                    t = int(torch.argmin(d))
                free[t] = False
                picked.append(int(pos[mine[t]]))
        return torch.tensor(sorted(picked), dtype=torch.long)
