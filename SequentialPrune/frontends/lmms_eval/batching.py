"""Sub-batches of requests that one ``generate`` call can answer together.

The rows of one call share its arguments, so rows are grouped by their generation arguments and each group is
cut into batches of at most ``batch_size``. Rows of one batch may hold any numbers of images and image tokens
(text-only rows too): the engine prunes each row by its own schedule (``SequentialPrune.evaluation.batch_inputs``
joins them).
"""
from __future__ import annotations

from typing import Dict, Hashable, List, Sequence


def sub_batches(keys: Sequence[Hashable], size: int) -> List[List[int]]:
    """Row indices grouped by ``keys`` (groups in first-seen order, rows in order), cut into at most ``size``."""
    if size < 1:
        raise ValueError(f"batch size must be >= 1, got {size}")
    groups: Dict[Hashable, List[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    return [rows[i:i + size] for rows in groups.values() for i in range(0, len(rows), size)]
