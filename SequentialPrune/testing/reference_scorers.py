"""Slow, direct re-implementations of each method's selection rule, written from the papers' official code
(read for the algorithm, not copied), independent of SequentialPrune's scorers. Plain Python loops over
tokens; each function picks, for ONE row, which image tokens to keep.

Arguments are positions into the row's current tokens; every function returns a sorted list of positions.
"""
from __future__ import annotations

import math
from typing import Dict, List, Sequence, Tuple

import torch


def _top(values: Dict[int, float], k: int) -> List[int]:
    """The ``k`` keys with the largest values; ties to the smaller key."""
    return sorted(sorted(values, key=lambda p: (-values[p], p))[:k])


def by_score(scores: torch.Tensor, image_pos: Sequence[int], k: int) -> List[int]:
    """FastV / Sequential / PDrop / random: the ``k`` image tokens with the highest score."""
    if isinstance(scores, torch.Tensor):
        scores = scores.detach().cpu()  # one copy, not a device sync per token
    return _top({p: float(scores[p]) for p in image_pos}, k)


def unit_shares(units: Sequence[int], k: int) -> Dict[int, int]:
    """Per-image budgets (the official code prunes each image or crop on its own): ``{unit: count}`` for the
    tokens of ``units`` (one entry per token, -1: none). Unit u gets ``k * n_u / n`` (n over the units) rounded
    down, the units with the largest fractional parts one more each (the first such unit on a tie); unit -1
    gets what is left, at most its tokens."""
    from fractions import Fraction

    sizes: Dict[int, int] = {}
    for u in units:
        sizes[u] = sizes.get(u, 0) + 1
    real = sorted(u for u in sizes if u >= 0)
    n = sum(sizes[u] for u in real)
    want = min(k, n)
    share = {u: Fraction(want * sizes[u], n) for u in real}
    quota = {u: int(share[u]) for u in real}
    for u in sorted(real, key=lambda u: (-(share[u] - quota[u]), u))[:want - sum(quota.values())]:
        quota[u] += 1
    if -1 in sizes:
        quota[-1] = min(k - want, sizes[-1])
    return quota


