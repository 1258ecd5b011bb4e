"""Slow, direct re-implementations of the vision-side token-reduction methods of issue 23 (VisionZip, VisPruner,
FasterVLM, CDPruner, HiPrune), written from the algorithms in their official code (read for the algorithm, not
copied; file paths and commits are in docs/vision-methods-facts.md) and independent of SequentialPrune's engine.

Plain Python loops over tokens, in double precision, on ONE image at a time (a crop or tile is one image).
Inputs are what a stock transformers vision tower gives with eager attention and ``output_attentions=True``:

* ``attn``: one layer's attention probabilities, ``(H, T, T)`` (index a batch row of the ``(B, H, T, T)`` tensor),
  row = query, column = key; CLIP / InternViT put the CLS token at index 0.
* ``keys``: the same layer's keys, ``(H, T, Dh)`` (the ``k_proj`` output split into heads).
* ``hidden``: hidden states, ``(T, C)``.

Every selection function returns a sorted list of kept positions. Ties go to the smaller position (the official
code uses ``topk``/``argsort``, whose order among equal values is unspecified).
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch


# ----------------------------------------------------------------------------------------------------------
# small helpers


def _rank(values: Sequence[float]) -> List[int]:
    """Positions ordered by descending value; ties to the smaller position."""
    return sorted(range(len(values)), key=lambda p: (-values[p], p))


def top_positions(scores: Sequence[float], k: int) -> List[int]:
    """The ``k`` positions with the largest scores, sorted by position."""
    return sorted(_rank([float(s) for s in scores])[:k])


def _unit(v: torch.Tensor) -> torch.Tensor:
    v = v.double()
    return v / math.sqrt(float(v @ v))


def _cos(u: torch.Tensor, v: torch.Tensor) -> float:
    return float(_unit(u) @ _unit(v))


# ----------------------------------------------------------------------------------------------------------
# attention scores


def cls_attention(attn: torch.Tensor, reduce: str = "mean") -> List[float]:
    """The CLS row ``attn[:, 0, 1:]`` reduced over heads (``"mean"``: FasterVLM / VisPruner, ``"sum"``:
    VisionZip); one score per patch, patch ``i`` being token ``i + 1``."""
    h, t, _ = attn.shape
    out = []
    for j in range(1, t):
        s = sum(float(attn[hh, 0, j]) for hh in range(h))
        out.append(s / h if reduce == "mean" else s)
    return out


def received_attention(attn: torch.Tensor, query_reduce: str = "mean", drop_cls: bool = False,
                       queries: Optional[Sequence[int]] = None) -> List[float]:
    """Attention each token RECEIVES: head mean, then mean (``"mean"``) or sum (``"sum"``) over the queries
    (all of them, or ``queries``). The score for encoders without CLS (VisPruner's SigLIP tower: last layer,
    query mean; HiPrune's "global attention": head mean then query mean on CLIP, query sum on Qwen2.5-VL).
    ``drop_cls`` drops column 0 after the reduction (HiPrune on CLIP keeps the CLS query row in the mean)."""
    h, t, _ = attn.shape
    qs = list(range(t)) if queries is None else list(queries)
    out = []
    for j in range(t):
        s = 0.0
        for q in qs:
            s += sum(float(attn[hh, q, j]) for hh in range(h)) / h
        out.append(s / len(qs) if query_reduce == "mean" else s)
    return out[1:] if drop_cls else out


def windowed_attention(q: torch.Tensor, k: torch.Tensor, cu_seqlens: Sequence[int], scaling: float) -> torch.Tensor:
    """Softmax attention restricted to the segments ``[cu_seqlens[i], cu_seqlens[i+1])``, assembled into one
    ``(H, T, T)`` block-diagonal matrix (zero across segments). This is what a Qwen2-VL / Qwen2.5-VL / Qwen3-VL
    vision block computes: per image (or frame) in full-attention blocks, per window in Qwen2.5-VL's windowed
    blocks; ``q``/``k``: ``(H, T, Dh)`` after the vision RoPE, in the tower's (window-permuted) token order."""
    h, t, _ = q.shape
    out = torch.zeros(h, t, t, dtype=torch.float64)
    bounds = list(cu_seqlens)
    for s0, s1 in zip(bounds[:-1], bounds[1:]):
        for hh in range(h):
            for i in range(s0, s1):
                logits = [float(q[hh, i].double() @ k[hh, j].double()) * scaling for j in range(s0, s1)]
                m = max(logits)
                z = sum(math.exp(v - m) for v in logits)
                for j, v in zip(range(s0, s1), logits):
                    out[hh, i, j] = math.exp(v - m) / z
    return out


def block_diagonal(chunks: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-segment attention blocks ``(H, L_i, L_i)`` (as the eager path of the Qwen vision attention computes
    them, one call per ``cu_seqlens`` segment) assembled into one ``(H, T, T)`` matrix, zero across segments."""
    h = chunks[0].shape[0]
    t = sum(c.shape[-1] for c in chunks)
    out = torch.zeros(h, t, t, dtype=torch.float64)
    s = 0
    for c in chunks:
        n = c.shape[-1]
        for hh in range(h):
            for i in range(n):
                for j in range(n):
                    out[hh, s + i, s + j] = float(c[hh, i, j])
        s += n
    return out


def pool_groups(scores: Sequence[float], groups: Sequence[Sequence[int]], reduce: str = "mean") -> List[float]:
    """One score per LLM token: the mean (or sum) of the scores of the vision tokens it is built from."""
    out = []
    for g in groups:
        s = sum(float(scores[i]) for i in g)
        out.append(s / len(g) if reduce == "mean" else s)
    return out


def qwen_merge_groups(n_tokens: int, merge_unit: int = 4) -> List[List[int]]:
    """Qwen2-VL / 2.5-VL / 3-VL: the image processor orders patches so that each ``merge_size x merge_size``
    block is ``merge_unit`` consecutive vision tokens; the merger turns each run into one LLM token."""
    return [list(range(g * merge_unit, (g + 1) * merge_unit)) for g in range(n_tokens // merge_unit)]


def internvl_pixel_shuffle_groups(side: int, offset: int = 0) -> List[List[int]]:
    """InternVL's pixel shuffle (scale 0.5) on a ``side x side`` patch grid in raster order: LLM token
    ``m * (side // 2) + c`` concatenates patches ``(2m, 2c), (2m, 2c+1), (2m+1, 2c), (2m+1, 2c+1)``.
    ``offset=1`` gives positions in a sequence that starts with CLS."""
    half = side // 2
    groups = []
    for m in range(half):
        for c in range(half):
            groups.append([offset + (2 * m + dy) * side + 2 * c + dx for dy in (0, 1) for dx in (0, 1)])
    return groups


def unwindow(values: Sequence, window_index: Sequence[int]) -> List:
    """Undo Qwen2.5-VL's window permutation at the level of merge groups: the tower processes group
    ``window_index[i]`` at slot ``i``, so the group in original (raster / LLM-token) order ``g`` sits at slot
    ``i`` with ``window_index[i] == g``."""
    out = [None] * len(window_index)
    for slot, g in enumerate(window_index):
        out[int(g)] = values[slot]
    return out


# ----------------------------------------------------------------------------------------------------------
# FasterVLM


def fastervlm(cls_attn: torch.Tensor, keep: int) -> List[int]:
    """FasterVLM (Theia-4869/FasterVLM, llava/model/llava_arch.py::encode_images and
    multimodal_encoder/clip_encoder.py::feature_select): CLS attention ``attn[:, 0, 1:]`` of the select layer
    (-2), mean over heads, top ``keep`` patches; kept patches stay in position order.
    ``cls_attn``: ``(H, N)``. Returns patch indices (0 = first patch)."""
    h, n = cls_attn.shape
    scores = [sum(float(cls_attn[hh, j]) for hh in range(h)) / h for j in range(n)]
    return top_positions(scores, keep)


# ----------------------------------------------------------------------------------------------------------
# VisionZip


def visionzip(attn: torch.Tensor, keys: torch.Tensor, hidden: torch.Tensor, dominant: int,
              contextual: int) -> Tuple[List[int], torch.Tensor]:
    """VisionZip (dvlab-research/VisionZip, visionzip/clip_encoder.py::CLIPVisionTower_VisionZip.forward and
    visionzip/utils.py): all inputs from the select layer (CLIP layer -2: ``attentions[-2]``, its keys,
    ``hidden_states[-2]``), CLS at index 0.

    Dominant: the CLS token plus the ``dominant - 1`` patches with the largest CLS attention summed over heads
    (``dominant`` counts CLS, as in the README's ``visionzip(model, dominant=54, contextual=10)`` = 64 tokens).
    Contextual: over the remaining tokens in position order, the metric is the keys averaged over heads,
    L2-normalised; targets are every ``step = max(1, R // contextual)``-th remaining token (the first
    ``contextual`` of them); each other remaining token goes to the target of highest cosine (first on ties);
    contextual token = target hidden + mean of its assigned hidden (+ 0 when none is assigned).

    Returns ``(kept, features)``: ``kept`` the dominant positions (with 0 = CLS), sorted; ``features``
    ``(dominant + contextual, C)``: the dominant hidden states in position order, then the contextual tokens in
    target order - the sequence VisionZip hands to the projector.
    """
    h, t, _ = attn.shape
    score = cls_attention(attn, reduce="sum")  # patch i = token i + 1
    top = [p + 1 for p in _rank(score)[:dominant - 1]]
    kept = sorted([0] + top)
    rest = [p for p in range(t) if p not in set(kept)]
    metric = {p: _unit(sum(keys[hh, p].double() for hh in range(h)) / h) for p in rest}
    rows = [hidden[p].double() for p in kept]
    if contextual > 0:
        step = max(1, len(rest) // contextual)
        targets = [rest[i] for i in range(0, len(rest), step)][:contextual]
        assigned: Dict[int, List[int]] = {tg: [] for tg in targets}
        for p in rest:
            if p in assigned:
                continue
            sims = [float(metric[p] @ metric[tg]) for tg in targets]
            best = max(range(len(targets)), key=lambda i: (sims[i], -i))
            assigned[targets[best]].append(p)
        for tg in targets:
            extra = torch.zeros_like(hidden[tg].double())
            for p in assigned[tg]:
                extra = extra + hidden[p].double()
            rows.append(hidden[tg].double() + (extra / len(assigned[tg]) if assigned[tg] else extra))
    return kept, torch.stack(rows)


def visionzip_targets(rest: Sequence[int], contextual: int) -> List[int]:
    """VisionZip's contextual targets among the remaining tokens (in position order): every
    ``max(1, R // contextual)``-th one, the first ``contextual`` of them."""
    if contextual <= 0:
        return []
    step = max(1, len(rest) // contextual)
    return [rest[i] for i in range(0, len(rest), step)][:contextual]


def visionzip_no_cls(scores: Sequence[float], metric: torch.Tensor, hidden: torch.Tensor, dominant: int,
                     contextual: int) -> Tuple[List[int], List[int], torch.Tensor]:
    """VisionZip on a tower without CLS (or a CLS the projector cannot take), over LLM tokens: dominant = the
    top ``dominant`` by ``scores`` (no CLS among them); contextual as in :func:`visionzip`, on ``metric``
    ``(N, Dh)`` (one key vector per token) and ``hidden`` ``(N, C)`` (one pre-projector feature per token).
    Returns ``(dominant, targets, features)``: sorted dominant positions, targets in order, and
    ``(contextual, C)`` the contextual features in target order."""
    n = len(scores)
    kept = top_positions(scores, dominant)
    rest = [p for p in range(n) if p not in set(kept)]
    targets = visionzip_targets(rest, contextual)
    unit = {p: _unit(metric[p]) for p in rest}
    assigned: Dict[int, List[int]] = {tg: [] for tg in targets}
    for p in rest:
        if p in assigned:
            continue
        sims = [float(unit[p] @ unit[tg]) for tg in targets]
        assigned[targets[max(range(len(targets)), key=lambda i: (sims[i], -i))]].append(p)
    rows = []
    for tg in targets:
        extra = torch.zeros_like(hidden[tg].double())
        for p in assigned[tg]:
            extra = extra + hidden[p].double()
        rows.append(hidden[tg].double() + (extra / len(assigned[tg]) if assigned[tg] else extra))
    feats = torch.stack(rows) if rows else torch.zeros(0, hidden.shape[1], dtype=torch.float64)
    return kept, targets, feats


# ----------------------------------------------------------------------------------------------------------
# VisPruner


def vispruner(scores: Sequence[float], features: torch.Tensor, keep: int, important_ratio: float = 0.5,
              per_round: int = 8) -> List[int]:
    """VisPruner (Theia-4869/VisPruner, llava/model/llava_arch.py::encode_images): ``scores`` one importance
    per patch (CLIP: CLS attention of layer -2, head mean, ``cls_attention(attn)``; SigLIP: last-layer attention
    received, query mean then head mean); ``features`` ``(N, C)`` the pre-projector patch features (layer -2,
    CLS dropped) used for cosine similarity.

    Important: the top ``int(keep * important_ratio)`` by score. Diverse: the rest, ordered by descending
    score, are pruned in rounds until ``keep - important`` remain: split into even (``a``) and odd (``b``)
    places of the current order, score each ``a`` by its highest cosine to any ``b``, drop the
    ``r = min(per_round, R - diverse)`` most similar ``a`` (the official code needs ``r <= |a|`` and an even
    ``R``; here at most ``|a|`` are dropped), new order = surviving ``a`` in descending similarity, then all
    ``b``. Returns the kept patch indices, sorted."""
    n = features.shape[0]
    important_num = int(keep * important_ratio)
    diverse_num = keep - important_num
    order = _rank([float(s) for s in scores])
    important, residual = order[:important_num], order[important_num:]
    while diverse_num > 0:
        r = min(per_round, len(residual) - diverse_num)
        if r <= 0:
            break
        a, b = residual[0::2], residual[1::2]
        sim = [max(_cos(features[i], features[j]) for j in b) for i in a]
        by_sim = sorted(range(len(a)), key=lambda i: (-sim[i], i))
        residual = [a[i] for i in by_sim[r:]] + b
    kept = important + (residual if diverse_num > 0 else [])
    assert len(set(kept)) == len(kept) <= n
    return sorted(kept)


# ----------------------------------------------------------------------------------------------------------
# CDPruner


def cdpruner_relevance(image_embeds: torch.Tensor, text_embeds: torch.Tensor, negate: bool = True) -> torch.Tensor:
    """CDPruner's relevance (Theia-4869/CDPruner, llava/model/llava_arch.py::encode_images): cosine of each
    image embedding (CLIP ``post_layernorm`` + ``visual_projection`` of the layer -2 patches) with each text
    embedding (CLIP text tower, one per 77-token segment of the question), NEGATED (the official sign, for
    CLIP), mean over segments, then min-max normalised as ``(r - min + 1e-6) / (max - min)`` over ALL entries
    given (the official code normalises over the whole batch, i.e. across the crops of one LLaVA-NeXT image).
    ``image_embeds``: ``(..., N, C)``; ``text_embeds``: ``(M, C)``. Returns ``(..., N)``."""
    shape = image_embeds.shape[:-1]
    flat = image_embeds.reshape(-1, image_embeds.shape[-1])
    raw = []
    for v in flat:
        cs = [_cos(v, t) for t in text_embeds]
        raw.append(sum(-c if negate else c for c in cs) / len(cs))
    lo, hi = min(raw), max(raw)
    return torch.tensor([(x - lo + 1e-6) / (hi - lo) for x in raw], dtype=torch.float64).reshape(shape)


def cdpruner(features: torch.Tensor, relevance: Sequence[float], keep: int,
             theta: Optional[float] = None) -> List[int]:
    """CDPruner (Theia-4869/CDPruner, llava/model/llava_arch.py::encode_images): conditional DPP.
    ``features`` ``(N, D)``: the POST-projector image features (cosine similarity ``S``); ``relevance`` ``(N,)``:
    as ``cdpruner_relevance`` gives. Kernel ``L_ij = r_i * S_ij * r_j``. ``theta`` (commented out in the
    official code, so ``None`` is the official default) first maps ``r -> exp(theta / (2 (1 - theta)) * r)``.

    Greedy MAP inference (fast greedy DPP): ``d_i = L_ii``; each step takes ``j = argmax d`` (first on ties),
    ``e_i = (L_ji - sum_t c_t[j] c_t[i]) / sqrt(d_j)``, stores ``e`` as the next ``c``, ``d_i -= e_i^2``, and
    retires ``j``; exactly ``keep`` steps (no early stop, so ``keep`` must not exceed the kernel's rank: the
    official code then divides by ``sqrt`` of a value <= 0; here that raises). Returns the selected indices
    sorted by position."""
    n = features.shape[0]
    r = [float(x) for x in relevance]
    if theta is not None:
        alpha = theta / (2 * (1 - theta))
        r = [math.exp(alpha * x) for x in r]
    unit = [_unit(features[i]) for i in range(n)]
    kernel = [[r[i] * float(unit[i] @ unit[j]) * r[j] for j in range(n)] for i in range(n)]
    d = [kernel[i][i] for i in range(n)]
    cs: List[List[float]] = []
    chosen: List[int] = []
    for _ in range(keep):
        j = max((i for i in range(n) if i not in chosen), key=lambda i: (d[i], -i))
        if d[j] <= 0:  # the official code would divide by sqrt(<= 0) here (NaN / inf)
            raise ValueError(f"the DPP kernel has rank {len(chosen)} < keep={keep}")
        chosen.append(j)
        dj = math.sqrt(d[j])
        e = [(kernel[j][i] - sum(c[j] * c[i] for c in cs)) / dj for i in range(n)]
        cs.append(e)
        d = [d[i] - e[i] ** 2 for i in range(n)]
    return sorted(chosen)


# ----------------------------------------------------------------------------------------------------------
# HiPrune


def hiprune(shallow: Sequence[float], deep: Sequence[float], keep: int, width: int, alpha: float = 0.1,
            overlap: bool = False) -> List[int]:
    """HiPrune (Danielement321/HiPrune, LLaVA/llava/model/llava_arch.py::encode_images and
    Qwen2_5_VL/qwen2_5_vl_HiPrune.py): ``shallow`` / ``deep`` one score per image token (LLM token for Qwen) at
    the object layer and at the deep layer; ``width`` the token-grid width (24 for CLIP-L/336; the LLM grid
    width ``grid_w // 2`` for Qwen2.5-VL).

    Anchors: the top ``round(keep * alpha / 5)`` by ``shallow`` (Python ``round``). Buffers: each anchor's
    ``p - 1, p + 1, p - width, p + width``, CLAMPED into ``[0, N - 1]`` as the official code does (not dropped,
    no row check: ``p - 1`` of a row start is the previous row's end, and an off-grid neighbour becomes token 0
    or N - 1). Registers: the top ``keep - |anchors and buffers|`` by ``deep`` among the other tokens.

    ``overlap=True`` follows the official exclusion literally (subtract 1 from the deep score of anchors and
    buffers, then take the top from ALL tokens and form the union): on CLIP the query-mean score is at most 1,
    so nothing changes, but Qwen2.5-VL's query-SUM score can exceed 1, so registers can repeat anchors and fewer
    than ``keep`` tokens survive. Returns kept positions, sorted."""
    n = len(shallow)
    anchors = _rank([float(s) for s in shallow])[:round(keep * alpha / 5)]
    near = set()
    for p in anchors:
        for q in (p, p - 1, p + 1, p - width, p + width):
            near.add(min(max(q, 0), n - 1))
    registers_num = keep - len(near)
    if overlap:
        adjusted = [float(deep[i]) - (1.0 if i in near else 0.0) for i in range(n)]
        registers = _rank(adjusted)[:registers_num]
    else:
        others = [i for i in range(n) if i not in near]
        registers = [others[i] for i in _rank([float(deep[i]) for i in others])[:registers_num]]
    return sorted(near | set(registers))


def hiprune_segments(shallow: Sequence[float], deep: Sequence[float], keep: int, grids, alpha: float = 0.1
                     ) -> List[int]:
    """HiPrune over several token grids (the images, tiles or crops of one prompt, as SequentialPrune applies it):
    ``grids`` ``[(rows, cols, [token index of each cell, row-major])]``. Anchors: the top ``round(keep * alpha
    / 5)`` of all tokens by ``shallow``; each anchor's buffers are the official ``q - 1, q + 1, q - cols,
    q + cols`` of its cell ``q`` within ITS grid, clamped into that grid's ``[0, cells - 1]``; registers: the
    top of the other tokens by ``deep``. Fewer anchors are taken while anchors and buffers exceed ``keep``. On
    one grid this is :func:`hiprune`. Returns kept token indices, sorted."""
    where = {}
    for rows, cols, cells in grids:
        for q, t in enumerate(cells):
            where[t] = (cells, cols, q)
    n = len(shallow)
    order = _rank([float(s) for s in shallow])
    anchors_num = round(keep * alpha / 5)
    while True:
        near = set()
        for p in order[:anchors_num]:
            cells, cols, q = where[p]
            for d in (0, -1, 1, -cols, cols):
                near.add(cells[min(max(q + d, 0), len(cells) - 1)])
        if len(near) <= keep or anchors_num == 0:
            break
        anchors_num -= 1
    others = [i for i in range(n) if i not in near]
    registers = [others[i] for i in _rank([float(deep[i]) for i in others])[:keep - len(near)]]
    return sorted(near | set(registers))


def hiprune_budget_llava(retention: int, n_crops: int) -> int:
    """HiPrune on LLaVA / LLaVA-NeXT: the per-crop budget is ``int(HIPRUNE_RETENTION / number of crops in the
    batch)`` (e.g. 640 over 5 crops = 128 per crop)."""
    return int(retention / n_crops)


def hiprune_budget_qwen(n_image_tokens: int, ratio: float) -> int:
    """HiPrune on Qwen2.5-VL: ``round(n_image_tokens * HIPRUNE_QWEN_RETENTION)`` LLM tokens."""
    return round(n_image_tokens * ratio)
