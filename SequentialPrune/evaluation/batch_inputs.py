"""Per-sample processor outputs joined into one batch, as the engine prunes it (rows of any image counts).

A row's tensors are those it has alone, so a batched row sees exactly its batch-1 inputs plus left padding:
per-token tensors are left-padded to the longest row; per-image tensors (pixels, grids, image sizes) are
concatenated in row order, a text-only row adding none; tiled pixels of different tile counts (LLaVA-NeXT,
LLaVA-OneVision: ``(images, tiles, C, H, W)``) are zero-padded to the most tiles, as their processors batch
them (the model cuts each image's tiles back from ``image_sizes``).
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import torch

# Per-token tensors of a processor's output (left-padded); the others are per image or per tile.
SEQUENCE_KEYS = ("input_ids", "attention_mask", "token_type_ids", "mm_token_type_ids")


def _pad_trailing(vals: List[torch.Tensor]) -> List[torch.Tensor]:
    """Zero-pad dimensions after the first to the largest (tiles per image); equal shapes are left alone."""
    if len({v.shape[1:] for v in vals}) <= 1:
        return vals
    if len({v.dim() for v in vals}) > 1:
        raise ValueError(f"cannot batch tensors of shapes {[tuple(v.shape) for v in vals]}")
    target = [max(v.shape[d] for v in vals) for d in range(1, vals[0].dim())]
    out = []
    for v in vals:
        pad = []
        for d in reversed(range(1, v.dim())):
            pad += [0, target[d - 1] - v.shape[d]]
        out.append(torch.nn.functional.pad(v, pad))
    return out


def join_rows(rows: Sequence[Dict[str, torch.Tensor]], pad_id: int) -> Dict[str, torch.Tensor]:
    """One batch from per-row processor outputs (batch dimension 1 each): per-token tensors left-padded
    (``pad_id`` for ids, 0 for masks), per-image tensors concatenated on their first dimension (rows without
    images add none). Rows must agree on their per-token keys."""
    seq_keys = [k for k in rows[0] if k in SEQUENCE_KEYS]
    if any([k for k in r if k in SEQUENCE_KEYS] != seq_keys for r in rows):
        raise ValueError(f"rows of one batch carry different per-token inputs: {[sorted(r) for r in rows]}")
    for r in rows:
        for k, v in r.items():
            if not isinstance(v, torch.Tensor):
                raise TypeError(f"processor output {k!r} is not a tensor; cannot batch it")
    length = max(r["input_ids"].shape[1] for r in rows)
    out = {}
    for k in seq_keys:
        fill = pad_id if k == "input_ids" else 0
        out[k] = torch.cat([torch.nn.functional.pad(r[k], (length - r[k].shape[1], 0), value=fill) for r in rows])
    for k in dict.fromkeys(k for r in rows for k in r if k not in SEQUENCE_KEYS):
        out[k] = torch.cat(_pad_trailing([r[k] for r in rows if k in r]), dim=0)
    return out