def last_token_attention(q: torch.Tensor, k: torch.Tensor, allowed: Sequence[int], scaling: float) -> Dict[int, float]:
    """Mean over query heads of the last query's softmax attention over ``allowed`` keys, one head at a
    time. ``q``: (Hq, n, d) and ``k``: (Hkv, n, d) after RoPE; grouped heads share their key head."""
    hq, hkv = q.shape[0], k.shape[0]
    out = {p: 0.0 for p in allowed}
    for h in range(hq):
        kh = k[h // (hq // hkv)]
        logits = {p: float(q[h, -1].double() @ kh[p].double()) * scaling for p in allowed}
        m = max(logits.values())
        z = sum(math.exp(v - m) for v in logits.values())
        for p in allowed:
            out[p] += math.exp(logits[p] - m) / z / hq
    return out


def _ranked(values: Dict[int, float], k: int) -> List[int]:
    """The ``k`` keys with the largest values, largest first (as torch.topk lists them); ties to the smaller key."""
    return sorted(values, key=lambda p: (-values[p], p))[:k]


def _cos(feats: torch.Tensor, a: int, b: int) -> float:
    x, y = feats[a].double(), feats[b].double()
    return float(x @ y / (x.norm().clamp_min(1e-12) * y.norm().clamp_min(1e-12)))


def dart(keys: torch.Tensor, feats: torch.Tensor, image_pos: Sequence[int], text_after: Sequence[int], k: int,
         image_pivots: int = 4, text_pivots: int = 4, offset: int = 0) -> List[int]:
    """DART (ZichenWen1/DART, ``get_retained_image_token``) with an exact budget: pivots are the image / text
    tokens (text after the image) with the largest L1 norm of ``keys`` (n, dk); the image pivots are kept; each
    pivot then takes its least cosine-similar image tokens of ``feats`` (n, d) not taken yet, ``ceil((k - image
    pivots) / pivots)`` each, until ``k`` are kept. Pivots are visited as the official code iterates them: a
    Python set of their sequence positions (counted from ``offset``, the row's first token), filled with the
    image pivots and then the text pivots, each largest norm first."""
    if k <= 0:
        return []
    l1 = {p: float(keys[p].double().abs().sum()) for p in list(image_pos) + list(text_after)}
    img_piv = _ranked({p: l1[p] for p in image_pos}, min(image_pivots, k, len(image_pos)))
    txt_piv = _ranked({p: l1[p] for p in text_after}, min(text_pivots, len(text_after)))
    kept = list(img_piv)
    free = [p for p in image_pos if p not in img_piv]
    pivots = [q + offset for q in set(p - offset for p in img_piv + txt_piv)]
    quota = math.ceil((k - len(kept)) / len(pivots)) if pivots else 0
    for piv in pivots:
        if len(kept) >= k:
            break
        take = min(quota, k - len(kept), len(free))
        sims = {p: _cos(feats, piv, p) for p in free}
        picks = sorted(free, key=lambda p: (sims[p], p))[:take]
        kept += picks
        free = [p for p in free if p not in picks]
    return sorted(kept)


def dart_official(keys: torch.Tensor, feats: torch.Tensor, start: int, n_image: int, budget: int,
                  image_pivots: int = 4, text_pivots: int = 4) -> List[int]:
    """The official DART selection as its code runs for one unpadded prompt (``get_retained_image_token``,
    ``max_num_trunction = budget``): the image tokens are ``start .. start + n_image - 1``, the text candidates
    every token after them; every pivot, in the iteration order of the Python set of pivot positions, takes
    ``budget // pivots`` of the image tokens least cosine-similar to it that no pivot has taken (candidates in
    the order of the set of free positions); the text pivots are then removed from the set."""
    per_pivot = budget // (image_pivots + text_pivots)
    l1 = {p: float(keys[p].double().abs().sum()) for p in range(keys.shape[0])}
    image = range(start, start + n_image)
    img_piv = _ranked({p: l1[p] for p in image}, image_pivots)
    txt_piv = _ranked({p: l1[p] for p in range(start + n_image, keys.shape[0])}, text_pivots)
    chosen = set(img_piv + txt_piv)
    free = set(image) - set(img_piv)
    for piv in list(chosen):
        cands = list(free)
        sims = [_cos(feats, piv, c) for c in cands]
        picks = [cands[j] for j in sorted(range(len(cands)), key=lambda j: (sims[j], j))[:per_pivot]]
        chosen.update(picks)
        free.difference_update(picks)
    chosen.difference_update(txt_piv)
    return sorted(chosen)


def divprune(feats: torch.Tensor, image_pos: Sequence[int], k: int) -> List[int]:
    """DivPrune (vbdi/divprune, ``DivPrune``): cosine distance 1 - cos between image tokens; first the token
    whose nearest other token is farthest, then repeatedly the token farthest from its nearest pick."""
    pos = list(image_pos)
    if k <= 0 or not pos:
        return []

    def dist(a, b):
        x, y = feats[a].double(), feats[b].double()
        return 1 - float(x @ y / (x.norm().clamp_min(1e-12) * y.norm().clamp_min(1e-12)))
    d = {(a, b): dist(a, b) for a in pos for b in pos}
    if len(pos) == 1:
        return pos
    nearest = {b: min(d[(a, b)] for a in pos if a != b) for b in pos}
    picks = [max(pos, key=lambda p: (nearest[p], -p))]
    while len(picks) < min(k, len(pos)):
        rest = [p for p in pos if p not in picks]
        far = {p: min(d[(s, p)] for s in picks) for p in rest}
        picks.append(max(rest, key=lambda p: (far[p], -p)))
    return sorted(picks)


def lattice_cells(h: int, w: int, k: int) -> List[Tuple[int, int]]:
    """The spatial baseline's cells: an r x c lattice at block centres with r/c ~ h/w, r*c >= k, and k of its
    r*c cells taken evenly in row-major order."""
    if k <= 0:
        return []
    if k >= h * w:
        return [(i, j) for i in range(h) for j in range(w)]
    r = max(1, min(h, round(math.sqrt(k * h / w))))
    c = min(w, -(-k // r))
    r = min(h, -(-k // c))
    cells = []
    for i in range(r):
        for j in range(c):
            cells.append((int((i + 0.5) * h / r), int((j + 0.5) * w / c)))
    return [cells[int((t + 0.5) * len(cells) / k)] for t in range(k)]


def spatial(grids: List[Tuple[int, int, List[int]]], k: int) -> List[int]:
    """Spatial downsampling over whole grids: ``grids`` is a list of (rows, cols, positions in row-major order,
    None for a cell without a token). The budget is split over grids by their token counts (largest
    remainder, ties to the earlier grid); each grid keeps the tokens at its lattice cells."""
    sizes = [sum(p is not None for p in cells) for _, _, cells in grids]
    exact = [k * s / sum(sizes) for s in sizes]
    share = [int(e) for e in exact]
    for i in sorted(range(len(grids)), key=lambda i: (-(exact[i] - int(exact[i])), i))[:k - sum(share)]:
        share[i] += 1
    out = []
    for (h, w, cells), n in zip(grids, share):
        for i, j in lattice_cells(h, w, n):
            out.append(cells[i * w + j])
    return sorted(out)


def dart_official_count(budget: int, image_pivots: int = 4, text_pivots: int = 4) -> int:
    """How many image tokens the official DART code keeps for ``max_num_trunction = budget``: the image pivots
    plus ``budget // pivots`` per pivot (132 for its 128 setting)."""
    return image_pivots + (image_pivots + text_pivots) * (budget // (image_pivots + text_pivots))
