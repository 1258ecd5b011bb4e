"""Sub-batches the engine can prune together, and one batch's processed rows joined with left padding.

The engine prunes a left-padded batch only when every row has the same number
of image tokens, and the rows of one ``generate`` call share its arguments. So
rows are grouped by (generation arguments, image-token count) and each group is
cut into batches of at most ``batch_size``; a row's tensors are those it has
alone, so a batched row sees exactly its batch-1 inputs plus left padding.
"""
from __future__ import annotations

from typing import Dict, Hashable, List, Sequence

import torch

# Per-token tensors of a processor's output: left-padded to the batch's longest row (the others are per image
# and are concatenated).
SEQUENCE_KEYS = ("input_ids", "attention_mask", "token_type_ids", "mm_token_type_ids")


def sub_batches(keys: Sequence[Hashable], size: int) -> List[List[int]]:
    """Row indices grouped by ``keys`` (groups in first-seen order, rows in order), cut into at most ``size``."""
    if size < 1:
        raise ValueError(f"batch size must be >= 1, got {size}")
    groups: Dict[Hashable, List[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    return [rows[i:i + size] for rows in groups.values() for i in range(0, len(rows), size)]


def join_rows(rows: Sequence[dict], pad_id: int) -> dict:
    """One batch from per-row processor outputs (batch dimension 1 each): per-token tensors left-padded
    (``pad_id`` for ids, 0 for masks), every other tensor concatenated on its first dimension."""
    keys = list(rows[0])
    if any(list(r) != keys for r in rows):
        raise ValueError(f"rows of one batch carry different inputs: {[sorted(r) for r in rows]}")
    length = max(r["input_ids"].shape[1] for r in rows)
    out = {}
    for k in keys:
        vals = [r[k] for r in rows]
        if not all(isinstance(v, torch.Tensor) for v in vals):
            raise TypeError(f"processor output {k!r} is not a tensor; cannot batch it")
        if k in SEQUENCE_KEYS:
            fill = pad_id if k == "input_ids" else 0
            vals = [torch.nn.functional.pad(v, (length - v.shape[1], 0), value=fill) for v in vals]
        out[k] = torch.cat(vals, dim=0)
    return out
